//! A real Linux guest: Debian's kernel under QEMU 10 (`-accel tcg`), its
//! virtio-gpu driver talking through `vhost-user-gpu-pci` to the jailed
//! three-process gpu-airlock. The guest's /init (tests/guest/init) reports
//! on the serial console what the driver found; the kernel reports there
//! every error response its driver gets.
//!
//! Needs QEMU and the guest image that `tests/guest/prepare.sh` installs
//! and builds. Without them the test says so loudly and returns, unless
//! GPU_AIRLOCK_REQUIRE_GUEST is set (as `.ci/run` sets it), when it fails.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::Backend;

fn guest_cache() -> PathBuf {
    std::env::var_os("GPU_AIRLOCK_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest-cache"))
}

/// The kernel and initramfs, or None (after saying why) if this machine
/// lacks them.
fn guest_image() -> Option<(PathBuf, PathBuf)> {
    let cache = guest_cache();
    let (kernel, initrd) = (cache.join("vmlinuz"), cache.join("initramfs.cpio.gz"));
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if qemu && kernel.exists() && initrd.exists() {
        return Some((kernel, initrd));
    }
    let why = format!(
        "the real-guest test needs qemu-system-x86_64 ({}) and {} and {} ({}): run \
         `sudo tests/guest/prepare.sh` first",
        if qemu { "found" } else { "missing" },
        kernel.display(),
        initrd.display(),
        if kernel.exists() && initrd.exists() {
            "found"
        } else {
            "missing"
        }
    );
    if std::env::var_os("GPU_AIRLOCK_REQUIRE_GUEST").is_some() {
        panic!("{why}");
    }
    // Straight to stderr: libtest hides what a passing test eprintln!s.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED, NOT PASSED: {why} ***\n"
    );
    None
}

/// Boots the guest against `socket`; returns everything it printed.
fn boot_guest(socket: &std::path::Path, kernel: &PathBuf, initrd: &PathBuf) -> Vec<String> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-machine",
            "q35,memory-backend=mem",
            "-m",
            "512",
        ])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-chardev",
        ])
        .arg(format!("socket,id=gpu,path={}", socket.display()))
        .args(["-device", "vhost-user-gpu-pci,chardev=gpu"])
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-x86_64");
    let stdout = qemu.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[guest] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line == "GUEST: done";
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    lines
}

#[test]
fn linux_virtio_gpu_driver_reads_the_configured_display() {
    let Some((kernel, initrd)) = guest_image() else {
        return;
    };
    let backend = Backend::start(&["--display", "1152x864"]);
    let console = boot_guest(&backend.socket, &kernel, &initrd);
    let lines: Vec<&str> = console
        .iter()
        .filter_map(|l| l.strip_prefix("GUEST: "))
        .collect();
    assert!(
        lines.last().is_some_and(|l| *l == "done"),
        "the guest ran its /init to the end: {lines:?}"
    );
    let connector = lines
        .iter()
        .find(|l| l.starts_with("connector card0-Virtual-1"))
        .unwrap_or_else(|| panic!("the guest's virtio-gpu driver made a connector: {lines:?}"));
    assert!(
        connector.contains("status=connected modes=1152x864,"),
        "the guest's preferred mode is the --display size (GET_DISPLAY_INFO, GET_EDID): {connector}"
    );

    // The driver's framebuffer set-up (RESOURCE_CREATE_2D, ATTACH_BACKING,
    // TRANSFER_TO_HOST_2D, SET_SCANOUT, RESOURCE_FLUSH) was all accepted:
    // Linux logs every error response it gets.
    let refused: Vec<&String> = console
        .iter()
        .filter(|l| l.contains("*ERROR* response"))
        .collect();
    assert!(
        refused.is_empty(),
        "the guest's driver got error responses: {refused:?}"
    );
    assert!(
        !backend.log.lines().iter().any(|l| l.contains("refused")),
        "the device refused none of the guest's commands: {:#?}",
        backend.log.lines()
    );

    // The guest has powered off; the device serves the next front-end.
    assert!(backend
        .log
        .wait_for(&["front-end disconnected"], Duration::from_secs(10))
        .is_some());
    let mut dev = harness::Device::connect(&backend.socket);
    let (len, _) = dev.control(
        &harness::ctrl_hdr(harness::CMD_GET_DISPLAY_INFO, 0, 0),
        1024,
    );
    assert!(len > 0);
}
