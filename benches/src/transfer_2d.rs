//! Full-frame TRANSFER_TO_HOST_2D throughput: gpu-airlock (jailed, the
//! default) against QEMU's own C backend (`/usr/lib/qemu/vhost-user-gpu`)
//! through the same harness, beside memcpy of the same bytes on this
//! machine (the physical limit a transfer, which is a copy, cannot beat).
//!
//! Flushes are left out: gpu-airlock does not yet send frames to a display
//! socket, and QEMU's backend needs a display-socket peer for them.
//!
//! Usage: cargo build --release --workspace && target/release/transfer-2d [FRAMES]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use vm_memory::{Bytes, GuestAddress};

const QEMU_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";
/// Where the frame's backing starts in guest memory.
const FRAME_AT: u64 = 0x100_0000;

fn cmd(type_: u32, body: &[u32]) -> Vec<u8> {
    let mut v = ctrl_hdr(type_, 0, 0);
    for w in body {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

fn ok(dev: &mut Device, request: &[u8]) {
    let (_, resp) = dev.control(request, 64);
    assert_eq!(
        parse_hdr(&resp).0,
        RESP_OK_NODATA,
        "command {:#x}",
        parse_hdr(request).0
    );
}

/// Seconds per full-frame transfer, median of `frames`.
fn transfer_seconds(dev: &mut Device, width: u32, height: u32, frames: usize) -> f64 {
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
    let transfer = cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, width, height, 0, 0, 1, 0]);
    for _ in 0..3 {
        ok(dev, &transfer); // warm-up, untimed
    }
    let mut times: Vec<f64> = (0..frames)
        .map(|_| {
            let t = Instant::now();
            ok(dev, &transfer);
            t.elapsed().as_secs_f64()
        })
        .collect();
    ok(dev, &cmd(CMD_RESOURCE_UNREF, &[1, 0]));
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn memcpy_seconds(bytes: usize, frames: usize) -> f64 {
    let src: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; bytes];
    for _ in 0..3 {
        dst.copy_from_slice(std::hint::black_box(&src)); // warm-up, untimed
    }
    let mut times: Vec<f64> = (0..frames)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
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
        let child = Command::new(QEMU_BACKEND)
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

fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("FRAMES is a number"))
        .unwrap_or(30)
        .max(1);
    let mem_size = 64 << 20;
    let airlock = Backend::start(&[]);
    let unfiltered = Backend::start(&["--seccomp", "none"]);
    let qemu = QemuBackend::start();

    const SIZES: [(u32, u32); 2] = [(1920, 1080), (3840, 2160)];
    // QEMU's backend serves one connection and exits: each backend gets one
    // connection for every frame size.
    let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut dev = Device::connect_with_memory(&airlock.socket, mem_size);
    results.push((
        "gpu-airlock (jailed)",
        SIZES
            .iter()
            .map(|&(w, h)| transfer_seconds(&mut dev, w, h, frames))
            .collect(),
    ));
    drop(dev);
    let mut dev = Device::connect_with_memory(&unfiltered.socket, mem_size);
    results.push((
        "gpu-airlock --seccomp none",
        SIZES
            .iter()
            .map(|&(w, h)| transfer_seconds(&mut dev, w, h, frames))
            .collect(),
    ));
    drop(dev);
    if let Some(q) = &qemu {
        let mut dev = Device::connect_with_memory(&q.socket, mem_size);
        results.push((
            "QEMU vhost-user-gpu",
            SIZES
                .iter()
                .map(|&(w, h)| transfer_seconds(&mut dev, w, h, frames))
                .collect(),
        ));
    }

    println!("full-frame TRANSFER_TO_HOST_2D, median of {frames} frames each (after 3 untimed)");
    println!(
        "{:<11} {:<28} {:>10} {:>10} {:>12}",
        "frame", "", "frames/s", "GB/s", "/ memcpy"
    );
    for (i, (w, h)) in SIZES.iter().enumerate() {
        let bytes = (w * h * 4) as usize;
        let gb = bytes as f64 / 1e9;
        let copy = memcpy_seconds(bytes, frames);
        let mut rows = vec![("memcpy of the same bytes", copy)];
        rows.extend(results.iter().map(|(name, secs)| (*name, secs[i])));
        for (name, secs) in rows {
            println!(
                "{:<11} {:<28} {:>10.1} {:>10.2} {:>12.2}",
                format!("{w}x{h}"),
                name,
                1.0 / secs,
                gb / secs,
                copy / secs
            );
        }
    }
}
