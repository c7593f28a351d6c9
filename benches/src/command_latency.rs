//! What one virtio-gpu command costs end to end, and what the jail adds.
//!
//! The harness (the `vhost` crate's front-end, as in the tests) sends
//! GET_DISPLAY_INFO on the control queue and waits for the used-ring entry,
//! `n` times each, against four gpu-airlock instances in one run: no jail,
//! namespaces and landlock only, seccomp only, and the full jail (the
//! default). Beside them, a bare eventfd ping-pong between two processes: a
//! command needs at least one kick and one call, so that is its floor. All
//! five take turns in rounds, so scheduling drift on this machine falls on
//! each alike.
//!
//! Usage: cargo build --release --workspace &&
//!        target/release/command-latency [COMMANDS]   (default 5000)

use std::time::Instant;

use gpu_airlock_benches::{ratio, summarize, us, EventfdPeer, Figures};
use harness::{ctrl_hdr, Backend, Device, CMD_GET_DISPLAY_INFO};

/// Times `n` commands on `dev`, appending each round trip to `samples`.
fn time_commands(dev: &mut Device, n: usize, samples: &mut Vec<u64>) {
    let request = ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0);
    for _ in 0..n {
        let t = Instant::now();
        let (len, _) = dev.control(&request, 1024);
        samples.push(t.elapsed().as_nanos() as u64);
        assert!(len > 0);
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("COMMANDS is a number"))
        .unwrap_or(5000)
        .max(100); // at least 10 per round: fewer leaves rounds empty
                   // The floor's peer first, while this process has one thread (it forks).
    let peer = EventfdPeer::start();
    let configs: [(&str, &[&str]); 4] = [
        (
            "no jail (--sandbox none --seccomp none)",
            &["--sandbox", "none", "--seccomp", "none"],
        ),
        ("namespaces + landlock only", &["--seccomp", "none"]),
        ("seccomp only", &["--sandbox", "none"]),
        ("full jail (the default)", &[]),
    ];
    // All four run at once and take turns in rounds, so drift in this
    // machine's scheduling falls on each alike.
    let backends: Vec<Backend> = configs.iter().map(|(_, a)| Backend::start(a)).collect();
    let mut devices: Vec<Device> = backends
        .iter()
        .map(|b| Device::connect(&b.socket))
        .collect();
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(n); configs.len()];
    let mut floor_samples = Vec::with_capacity(n);
    for dev in devices.iter_mut() {
        time_commands(dev, n / 10, &mut Vec::new()); // warm-up, untimed
    }
    peer.round_trips(n / 10, &mut Vec::new());
    const ROUNDS: usize = 10;
    for _ in 0..ROUNDS {
        peer.round_trips(n / ROUNDS, &mut floor_samples);
        for (dev, s) in devices.iter_mut().zip(samples.iter_mut()) {
            time_commands(dev, n / ROUNDS, s);
        }
    }
    let floor = summarize(floor_samples);
    let results: Vec<(&str, Figures)> = configs
        .iter()
        .zip(samples)
        .map(|((name, _), s)| (*name, summarize(s)))
        .collect();

    println!("GET_DISPLAY_INFO round trip through gpu-airlock, {n} commands each");
    println!(
        "{:<44} {:>10} {:>10} {:>14} {:>12}",
        "", "p50 (us)", "p99 (us)", "p50 / eventfd", "/ no jail"
    );
    println!(
        "{:<44} {:>10.2} {:>10.2} {:>14.2} {:>12}",
        "eventfd ping-pong between processes (floor)",
        us(floor.p50_ns),
        us(floor.p99_ns),
        1.0,
        "-"
    );
    let base = results[0].1.p50_ns;
    for (name, f) in &results {
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>14.2} {:>12.2}",
            name,
            us(f.p50_ns),
            us(f.p99_ns),
            ratio(f.p50_ns, floor.p50_ns),
            ratio(f.p50_ns, base)
        );
    }
}
