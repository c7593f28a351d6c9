//! A real Linux guest: Debian's kernel under QEMU 10 (`-accel tcg`), its
//! virtio-gpu driver talking through `vhost-user-gpu-pci` to a vhost-user
//! GPU back-end. The guest's /init (tests/guest/init) reports on the serial
//! console what the driver found, then copies a pattern the test hands it
//! through fw_cfg into /dev/fb0; the test reads the screen back with QMP
//! `screendump` and compares it pixel by pixel.
//!
//! The same guest runs against QEMU's own C back-end
//! (/usr/lib/qemu/vhost-user-gpu) as a control: if that fails too, the
//! test set-up is wrong, not gpu-airlock.
//!
//! Needs QEMU and the guest image that `tests/guest/prepare.sh` installs
//! and builds. Without them each test, `#[ignore]`d for it, fails when run (`cargo test -- --include-ignored`, as
//! `.ci/run` does) and is listed as not run by a plain `cargo test`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::guest::{error_responses, qemu10, Boot, Guest, GuestImage};
use harness::{dies_with_parent, Backend, TempDir};

/// The display QEMU offers the guest (`xres`, `yres`): deliberately not
/// gpu-airlock's `--display`, to show whose answer the guest gets.
const WIDTH: usize = 640;
const HEIGHT: usize = 480;
const REFERENCE_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";

/// The kernel and initramfs, QEMU 10 and QEMU's own back-end, or None
/// (after saying why) where this machine lacks any of them.
fn guest_image() -> Option<GuestImage> {
    let image = GuestImage::find()?;
    qemu10()?;
    if !Path::new(REFERENCE_BACKEND).exists() {
        harness::guest::cannot_run(&format!(
            "the real-guest tests need {REFERENCE_BACKEND}: run `sudo tests/guest/prepare.sh`"
        ));
        return None;
    }
    Some(image)
}

/// What the guest copies into its framebuffer: XRGB8888 (bytes B, G, R, X),
/// a hash of each pixel's position, so a shifted row, a swapped channel or
/// a stale tile all show.
fn pattern() -> Vec<u8> {
    let mut out = Vec::with_capacity(WIDTH * HEIGHT * 4);
    for y in 0..HEIGHT as u32 {
        for x in 0..WIDTH as u32 {
            let v = x.wrapping_mul(0x9e37_79b1) ^ y.wrapping_mul(0x85eb_ca77);
            let v = v ^ (v >> 15);
            out.extend_from_slice(&[v as u8, (v >> 8) as u8, (v >> 16) as u8, 0]);
        }
    }
    out
}

/// Pixels of the screen that differ from the pattern, with the first few.
fn mismatches(screen: &[u8], pattern: &[u8]) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut first = Vec::new();
    for (i, (rgb, bgrx)) in screen.chunks(3).zip(pattern.chunks(4)).enumerate() {
        let want = [bgrx[2], bgrx[1], bgrx[0]];
        if rgb != want {
            count += 1;
            if first.len() < 5 {
                first.push(format!(
                    "({}, {}): {rgb:02x?} instead of {want:02x?}",
                    i % WIDTH,
                    i / WIDTH
                ));
            }
        }
    }
    (count, first)
}

/// Boots the guest against `socket`, checks what its driver found and that
/// the screen shows the pattern exactly; returns the whole console.
fn draw_and_compare(who: &str, socket: &Path) -> Vec<String> {
    let image = guest_image().expect("checked by the caller");
    let dir = TempDir::new("guest");
    let pattern_file = dir.0.join("pattern.raw");
    std::fs::write(&pattern_file, pattern()).unwrap();
    let boot = Boot {
        kernel: &image.kernel,
        initrd: &image.initrd,
        memory_mib: 512,
        socket,
        device: format!("vhost-user-gpu-pci,chardev=gpu,xres={WIDTH},yres={HEIGHT}"),
        append: "quiet",
        reboot: false,
        extra: vec![
            "-fw_cfg".into(),
            format!(
                "name=opt/gpu-airlock/pattern,file={}",
                pattern_file.display()
            )
            .into(),
        ],
    };
    let mut guest = Guest::boot(qemu10().expect("checked"), boot, dir);
    let lines = guest.wait_done();
    assert!(
        lines.last().is_some_and(|l| l == "done"),
        "{who}: the guest ran its /init to the end: {lines:?}"
    );
    let connector = lines
        .iter()
        .find(|l| l.starts_with("connector card0-Virtual-1"))
        .unwrap_or_else(|| panic!("{who}: the guest's driver made a connector: {lines:?}"));
    assert!(
        connector.contains(&format!("status=connected modes={WIDTH}x{HEIGHT},")),
        "{who}: the guest's preferred mode is QEMU's display ({WIDTH}x{HEIGHT}): {connector}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("fb0 size={WIDTH},{HEIGHT} stride={}", WIDTH * 4)),
        "{who}: the framebuffer is the mode's size: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "pattern drawn"),
        "{who}: the guest drew the pattern: {lines:?}"
    );

    // fbdev flushes what was written a few tens of ms later (deferred I/O):
    // read the screen until it matches, then judge the last read.
    let want = pattern();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (w, h, screen) = loop {
        let (w, h, screen) = guest.screen();
        if (w, h) == (WIDTH, HEIGHT) && mismatches(&screen, &want).0 == 0
            || Instant::now() > deadline
        {
            break (w, h, screen);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((w, h), (WIDTH, HEIGHT), "{who}: the screen's size");
    let (count, first) = mismatches(&screen, &want);
    assert_eq!(
        count,
        0,
        "{who}: {count} of {} pixels differ from the pattern, e.g. {first:?}",
        WIDTH * HEIGHT
    );
    let console = guest.quit();
    // Linux logs every error response its driver gets.
    let refused = error_responses(&console);
    assert!(
        refused.is_empty(),
        "{who}: the guest's driver got error responses: {refused:?}"
    );
    console
}

#[test]
#[ignore = "needs QEMU 10, its vhost-user-gpu and the test guest: tests/guest/prepare.sh"]
fn the_guest_framebuffer_reaches_qemu_through_gpu_airlock() {
    harness::guest::needed(guest_image());
    let backend = Backend::start(&["--display", "1152x864"]);
    draw_and_compare("gpu-airlock", &backend.socket);
    let log = backend.log.lines();
    assert!(
        !log.iter()
            .any(|l| l.contains("refused") || l.contains("failed")),
        "gpu-airlock refused nothing and no display request failed: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("EDID true")),
        "the broker did the protocol-feature handshake and got EDID: {log:#?}"
    );

    // QEMU has quit; the device serves the next front-end.
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

/// The control: QEMU's own back-end, same guest, same comparison.
#[test]
#[ignore = "needs QEMU 10, its vhost-user-gpu and the test guest: tests/guest/prepare.sh"]
fn control_the_same_guest_draws_through_qemus_own_backend() {
    harness::guest::needed(guest_image());
    let dir = TempDir::new("reference");
    let socket = dir.0.join("gpu.sock");
    let mut reference = dies_with_parent(&mut Command::new(REFERENCE_BACKEND))
        .arg(format!("--socket-path={}", socket.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start QEMU's vhost-user-gpu");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    draw_and_compare("QEMU's vhost-user-gpu (control)", &socket);
    let _ = reference.kill();
    let _ = reference.wait();
}
