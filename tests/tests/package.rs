//! The Debian package, installed (`.ci/run` builds it with `cargo deb` and
//! installs it with `dpkg -i` before the tests): every file where Debian
//! and libvirt look for it, the installed broker finds its workers in
//! /usr/libexec/gpu-airlock/ and serves the harness, the descriptor names
//! the installed binary, and the installed units pass `systemd-analyze
//! verify` with their man page; the same package installed in a Debian 13
//! root serves there. Without the package these tests, `#[ignore]`d for
//! it, fail when run (`--include-ignored`, as `.ci/run` does).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::*;
use vm_memory::{Bytes, GuestAddress};

const BROKER: &str = "/usr/bin/gpu-airlock";

fn installed() -> bool {
    harness::guest::package_installed()
}

#[test]
#[ignore = "needs the gpu-airlock package installed (.ci/run builds and installs it)"]
fn the_package_puts_each_file_where_it_is_looked_for() {
    assert!(installed(), "the package is not installed (see above)");
    let out = Command::new("dpkg")
        .args(["-L", "gpu-airlock"])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&out.stdout);
    for want in [
        BROKER,
        "/usr/libexec/gpu-airlock/gpu-airlock-gpu-worker",
        "/usr/libexec/gpu-airlock/gpu-airlock-render-worker",
        "/usr/share/qemu/vhost-user/50-gpu-airlock.json",
        "/usr/lib/systemd/system/gpu-airlock@.socket",
        "/usr/lib/systemd/system/gpu-airlock@.service",
        "/usr/share/doc/gpu-airlock/copyright",
    ] {
        assert!(
            files.lines().any(|l| l == want),
            "{want} not in the package: {files}"
        );
        assert!(Path::new(want).exists(), "{want} not installed");
    }
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("/usr/share/man/man1/gpu-airlock.1")),
        "no man page: {files}"
    );
    // The workers are not commands: nothing else in /usr/bin.
    let bins: Vec<_> = files
        .lines()
        .filter(|l| l.starts_with("/usr/bin/"))
        .collect();
    assert_eq!(bins, [BROKER]);
}

#[test]
#[ignore = "needs the gpu-airlock package installed (.ci/run builds and installs it)"]
fn the_descriptor_names_the_installed_binary_and_its_capabilities() {
    assert!(installed(), "the package is not installed (see above)");
    let text = std::fs::read_to_string("/usr/share/qemu/vhost-user/50-gpu-airlock.json").unwrap();
    assert!(text.contains("\"type\": \"gpu\""), "{text}");
    assert!(
        text.contains(&format!("\"binary\": \"{BROKER}\"")),
        "{text}"
    );
    let out = Command::new(BROKER)
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    let caps = String::from_utf8_lossy(&out.stdout);
    assert!(
        caps.contains("\"type\": \"gpu\"") && caps.contains("\"edid\""),
        "{caps}"
    );
}

#[test]
#[ignore = "needs the gpu-airlock package installed (.ci/run builds and installs it)"]
fn the_installed_broker_finds_its_workers_and_serves() {
    assert!(installed(), "the package is not installed (see above)");
    let dir = TempDir::new("installed");
    let socket = dir.0.join("gpu.sock");
    let mut cmd = Command::new(BROKER);
    cmd.arg("--socket-path").arg(&socket);
    let backend = Backend::spawn(cmd, dir, socket.clone());
    backend.wait_ready();
    let mut dev = Device::connect(&socket);
    let (_, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
    let (gpu, render) = backend.worker_pids();
    for (pid, name) in [
        (gpu, "gpu-airlock-gpu-worker"),
        (render, "gpu-airlock-render-worker"),
    ] {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, Path::new("/usr/libexec/gpu-airlock").join(name));
    }
}

#[test]
#[ignore = "needs the gpu-airlock package installed (.ci/run builds and installs it)"]
fn the_installed_units_verify_with_their_man_page() {
    assert!(installed(), "the package is not installed (see above)");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args([
            "/usr/lib/systemd/system/gpu-airlock@.socket",
            "/usr/lib/systemd/system/gpu-airlock@.service",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

/// The trixie root (tests/guest/prepare.sh), if the package is installed
/// in it (`.ci/run` installs the same .deb there with `dpkg -i`).
fn trixie_with_package() -> Option<std::path::PathBuf> {
    let root = harness::guest::guest_cache().join("trixie");
    let ok = Command::new("chroot")
        .arg(&root)
        .args(["dpkg-query", "-W", "-f=${Status}", "gpu-airlock"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if ok {
        return Some(root);
    }
    let why = format!(
        "the gpu-airlock package is not installed in the Debian 13 root {} (cp the .deb into \
         its /tmp and chroot it dpkg -i, as .ci/run does)",
        root.display()
    );
    harness::guest::cannot_run(&why);
    None
}

/// The children of a process, by pid.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The package built on Debian 12, installed on Debian 13 (glibc 2.41)
/// with dpkg and started there (a root entered with pivot_root, where its
/// own jail can make its namespaces): it serves a front-end a 2D frame
/// with every process jailed, on that root's C library.
#[test]
#[ignore = "needs the package installed in the Debian 13 root and bubblewrap (.ci/run)"]
fn the_package_built_on_debian_12_serves_on_debian_13() {
    let root = harness::guest::needed(trixie_with_package());
    let dir = TempDir::new("trixie-package");
    let socket = dir.0.join("gpu.sock");
    let in_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libc/in-root");
    let mut launcher = Command::new(in_root);
    launcher
        .arg(&root)
        .arg(&dir.0)
        .arg(BROKER)
        .arg("--socket-path")
        .arg(&socket);
    let backend = Backend::spawn(launcher, dir, socket.clone());
    backend.wait_ready();
    for process in ["broker", "gpu-worker", "render-worker"] {
        assert!(
            backend
                .log
                .lines()
                .iter()
                .any(|l| l.contains(&format!("{process}: jailed in new user"))),
            "{process} is jailed on Debian 13: {:#?}",
            backend.log.lines()
        );
    }
    // A frame to QEMU's display: the broker's display thread (fstat of the
    // resource's memfd) is what glibc 2.41 killed first.
    let (mut dev, display) = Device::connect_with_display(
        &socket,
        DisplayConfig {
            modes: vec![(64, 48)],
            edid: true,
        },
    );
    let (_, resp) = dev.control(&ctrl_hdr(CMD_GET_DISPLAY_INFO, 0, 0), 1024);
    assert_eq!(parse_hdr(&resp).0, RESP_OK_DISPLAY_INFO);
    // B8G8R8X8 is the display's own byte order: it shows these bytes.
    let pixels: Vec<u8> = (0..64 * 48 * 4u32)
        .map(|i| (i * 7 % 251) as u8 | 3)
        .collect();
    let at = 0x40_0000u64;
    dev.mem.write_slice(&pixels, GuestAddress(at)).unwrap();
    let mut attach = cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, 1]);
    attach.extend_from_slice(&at.to_le_bytes());
    attach.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    attach.extend_from_slice(&0u32.to_le_bytes());
    for request in [
        cmd(CMD_RESOURCE_CREATE_2D, &[1, 2, 64, 48]),
        attach,
        cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 48, 0, 0, 1, 0]),
        cmd(CMD_SET_SCANOUT, &[0, 0, 64, 48, 0, 1]),
        cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 48, 1, 0]),
    ] {
        assert_eq!(dev.answer(&request), RESP_OK_NODATA);
    }
    display.wait_for(Duration::from_secs(10), |e| {
        e.iter()
            .any(|e| matches!(e, harness::display::Event::Update { .. }))
    });
    let shown = display.surface(0).expect("scanout 0 is shown").pixels;
    let want: Vec<u8> = pixels
        .chunks(4)
        .flat_map(|p| [p[0], p[1], p[2], 0xff])
        .collect();
    let got: Vec<u8> = shown
        .chunks(4)
        .flat_map(|p| [p[0], p[1], p[2], 0xff])
        .collect();
    assert_eq!(got, want, "the frame reaches the display");
    // bubblewrap's child is the broker; every process of the device maps
    // Debian 13's C library, from the root's own /usr/lib.
    let broker = *children(backend.pid())
        .first()
        .expect("the broker runs under bubblewrap");
    let mut processes = vec![broker];
    processes.extend(children(broker));
    assert_eq!(processes.len(), 3, "the broker and its two workers");
    let libc = std::fs::canonicalize(root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    for pid in processes {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let mapped = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.ends_with("/libc.so.6"))
            .unwrap_or_else(|| panic!("process {pid} maps no libc.so.6"));
        assert_eq!(
            std::fs::canonicalize(root.join(mapped.trim_start_matches('/'))).unwrap(),
            libc,
            "process {pid} maps {mapped}"
        );
    }
    assert!(
        !backend.log.lines().iter().any(|l| l.contains("SIGSYS")),
        "{:#?}",
        backend.log.lines()
    );
}

const GUEST: &str = "/usr/bin/gpu-airlock-guest";

fn guest_installed() -> bool {
    let ok = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "gpu-airlock-guest"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if !ok {
        harness::guest::cannot_run(
            "the gpu-airlock-guest package is not installed (tests/install-package)",
        );
    }
    ok
}

/// The guest package: the proxy, a systemd user socket unit on
/// $XDG_RUNTIME_DIR/wayland-0 enabled for every user's session, and
/// WAYLAND_DISPLAY for the session's applications; its units verify.
#[test]
#[ignore = "needs the gpu-airlock-guest package installed (tests/install-package, as .ci/run does)"]
fn the_guest_package_gives_every_session_its_wayland_socket() {
    assert!(guest_installed());
    let out = Command::new("dpkg")
        .args(["-L", "gpu-airlock-guest"])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&out.stdout);
    for want in [
        GUEST,
        "/usr/lib/systemd/user/gpu-airlock-guest.socket",
        "/usr/lib/systemd/user/gpu-airlock-guest.service",
        "/usr/lib/environment.d/60-gpu-airlock-guest.conf",
        "/etc/profile.d/gpu-airlock-guest.sh",
    ] {
        assert!(files.lines().any(|l| l == want), "{want}: {files}");
    }
    let env = std::fs::read_to_string("/usr/lib/environment.d/60-gpu-airlock-guest.conf").unwrap();
    assert!(
        env.lines().any(|l| l == "WAYLAND_DISPLAY=wayland-0"),
        "{env}"
    );
    // Enabled for every user, as dh_installsystemduser enables user units.
    assert!(
        Path::new("/etc/systemd/user/sockets.target.wants/gpu-airlock-guest.socket").exists(),
        "the socket unit is enabled for every user"
    );
    let runtime = TempDir::new("user-runtime");
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .args([
            "/usr/lib/systemd/user/gpu-airlock-guest.socket",
            "/usr/lib/systemd/user/gpu-airlock-guest.service",
        ])
        .env("XDG_RUNTIME_DIR", &runtime.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze --user verify: {stderr}"
    );
}

/// The socket unit's way in: systemd listens, the first client starts the
/// proxy with the listening socket (LISTEN_FDS), and the proxy serves it
/// (here, with no virtio-gpu device, it turns the client away and says
/// why); the socket stays systemd's.
#[test]
#[ignore = "needs the gpu-airlock-guest package installed and systemd-socket-activate (.ci/run)"]
fn the_guest_proxy_serves_the_socket_systemd_passes_it() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;
    assert!(guest_installed());
    let runtime = TempDir::new("activated");
    let socket = runtime.0.join("wayland-0");
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .args(["-E", &format!("XDG_RUNTIME_DIR={}", runtime.0.display())])
        .args([GUEST, "--device", "/nonexistent"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        if let Ok(c) = UnixStream::connect(&socket) {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(20));
    };
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).unwrap(), 0, "turned away: no device");
    let mut lines = BufReader::new(activator.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("no channel to the host's compositor"))
    {
        match lines.next() {
            Some(Ok(l)) => seen.push(l),
            _ => break,
        }
    }
    let _ = activator.kill();
    let _ = activator.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("serving the socket systemd passed")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("no channel to the host's compositor")),
        "{seen:#?}"
    );
}
