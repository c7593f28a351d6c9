//! A Wayland round trip (wl_display.sync → wl_callback.done) from a guest
//! through gpu-airlock's cross-domain channel (gpu-worker, the jailed
//! render-worker's rutabaga, weston) against the same round trip straight
//! to weston over its socket, in one run, interleaved in rounds.
//!
//! Usage: cargo build --release --workspace && target/release/wayland-roundtrip [ROUND_TRIPS]  (default 2000)

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use gpu_airlock_benches::{ratio, summarize, us};
use harness::wayland::*;
use harness::*;

/// wl_display.sync(new id 2): a client's first new id must be 2, and the
/// id is free again once weston has deleted it.
fn sync() -> Vec<u8> {
    wl_msg(1, 0, &2u32.to_le_bytes())
}

/// Whether `events` hold callback 2's done and wl_display.delete_id(2).
fn finished(events: &[WlEvent]) -> bool {
    assert!(
        !events.iter().any(|e| e.object == 1 && e.opcode == 0),
        "weston reported a protocol error: {events:?}"
    );
    events.iter().any(|e| e.object == 2 && e.opcode == 0)
        && events
            .iter()
            .any(|e| e.object == 1 && e.opcode == 1 && e.u32_at(0) == 2)
}

fn direct_round_trip(stream: &mut UnixStream) -> u64 {
    let t = Instant::now();
    stream.write_all(&sync()).unwrap();
    let (mut buf, mut events) = (Vec::new(), Vec::new());
    while !finished(&events) {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "weston closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let parsed = wl_parse(&buf);
        let used: usize = parsed.iter().map(|e| 8 + e.args.len()).sum();
        buf.drain(..used);
        events.extend(parsed);
    }
    t.elapsed().as_nanos() as u64
}

fn airlock_round_trip(dev: &mut Device, channel: &mut WaylandChannel) -> u64 {
    let t = Instant::now();
    assert_eq!(channel.send(dev, &sync(), &[]), RESP_OK_NODATA);
    let mut events = Vec::new();
    while !finished(&events) {
        let bytes = channel
            .receive(dev, Duration::from_secs(10))
            .expect("weston answered");
        events.extend(wl_parse(&bytes));
    }
    t.elapsed().as_nanos() as u64
}

/// The same round trip as a guest proxy makes it: a POLL is already in
/// flight when the SEND goes, so the compositor's answer signals it at
/// once; the next POLL is made available after the answer is read (not
/// timed, as a proxy does it while the client works).
fn airlock_round_trip_polling(dev: &mut Device, channel: &mut WaylandChannel) -> u64 {
    let t = Instant::now();
    assert_eq!(channel.send(dev, &sync(), &[]), RESP_OK_NODATA);
    let mut events = Vec::new();
    let mut elapsed = 0;
    while !finished(&events) {
        let bytes = channel
            .receive_posted(dev, Duration::from_secs(10))
            .expect("weston answered");
        elapsed = t.elapsed().as_nanos() as u64;
        events.extend(wl_parse(&bytes));
        channel.post_poll(dev);
    }
    elapsed
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("ROUND_TRIPS is a number"))
        .unwrap_or(2000)
        .max(20);
    let Some(weston) = Weston::start() else {
        eprintln!("wayland-roundtrip needs weston (apt-get install weston)");
        std::process::exit(1);
    };
    // weston's shell and keyboard clients load their fonts and images for
    // a second or two after its socket appears (perf showed them taking a
    // fifth of both CPUs then): measuring during it put both paths under
    // that load, the direct one at 2x its settled round trip.
    std::thread::sleep(Duration::from_secs(3));
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);
    let mut dev = Device::connect(&backend.socket);
    let (mut channel, init) = WaylandChannel::open(&mut dev);
    assert_eq!(init, RESP_OK_NODATA, "INIT reached weston");
    let mut direct = UnixStream::connect(&weston.socket).unwrap();

    const ROUNDS: usize = 10;
    let (mut through, mut polling, mut straight) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        // Round 0 warms both paths up and is not counted.
        let per = if round == 0 { n / 10 } else { n / ROUNDS };
        for _ in 0..per {
            let a = airlock_round_trip(&mut dev, &mut channel);
            channel.post_poll(&mut dev);
            let p = airlock_round_trip_polling(&mut dev, &mut channel);
            // The POLL left in flight signals with the next answer: take
            // it with an empty round trip of its own kind before the
            // sequence above needs the control queue to itself.
            assert_eq!(channel.send(&mut dev, &sync(), &[]), RESP_OK_NODATA);
            let mut events = Vec::new();
            while !finished(&events) {
                let bytes = channel
                    .receive_posted(&mut dev, Duration::from_secs(10))
                    .expect("weston answered");
                events.extend(wl_parse(&bytes));
                if !finished(&events) {
                    channel.post_poll(&mut dev);
                }
            }
            let d = direct_round_trip(&mut direct);
            if round > 0 {
                through.push(a);
                polling.push(p);
                straight.push(d);
            }
        }
    }
    let (through, polling, straight) =
        (summarize(through), summarize(polling), summarize(straight));
    println!(
        "Wayland round trip (wl_display.sync -> wl_callback.done) to weston, {n} each in {ROUNDS} interleaved rounds"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>12}",
        "", "p50 (us)", "p99 (us)", "p50 / direct"
    );
    for (name, f) in [
        ("straight to weston's socket", &straight),
        ("guest -> gpu-airlock cross-domain -> weston", &through),
        ("  the same with a POLL in flight (a proxy)", &polling),
    ] {
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>12.2}",
            name,
            us(f.p50_ns),
            us(f.p99_ns),
            ratio(f.p50_ns, straight.p50_ns)
        );
    }
}
