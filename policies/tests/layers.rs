//! Proofs that each layer of the jail refuses what it promises, entered
//! through the same `policies::enter` the binaries use.
//!
//! Each probe runs in a fresh process: this test binary re-executed with
//! `GPU_AIRLOCK_PROBE` set, running only `probe_child`. libtest runs that
//! on a thread of its own, and namespaces need a process with one thread,
//! so `probe_child` forks: the forked child has one thread, enters the jail,
//! attempts one thing and reports; `probe_child` reports how it ended. The
//! probe exists only in this test binary; the release binaries have none.

use std::process::Command;

use ipc::{JailConfig, SandboxMode, SeccompMode};
use nix::libc;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use policies::{Profile, TRAP_EXIT_STATUS};

const PROBE_ENV: &str = "GPU_AIRLOCK_PROBE";

/// What a probe does once inside the jail; returns (result, errno).
fn attempt(what: &str) -> (i64, i32) {
    // SAFETY: raw syscalls with valid arguments (static C strings, null
    // terminated argument vectors); none touches memory we own.
    let ret = unsafe {
        match what {
            "socket-inet" => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
            "socket-unix" => libc::syscall(
                libc::SYS_socket,
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            ),
            "open-passwd" => libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/etc/passwd".as_ptr(),
                libc::O_RDONLY,
            ),
            "open-root" => libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            ),
            "mkdir-root" => libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, c"/x".as_ptr(), 0o700),
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
            "memfd" => libc::syscall(
                libc::SYS_memfd_create,
                c"probe".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            ),
            // A thread, as std makes one (clone3 first, then clone).
            "thread" => match std::thread::spawn(|| 7).join() {
                Ok(7) => 0,
                _ => -2,
            },
            // A child process, as fork makes one (clone with SIGCHLD).
            "fork" => libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0),
            // clone3 straight: the flags it would carry cannot be seen.
            "clone3" => libc::syscall(libc::SYS_clone3, 0, 0),
            // Signal 0 to init: harmless, but a process that may call kill
            // may name any process.
            "kill-init" => libc::syscall(libc::SYS_kill, 1, 0),
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
    };
    (
        ret,
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    )
}

fn say(msg: &str) {
    // SAFETY: write(2) of a valid buffer to stderr; it is in every policy.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The probe process: fork a one-thread child that enters the jail and
/// tries one thing; report how it ended.
#[test]
fn probe_child() {
    let Ok(spec) = std::env::var(PROBE_ENV) else {
        return; // an ordinary test run: nothing to probe
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let profile = match parts[0] {
        "broker" => Profile::Broker,
        "gpu-worker" => Profile::GpuWorker,
        "render-worker" => Profile::RenderWorker,
        other => panic!("unknown profile {other}"),
    };
    let sandbox = match parts[1] {
        "namespace" => SandboxMode::Namespace,
        _ => SandboxMode::None,
    };
    let seccomp = match parts[2] {
        "kill" => SeccompMode::Kill,
        "trap" => SeccompMode::Trap,
        _ => SeccompMode::None,
    };
    let what = parts[3].to_string();
    let jail = JailConfig { sandbox, seccomp };
    // SAFETY: glibc's fork keeps malloc usable in the child; the child only
    // enters the jail, makes one syscall and leaves with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            if let Err(e) = policies::enter(profile, &jail) {
                say(&format!("PROBE-JAIL-FAILED {e}\n"));
                // SAFETY: leave the forked child at once.
                unsafe { libc::_exit(3) };
            }
            // "vring-X": X from gpu-worker's vring thread, under its own
            // filter on top of the process's.
            let what = match what.strip_prefix("vring-") {
                Some(rest) => {
                    if let Err(e) =
                        policies::apply_thread_seccomp(policies::ThreadKind::Vring, &jail)
                    {
                        say(&format!("PROBE-JAIL-FAILED {e}\n"));
                        // SAFETY: leave the forked child at once.
                        unsafe { libc::_exit(3) };
                    }
                    rest.to_string()
                }
                None => what,
            };
            let (ret, errno) = attempt(&what);
            say(&format!(
                "PROBE-SURVIVED {what} returned {ret} errno {errno}\n"
            ));
            // SAFETY: leave without running the test harness's cleanup.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Signaled(_, sig, _) => eprintln!("PROBE-STATUS signal {}", sig as i32),
            WaitStatus::Exited(_, code) => eprintln!("PROBE-STATUS exit {code}"),
            other => eprintln!("PROBE-STATUS other {other:?}"),
        },
    }
}

/// Runs one probe; returns its stderr.
fn probe(profile: &str, sandbox: &str, seccomp: &str, what: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe_child", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, format!("{profile}:{sandbox}:{seccomp}:{what}"))
        .output()
        .expect("run the probe");
    assert!(out.status.success(), "probe process failed: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("PROBE-JAIL-FAILED"), "{err}");
    err
}

fn assert_sigsys(profile: &str, sandbox: &str, what: &str) {
    let err = probe(profile, sandbox, "kill", what);
    assert!(
        err.contains(&format!("PROBE-STATUS signal {}", libc::SIGSYS)),
        "{profile}: {what} must die of SIGSYS: {err}"
    );
}

fn assert_errno(profile: &str, what: &str, errno: i32) {
    // The namespace layers alone (no seccomp), to prove them separately.
    let err = probe(profile, "namespace", "none", what);
    assert!(
        err.contains(&format!("PROBE-SURVIVED {what} returned -1 errno {errno}")),
        "{profile}: {what} must fail with errno {errno}: {err}"
    );
}

/// gpu-worker's vring thread, under its own filter, reads and writes
/// eventfds but makes no thread, no socket and no ipc it was not given.
#[test]
fn the_vring_thread_filter_is_tighter_than_gpu_workers() {
    let err = probe("gpu-worker", "namespace", "kill", "vring-getpid");
    assert!(
        err.contains(&format!("PROBE-STATUS signal {}", libc::SIGSYS)),
        "{err}"
    );
    let err = probe("gpu-worker", "namespace", "kill", "vring-thread");
    assert!(
        err.contains(&format!("PROBE-STATUS signal {}", libc::SIGSYS)),
        "a thread from the vring thread: {err}"
    );
    // The process itself still may.
    let err = probe("gpu-worker", "namespace", "kill", "thread");
    assert!(err.contains("PROBE-SURVIVED thread returned 0"), "{err}");
    let err = probe("gpu-worker", "namespace", "kill", "vring-memfd");
    assert!(err.contains("PROBE-SURVIVED memfd returned"), "{err}");
    assert!(!err.contains("returned -1"), "{err}");
}

/// Workers create threads (clone3 answered ENOSYS, then clone with a
/// thread's flags) but no process: clone with any other flags kills.
#[test]
fn workers_make_threads_and_no_processes() {
    for profile in ["gpu-worker", "render-worker"] {
        let err = probe(profile, "namespace", "kill", "thread");
        assert!(
            err.contains("PROBE-SURVIVED thread returned 0"),
            "{profile}: {err}"
        );
        let err = probe(profile, "namespace", "kill", "clone3");
        assert!(
            err.contains(&format!(
                "PROBE-SURVIVED clone3 returned -1 errno {}",
                libc::ENOSYS
            )),
            "{profile}: {err}"
        );
        assert_sigsys(profile, "namespace", "fork");
    }
}

#[test]
fn seccomp_kills_files_sockets_exec_and_ptrace_in_the_workers() {
    for profile in ["gpu-worker", "render-worker"] {
        for what in ["open-passwd", "socket-inet", "execve", "ptrace", "getpid"] {
            assert_sigsys(profile, "namespace", what);
        }
    }
    assert_sigsys("gpu-worker", "namespace", "socket-unix");
}

/// render-worker connects to the compositor, the one socket bind-mounted
/// into its empty root: it may make Unix stream sockets, nothing else.
#[test]
fn seccomp_lets_render_worker_make_only_unix_stream_sockets() {
    let err = probe("render-worker", "namespace", "kill", "socket-unix");
    assert!(err.contains("PROBE-SURVIVED socket-unix returned"), "{err}");
    assert!(!err.contains("returned -1"), "{err}");
    assert_sigsys("render-worker", "namespace", "socket-inet");
}

#[test]
fn seccomp_lets_the_broker_make_only_unix_stream_sockets_and_signal_no_pid() {
    let err = probe("broker", "none", "kill", "socket-unix");
    assert!(err.contains("PROBE-SURVIVED socket-unix returned"), "{err}");
    assert!(!err.contains("returned -1"), "{err}");
    for what in [
        "socket-inet",
        "open-passwd",
        "execve",
        "ptrace",
        "kill-init",
    ] {
        assert_sigsys("broker", "none", what);
    }
}

#[test]
fn seccomp_refuses_executable_memory_everywhere() {
    for profile in ["broker", "gpu-worker", "render-worker"] {
        assert_sigsys(profile, "none", "mmap-exec");
    }
}

#[test]
fn seccomp_trap_names_the_syscall() {
    let err = probe("gpu-worker", "none", "trap", "socket-inet");
    assert!(
        err.contains(&format!("PROBE-STATUS exit {TRAP_EXIT_STATUS}")),
        "{err}"
    );
    assert!(
        err.contains("gpu-worker: seccomp trapped a syscall outside its policy: socket"),
        "{err}"
    );
    assert!(!err.contains("PROBE-SURVIVED"));
}

#[test]
fn empty_root_hides_the_host_filesystem() {
    for profile in ["broker", "gpu-worker", "render-worker"] {
        // pivot_root: the host's files are simply not there.
        assert_errno(profile, "open-passwd", libc::ENOENT);
        assert_errno(profile, "execve", libc::ENOENT);
    }
}

#[test]
fn landlock_refuses_what_is_left() {
    for profile in ["broker", "gpu-worker", "render-worker"] {
        // The empty root itself exists; landlock refuses to read it.
        assert_errno(profile, "open-root", libc::EACCES);
    }
}

#[test]
fn empty_root_is_read_only() {
    // Landlock answers first (EACCES); with or without it, nothing can be
    // created in the root.
    let err = probe("gpu-worker", "namespace", "none", "mkdir-root");
    assert!(
        err.contains("returned -1 errno 13") || err.contains("returned -1 errno 30"),
        "{err}"
    );
}

#[test]
fn drop_capabilities_refuses_while_other_threads_exist() {
    // This test runs on a thread libtest started, next to libtest's own:
    // capabilities are per-thread, and dropping them on one thread would
    // leave the other privileged.
    assert!(std::fs::read_dir("/proc/self/task").unwrap().count() > 1);
    assert!(matches!(
        policies::drop_capabilities(),
        Err(policies::Error::NotSingleThreaded(_))
    ));
}
