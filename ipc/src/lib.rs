//! The only vocabulary gpu-airlock's processes share.
//!
//! Every message that crosses a process boundary is a variant of one of the
//! enums in [`messages`], serialized with bincode and carried in one
//! `SOCK_SEQPACKET` datagram by [`Channel`]; file descriptors ride along as
//! `SCM_RIGHTS`. Each message states how many descriptors it carries
//! ([`Message::fd_count`]) and the receiver rejects a datagram whose count
//! differs, so a compromised sender cannot slip in an fd the receiver does not
//! expect. All encoding and decoding lives in this crate, so the wire format
//! can change in one file.

mod channel;
pub mod deadline;
pub mod logging;
pub mod messages;
pub mod ratelimit;
pub mod sync;

#[doc(hidden)]
pub use log as __log;

pub use channel::{
    decode_frame, Channel, Error, Role, BUILD_ID, MAX_FDS, MAX_FRAME, PROTOCOL_VERSION,
};
pub use messages::*;
pub use sync::LockExt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message that may cross a process boundary.
pub trait Message: Serialize + DeserializeOwned + std::fmt::Debug {
    /// How many file descriptors travel with this message as `SCM_RIGHTS`.
    fn fd_count(&self) -> usize;

    /// What the message is, for a log line about it (its Debug form may
    /// spell out a command stream).
    fn name(&self) -> &'static str {
        "a message"
    }
}

/// Creates the connected `SOCK_SEQPACKET` pair one channel runs over.
///
/// Both ends are close-on-exec: a worker only ever inherits the ends the
/// broker places at fixed descriptor numbers for it.
pub fn socketpair() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), Error> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(Error::SocketPair)
}

/// Where a worker finds its channels: the broker places them at these
/// descriptor numbers when it spawns the worker, and nothing else is
/// inherited.
pub mod worker_fds {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

    use nix::sys::socket::{getsockopt, sockopt, SockType};

    /// The channel to the broker.
    pub const BROKER: RawFd = 3;
    /// The channel to the other worker.
    pub const PEER: RawFd = 4;

    /// A worker's fixed descriptor that is not one of its channels.
    #[derive(Debug, thiserror::Error)]
    #[error(
        "descriptor {0} is not a gpu-airlock channel: this worker is started by gpu-airlock, \
         not by hand"
    )]
    pub struct NotAChannel(pub RawFd);

    /// Takes ownership of the two channels, after checking that each number
    /// really is an open `SOCK_SEQPACKET` socket, so a worker started by
    /// hand says so instead of misbehaving.
    pub fn take() -> Result<(OwnedFd, OwnedFd), NotAChannel> {
        for fd in [BROKER, PEER] {
            // SAFETY: borrowed only for the duration of getsockopt, which
            // fails cleanly (EBADF, ENOTSOCK) on a number that is not an
            // open socket.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            match getsockopt(&borrowed, sockopt::SockType) {
                Ok(SockType::SeqPacket) => {}
                _ => return Err(NotAChannel(fd)),
            }
        }
        // SAFETY: both numbers are open sockets (checked above) that the
        // broker placed here for this process alone; each is taken once.
        Ok(unsafe { (OwnedFd::from_raw_fd(BROKER), OwnedFd::from_raw_fd(PEER)) })
    }
}
