//! Frames through the guest proxy: `wl-pattern bench` in a real guest
//! (Debian's 6.1 kernel under QEMU 11's generic vhost-user device), talking
//! to `gpu-airlock-guest`, drawing into the host's weston (pixman) through
//! gpu-airlock. Each frame changes a square (64x64, or the whole buffer),
//! damages it, commits and round-trips.
//!
//! Printed per size and damage: the guest's frames per second beside the
//! same client run on the host straight to weston in the same run (TCG
//! emulates the guest's CPU, so the ratio is context, not a target); the
//! proxy's CPU time per frame; and the bytes it copied per frame beside
//! the damage's bytes (the first use of each of the client's two buffers
//! copies it whole; the steady frames after must copy the damage alone).
//!
//! Needs tests/guest/prepare.sh (the kernel, QEMU 11) and weston.
//! Usage: cargo build --release --workspace && target/release/guest-wayland-fps [FRAMES]  (default 30)

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::guest::{qemu11, Boot, Guest, GuestImage};
use harness::wayland::Weston;
use harness::*;

const CASES: [(u32, u32, &str); 4] = [
    (512, 512, "full"),
    (512, 512, "64"),
    (1920, 1080, "full"),
    (1920, 1080, "64"),
];

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// The number before `word` in `line` ("12 commits" -> 12).
fn before(line: &str, word: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(',') == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no number before {word} in {line}"))
}

fn main() {
    let frames: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("FRAMES is a number"))
        .unwrap_or(30);
    let (Some(image), Some(_), Some(weston)) = (
        GuestImage::find(),
        qemu11(),
        Weston::start_with(&["--use-pixman"]),
    ) else {
        eprintln!("guest-wayland-fps needs tests/guest/prepare.sh and weston");
        std::process::exit(2);
    };
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);
    let client = binary("wl-pattern");

    // The same client on the host, straight to weston.
    let mut host_fps = Vec::new();
    for (w, h, damage) in CASES {
        let out = Command::new(&client)
            .args([
                "bench",
                &w.to_string(),
                &h.to_string(),
                &frames.to_string(),
                damage,
            ])
            .env("XDG_RUNTIME_DIR", weston.socket.parent().unwrap())
            .env("WAYLAND_DISPLAY", &weston.socket)
            .output()
            .expect("run wl-pattern on the host");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("BENCH wayland"))
            .unwrap_or_else(|| {
                panic!(
                    "wl-pattern on the host: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        host_fps.push(field(line, "fps="));
    }

    let dir = TempDir::new("guest-wayland-fps");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let init = root.join("tests/guest/init-wayland");
    let proxy = binary("gpu-airlock-guest");
    let initrd = image.with_files(
        &dir.0,
        &[
            ("/init", &init),
            ("/bin/gpu-airlock-guest", &proxy),
            ("/bin/wl-pattern", &client),
        ],
    );
    let append = format!("quiet airlock.mode=bench airlock.frames={frames}");
    let boot = Boot::qemu11(&image, &initrd, &backend.socket, &append, 1024);
    let mut guest = Guest::boot(qemu11().unwrap(), boot, dir);
    guest
        .wait_line(Duration::from_secs(1200), |l| {
            l.contains("GUEST: proxy exit")
        })
        .expect("the guest's benchmark finished");
    let console = guest.quit();
    let benches: Vec<&String> = console
        .iter()
        .filter(|l| l.starts_with("BENCH wayland"))
        .collect();
    // One client per case, in order: client 1, 2, ...
    let stats: Vec<&String> = console
        .iter()
        .filter(|l| l.contains("bytes copied"))
        .collect();
    assert_eq!(benches.len(), CASES.len(), "{console:#?}");
    assert_eq!(stats.len(), CASES.len(), "{console:#?}");

    println!("wl-pattern through gpu-airlock-guest in a real guest (QEMU 11.1, TCG), {frames} frames a case");
    println!(
        "{:<16} {:>10} {:>10} {:>8} {:>14} {:>16} {:>14} {:>8}",
        "case",
        "guest fps",
        "host fps",
        "ratio",
        "proxy us/frame",
        "copied/frame",
        "damage bytes",
        "ratio"
    );
    for (i, (w, h, damage)) in CASES.iter().enumerate() {
        let fps = field(benches[i], "fps=");
        let commits = before(stats[i], "commits");
        let copied = before(stats[i], "bytes");
        let cpu = before(stats[i], "us");
        let side = |d: &str, full: u32| d.parse::<u32>().map_or(full, |d| d.min(full));
        let damage_bytes = f64::from(side(damage, *w) * side(damage, *h) * 4);
        let whole = f64::from(w * h * 4);
        // Two whole copies (each buffer's first use), then the steady frames.
        let steady = (copied - 2.0 * whole) / f64::from(frames - 1);
        println!(
            "{:<16} {:>10.1} {:>10.1} {:>8.3} {:>14.0} {:>16.0} {:>14.0} {:>8.3}",
            format!("{w}x{h} {damage}"),
            fps,
            host_fps[i],
            fps / host_fps[i],
            cpu / commits,
            steady,
            damage_bytes,
            steady / damage_bytes
        );
    }
}
