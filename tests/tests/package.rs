//! The Debian package, installed (`.ci/run` builds it with `cargo deb` and
//! installs it with `dpkg -i` before the tests): every file where Debian
//! and libvirt look for it, the installed broker finds its workers in
//! /usr/libexec/gpu-airlock/ and serves the harness, the descriptor names
//! the installed binary, and the installed units pass `systemd-analyze
//! verify` with their man page. Without the package these tests say so
//! loudly; with GPU_AIRLOCK_REQUIRE_PACKAGE set (CI) they fail instead.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::*;

const BROKER: &str = "/usr/bin/gpu-airlock";

fn installed() -> bool {
    harness::guest::package_installed()
}

#[test]
fn the_package_puts_each_file_where_it_is_looked_for() {
    if !installed() {
        return;
    }
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
fn the_descriptor_names_the_installed_binary_and_its_capabilities() {
    if !installed() {
        return;
    }
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
fn the_installed_broker_finds_its_workers_and_serves() {
    if !installed() {
        return;
    }
    let dir = TempDir::new("installed");
    let socket = dir.0.join("gpu.sock");
    let mut cmd = Command::new(BROKER);
    cmd.arg("--socket-path").arg(&socket);
    let backend = Backend::spawn(cmd, dir, socket.clone());
    assert!(
        backend
            .log
            .wait_for(&["ready on"], Duration::from_secs(20))
            .is_some(),
        "{:#?}",
        backend.log.lines()
    );
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
fn the_installed_units_verify_with_their_man_page() {
    if !installed() {
        return;
    }
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
