//! The loop of the broker's per-connection threads (display, mapper): one
//! request from a worker, one answer, until the worker closes the channel
//! or the next connection's work arrives. A malformed frame closes it too;
//! the worker then carries on without that service for the connection.
//! The first message is the worker's greeting (the broker's own was sent
//! when the channel was made): a channel whose peer is not the worker it
//! should be is closed unserved.
//!
//! The front-end thread sends a connection's work only once the one before
//! it has ended, so newer work means the channel served now belongs to a
//! connection that is gone: a worker that kept that channel open (or a
//! stalled one) must not keep the next connection waiting. The thread
//! therefore checks for newer work between requests and on a short tick.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use ipc::{Channel, Message, Role};
use log::{info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How often an idle channel looks for the next connection's work.
const TICK: Duration = Duration::from_millis(250);

/// Serves `channel`, whose other end is `peer`, until it closes (then
/// `None`) or until `next` holds the next connection's work (then that
/// work).
pub fn requests<Req: Message, Ans: Message, W>(
    channel: &Channel<Ans, Req>,
    what: &str,
    peer: Role,
    next: &Receiver<W>,
    mut handle: impl FnMut(Req, Option<OwnedFd>) -> Ans,
) -> Option<W> {
    let tick = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE);
    let mut greeted = false;
    loop {
        match next.try_recv() {
            Ok(work) => {
                info!("{what} channel: the next connection has begun; leaving the old one");
                return Some(work);
            }
            Err(TryRecvError::Disconnected) | Err(TryRecvError::Empty) => {}
        }
        let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, tick) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                warn!("{what} channel: cannot wait on it: {e}; closing it");
                return None;
            }
        }
        if !greeted {
            if let Err(e) = channel.check_greeting(peer) {
                warn!("{what} channel: handshake: {e}; closing it");
                return None;
            }
            greeted = true;
            continue;
        }
        let (request, mut fds) = match channel.recv() {
            Ok(m) => m,
            Err(ipc::Error::Closed) => return None,
            Err(e) => {
                warn!("{what} channel: {e}; closing it");
                return None;
            }
        };
        let answer = handle(request, fds.pop());
        if let Err(e) = channel.send(&answer, &[]) {
            warn!("{what} channel: {e}; closing it");
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::{MapRequest, Nothing, Reply};

    type MapAnswer = Reply<Nothing>;

    #[test]
    fn a_channel_left_open_gives_way_to_the_next_connection() {
        let (ours, theirs) = ipc::socketpair().unwrap();
        let ours: Channel<MapAnswer, MapRequest> = Channel::new(ours);
        let theirs: Channel<MapRequest, MapAnswer> = Channel::new(theirs);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            theirs.greet(Role::RenderWorker).unwrap();
            theirs
                .send(&MapRequest::Unmap { resource_id: 7 }, &[])
                .unwrap();
            let (answer, _) = theirs.recv().unwrap();
            assert_eq!(answer, Reply::Done);
            // Then keeps the channel open, silent, while the next
            // connection's work arrives.
            tx.send(42u32).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(theirs);
        });
        let mut served = 0;
        let got = requests(&ours, "test", Role::RenderWorker, &rx, |_, _| {
            served += 1;
            Reply::Done
        });
        assert_eq!(got, Some(42));
        assert_eq!(served, 1);
        worker.join().unwrap();
    }

    #[test]
    fn a_closed_channel_ends_the_service() {
        let (ours, theirs) = ipc::socketpair().unwrap();
        let ours: Channel<MapAnswer, MapRequest> = Channel::new(ours);
        drop(theirs);
        let (_tx, rx) = std::sync::mpsc::channel::<u32>();
        assert_eq!(
            requests(&ours, "test", Role::RenderWorker, &rx, |_, _| Reply::Done),
            None
        );
    }

    #[test]
    fn a_channel_whose_peer_is_not_the_worker_is_not_served() {
        let (ours, theirs) = ipc::socketpair().unwrap();
        let ours: Channel<MapAnswer, MapRequest> = Channel::new(ours);
        let theirs: Channel<MapRequest, MapAnswer> = Channel::new(theirs);
        theirs.greet(Role::GpuWorker).unwrap();
        theirs
            .send(&MapRequest::Unmap { resource_id: 7 }, &[])
            .unwrap();
        let (_tx, rx) = std::sync::mpsc::channel::<u32>();
        let mut served = 0;
        let got = requests(&ours, "test", Role::RenderWorker, &rx, |_, _| {
            served += 1;
            Reply::Done
        });
        assert_eq!((got, served), (None, 0));
    }
}
