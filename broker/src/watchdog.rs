//! Deadlines on the broker's waits that go through the `vhost` crate.
//!
//! The `vhost` crate's endpoints retry a receive or send that fails with
//! EAGAIN, so a socket timeout (SO_RCVTIMEO) on them would only turn a
//! blocked wait into a spinning one. The deadline is kept here instead: a
//! wait is armed on the [`Watchdog`] with a duplicate of its socket, and a
//! wait still pending at its deadline has its socket shut down, which ends
//! the blocked call with an error the caller already handles (a closed
//! socket). The socket is then unusable, so an answer that comes late can
//! never be read as the answer to a later request.
//!
//! Three kinds of wait, nested as `ipc::deadline` describes:
//! - the display thread on the VMM's display socket
//!   (VHOST_USER_GPU_SET_SOCKET) and the mapper on the back-end request
//!   channel (VHOST_USER_SET_BACKEND_REQ_FD): [`ipc::deadline::VMM_REPLY`];
//! - the front-end thread on gpu-worker, for each relayed request:
//!   [`ipc::deadline::RELAY_ANSWER`].
//!
//! The crate wraps the VMM's sockets before the broker sees them and never
//! exposes their descriptors, so the front-end thread peeks at each
//! request before the handler reads it ([`peek_vmm_socket`]): `MSG_PEEK`
//! delivers duplicates of the descriptors a message carries, while the
//! message itself stays queued for the handler.

use ipc::LockExt;
use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::warn;
use nix::sys::socket::{recvmsg, shutdown, ControlMessageOwned, MsgFlags, Shutdown, UnixAddr};
use vhost::vhost_user::message::FrontendReq;

/// A duplicate of a socket, for cutting it off at a deadline.
pub type Cutoff = Option<Arc<OwnedFd>>;

/// A socket the VMM handed over that the broker later waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmSocket {
    /// VHOST_USER_GPU_SET_SOCKET's display socket.
    Display,
    /// VHOST_USER_SET_BACKEND_REQ_FD's back-end request channel.
    BackendRequests,
}

/// Waits for the front-end's next request and, if it hands over a socket
/// the broker will wait on, returns a duplicate of that socket. Errors are
/// the handler's to report (it reads the same bytes next), so they are
/// ignored here.
pub fn peek_vmm_socket(frontend: &UnixStream) -> Option<(VmmSocket, OwnedFd)> {
    let mut header = [0u8; 12];
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(&mut header)];
    let msg = recvmsg::<UnixAddr>(
        std::os::fd::AsRawFd::as_raw_fd(frontend),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_PEEK | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let got = msg.bytes;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel installed these descriptors for this
                // process just now (MSG_PEEK duplicates them); nothing else
                // owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    if got < 4 {
        return None;
    }
    let request = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let kind = if request == FrontendReq::GPU_SET_SOCKET as u32 {
        VmmSocket::Display
    } else if request == FrontendReq::SET_BACKEND_REQ_FD as u32 {
        VmmSocket::BackendRequests
    } else {
        return None;
    };
    // The handler refuses a message with more or fewer descriptors.
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(fd), None) => Some((kind, fd)),
        _ => None,
    }
}

struct Armed {
    at: Instant,
    socket: Arc<OwnedFd>,
    what: &'static str,
    limit: Duration,
}

/// What the watchdog thread watches: the waits armed (by id), and when it
/// wakes next on its own.
#[derive(Default)]
struct Waits {
    last_id: u64,
    armed: BTreeMap<u64, Armed>,
    /// When the thread wakes next (None: only when told). An arm whose
    /// deadline is later needs no wake-up: the thread looks again then.
    /// So a wait costs two uncontended lock operations and no thread
    /// switch, which a display flush or a map request pays every time.
    wakes_at: Option<Instant>,
}

/// Shuts down the socket of each wait that outlives its deadline.
#[derive(Default)]
pub struct Watchdog {
    waits: Mutex<Waits>,
    changed: Condvar,
}

static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();

/// Starts the broker's watchdog thread (before the seccomp filter, which
/// allows no new threads). `started` is told once it runs.
pub fn start(started: std::sync::mpsc::Sender<()>) -> std::io::Result<()> {
    let watchdog = WATCHDOG.get_or_init(Arc::default).clone();
    std::thread::Builder::new()
        .name("deadlines".into())
        .spawn(move || {
            let _ = started.send(());
            watchdog.run()
        })?;
    Ok(())
}

/// Runs `wait` with `socket` shut down if it lasts past `limit`. Without a
/// socket, or before [`start`] (unit tests), it runs unbounded.
pub fn within<T>(
    socket: Option<&Arc<OwnedFd>>,
    what: &'static str,
    limit: Duration,
    wait: impl FnOnce() -> T,
) -> T {
    within_told(socket, what, limit, wait).0
}

/// [`within`], and whether the socket was cut off: a peer that closed its
/// end and one that the watchdog silenced read the same to `wait`.
pub fn within_told<T>(
    socket: Option<&Arc<OwnedFd>>,
    what: &'static str,
    limit: Duration,
    wait: impl FnOnce() -> T,
) -> (T, bool) {
    let (Some(socket), Some(watchdog)) = (socket, WATCHDOG.get()) else {
        return (wait(), false);
    };
    let id = watchdog.arm(socket.clone(), what, limit);
    let result = wait();
    let cut_off = !watchdog.disarm(id);
    (result, cut_off)
}

impl Watchdog {
    fn arm(&self, socket: Arc<OwnedFd>, what: &'static str, limit: Duration) -> u64 {
        let mut waits = self.waits.lock_or_recover();
        waits.last_id += 1;
        let id = waits.last_id;
        let at = Instant::now() + limit;
        waits.armed.insert(
            id,
            Armed {
                at,
                socket,
                what,
                limit,
            },
        );
        if waits.wakes_at.is_none_or(|w| at < w) {
            self.changed.notify_one();
        }
        id
    }

    /// Whether `id` was still armed (the watchdog had not fired on it).
    fn disarm(&self, id: u64) -> bool {
        let mut waits = self.waits.lock_or_recover();
        waits.armed.remove(&id).is_some()
    }

    fn run(&self) -> ! {
        let mut waits = self.waits.lock_or_recover();
        loop {
            let now = Instant::now();
            let overdue: Vec<u64> = waits
                .armed
                .iter()
                .filter(|(_, a)| a.at <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in overdue {
                if let Some(a) = waits.armed.remove(&id) {
                    warn!(
                        "{}: no answer within {:?}; cutting that socket off",
                        a.what, a.limit
                    );
                    let _ = shutdown(
                        std::os::fd::AsRawFd::as_raw_fd(&a.socket.as_fd()),
                        Shutdown::Both,
                    );
                }
            }
            let next = waits.armed.values().map(|a| a.at).min();
            waits.wakes_at = next;
            waits = match next {
                None => self.changed.wait(waits).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match self.changed.wait_timeout(waits, wait) {
                        Ok((guard, _)) => guard,
                        Err(e) => e.into_inner().0,
                    }
                }
            };
            waits.wakes_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::{IoSlice, Read};
    use std::os::fd::AsRawFd;

    fn send_request(to: &UnixStream, request: u32, fd: Option<RawFd>) {
        let mut bytes = request.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let fds: Vec<RawFd> = fd.into_iter().collect();
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<UnixAddr>(
            to.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    #[test]
    fn a_display_socket_is_peeked_and_the_request_stays_queued() {
        let (vmm, broker) = UnixStream::pair().unwrap();
        let (display, vmm_display) = UnixStream::pair().unwrap();
        send_request(
            &vmm,
            FrontendReq::GPU_SET_SOCKET as u32,
            Some(display.as_raw_fd()),
        );
        let (kind, dup) = peek_vmm_socket(&broker).expect("a display socket");
        assert_eq!(kind, VmmSocket::Display);
        // The duplicate is the same socket.
        nix::unistd::write(&dup, b"x").unwrap();
        let mut got = [0u8; 1];
        (&vmm_display).read_exact(&mut got).unwrap();
        // The handler still reads the whole request.
        let mut got = [0u8; 12];
        (&broker).read_exact(&mut got).unwrap();
        assert_eq!(got[0], FrontendReq::GPU_SET_SOCKET as u8);
    }

    #[test]
    fn other_requests_hand_over_nothing() {
        let (vmm, broker) = UnixStream::pair().unwrap();
        let (kick, _other) = UnixStream::pair().unwrap();
        send_request(
            &vmm,
            FrontendReq::SET_VRING_KICK as u32,
            Some(kick.as_raw_fd()),
        );
        assert!(peek_vmm_socket(&broker).is_none());
    }

    #[test]
    fn an_overdue_wait_has_its_socket_shut_down_and_a_prompt_one_does_not() {
        let (started, running) = std::sync::mpsc::channel();
        start(started).unwrap();
        running.recv().unwrap();
        let (ours, _peer) = UnixStream::pair().unwrap();
        let dup = Arc::new(OwnedFd::from(ours.try_clone().unwrap()));
        // A wait that ends in time leaves the socket alone.
        let ((), cut_off) = within_told(Some(&dup), "prompt", Duration::from_secs(5), || ());
        assert!(!cut_off);
        // A blocked receive ends when its deadline cuts the socket off.
        let began = Instant::now();
        let (n, cut_off) = within_told(Some(&dup), "stalled", Duration::from_millis(200), || {
            (&ours).read(&mut [0u8; 4])
        });
        assert_eq!(n.unwrap(), 0, "the receive ends as on a closed socket");
        assert!(
            cut_off,
            "the caller learns it was the deadline, not the peer"
        );
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}
