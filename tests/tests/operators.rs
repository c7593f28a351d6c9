//! gpu-airlock under a supervisor, as operators run it: the systemd units
//! verify; `systemd-socket-activate` (systemd's own socket-activation
//! launcher) starts the broker with a listening socket in LISTEN_FDS and
//! the harness drives the device through it, while a notification socket
//! receives READY=1 and STOPPING=1; with stderr as the journal, every log
//! line carries its syslog priority; the man page renders.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tool the operators' tests need; CI installs it (`.ci/run`).
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: apt-get install systemd man-db (as .ci/run does)");
}

/// The packaged units, with ExecStart pointing at the binary built here.
fn units_in(dir: &Path) -> Vec<PathBuf> {
    let binary = binary("gpu-airlock");
    ["gpu-airlock@.socket", "gpu-airlock@.service"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(repo().join("packaging").join(name)).unwrap();
            let text = text.replace("/usr/bin/gpu-airlock", binary.to_str().unwrap());
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

#[test]
#[ignore = "needs systemd's tools (systemd-analyze, systemd-socket-activate) and man-db: tests/guest/prepare.sh"]
fn the_systemd_units_verify() {
    let dir = TempDir::new("units");
    let units = units_in(&dir.0);
    // --man=no: the man page is not installed here (the package test runs
    // the full check on the installed units).
    let out = Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (socket, path)
}

fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
#[ignore = "needs systemd's tools (systemd-analyze, systemd-socket-activate) and man-db: tests/guest/prepare.sh"]
fn socket_activation_serves_and_notifies_the_service_manager() {
    let dir = TempDir::new("activate");
    let socket = dir.0.join("gpu.sock");
    let (manager, notify) = notify_socket(&dir.0);
    let mut cmd = Command::new(tool("systemd-socket-activate"));
    cmd.arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify.display()))
        .arg("-E")
        .arg("RUST_LOG=info")
        .arg(binary("gpu-airlock"))
        .args(["--display", "640x480"]);
    let mut backend = Backend::spawn(cmd, TempDir::new("activate-backend"), socket.clone());
    // systemd-socket-activate starts the service on the first connection.
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut dev = Device::connect(&socket);
    assert_eq!(next_notification(&manager), "READY=1\n");
    assert!(backend
        .log
        .wait_for(
            &["ready on the socket it was given (systemd's"],
            Duration::from_secs(5)
        )
        .is_some());
    let (_, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
    let word = |o: usize| u32::from_le_bytes(resp[o..o + 4].try_into().unwrap());
    assert_eq!((word(32), word(36)), (640, 480));
    // The workers never see the supervisor's variables.
    let (gpu, render) = backend.worker_pids();
    for pid in [gpu, render] {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        for var in ["LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"] {
            assert!(!env.contains(var), "worker {pid} inherited {var}");
        }
    }
    drop(dev);
    // SAFETY: signalling our own child.
    unsafe { nix::libc::kill(backend.pid() as i32, nix::libc::SIGTERM) };
    assert_eq!(next_notification(&manager), "STOPPING=1\n");
    let status = backend.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{:#?}", backend.log.lines());
}

#[test]
#[ignore = "needs systemd's tools (systemd-analyze, systemd-socket-activate) and man-db: tests/guest/prepare.sh"]
fn socket_activation_and_socket_path_at_once_is_bad_input() {
    let dir = TempDir::new("activate-twice");
    let socket = dir.0.join("gpu.sock");
    let other = dir.0.join("other.sock");
    let mut cmd = Command::new(tool("systemd-socket-activate"));
    cmd.arg("-l")
        .arg(&socket)
        .arg(binary("gpu-airlock"))
        .arg("--socket-path")
        .arg(&other);
    let mut backend = Backend::spawn(cmd, TempDir::new("activate-twice-backend"), socket.clone());
    // The socket file exists once systemd-socket-activate has bound it,
    // a moment before it listens: connecting can be refused in between
    // (seen once in a full run).
    let mut conn = None;
    for _ in 0..200 {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let _conn = conn.expect("systemd-socket-activate listens");
    let status = backend.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2), "{:#?}", backend.log.lines());
    assert!(backend
        .log
        .wait_for(
            &["give only one of --socket-path, --fd"],
            Duration::from_secs(2)
        )
        .is_some());
    assert!(!other.exists(), "nothing left behind");
}

#[test]
fn with_stderr_as_the_journal_lines_carry_syslog_priorities() {
    let dir = TempDir::new("journal");
    let socket = dir.0.join("gpu.sock");
    let (read, write) = nix::unistd::pipe().unwrap();
    let st = nix::sys::stat::fstat(&write).unwrap();
    let mut child = Command::new(binary("gpu-airlock"))
        .arg("--socket-path")
        .arg(&socket)
        // Warns that the broker runs without namespaces.
        .args(["--sandbox", "none"])
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(std::fs::File::from(read)).lines() {
        let line = line.unwrap();
        eprintln!("[backend] {line}");
        let ready = line.contains("ready on");
        lines.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l.contains("ready on")), "{lines:#?}");
    for l in &lines {
        let priority = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "no syslog priority: {l}"
        );
        assert!(
            !l.contains("Z INFO") && !l.contains("Z WARN"),
            "own timestamp: {l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("--sandbox none")),
        "the warning is priority 4: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("<6>gpu-airlock ready")));
}

#[test]
#[ignore = "needs systemd's tools (systemd-analyze, systemd-socket-activate) and man-db: tests/guest/prepare.sh"]
fn the_man_page_renders() {
    let page = repo().join("packaging/gpu-airlock.1");
    let out = Command::new(tool("man"))
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // Without a terminal, man still marks bold and underline by
    // overstriking (c, backspace, c): keep the last of each.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l: {stderr}");
    assert!(stderr.trim().is_empty(), "man -l warns: {stderr}");
    for want in [
        "SYNOPSIS",
        "--socket-path",
        "--max-contexts",
        "SANDBOX",
        "EXIT STATUS",
        "vhost-user-gpu-pci",
        "libvirt",
        "crosvm",
        "systemd",
    ] {
        assert!(text.contains(want), "the man page lacks {want}");
    }
}
