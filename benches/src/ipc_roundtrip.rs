//! How much an ipc round trip costs next to the cheapest cross-process
//! wake-up this machine has.
//!
//! Three ping-pongs between this process and forked peers, taking turns in
//! interleaved rounds within one run:
//! - a bare eventfd ping-pong (write one eventfd, block on the other): the
//!   floor for "tell another process something and hear back";
//! - an `ipc::Channel` message each way, no descriptor;
//! - an `ipc::Channel` message each way, the request carrying one
//!   descriptor as SCM_RIGHTS (the receiver closes it).
//!
//! Prints the median and 99th percentile per round trip, and each ipc
//! figure as a ratio of the eventfd floor.
//!
//! AF_UNIX wakes its receiver synchronously, and where a sleeping vCPU is
//! slow to wake (nested virtualization) that dominates a round trip across
//! CPUs. `taskset -c 0 ipc-roundtrip` pins both ends to one CPU and shows
//! the cost of the code path itself; run both.
//!
//! Usage: ipc-roundtrip [ROUND_TRIPS]   (default 20000)

use std::os::fd::{AsRawFd, BorrowedFd};

use gpu_airlock_benches::{ipc_round_trips, ratio, start_ipc_peer, summarize, us, EventfdPeer};
use nix::sys::wait::waitpid;
use vmm_sys_util::eventfd::EventFd;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUND_TRIPS is a number"))
        .unwrap_or(20_000)
        .max(100); // at least 10 per round: fewer leaves rounds empty
    let peer = EventfdPeer::start();
    let (ch, ipc_child) = start_ipc_peer();
    let passed = EventFd::new(0).unwrap();
    // SAFETY: `passed` outlives every use of the borrowed descriptor.
    let passed_fd = unsafe { BorrowedFd::borrow_raw(passed.as_raw_fd()) };

    // The three take turns in rounds, so drift in this machine's
    // scheduling falls on each alike.
    const ROUNDS: usize = 10;
    let (mut floor, mut plain, mut with_fd) = (Vec::new(), Vec::new(), Vec::new());
    peer.round_trips(n / 10, &mut Vec::new());
    ipc_round_trips(&ch, None, n / 10, &mut Vec::new());
    for _ in 0..ROUNDS {
        peer.round_trips(n / ROUNDS, &mut floor);
        ipc_round_trips(&ch, None, n / ROUNDS, &mut plain);
        ipc_round_trips(&ch, Some(passed_fd), n / ROUNDS, &mut with_fd);
    }
    drop(ch);
    waitpid(ipc_child, None).unwrap();
    let (floor, plain, with_fd) = (summarize(floor), summarize(plain), summarize(with_fd));

    println!("ipc round trip between two processes, {n} round trips each, in {ROUNDS} interleaved rounds");
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
