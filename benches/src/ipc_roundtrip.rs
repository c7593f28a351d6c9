//! How much an ipc round trip costs next to the cheapest cross-process
//! wake-up this machine has.
//!
//! Three ping-pongs between a parent and a forked child, each timed over
//! the same number of round trips in one run:
//! - a bare eventfd ping-pong (write one eventfd, block on the other): the
//!   floor for "tell another process something and hear back";
//! - an `ipc::Channel` message each way, no descriptor;
//! - an `ipc::Channel` message each way, the request carrying one
//!   descriptor as SCM_RIGHTS (the receiver closes it).
//!
//! Prints the median and 99th percentile per round trip, and each ipc
//! figure as a ratio of the eventfd floor.
//!
//! Usage: ipc-roundtrip [ROUND_TRIPS]   (default 20000)

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use ipc::{Channel, Message};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

/// The bench's own vocabulary: a request that may carry a descriptor and
/// its answer, shaped like the product's messages (an enum tag and a u64).
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Ping { seq: u64 },
    PingWithFd { seq: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
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

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Figures {
    p50_ns: u64,
    p99_ns: u64,
}

fn summarize(mut samples: Vec<u64>) -> Figures {
    samples.sort_unstable();
    Figures {
        p50_ns: percentile(&samples, 0.5),
        p99_ns: percentile(&samples, 0.99),
    }
}

fn eventfd_pingpong(n: usize) -> Figures {
    let to_child = EventFd::new(0).unwrap();
    let to_parent = EventFd::new(0).unwrap();
    // SAFETY: single-threaded here; the child only uses async-signal-safe
    // calls (read/write on eventfds) and exits with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            for _ in 0..n {
                to_child.read().unwrap();
                to_parent.write(1).unwrap();
            }
            // SAFETY: _exit ends the forked child without running the
            // parent's atexit handlers or destructors.
            unsafe { nix::libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                to_child.write(1).unwrap();
                to_parent.read().unwrap();
                samples.push(t.elapsed().as_nanos() as u64);
            }
            waitpid(child, None).unwrap();
            summarize(samples)
        }
    }
}

fn ipc_pingpong(n: usize, with_fd: bool) -> Figures {
    let (a, b) = ipc::socketpair().unwrap();
    // SAFETY: as in eventfd_pingpong; the child only sends and receives.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(a);
            let ch: Channel<Reply, Request> = Channel::new(b);
            for _ in 0..n {
                let (req, fds) = ch.recv().unwrap();
                drop(fds);
                let seq = match req {
                    Request::Ping { seq } | Request::PingWithFd { seq } => seq,
                };
                ch.send(&Reply::Pong { seq }, &[]).unwrap();
            }
            // SAFETY: as above.
            unsafe { nix::libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop(b);
            let ch: Channel<Request, Reply> = Channel::new(a);
            let passed = EventFd::new(0).unwrap();
            // SAFETY: `passed` outlives every send below.
            let passed_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(passed.as_raw_fd()) };
            let mut samples = Vec::with_capacity(n);
            for seq in 0..n as u64 {
                let t = Instant::now();
                if with_fd {
                    ch.send(&Request::PingWithFd { seq }, &[passed_fd.as_fd()])
                        .unwrap();
                } else {
                    ch.send(&Request::Ping { seq }, &[]).unwrap();
                }
                let (Reply::Pong { seq: got }, _) = ch.recv().unwrap();
                assert_eq!(got, seq);
                samples.push(t.elapsed().as_nanos() as u64);
            }
            waitpid(child, None).unwrap();
            summarize(samples)
        }
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUND_TRIPS is a number"))
        .unwrap_or(20_000);
    // Warm caches and the scheduler once, untimed.
    eventfd_pingpong(n / 10 + 1);

    let floor = eventfd_pingpong(n);
    let plain = ipc_pingpong(n, false);
    let with_fd = ipc_pingpong(n, true);

    let us = |ns: u64| ns as f64 / 1000.0;
    let ratio = |x: u64, base: u64| x as f64 / base.max(1) as f64;
    println!("ipc round trip between two processes, {n} round trips each");
    println!(
        "{:<34} {:>10} {:>10} {:>14}",
        "", "p50 (us)", "p99 (us)", "p50 / eventfd"
    );
    for (name, f) in [
        ("eventfd ping-pong (floor)", &floor),
        ("ipc message, no fd", &plain),
        ("ipc message, request carries 1 fd", &with_fd),
    ] {
        println!(
            "{:<34} {:>10.2} {:>10.2} {:>14.2}",
            name,
            us(f.p50_ns),
            us(f.p99_ns),
            ratio(f.p50_ns, floor.p50_ns)
        );
    }
    println!(
        "fd passing adds {:.2} us per round trip (p50, {:.2}x the fd-less message)",
        us(with_fd.p50_ns.saturating_sub(plain.p50_ns)),
        ratio(with_fd.p50_ns, plain.p50_ns)
    );
}
