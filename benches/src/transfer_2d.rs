//! Full frames through the 2D path: TRANSFER_TO_HOST_2D alone, and
//! TRANSFER_TO_HOST_2D + RESOURCE_FLUSH to a display, for gpu-airlock
//! (jailed, the default; and with no seccomp filter) and QEMU's own C
//! back-end (`/usr/lib/qemu/vhost-user-gpu`), all through the same harness
//! and the same display peer (the harness plays QEMU's display side and
//! composes every UPDATE into a framebuffer, as QEMU does). Beside them,
//! memcpy of the same bytes on this machine: a transfer is one copy, and
//! nothing that copies can beat it.
//!
//! Where the pixels of a flush travel: gpu-airlock's broker maps the
//! resource's sealed memfd read-only and copies the rectangle into the
//! UPDATE message it writes to the display socket; QEMU's back-end copies
//! it (pixman) into the message it writes. The same number of copies, one
//! more process hop (gpu-worker asks the broker, and waits).
//!
//! Usage: cargo build --release --workspace && target/release/transfer-2d [FRAMES]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use vm_memory::{Bytes, GuestAddress};

const QEMU_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";
/// Where the frame's backing starts in guest memory.
const FRAME_AT: u64 = 0x100_0000;

fn ok(dev: &mut Device, request: &[u8]) {
    let (_, resp) = dev.control(request, 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_NODATA,
        "command {:#x}",
        parse_hdr(request).0
    );
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median seconds per frame: (transfer alone, transfer + flush).
fn frame_seconds(dev: &mut Device, width: u32, height: u32, frames: usize) -> (f64, f64) {
    let bytes = width as u64 * height as u64 * 4;
    ok(dev, &cmd(CMD_RESOURCE_CREATE_2D, &[1, 1, width, height]));
    let pattern: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    dev.mem
        .write_slice(&pattern, GuestAddress(FRAME_AT))
        .unwrap();
    let mut attach = cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, 1]);
    attach.extend_from_slice(&FRAME_AT.to_le_bytes());
    attach.extend_from_slice(&(bytes as u32).to_le_bytes());
    attach.extend_from_slice(&0u32.to_le_bytes());
    ok(dev, &attach);
    ok(dev, &cmd(CMD_SET_SCANOUT, &[0, 0, width, height, 0, 1]));
    let transfer = cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, width, height, 0, 0, 1, 0]);
    let flush = cmd(CMD_RESOURCE_FLUSH, &[0, 0, width, height, 1, 0]);
    for _ in 0..3 {
        ok(dev, &transfer); // warm-up, untimed
        ok(dev, &flush);
    }
    // Interleaved, so both cases see the same machine.
    let (mut alone, mut flushed) = (Vec::new(), Vec::new());
    for _ in 0..frames {
        let t = Instant::now();
        ok(dev, &transfer);
        alone.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ok(dev, &transfer);
        ok(dev, &flush);
        flushed.push(t.elapsed().as_secs_f64());
    }
    ok(dev, &cmd(CMD_SET_SCANOUT, &[0, 0, 0, 0, 0, 0]));
    ok(dev, &cmd(CMD_RESOURCE_UNREF, &[1, 0]));
    (median(alone), median(flushed))
}

fn memcpy_seconds(bytes: usize, frames: usize) -> f64 {
    let src: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; bytes];
    for _ in 0..3 {
        dst.copy_from_slice(std::hint::black_box(&src)); // warm-up, untimed
    }
    let times: Vec<f64> = (0..frames)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(times)
}

struct QemuBackend {
    child: Child,
    socket: std::path::PathBuf,
    _dir: TempDir,
}

impl QemuBackend {
    fn start() -> Option<QemuBackend> {
        if !std::path::Path::new(QEMU_BACKEND).exists() {
            eprintln!(
                "*** {QEMU_BACKEND} not found (run tests/guest/prepare.sh): no QEMU column ***"
            );
            return None;
        }
        let dir = TempDir::new("qemu-vhost-user-gpu");
        let socket = dir.0.join("gpu.sock");
        let child = dies_with_parent(&mut Command::new(QEMU_BACKEND))
            .arg("--socket-path")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(QemuBackend {
            child,
            socket,
            _dir: dir,
        })
    }
}

impl Drop for QemuBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One back-end's connection, with a display on it.
fn measure(socket: &std::path::Path, sizes: &[(u32, u32)], frames: usize) -> Vec<(f64, f64)> {
    let mut dev = Device::connect_with_memory(socket, 64 << 20);
    let display = dev.set_display(DisplayConfig {
        modes: vec![sizes[0]],
        edid: true,
    });
    let out = sizes
        .iter()
        .map(|&(w, h)| frame_seconds(&mut dev, w, h, frames))
        .collect();
    let bad: Vec<_> = display
        .events()
        .into_iter()
        .filter(|e| matches!(e, display::Event::Bad(_)))
        .collect();
    assert!(
        bad.is_empty(),
        "the display understood every message: {bad:?}"
    );
    out
}

fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("FRAMES is a number"))
        .unwrap_or(30)
        .max(1);
    let airlock = Backend::start(&[]);
    let unfiltered = Backend::start(&["--seccomp", "none"]);
    let qemu = QemuBackend::start();

    const SIZES: [(u32, u32); 2] = [(1920, 1080), (3840, 2160)];
    // QEMU's backend serves one connection and exits: each backend gets one
    // connection for every frame size.
    let mut results: Vec<(&str, Vec<(f64, f64)>)> = vec![
        (
            "gpu-airlock (jailed)",
            measure(&airlock.socket, &SIZES, frames),
        ),
        (
            "gpu-airlock --seccomp none",
            measure(&unfiltered.socket, &SIZES, frames),
        ),
    ];
    if let Some(q) = &qemu {
        results.push(("QEMU vhost-user-gpu", measure(&q.socket, &SIZES, frames)));
    }

    println!(
        "full frames, median of {frames} each (after 3 untimed); T = TRANSFER_TO_HOST_2D, \
         T+F = T then RESOURCE_FLUSH to the display"
    );
    println!(
        "{:<11} {:<28} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "frame", "", "T fps", "T GB/s", "T/memcpy", "T+F fps", "T+F GB/s", "T+F/memcpy", "T+F/QEMU"
    );
    for (i, (w, h)) in SIZES.iter().enumerate() {
        let bytes = (w * h * 4) as usize;
        let gb = bytes as f64 / 1e9;
        let copy = memcpy_seconds(bytes, frames);
        let qemu_flushed = results
            .iter()
            .find(|(n, _)| n.starts_with("QEMU"))
            .map(|(_, r)| r[i].1);
        println!(
            "{:<11} {:<28} {:>9.1} {:>8.2} {:>9.2}",
            format!("{w}x{h}"),
            "memcpy of the same bytes",
            1.0 / copy,
            gb / copy,
            1.0
        );
        for (name, r) in &results {
            let (alone, flushed) = r[i];
            let vs_qemu = qemu_flushed.map_or("n/a".to_string(), |q| format!("{:.2}", q / flushed));
            println!(
                "{:<11} {:<28} {:>9.1} {:>8.2} {:>9.2} {:>9.1} {:>8.2} {:>9.2} {:>9}",
                format!("{w}x{h}"),
                name,
                1.0 / alone,
                gb / alone,
                copy / alone,
                1.0 / flushed,
                gb / flushed,
                copy / flushed,
                vs_qemu
            );
        }
    }
}
