//! A request/answer channel from gpu-worker to another process, for one
//! front-end connection: the broker's display thread, or render-worker.
//!
//! Each request waits for its answer, with the receive timeout the broker
//! set on the channel. A channel that fails once (timeout, closed, a
//! malformed answer) is dropped: a late answer would otherwise pair with
//! the next request. The device then carries on without that peer.
//!
//! A notice ([`Link::notify`]) is a message with no answer. It does not
//! wait for a request in flight: the vhost-user thread sends the guest's
//! new memory map while the vring thread may be waiting on render-worker,
//! which may be waiting on the front-end, which waits for that very
//! SET_MEM_TABLE to be answered (QEMU 11 sends one inside each
//! SHMEM_MAP/UNMAP it handles).

use ipc::LockExt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use ipc::{Channel, Message};
use log::warn;

pub struct Link<Tx: Message, Rx: Message> {
    /// Who is at the other end, for log lines.
    peer: &'static str,
    /// Held for a whole request, so answers pair with their requests.
    turn: Mutex<()>,
    /// Held only to take or drop the channel.
    channel: Mutex<Option<Arc<Channel<Tx, Rx>>>>,
}

impl<Tx: Message, Rx: Message> std::fmt::Debug for Link<Tx, Rx> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({}, connected: {})", self.peer, self.is_connected())
    }
}

impl<Tx: Message, Rx: Message> Link<Tx, Rx> {
    /// A link with nothing behind it: every request answers `None`.
    pub fn none(peer: &'static str) -> Self {
        Link {
            peer,
            turn: Mutex::new(()),
            channel: Mutex::new(None),
        }
    }

    pub fn new(peer: &'static str, channel: Channel<Tx, Rx>) -> Self {
        Link {
            peer,
            turn: Mutex::new(()),
            channel: Mutex::new(Some(Arc::new(channel))),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Channel<Tx, Rx>>>> {
        self.channel.lock_or_recover()
    }

    fn drop_channel(&self, what: &str, e: &ipc::Error) {
        warn!(
            "gpu-worker: the channel to {} failed {what} ({e}); continuing without it",
            self.peer
        );
        *self.lock() = None;
    }

    /// Sends one request and waits for its answer and the descriptors that
    /// came with it. `None` when there is no peer (never was, or the
    /// channel failed and was dropped).
    pub fn request_with_fds(&self, msg: &Tx, fds: &[BorrowedFd<'_>]) -> Option<(Rx, Vec<OwnedFd>)> {
        let _turn = self.turn.lock_or_recover();
        let channel = self.lock().clone()?;
        match channel.send(msg, fds).and_then(|()| channel.recv()) {
            Ok(answer) => Some(answer),
            Err(e) => {
                // Which request: a renderer that crashed on it says so.
                self.drop_channel(&format!("on a request ({})", msg.name()), &e);
                None
            }
        }
    }

    /// Sends a message that has no answer, without waiting for a request
    /// in flight. False when there is no peer.
    pub fn notify(&self, msg: &Tx, fds: &[BorrowedFd<'_>]) -> bool {
        let Some(channel) = self.lock().clone() else {
            return false;
        };
        match channel.send(msg, fds) {
            Ok(()) => true,
            Err(e) => {
                self.drop_channel("on a notice", &e);
                false
            }
        }
    }

    /// As [`Link::request_with_fds`], for answers that carry no descriptor.
    pub fn request(&self, msg: &Tx, fds: &[BorrowedFd<'_>]) -> Option<Rx> {
        self.request_with_fds(msg, fds).map(|(answer, _)| answer)
    }

    /// Drops the channel after an answer that makes no sense.
    pub fn fail(&self, why: &str) {
        warn!("gpu-worker: {} {why}; dropping the channel", self.peer);
        *self.lock() = None;
    }
}
