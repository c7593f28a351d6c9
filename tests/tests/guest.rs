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
//! and builds. Without them each test says so loudly and returns, unless
//! GPU_AIRLOCK_REQUIRE_GUEST is set (as `.ci/run` sets it), when it fails.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{dies_with_parent, Backend, TempDir};

/// The display QEMU offers the guest (`xres`, `yres`): deliberately not
/// gpu-airlock's `--display`, to show whose answer the guest gets.
const WIDTH: usize = 640;
const HEIGHT: usize = 480;
const REFERENCE_BACKEND: &str = "/usr/lib/qemu/vhost-user-gpu";

fn guest_cache() -> PathBuf {
    std::env::var_os("GPU_AIRLOCK_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest-cache"))
}

/// The kernel and initramfs, or None (after saying why) if this machine
/// lacks them or QEMU.
fn guest_image() -> Option<(PathBuf, PathBuf)> {
    let cache = guest_cache();
    let (kernel, initrd) = (cache.join("vmlinuz"), cache.join("initramfs.cpio.gz"));
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let reference = Path::new(REFERENCE_BACKEND).exists();
    if qemu && reference && kernel.exists() && initrd.exists() {
        return Some((kernel, initrd));
    }
    let why = format!(
        "the real-guest tests need qemu-system-x86_64 ({}), {REFERENCE_BACKEND} ({}), and {} and \
         {} ({}): run `sudo tests/guest/prepare.sh` first",
        if qemu { "found" } else { "missing" },
        if reference { "found" } else { "missing" },
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
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED, NOT PASSED: {why} ***\n"
    );
    None
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

/// A booted guest: its QEMU, serial console and QMP monitor.
struct Guest {
    qemu: Child,
    console: mpsc::Receiver<String>,
    lines: Vec<String>,
    qmp: BufReader<UnixStream>,
    dir: TempDir,
}

impl Guest {
    fn boot(socket: &Path, kernel: &Path, initrd: &Path) -> Guest {
        let dir = TempDir::new("guest");
        let pattern_file = dir.0.join("pattern.raw");
        std::fs::write(&pattern_file, pattern()).unwrap();
        let qmp_path = dir.0.join("qmp.sock");
        let mut qemu = dies_with_parent(&mut Command::new("qemu-system-x86_64"))
            .args(["-accel", "tcg", "-machine", "q35,memory-backend=mem"])
            .args(["-m", "512", "-object"])
            .arg("memory-backend-memfd,id=mem,size=512M,share=on")
            .arg("-chardev")
            .arg(format!("socket,id=gpu,path={}", socket.display()))
            .arg("-device")
            .arg(format!(
                "vhost-user-gpu-pci,chardev=gpu,xres={WIDTH},yres={HEIGHT}"
            ))
            .arg("-fw_cfg")
            .arg(format!(
                "name=opt/gpu-airlock/pattern,file={}",
                pattern_file.display()
            ))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(["-display", "none", "-nodefaults", "-no-reboot"])
            .args(["-serial", "stdio", "-kernel"])
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
        let (tx, console) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[guest] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&qmp_path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("QMP socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let mut guest = Guest {
            qemu,
            console,
            lines: Vec::new(),
            qmp: BufReader::new(stream),
            dir,
        };
        guest.qmp_answer(); // the greeting
        guest.qmp(r#"{"execute": "qmp_capabilities"}"#);
        guest
    }

    /// The next QMP line that is not an event.
    fn qmp_answer(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.qmp.read_line(&mut line).expect("QMP answers");
            assert!(n > 0, "QEMU closed its QMP socket");
            if !line.contains("\"event\"") {
                return line;
            }
        }
    }

    fn qmp(&mut self, command: &str) -> String {
        let line = format!("{command}\n");
        self.qmp.get_mut().write_all(line.as_bytes()).unwrap();
        let answer = self.qmp_answer();
        assert!(
            answer.contains("\"return\""),
            "QMP {command} failed: {answer}"
        );
        answer
    }

    /// Console lines (without "GUEST: ") up to and including "done".
    fn wait_done(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        while let Ok(line) = self
            .console
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let done = line == "GUEST: done";
            self.lines.push(line);
            if done {
                break;
            }
        }
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("GUEST: "))
            .map(str::to_string)
            .collect()
    }

    /// The screen as RGB bytes, via QMP screendump (PPM).
    fn screen(&mut self) -> (usize, usize, Vec<u8>) {
        let file = self.dir.0.join("screen.ppm");
        let _ = std::fs::remove_file(&file);
        self.qmp(&format!(
            r#"{{"execute": "screendump", "arguments": {{"filename": "{}"}}}}"#,
            file.display()
        ));
        parse_ppm(&std::fs::read(&file).expect("screendump wrote its file"))
    }

    fn quit(mut self) -> Vec<String> {
        // QEMU may exit before its answer is read, or even sent.
        let _ = self.qmp.get_mut().write_all(b"{\"execute\": \"quit\"}\n");
        let _ = self.qemu.wait();
        while let Ok(line) = self.console.recv_timeout(Duration::from_secs(1)) {
            self.lines.push(line);
        }
        std::mem::take(&mut self.lines)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// A binary PPM (P6, maxval 255): width, height, RGB bytes.
fn parse_ppm(data: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while data[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !data[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&data[start..at]).unwrap().to_string());
    }
    assert_eq!(fields[0], "P6", "screendump is a binary PPM");
    assert_eq!(fields[3], "255");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = data[at + 1..].to_vec();
    assert_eq!(pixels.len(), w * h * 3, "PPM of {w}x{h}");
    (w, h, pixels)
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
    let (kernel, initrd) = guest_image().expect("checked by the caller");
    let mut guest = Guest::boot(socket, &kernel, &initrd);
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
    let refused: Vec<&String> = console
        .iter()
        .filter(|l| l.contains("*ERROR* response"))
        .collect();
    assert!(
        refused.is_empty(),
        "{who}: the guest's driver got error responses: {refused:?}"
    );
    console
}

#[test]
fn the_guest_framebuffer_reaches_qemu_through_gpu_airlock() {
    if guest_image().is_none() {
        return;
    }
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
fn control_the_same_guest_draws_through_qemus_own_backend() {
    if guest_image().is_none() {
        return;
    }
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
