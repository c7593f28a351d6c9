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
use std::sync::Mutex;

use ipc::{Channel, DisplayToGpu, GpuToDisplay};
use log::warn;

use crate::guest_warn;
use crate::ratelimit::LogLimiter;

type DisplayChannel = Channel<GpuToDisplay, DisplayToGpu>;

#[derive(Debug, Default)]
pub struct DisplayLink {
    channel: Mutex<Option<DisplayChannel>>,
    log: LogLimiter,
}

impl DisplayLink {
    /// A link with no display behind it: every request answers `None`.
    pub fn none() -> Self {
        DisplayLink::default()
    }

    pub fn new(channel: DisplayChannel) -> Self {
        DisplayLink {
            channel: Mutex::new(Some(channel)),
            log: LogLimiter::default(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<DisplayChannel>> {
        self.channel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one request and waits for its answer. `None` when there is no
    /// display (never was, or the channel failed and was dropped).
    pub fn request(&self, msg: &GpuToDisplay, fds: &[BorrowedFd<'_>]) -> Option<DisplayToGpu> {
        let mut slot = self.lock();
        let channel = slot.as_ref()?;
        let result = channel.send(msg, fds).and_then(|()| channel.recv());
        match result {
            Ok((answer, _)) => Some(answer),
            Err(e) => {
                warn!(
                    "gpu-worker: display channel failed ({e}); continuing without display output"
                );
                *slot = None;
                None
            }
        }
    }

    /// Sends a request whose only answer is done or refused, and logs a
    /// refusal. True if the display did it.
    pub fn command(&self, msg: &GpuToDisplay, fds: &[BorrowedFd<'_>]) -> bool {
        match self.request(msg, fds) {
            Some(DisplayToGpu::Done) => true,
            Some(DisplayToGpu::Refused(why)) => {
                guest_warn!(self.log, "the broker refused a display request: {why}");
                false
            }
            Some(other) => {
                warn!("gpu-worker: unexpected display answer {other:?}; dropping the channel");
                *self.lock() = None;
                false
            }
            None => false,
        }
    }
}
