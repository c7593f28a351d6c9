//! Framing: one message per `SOCK_SEQPACKET` datagram, descriptors as
//! `SCM_RIGHTS`, a version handshake before anything else.
//!
//! The receiving side trusts nothing: a datagram that was truncated, that does
//! not decode to exactly one known message, or whose descriptor count differs
//! from what the message declares is refused with an [`Error`], and every
//! descriptor that came with it is closed (they arrive as `OwnedFd`s, which
//! close on drop).

use crate::LockExt;
use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};

use crate::Message;

/// Largest encoded message, in bytes. Bulk data (pixels, command streams)
/// never travels in a frame: it stays in shared memory.
pub const MAX_FRAME: usize = 64 * 1024;

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 8;

/// Bumped by hand when the meaning of a message changes without its shape
/// changing; shape changes already change [`BUILD_ID`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Identity of this build of the vocabulary (crate version and a hash of this
/// crate's source), so a broker never talks to a worker from another build.
pub const BUILD_ID: &str = env!("GPU_AIRLOCK_IPC_BUILD_ID");

/// How long a handshake waits for the peer's greeting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const MAGIC: [u8; 8] = *b"gpuairlk";

/// The kernel's limit on descriptors in one `SCM_RIGHTS` message
/// (`SCM_MAX_FD`). The control buffer is sized for this many, so the kernel
/// never truncates it: with `MSG_CTRUNC` the descriptors it did install
/// would sit in a cut-off header that cannot be parsed, and leak.
const SCM_MAX_FD: usize = 253;

type WireConfig = Configuration<LittleEndian, Fixint, Limit<MAX_FRAME>>;

fn wire_config() -> WireConfig {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<MAX_FRAME>()
}

/// Which process is at one end of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Broker,
    GpuWorker,
    RenderWorker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Broker => "broker",
            Role::GpuWorker => "gpu-worker",
            Role::RenderWorker => "render-worker",
        })
    }
}

/// The first frame on every channel, in both directions.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    protocol_version: u32,
    build_id: String,
    role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create an ipc socket pair: {0}")]
    SocketPair(Errno),
    #[error("sending an ipc frame failed: {0}")]
    Send(Errno),
    #[error("receiving an ipc frame failed: {0}")]
    Recv(Errno),
    #[error("the peer closed the channel")]
    Closed,
    #[error("a frame was larger than {MAX_FRAME} bytes and was dropped")]
    Oversized,
    #[error("a frame carried more than {MAX_FDS} descriptors; all were closed")]
    TooManyFds,
    #[error("a frame carried control data other than SCM_RIGHTS")]
    UnexpectedControl,
    #[error("a frame could not be encoded: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("a frame did not decode to a known message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("a frame had {0} bytes after its message")]
    TrailingBytes(usize),
    #[error("{message} carries {expected} descriptor(s) but the frame had {got}")]
    FdCount {
        message: String,
        expected: usize,
        got: usize,
    },
    #[error("the peer is not a gpu-airlock process of this protocol")]
    BadMagic,
    #[error(
        "the peer was built from another ipc vocabulary (ours {ours}, theirs {theirs}); \
         install the broker and workers from one build"
    )]
    VersionMismatch { ours: String, theirs: String },
    #[error("expected the {expected} at the other end of this channel, found the {got}")]
    WrongPeer { expected: Role, got: Role },
    #[error("setting a socket option failed: {0}")]
    SockOpt(Errno),
}

/// One end of a channel that sends `Tx` and receives `Rx`.
#[derive(Debug)]
pub struct Channel<Tx, Rx> {
    fd: OwnedFd,
    /// The receive buffer, allocated once.
    buf: std::sync::Mutex<Box<[u8]>>,
    _types: PhantomData<fn(Tx) -> Rx>,
}

impl<Tx: Message, Rx: Message> Channel<Tx, Rx> {
    /// Wraps a connected `SOCK_SEQPACKET` socket.
    pub fn new(fd: OwnedFd) -> Self {
        Channel {
            fd,
            buf: std::sync::Mutex::new(vec![0u8; MAX_FRAME].into_boxed_slice()),
            _types: PhantomData,
        }
    }

    /// Exchanges greetings and checks that the peer is the process we expect
    /// and was built from this vocabulary. Must be the first traffic on the
    /// channel; both ends send before they receive, so neither waits on the
    /// other. Waits at most the handshake's own timeout (for the channels
    /// made at start-up, which have none).
    pub fn handshake(&self, me: Role, peer: Role) -> Result<(), Error> {
        self.greet(me)?;
        self.set_recv_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let checked = self.check_greeting(peer);
        self.set_recv_timeout(None)?;
        checked
    }

    /// The first half of a handshake: says who this end is. A channel made
    /// per front-end connection greets as soon as its end is taken, and
    /// checks the peer's greeting as its first receive, within the
    /// deadline the broker set on it (so a jailed worker needs no socket
    /// option calls for it).
    pub fn greet(&self, me: Role) -> Result<(), Error> {
        let hello = Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            build_id: BUILD_ID.to_string(),
            role: me,
        };
        self.send_value(&hello, &[])
    }

    /// The second half: receives the peer's greeting and checks it.
    pub fn check_greeting(&self, peer: Role) -> Result<(), Error> {
        let (theirs, fds) = self.recv_value::<Hello>()?;
        if !fds.is_empty() {
            return Err(Error::FdCount {
                message: "Hello".into(),
                expected: 0,
                got: fds.len(),
            });
        }
        if theirs.magic != MAGIC {
            return Err(Error::BadMagic);
        }
        if theirs.protocol_version != PROTOCOL_VERSION || theirs.build_id != BUILD_ID {
            return Err(Error::VersionMismatch {
                ours: format!("{PROTOCOL_VERSION}/{BUILD_ID}"),
                theirs: format!("{}/{}", theirs.protocol_version, theirs.build_id),
            });
        }
        if theirs.role != peer {
            return Err(Error::WrongPeer {
                expected: peer,
                got: theirs.role,
            });
        }
        Ok(())
    }

    /// Sends `msg` with exactly `msg.fd_count()` descriptors.
    pub fn send(&self, msg: &Tx, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        if fds.len() != msg.fd_count() {
            return Err(Error::FdCount {
                message: format!("{msg:?}"),
                expected: msg.fd_count(),
                got: fds.len(),
            });
        }
        self.send_value(msg, fds)
    }

    /// Receives one message and the descriptors that came with it.
    pub fn recv(&self) -> Result<(Rx, Vec<OwnedFd>), Error> {
        let (msg, fds) = self.recv_value::<Rx>()?;
        if fds.len() != msg.fd_count() {
            return Err(Error::FdCount {
                message: format!("{msg:?}"),
                expected: msg.fd_count(),
                got: fds.len(),
            });
        }
        Ok((msg, fds))
    }

    /// Sets how long [`Channel::recv`] waits; `None` waits forever.
    pub fn set_recv_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let tv = match timeout {
            Some(d) => TimeVal::new(
                d.as_secs().try_into().unwrap_or(i64::MAX),
                d.subsec_micros().into(),
            ),
            None => TimeVal::new(0, 0),
        };
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(Error::SockOpt)
    }

    fn send_value<T: Serialize>(&self, value: &T, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        let bytes = bincode::serde::encode_to_vec(value, wire_config())?;
        if bytes.len() > MAX_FRAME {
            return Err(Error::Oversized);
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        let iov = [IoSlice::new(&bytes)];
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(Error::Closed),
                Err(e) => return Err(Error::Send(e)),
            }
        }
    }

    fn recv_value<T: serde::de::DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), Error> {
        // Uninitialized is not allowed behind IoSliceMut; one zeroed buffer
        // per channel, reused, costs nothing per message.
        let mut guard = self.buf.lock_or_recover();
        let buf: &mut [u8] = &mut guard[..];
        let mut cmsg_space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
        let (len, flags, fds, foreign_cmsg) = loop {
            let mut iov = [IoSliceMut::new(&mut *buf)];
            let msg = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(Error::Closed),
                Err(e) => return Err(Error::Recv(e)),
            };
            // Take ownership of every descriptor first, so each one is closed
            // on every error path below.
            let mut fds = Vec::new();
            let mut foreign = false;
            match msg.cmsgs() {
                Ok(cmsgs) => {
                    for cmsg in cmsgs {
                        match cmsg {
                            ControlMessageOwned::ScmRights(received) => {
                                for fd in received {
                                    // SAFETY: the kernel just installed `fd`
                                    // in our table for this message; nothing
                                    // else owns it.
                                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                                }
                            }
                            _ => foreign = true,
                        }
                    }
                }
                Err(_) => foreign = true,
            }
            break (msg.bytes, msg.flags, fds, foreign);
        };

        if flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > MAX_FDS {
            return Err(Error::TooManyFds);
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(Error::Oversized);
        }
        if foreign_cmsg {
            return Err(Error::UnexpectedControl);
        }
        if len == 0 && fds.is_empty() {
            // A zero-length read on a SEQPACKET socket is the peer's close.
            return Err(Error::Closed);
        }
        Ok((decode_frame(&buf[..len])?, fds))
    }
}

/// Decodes one received frame's bytes: exactly one message of type `T`,
/// nothing after it. What every `recv` runs on bytes a peer wrote (and
/// what the ipc fuzz target runs on arbitrary ones).
pub fn decode_frame<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<T, Error> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(frame, wire_config())?;
    if used != frame.len() {
        return Err(Error::TrailingBytes(frame.len() - used));
    }
    Ok(value)
}

impl<Tx, Rx> AsFd for Channel<Tx, Rx> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<Tx, Rx> AsRawFd for Channel<Tx, Rx> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;
    use nix::sys::socket::{send, MsgFlags};
    use nix::unistd::{pipe, read, write};

    const JAIL: JailConfig = JailConfig {
        sandbox: SandboxMode::Namespace,
        seccomp: SeccompMode::Kill,
    };

    type BrokerEnd = Channel<GpuWorkerRequest, WorkerReport>;
    type GpuEnd = Channel<WorkerReport, GpuWorkerRequest>;

    fn pair() -> (BrokerEnd, GpuEnd) {
        let (a, b) = crate::socketpair().unwrap();
        (Channel::new(a), Channel::new(b))
    }

    /// Same shape as `GpuWorkerRequest`, but lies about descriptor counts: what a
    /// compromised peer would send.
    #[derive(Debug, Serialize, Deserialize)]
    enum ForgedBrokerToGpu {
        Configure(GpuConfig),
        VhostUserListener,
        Ping { nonce: u64 },
    }
    impl Message for ForgedBrokerToGpu {
        fn fd_count(&self) -> usize {
            match self {
                ForgedBrokerToGpu::Ping { .. } => 1,
                _ => 0,
            }
        }
    }

    fn raw_send(ch: &impl AsRawFd, bytes: &[u8]) {
        send(ch.as_raw_fd(), bytes, MsgFlags::empty()).unwrap();
    }

    /// True when every write end of the pipe is closed.
    fn pipe_write_ends_closed(read_end: &OwnedFd) -> bool {
        let mut b = [0u8; 1];
        matches!(read(read_end, &mut b), Ok(0))
    }

    #[test]
    fn message_round_trip_without_fds() {
        let (broker, gpu) = pair();
        let config = GpuConfig {
            scanouts: vec![ScanoutSize {
                width: 1280,
                height: 800,
            }],
            max_resource_memory: 1 << 28,
            jail: JAIL,
            contexts: false,
        };
        broker
            .send(&GpuWorkerRequest::Configure(config.clone()), &[])
            .unwrap();
        let (msg, fds) = gpu.recv().unwrap();
        assert_eq!(msg, GpuWorkerRequest::Configure(config));
        assert!(fds.is_empty());
        gpu.send(&WorkerReport::Pong { nonce: 7 }, &[]).unwrap();
        assert_eq!(broker.recv().unwrap().0, WorkerReport::Pong { nonce: 7 });
    }

    #[test]
    fn fd_travels_and_stays_usable() {
        let (broker, gpu) = pair();
        let (r, w) = pipe().unwrap();
        broker
            .send(&GpuWorkerRequest::VhostUserListener, &[w.as_fd()])
            .unwrap();
        drop(w);
        let (msg, mut fds) = gpu.recv().unwrap();
        assert_eq!(msg, GpuWorkerRequest::VhostUserListener);
        assert_eq!(fds.len(), 1);
        write(fds[0].as_fd(), b"x").unwrap();
        let mut b = [0u8; 1];
        assert_eq!(read(&r, &mut b).unwrap(), 1);
        assert_eq!(&b, b"x");
        fds.clear();
        assert!(pipe_write_ends_closed(&r));
    }

    #[test]
    fn sender_refuses_wrong_fd_count() {
        let (broker, _gpu) = pair();
        let err = broker
            .send(&GpuWorkerRequest::VhostUserListener, &[])
            .unwrap_err();
        assert!(matches!(
            err,
            Error::FdCount {
                expected: 1,
                got: 0,
                ..
            }
        ));
    }

    #[test]
    fn receiver_rejects_unexpected_fd_and_closes_it() {
        let (a, b) = crate::socketpair().unwrap();
        let forged: Channel<ForgedBrokerToGpu, WorkerReport> = Channel::new(a);
        let gpu: GpuEnd = Channel::new(b);
        let (r, w) = pipe().unwrap();
        forged
            .send(&ForgedBrokerToGpu::Ping { nonce: 1 }, &[w.as_fd()])
            .unwrap();
        drop(w);
        let err = gpu.recv().unwrap_err();
        assert!(
            matches!(
                err,
                Error::FdCount {
                    expected: 0,
                    got: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            pipe_write_ends_closed(&r),
            "the rejected fd must be closed by the receiver"
        );
    }

    #[test]
    fn receiver_rejects_missing_fd() {
        let (a, b) = crate::socketpair().unwrap();
        let forged: Channel<ForgedBrokerToGpu, WorkerReport> = Channel::new(a);
        let gpu: GpuEnd = Channel::new(b);
        forged
            .send(&ForgedBrokerToGpu::VhostUserListener, &[])
            .unwrap();
        let err = gpu.recv().unwrap_err();
        assert!(matches!(
            err,
            Error::FdCount {
                expected: 1,
                got: 0,
                ..
            }
        ));
    }

    #[test]
    fn receiver_closes_fds_past_the_limit() {
        let (broker, gpu) = pair();
        let (r, w) = pipe().unwrap();
        let many: Vec<RawFd> = vec![w.as_raw_fd(); MAX_FDS + 4];
        let bytes =
            bincode::serde::encode_to_vec(GpuWorkerRequest::VhostUserListener, wire_config())
                .unwrap();
        sendmsg::<()>(
            broker.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&many)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(w);
        assert!(matches!(gpu.recv().unwrap_err(), Error::TooManyFds));
        assert!(pipe_write_ends_closed(&r));
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let (broker, gpu) = pair();
        raw_send(&broker, &vec![0u8; MAX_FRAME + 100]);
        assert!(matches!(gpu.recv().unwrap_err(), Error::Oversized));
        // The channel still works afterwards.
        broker
            .send(&GpuWorkerRequest::Ping { nonce: 3 }, &[])
            .unwrap();
        assert_eq!(gpu.recv().unwrap().0, GpuWorkerRequest::Ping { nonce: 3 });
    }

    #[test]
    fn unknown_tag_is_rejected() {
        let (broker, gpu) = pair();
        raw_send(&broker, &[99, 0, 0, 0]);
        assert!(matches!(gpu.recv().unwrap_err(), Error::Decode(_)));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let (broker, gpu) = pair();
        let mut bytes =
            bincode::serde::encode_to_vec(GpuWorkerRequest::Ping { nonce: 9 }, wire_config())
                .unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        raw_send(&broker, &bytes);
        assert!(matches!(gpu.recv().unwrap_err(), Error::TrailingBytes(3)));
    }

    #[test]
    fn garbage_never_panics() {
        let (broker, gpu) = pair();
        // xorshift: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..2000 {
            let len = (next() % 96) as usize + 1;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 {
                // Start with a valid tag so decoding goes deeper.
                frame[0] = (next() % 3) as u8;
                if len >= 4 {
                    frame[1..4].fill(0);
                }
            }
            raw_send(&broker, &frame);
            // Any outcome but a panic is fine; an accepted message must be
            // internally consistent.
            if let Ok((GpuWorkerRequest::Configure(c), _)) = gpu.recv() {
                let _ = c.validate();
            }
        }
    }

    #[test]
    fn closed_peer_is_reported() {
        let (broker, gpu) = pair();
        drop(broker);
        assert!(matches!(gpu.recv().unwrap_err(), Error::Closed));
    }

    #[test]
    fn handshake_accepts_the_expected_peer() {
        let (broker, gpu) = pair();
        let t = std::thread::spawn(move || gpu.handshake(Role::GpuWorker, Role::Broker));
        broker.handshake(Role::Broker, Role::GpuWorker).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn handshake_rejects_the_wrong_peer() {
        let (broker, gpu) = pair();
        let t = std::thread::spawn(move || gpu.handshake(Role::RenderWorker, Role::Broker));
        let err = broker.handshake(Role::Broker, Role::GpuWorker).unwrap_err();
        assert!(matches!(
            err,
            Error::WrongPeer {
                expected: Role::GpuWorker,
                got: Role::RenderWorker
            }
        ));
        t.join().unwrap().unwrap();
    }

    #[test]
    fn handshake_rejects_another_build() {
        let (broker, gpu) = pair();
        let stale = Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            build_id: "0.0.0-0000000000000000".into(),
            role: Role::GpuWorker,
        };
        gpu.send_value(&stale, &[]).unwrap();
        let err = broker.handshake(Role::Broker, Role::GpuWorker).unwrap_err();
        assert!(matches!(err, Error::VersionMismatch { .. }), "{err}");
    }

    #[test]
    fn handshake_times_out_instead_of_hanging() {
        let (broker, _silent_gpu) = pair();
        broker
            .set_recv_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // recv on a silent peer returns EAGAIN once the timeout passes.
        assert!(matches!(
            broker.recv().unwrap_err(),
            Error::Recv(Errno::EAGAIN)
        ));
    }

    #[test]
    fn config_validation() {
        let ok = GpuConfig {
            scanouts: vec![ScanoutSize {
                width: 1920,
                height: 1080,
            }],
            max_resource_memory: 1 << 28,
            jail: JAIL,
            contexts: false,
        };
        assert!(ok.validate().is_ok());
        assert!(GpuConfig {
            scanouts: vec![],
            max_resource_memory: 1 << 28,
            jail: JAIL,
            contexts: false
        }
        .validate()
        .is_err());
        let too_many = GpuConfig {
            scanouts: vec![ok.scanouts[0]; wire::MAX_SCANOUTS + 1],
            max_resource_memory: 1 << 28,
            jail: JAIL,
            contexts: false,
        };
        assert!(too_many.validate().is_err());
        let zero = GpuConfig {
            scanouts: vec![ScanoutSize {
                width: 0,
                height: 10,
            }],
            max_resource_memory: 1 << 28,
            jail: JAIL,
            contexts: false,
        };
        assert!(zero.validate().is_err());
    }
}
