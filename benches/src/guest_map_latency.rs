//! Map latency as a real guest sees it: Debian's 6.1 kernel under QEMU 11's
//! generic vhost-user device, where `virtgpu-check bench` times blob create
//! → map ioctl → mmap → first byte read (the kernel sends CREATE_BLOB and
//! MAP_BLOB, and mmap waits for the map's answer), and the unmap (munmap
//! and GEM_CLOSE; Linux sends UNMAP_BLOB and UNREF without waiting).
//!
//! TCG emulates the guest's CPU, so the guest's absolute figures are
//! context only: they are printed beside the same host path driven by the
//! harness (RESOURCE_CREATE_BLOB then RESOURCE_MAP_BLOB, each waited for)
//! in the same run, as a ratio.
//!
//! Needs tests/guest/prepare.sh (the kernel, QEMU 11) and weston.
//! Usage: cargo build --release --workspace && target/release/guest-map-latency [MAPS]  (default 300)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gpu_airlock_benches::{ratio, summarize, us};
use harness::blob_wire::*;
use harness::guest::{qemu11, Boot, Guest, GuestImage};
use harness::wayland::Weston;
use harness::*;

/// `p50_us=N` and friends from the guest's BENCH line.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .skip_while(|w| !w.starts_with(key))
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("MAPS is a number"))
        .unwrap_or(300);
    let (Some(image), Some(_), Some(weston)) = (GuestImage::find(), qemu11(), Weston::start())
    else {
        eprintln!("guest-map-latency needs tests/guest/prepare.sh and weston");
        std::process::exit(2);
    };
    let backend = Backend::start(&["--wayland-socket", &weston.arg()]);

    // The guest's figures.
    let dir = TempDir::new("guest-map-latency");
    let init = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/guest/init-blob");
    let check = binary("virtgpu-check");
    let initrd = image.with_files(&dir.0, &[("/init", &init), ("/bin/virtgpu-check", &check)]);
    let append = format!("quiet airlock.mode=bench airlock.bench={n}");
    let boot = Boot::qemu11(&image, &initrd, &backend.socket, &append, 512);
    let mut guest = Guest::boot(qemu11().unwrap(), boot, dir);
    let line = guest
        .wait_line(Duration::from_secs(600), |l| {
            l.starts_with("BENCH map") || l.contains("CHECK end FAIL")
        })
        .expect("the guest's benchmark finished");
    assert!(line.starts_with("BENCH map"), "{line}");
    drop(guest);

    // The same host path through the harness, on a fresh connection.
    let mut dev = Device::connect(&backend.socket);
    let (mut maps, mut unmaps) = (Vec::new(), Vec::new());
    let (_, _, _) = image_requirements(&mut dev, 64, 64);
    for i in 0..=n {
        let (blob_id, size, _) = more_image_requirements(&mut dev, 64, 64);
        let id = 1000 + i as u32;
        let t = Instant::now();
        assert_eq!(dev.answer(&host_blob(id, blob_id, size)), RESP_OK_NODATA);
        let (_, resp) = dev.control(&map_blob(id, 0), 64);
        let mapped = t.elapsed().as_nanos() as u64;
        assert_eq!(parse_hdr(&resp).0, RESP_OK_MAP_INFO);
        let t = Instant::now();
        let unmap = words(hdr(CMD_RESOURCE_UNMAP_BLOB, 0, None), &[id, 0]);
        assert_eq!(dev.answer(&unmap), RESP_OK_NODATA);
        assert_eq!(
            dev.answer(&cmd(CMD_RESOURCE_UNREF, &[id, 0])),
            RESP_OK_NODATA
        );
        let unmapped = t.elapsed().as_nanos() as u64;
        if i > 0 {
            maps.push(mapped);
            unmaps.push(unmapped);
        }
    }
    let (maps, unmaps) = (summarize(maps), summarize(unmaps));
    let g = |k: &str| (field(&line, k) * 1000.0) as u64;
    let (gm50, gm99) = (g("p50_us="), g("p99_us="));
    // The unmap fields follow the word "unmap".
    let unmap_part = line.split(" unmap ").nth(1).unwrap_or("");
    let (gu50, gu99) = (
        (field(unmap_part, "p50_us=") * 1000.0) as u64,
        (field(unmap_part, "p99_us=") * 1000.0) as u64,
    );
    println!(
        "blob map latency from a real guest (QEMU 11.1, TCG) beside the harness, {n} maps each"
    );
    println!(
        "{:<58} {:>9} {:>9} {:>12}",
        "", "p50 (us)", "p99 (us)", "p50/harness"
    );
    for (name, p50, p99, base) in [
        (
            "harness: CREATE_BLOB + MAP_BLOB, each answered",
            maps.p50_ns,
            maps.p99_ns,
            maps.p50_ns,
        ),
        (
            "guest: create + map ioctl + mmap + first byte",
            gm50,
            gm99,
            maps.p50_ns,
        ),
        (
            "harness: UNMAP_BLOB + UNREF, each answered",
            unmaps.p50_ns,
            unmaps.p99_ns,
            unmaps.p50_ns,
        ),
        (
            "guest: munmap + GEM_CLOSE (Linux does not wait)",
            gu50,
            gu99,
            unmaps.p50_ns,
        ),
    ] {
        println!(
            "{:<58} {:>9.1} {:>9.1} {:>12.2}",
            name,
            us(p50),
            us(p99),
            ratio(p50, base)
        );
    }
}
