//! A real Linux guest for the tests and benches: Debian's kernel and a
//! busybox initramfs (both from `tests/guest/prepare.sh`) under QEMU with
//! `-accel tcg`, its serial console read line by line, its QMP monitor
//! at hand.
//!
//! Two QEMUs: 10 from bookworm-backports (`vhost-user-gpu-pci`, with its
//! display socket) and 11.1 from trixie-backports, run from a trixie root
//! through `tests/guest/qemu11` (the generic `vhost-user-test-device-pci`,
//! with SHMEM, so blobs map into the guest).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{dies_with_parent, TempDir};

pub fn guest_cache() -> PathBuf {
    std::env::var_os("GPU_AIRLOCK_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest-cache"))
}

/// Says loudly why a peer (QEMU, weston, libvirt, the package) cannot be
/// had. The tests that need one are `#[ignore]`d with the reason, so a bare
/// `cargo test` lists them as not run; run with `--include-ignored` (as
/// `.ci/run` does), they fail through [`needed`].
pub fn cannot_run(why: &str) {
    // Straight to stderr: libtest hides what a passing test eprintln!s.
    let _ = writeln!(std::io::stderr().lock(), "\n*** CANNOT RUN: {why} ***\n");
}

/// The peer a test needs, or the test fails: the function that looked for
/// it said why (`cannot_run`).
pub fn needed<T>(peer: Option<T>) -> T {
    peer.expect(
        "a peer this test needs is missing (the line above says which); \
         tests/guest/prepare.sh installs them",
    )
}

/// The kernel and the base initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The image, or None (after [`cannot_run`]) where prepare.sh has not
    /// run.
    pub fn find() -> Option<GuestImage> {
        let cache = guest_cache();
        let image = GuestImage {
            kernel: cache.join("vmlinuz"),
            initrd: cache.join("initramfs.cpio.gz"),
        };
        if image.kernel.exists() && image.initrd.exists() {
            return Some(image);
        }
        cannot_run(&format!(
            "the real-guest tests need {} and {}: run `sudo tests/guest/prepare.sh` first",
            image.kernel.display(),
            image.initrd.display()
        ));
        None
    }

    /// The base initramfs with `files` (path in the guest, file on the
    /// host) appended as a second archive, which the kernel unpacks over
    /// the first: an `/init` there replaces busybox's script. Each
    /// program's shared libraries (as `ldd` finds them) come along at
    /// their own paths. Written into `dir`.
    pub fn with_files(&self, dir: &Path, files: &[(&str, &Path)]) -> PathBuf {
        let stage = dir.join("initramfs-extra");
        let _ = std::fs::remove_dir_all(&stage);
        let copy = |inside: &str, from: &Path| {
            let to = stage.join(inside.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, &to)
                .unwrap_or_else(|e| panic!("copy {} into the initramfs: {e}", from.display()));
        };
        for (inside, from) in files {
            copy(inside, from);
            let ldd = Command::new("ldd").arg(from).output().expect("run ldd");
            for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
                // "/lib64/ld-linux-x86-64.so.2 (0x...)".
                let lib = line
                    .split("=>")
                    .last()
                    .and_then(|s| s.split_whitespace().next())
                    .filter(|p| p.starts_with('/'));
                if let Some(lib) = lib {
                    copy(lib, Path::new(lib));
                }
            }
        }
        let extra = dir.join("extra.cpio");
        let archive = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
                stage.display(),
                extra.display()
            ))
            .status()
            .expect("run cpio");
        assert!(archive.success(), "cpio made the extra archive");
        let out = dir.join("initramfs.cpio");
        let mut all = std::fs::read(&self.initrd).unwrap();
        // The kernel finds a following uncompressed archive only at a
        // 4-byte boundary, and skips zeros before it.
        all.resize(all.len().next_multiple_of(512), 0);
        all.extend_from_slice(&std::fs::read(&extra).unwrap());
        std::fs::write(&out, all).unwrap();
        out
    }
}

/// QEMU 10 (the machine's own), or None (after [`cannot_run`]).
pub fn qemu10() -> Option<Command> {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(Command::new("qemu-system-x86_64"));
    }
    cannot_run("the real-guest tests need qemu-system-x86_64: run `sudo tests/guest/prepare.sh`");
    None
}

/// The QEMU 11 wrapper, or None (after [`cannot_run`]).
pub fn qemu11() -> Option<Command> {
    let wrapper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest/qemu11");
    let version = Command::new(&wrapper)
        .arg("--version")
        .env("GPU_AIRLOCK_GUEST_CACHE", guest_cache())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.contains("version 11.") {
        let mut cmd = Command::new(wrapper);
        cmd.env("GPU_AIRLOCK_GUEST_CACHE", guest_cache());
        return Some(cmd);
    }
    cannot_run(&format!(
        "the blob guest tests need QEMU 11 in {}: run `sudo tests/guest/prepare.sh` ({})",
        guest_cache().join("trixie").display(),
        if version.is_empty() {
            "not found".to_string()
        } else {
            version
        }
    ));
    None
}

/// How to boot: the machine's memory (shared memfd, as vhost-user needs),
/// the device, the kernel command line and any other QEMU arguments.
pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub memory_mib: u32,
    /// `-chardev socket,id=gpu,path=...` is added for this socket.
    pub socket: &'a Path,
    /// The `-device` argument, naming chardev `gpu`.
    pub device: String,
    /// Appended to `console=ttyS0 panic=-1`.
    pub append: &'a str,
    /// Whether a guest reboot (or QMP system_reset) restarts the guest
    /// rather than ending QEMU.
    pub reboot: bool,
    pub extra: Vec<OsString>,
}

/// QEMU 11's generic vhost-user device, as virtio-gpu (id 16, two queues,
/// the 16-byte virtio_gpu_config).
pub const QEMU11_GPU_DEVICE: &str =
    "vhost-user-test-device-pci,chardev=gpu,virtio-id=16,num_vqs=2,config_size=16";

impl<'a> Boot<'a> {
    /// A boot of `image`'s kernel with `initrd` on QEMU 11's generic
    /// device against `socket`, no reboot, nothing extra.
    pub fn qemu11(
        image: &'a GuestImage,
        initrd: &'a Path,
        socket: &'a Path,
        append: &'a str,
        memory_mib: u32,
    ) -> Boot<'a> {
        Boot {
            kernel: &image.kernel,
            initrd,
            memory_mib,
            socket,
            device: QEMU11_GPU_DEVICE.into(),
            append,
            reboot: false,
            extra: Vec::new(),
        }
    }
}

/// A booted guest: its QEMU, serial console and QMP monitor.
pub struct Guest {
    qemu: Child,
    console_in: Option<ChildStdin>,
    console: mpsc::Receiver<String>,
    /// Every console line read so far.
    pub lines: Vec<String>,
    qmp: BufReader<UnixStream>,
    pub dir: TempDir,
}

impl Guest {
    pub fn boot(mut qemu: Command, boot: Boot<'_>, dir: TempDir) -> Guest {
        let qmp_path = dir.0.join("qmp.sock");
        let mut cmd = dies_with_parent(&mut qemu);
        cmd = cmd
            .args(["-accel", "tcg", "-machine", "q35,memory-backend=mem"])
            .arg("-m")
            .arg(boot.memory_mib.to_string())
            .arg("-object")
            .arg(format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                boot.memory_mib
            ))
            .arg("-chardev")
            .arg(format!("socket,id=gpu,path={}", boot.socket.display()))
            .arg("-device")
            .arg(&boot.device)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(["-display", "none", "-nodefaults"])
            .args(["-serial", "stdio", "-kernel"])
            .arg(boot.kernel)
            .arg("-initrd")
            .arg(boot.initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 {}", boot.append))
            .args(&boot.extra);
        if !boot.reboot {
            cmd = cmd.arg("-no-reboot");
        }
        let mut qemu = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start QEMU");
        let stdout = qemu.stdout.take().unwrap();
        let stderr = qemu.stderr.take().unwrap();
        let console_in = qemu.stdin.take();
        let (tx, console) = mpsc::channel();
        // QEMU's own complaints join the console, marked "QEMU: ".
        let errors = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[qemu] {line}");
                if errors.send(format!("QEMU: {line}")).is_err() {
                    break;
                }
            }
        });
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
            console_in,
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

    /// A QMP command, which must succeed; its answer.
    pub fn qmp(&mut self, command: &str) -> String {
        let line = format!("{command}\n");
        self.qmp.get_mut().write_all(line.as_bytes()).unwrap();
        let answer = self.qmp_answer();
        assert!(
            answer.contains("\"return\""),
            "QMP {command} failed: {answer}"
        );
        answer
    }

    /// A human monitor command's output (QMP human-monitor-command).
    pub fn hmp(&mut self, command: &str) -> String {
        let answer = self.qmp(&format!(
            r#"{{"execute": "human-monitor-command", "arguments": {{"command-line": "{command}"}}}}"#
        ));
        answer
            .split_once("\"return\": \"")
            .map(|(_, rest)| rest.rsplit_once('"').map_or(rest, |(r, _)| r))
            .unwrap_or("")
            .replace("\\r", "")
            .replace("\\n", "\n")
            .replace("\\\"", "\"")
    }

    /// Types a line on the guest's serial console.
    pub fn type_line(&mut self, line: &str) {
        let input = self.console_in.as_mut().expect("the console's input");
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
        input.flush().unwrap();
    }

    /// Reads the console until a line satisfies `done` (which it returns)
    /// or `timeout` passes (None).
    pub fn wait_line(&mut self, timeout: Duration, done: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self
            .console
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let hit = done(&line);
            self.lines.push(line.clone());
            if hit {
                return Some(line);
            }
        }
        None
    }

    /// Console lines (without "GUEST: ") up to and including "done".
    pub fn wait_done(&mut self) -> Vec<String> {
        self.wait_line(Duration::from_secs(180), |l| l == "GUEST: done");
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("GUEST: "))
            .map(str::to_string)
            .collect()
    }

    /// The screen as RGB bytes, via QMP screendump (PPM).
    pub fn screen(&mut self) -> (usize, usize, Vec<u8>) {
        let file = self.dir.0.join("screen.ppm");
        let _ = std::fs::remove_file(&file);
        self.qmp(&format!(
            r#"{{"execute": "screendump", "arguments": {{"filename": "{}"}}}}"#,
            file.display()
        ));
        parse_ppm(&std::fs::read(&file).expect("screendump wrote its file"))
    }

    /// Ends QEMU and returns the whole console.
    pub fn quit(mut self) -> Vec<String> {
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

/// Linux logs every error response its virtio-gpu driver gets.
pub fn error_responses(console: &[String]) -> Vec<&String> {
    console
        .iter()
        .filter(|l| l.contains("*ERROR* response"))
        .collect()
}

/// What QEMU itself wrote to its stderr (in the console as "QEMU: ").
pub fn qemu_complaints(console: &[String]) -> Vec<&String> {
    console.iter().filter(|l| l.starts_with("QEMU: ")).collect()
}

/// A binary PPM (P6, maxval 255): width, height, RGB bytes.
pub fn parse_ppm(data: &[u8]) -> (usize, usize, Vec<u8>) {
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

/// Whether the gpu-airlock Debian package is installed (the package and
/// libvirt tests run what dpkg put in place). Where it is not, says so
/// loudly.
pub fn package_installed() -> bool {
    let ok = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "gpu-airlock"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if ok {
        return true;
    }
    cannot_run(
        "the gpu-airlock package is not installed (cargo build --release --workspace && \
         cargo deb -p gpu-airlock --no-build && dpkg -i target/debian/gpu-airlock_*.deb, as \
         .ci/run does)",
    );
    false
}
