//! gpu-worker's end of the display channel: what the guest's 2D commands
//! ask of the front-end's display goes to the broker, which alone holds
//! the front-end's display socket.
//!
//! Each request waits for its answer, with the receive timeout the broker
//! set on the channel. A channel that fails once (timeout, closed, a
//! malformed answer) is dropped: a late answer would otherwise pair with
//! the next request. The device then carries on without display output,
//! as it does for a front-end that never sent a display socket.

use std::os::fd::BorrowedFd;

use ipc::{DisplayRequest, DisplayValue, Reply};

use crate::link::Link;
use ipc::limited_warn as guest_warn;
use ipc::ratelimit::LogLimiter;

/// The display channel: a [`Link`] to the broker's display thread.
#[derive(Debug)]
pub struct DisplayLink {
    link: Link<DisplayRequest, Reply<DisplayValue>>,
    log: LogLimiter,
}

impl DisplayLink {
    /// A link with no display behind it: every request answers `None`.
    pub fn none() -> Self {
        DisplayLink {
            link: Link::none("the display"),
            log: LogLimiter::default(),
        }
    }

    pub fn new(channel: ipc::Channel<DisplayRequest, Reply<DisplayValue>>) -> Self {
        DisplayLink {
            link: Link::new("the display", channel),
            log: LogLimiter::default(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Sends one request that asks for a value and waits for it; `None`
    /// without a display, or when the display has none to give.
    pub fn request(&self, msg: &DisplayRequest, fds: &[BorrowedFd<'_>]) -> Option<DisplayValue> {
        match self.link.request(msg, fds)? {
            Reply::Value(v) => Some(v),
            Reply::Refused(r) => {
                guest_warn!(self.log, "the broker refused a display request: {r}");
                None
            }
            Reply::Done => {
                self.link.fail("answered Done to a question");
                None
            }
        }
    }

    /// Sends a request whose only answer is done or refused, and logs a
    /// refusal. True if the display did it.
    pub fn command(&self, msg: &DisplayRequest, fds: &[BorrowedFd<'_>]) -> bool {
        match self.link.request(msg, fds) {
            Some(Reply::Done) => true,
            Some(Reply::Refused(r)) => {
                guest_warn!(self.log, "the broker refused a display request: {r}");
                false
            }
            Some(other) => {
                self.link.fail(&format!("answered {other:?}"));
                false
            }
            None => false,
        }
    }
}
