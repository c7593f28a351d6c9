//! What the benchmarks share: the cheapest cross-process wake-up on this
//! machine (the floor every round trip is compared with) and percentiles.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use ipc::{Channel, Message};
use serde::{Deserialize, Serialize};

use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use vmm_sys_util::eventfd::EventFd;

/// Median and 99th percentile of a set of round trips, in nanoseconds.
pub struct Figures {
    pub p50_ns: u64,
    pub p99_ns: u64,
}

pub fn summarize(mut samples: Vec<u64>) -> Figures {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    Figures {
        p50_ns: at(0.5),
        p99_ns: at(0.99),
    }
}

pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn ratio(x: u64, base: u64) -> f64 {
    x as f64 / base.max(1) as f64
}

/// Sends `request` on `dev`'s control queue, appends its round trip to
/// `samples`, and checks that the response is of type `want`.
pub fn timed(dev: &mut harness::Device, request: &[u8], want: u32, samples: &mut Vec<u64>) {
    let t = Instant::now();
    let (_, resp) = dev.control(request, 64);
    samples.push(t.elapsed().as_nanos() as u64);
    assert_eq!(harness::gpu_wire::parse_hdr(&resp).0, want);
}

/// Prints the eventfd floor, the ipc round trip and `rows`, each as its
/// p50 and p99 and its p50 over the ipc round trip's and the floor's.
pub fn print_against_floors(floor: &Figures, ipc: &Figures, rows: &[(&str, &Figures)]) {
    let named = [
        ("eventfd ping-pong between processes (floor)", floor),
        ("ipc message round trip", ipc),
    ];
    let all: Vec<(&str, &Figures)> = named.into_iter().chain(rows.iter().copied()).collect();
    let w = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    println!(
        "{:<w$} {:>9} {:>9} {:>10} {:>10}",
        "", "p50 (us)", "p99 (us)", "p50/ipc", "p50/eventfd"
    );
    for (name, f) in all {
        println!(
            "{:<w$} {:>9.2} {:>9.2} {:>10.2} {:>10.2}",
            name,
            us(f.p50_ns),
            us(f.p99_ns),
            ratio(f.p50_ns, ipc.p50_ns),
            ratio(f.p50_ns, floor.p50_ns)
        );
    }
}

/// A forked process that answers eventfd pings until dropped, so the floor
/// can be measured in rounds beside other work.
pub struct EventfdPeer {
    to_child: EventFd,
    to_parent: EventFd,
    child: nix::unistd::Pid,
}

/// A ping value that tells the peer to exit.
const STOP: u64 = 1 << 40;

impl EventfdPeer {
    /// Forks the peer. Call it before starting threads: the child only
    /// reads and writes eventfds and leaves with _exit, but a fork from a
    /// threaded process is best kept that simple anyway.
    pub fn start() -> EventfdPeer {
        let to_child = EventFd::new(0).unwrap();
        let to_parent = EventFd::new(0).unwrap();
        // SAFETY: the child makes only read/write calls on eventfds it
        // already holds, then _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                while to_child.read().map(|v| v < STOP).unwrap_or(false) {
                    let _ = to_parent.write(1);
                }
                // SAFETY: leave the forked child at once.
                unsafe { nix::libc::_exit(0) };
            }
            ForkResult::Parent { child } => EventfdPeer {
                to_child,
                to_parent,
                child,
            },
        }
    }

    /// Times `n` round trips, appending each to `samples`.
    pub fn round_trips(&self, n: usize, samples: &mut Vec<u64>) {
        for _ in 0..n {
            let t = Instant::now();
            self.to_child.write(1).unwrap();
            self.to_parent.read().unwrap();
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
}

impl Drop for EventfdPeer {
    fn drop(&mut self) {
        let _ = self.to_child.write(STOP);
        let _ = waitpid(self.child, None);
    }
}

/// The bench's own vocabulary: a request that may carry a descriptor and
/// its answer, shaped like the product's messages (an enum tag and a u64).
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Ping { seq: u64 },
    PingWithFd { seq: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Pong { seq: u64 },
}

impl Message for Request {
    fn fd_count(&self) -> usize {
        match self {
            Request::Ping { .. } => 0,
            Request::PingWithFd { .. } => 1,
        }
    }
}

impl Message for Reply {
    fn fd_count(&self) -> usize {
        0
    }
}

/// A forked process that answers every request on its channel until the
/// channel closes.
pub fn start_ipc_peer() -> (Channel<Request, Reply>, nix::unistd::Pid) {
    let (a, b) = ipc::socketpair().unwrap();
    // SAFETY: called before the benchmark starts any thread; the child
    // only receives and sends on its channel and leaves with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(a);
            let ch: Channel<Reply, Request> = Channel::new(b);
            while let Ok((req, fds)) = ch.recv() {
                drop(fds);
                let seq = match req {
                    Request::Ping { seq } | Request::PingWithFd { seq } => seq,
                };
                if ch.send(&Reply::Pong { seq }, &[]).is_err() {
                    break;
                }
            }
            // SAFETY: leave the forked child at once.
            unsafe { nix::libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop(b);
            (Channel::new(a), child)
        }
    }
}

pub fn ipc_round_trips(
    ch: &Channel<Request, Reply>,
    fd: Option<BorrowedFd<'_>>,
    n: usize,
    samples: &mut Vec<u64>,
) {
    for seq in 0..n as u64 {
        let t = Instant::now();
        match fd {
            Some(fd) => ch.send(&Request::PingWithFd { seq }, &[fd]).unwrap(),
            None => ch.send(&Request::Ping { seq }, &[]).unwrap(),
        }
        let (Reply::Pong { seq: got }, _) = ch.recv().unwrap();
        assert_eq!(got, seq);
        samples.push(t.elapsed().as_nanos() as u64);
    }
}
