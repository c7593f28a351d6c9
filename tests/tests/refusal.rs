//! When the machine does not permit a layer the options ask for, gpu-airlock
//! refuses to start and says which layer and which option to use; with that
//! option it starts.
//!
//! A kernel that forbids user namespaces is stood in for by a seccomp filter
//! (this test's, installed in the broker's process before exec and
//! inherited by the workers) that makes every `unshare` fail with EPERM, as
//! such a kernel does. Nothing on the machine is changed.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{binary, TempDir};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

fn no_user_namespaces() -> BpfProgram {
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else {
        TargetArch::aarch64
    };
    let rules = BTreeMap::from([(nix::libc::SYS_unshare, vec![])]);
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(nix::libc::EPERM as u32),
        arch,
    )
    .unwrap()
    .try_into()
    .unwrap()
}

/// Runs the broker with unshare forbidden; returns whether it was still
/// running three seconds later, and what it logged.
fn run_broker(extra: &[&str]) -> (bool, String) {
    let dir = TempDir::new("refusal");
    let socket = dir.0.join("gpu.sock");
    let filter = no_user_namespaces();
    let mut cmd = Command::new(binary("gpu-airlock"));
    cmd.arg("--socket-path")
        .arg(&socket)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; apply_filter makes two
    // system calls (prctl, seccomp) on a program built before the fork, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&filter).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let mut child = cmd.spawn().unwrap();
    // A refused start ends within a second; one that is not refused is
    // still serving after three.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut running = true;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            running = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (running, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn forbidden_user_namespaces_stop_the_default_sandbox_with_advice() {
    let (running, err) = run_broker(&[]);
    assert!(
        !running,
        "the broker must not start without its sandbox: {err}"
    );
    assert!(
        err.contains("cannot create new user, mount, net and ipc namespaces")
            && err.contains("--sandbox none"),
        "the error names the layer and the option: {err}"
    );
}

#[test]
fn sandbox_none_starts_where_namespaces_are_forbidden() {
    let (running, err) = run_broker(&["--sandbox", "none"]);
    assert!(running, "with --sandbox none the broker starts: {err}");
    assert!(err.contains("ready on"), "{err}");
}
