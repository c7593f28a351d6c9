//! Proofs that each seccomp policy forbids what it promises, entered through
//! the same `policies::enter` the binaries use.
//!
//! Each probe runs in a fresh process: this test binary re-executed with
//! `GPU_AIRLOCK_PROBE` set, running only `probe_child`, so the jail is
//! entered by a process with one thread and nothing else to break. The probe
//! exists only in this test binary; the release binaries have none.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use ipc::{JailConfig, SeccompMode};
use nix::libc;
use policies::{Profile, TRAP_EXIT_STATUS};

const PROBE_ENV: &str = "GPU_AIRLOCK_PROBE";

/// What a probe does once inside the jail.
fn attempt(what: &str) -> i64 {
    // SAFETY: raw syscalls with valid arguments; each is expected to be
    // stopped by the filter, and none touches memory we own.
    unsafe {
        match what {
            "socket-inet" => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
            "socket-unix" => libc::syscall(
                libc::SYS_socket,
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            ),
            "openat" => libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/etc/passwd".as_ptr(),
                libc::O_RDONLY,
            ),
            "execve" => {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null::<libc::c_char>()];
                libc::syscall(
                    libc::SYS_execve,
                    c"/bin/true".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            }
            "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
            "getpid" => libc::syscall(libc::SYS_getpid),
            "mmap-exec" => libc::syscall(
                libc::SYS_mmap,
                0,
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ),
            other => panic!("unknown probe {other}"),
        }
    }
}

/// The child side: enter the jail, try one thing, report.
#[test]
fn probe_child() {
    let Ok(spec) = std::env::var(PROBE_ENV) else {
        // Not a probe run: nothing to do in the ordinary test pass.
        return;
    };
    let mut parts = spec.split(':');
    let profile = match parts.next().unwrap() {
        "broker" => Profile::Broker,
        "gpu-worker" => Profile::GpuWorker,
        "render-worker" => Profile::RenderWorker,
        other => panic!("unknown profile {other}"),
    };
    let mode = match parts.next().unwrap() {
        "kill" => SeccompMode::Kill,
        "trap" => SeccompMode::Trap,
        other => panic!("unknown mode {other}"),
    };
    let what = parts.next().unwrap().to_string();
    // libtest may run this test on a thread of its own: drop capabilities
    // only where that is sound, and always install the filter.
    let jail = JailConfig { seccomp: mode };
    if std::fs::read_dir("/proc/self/task").unwrap().count() == 1 {
        policies::enter(profile, &jail).expect("enter the jail");
    } else {
        policies::apply_seccomp(profile, &jail).expect("apply the filter");
    }
    let ret = attempt(&what);
    // Reached only if the filter let the call through.
    let msg = format!("PROBE-SURVIVED {what} returned {ret}\n");
    // SAFETY: write(2) and _exit(2) of a valid buffer; both are in every
    // policy, and _exit skips the test harness (which the filter would stop).
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(0);
    }
}

fn probe(profile: &str, mode: &str, what: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe_child", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, format!("{profile}:{mode}:{what}"))
        .output()
        .expect("run the probe")
}

fn assert_killed(profile: &str, what: &str) {
    let out = probe(profile, "kill", what);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{profile}: {what} must die of SIGSYS; status {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_allowed(profile: &str, what: &str) {
    let out = probe(profile, "kill", what);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("PROBE-SURVIVED"),
        "{profile}: {what} must be allowed; status {:?}, stderr {err}",
        out.status
    );
}

#[test]
fn workers_cannot_open_files_make_sockets_exec_or_trace() {
    for profile in ["gpu-worker", "render-worker"] {
        for what in [
            "openat",
            "socket-inet",
            "socket-unix",
            "execve",
            "ptrace",
            "getpid",
        ] {
            assert_killed(profile, what);
        }
    }
}

#[test]
fn broker_makes_only_unix_stream_sockets() {
    assert_allowed("broker", "socket-unix");
    for what in ["socket-inet", "openat", "execve", "ptrace"] {
        assert_killed("broker", what);
    }
}

#[test]
fn no_profile_maps_executable_memory() {
    for profile in ["broker", "gpu-worker", "render-worker"] {
        assert_killed(profile, "mmap-exec");
    }
}

#[test]
fn trap_mode_names_the_syscall() {
    let out = probe("gpu-worker", "trap", "socket-inet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(TRAP_EXIT_STATUS), "{err}");
    assert!(
        err.contains("gpu-worker: seccomp trapped a syscall outside its policy: socket"),
        "{err}"
    );
    assert!(!err.contains("PROBE-SURVIVED"));
}

#[test]
fn drop_capabilities_refuses_while_other_threads_exist() {
    // libtest runs each test on a thread of its own, so the re-executed child
    // has two threads: capabilities are per-thread, and dropping them on one
    // would leave the other privileged. (The serving processes, which drop
    // them single-threaded, are checked thread by thread in
    // tests/tests/jail.rs.)
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "caps_child", "--nocapture", "--test-threads=1"])
        .env("GPU_AIRLOCK_CAPS_PROBE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("CAPS-REFUSED"), "{err}");
}

#[test]
fn caps_child() {
    if std::env::var("GPU_AIRLOCK_CAPS_PROBE").is_err() {
        return;
    }
    assert!(std::fs::read_dir("/proc/self/task").unwrap().count() > 1);
    assert!(matches!(
        policies::drop_capabilities(),
        Err(policies::Error::NotSingleThreaded(_))
    ));
    eprintln!("CAPS-REFUSED");
}
