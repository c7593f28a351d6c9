//! The loop of the broker's per-connection threads (display, mapper): one
//! request from a worker, one answer, until the worker closes the channel.
//! A malformed frame closes it too; the worker then carries on without
//! that service for the connection.

use std::os::fd::OwnedFd;

use ipc::{Channel, Message};
use log::warn;

pub fn requests<Req: Message, Ans: Message>(
    channel: &Channel<Ans, Req>,
    what: &str,
    mut handle: impl FnMut(Req, Option<OwnedFd>) -> Ans,
) {
    loop {
        let (request, mut fds) = match channel.recv() {
            Ok(m) => m,
            Err(ipc::Error::Closed) => return,
            Err(e) => {
                warn!("{what} channel: {e}; closing it");
                return;
            }
        };
        let answer = handle(request, fds.pop());
        if let Err(e) = channel.send(&answer, &[]) {
            warn!("{what} channel: {e}; closing it");
            return;
        }
    }
}
