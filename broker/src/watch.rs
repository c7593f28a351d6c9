//! The main thread's watch once the device serves: a worker that dies or
//! speaks unasked, SIGTERM/SIGINT, or the end of the one front-end `--fd`
//! gave, each ends the device.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use ipc::{Channel, GpuWorkerRequest, RenderWorkerRequest, WorkerReport};
use log::warn;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::workers::{describe, Worker};

/// Why the broker stops.
pub enum Stop {
    /// A worker died or broke the protocol: exit 1.
    Worker(String),
    /// SIGTERM or SIGINT: exit 0.
    Signal(Signal),
    /// The one front-end `--fd` gave has disconnected: exit 0.
    FrontendGone,
}

/// Blocks until a worker dies or misbehaves; says what happened.
pub fn watch_workers(
    workers: &mut [Worker; 2],
    gpu: &Channel<GpuWorkerRequest, WorkerReport>,
    render: &Channel<RenderWorkerRequest, WorkerReport>,
    stops: &SignalFd,
    ended: &UnixStream,
) -> Stop {
    loop {
        let mut fds = [
            PollFd::new(gpu.as_fd(), PollFlags::POLLIN),
            PollFd::new(render.as_fd(), PollFlags::POLLIN),
            PollFd::new(stops.as_fd(), PollFlags::POLLIN),
            PollFd::new(ended.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Stop::Worker(format!("cannot watch the workers: {e}")),
        }
        let ready = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
        if ready[3] {
            return Stop::FrontendGone;
        }
        if ready[2] {
            if let Ok(Some(info)) = stops.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    return Stop::Signal(sig);
                }
            }
        }
        for (i, is_ready) in ready.into_iter().take(2).enumerate() {
            if !is_ready {
                continue;
            }
            // Nothing is expected from a worker at this stage: a message is
            // a protocol violation, a close is a death.
            let outcome = if i == 0 {
                gpu.recv().map(|(m, _)| format!("{m:?}"))
            } else {
                render.recv().map(|(m, _)| format!("{m:?}"))
            };
            let w = &mut workers[i];
            let pid = w.child.id();
            if let Ok(msg) = outcome {
                warn!("{} (pid {pid}) sent {msg} unasked; killing it", w.role);
                w.kill();
                return Stop::Worker(format!("{} (pid {pid}) broke the ipc protocol", w.role));
            }
            return Stop::Worker(match w.reap() {
                Ok(status) => format!("{} (pid {pid}) {}", w.role, describe(status)),
                Err(e) => format!("{} (pid {pid}) is gone: {e}", w.role),
            });
        }
    }
}
