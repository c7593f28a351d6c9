//! Spawning the two workers and watching them.
//!
//! Each worker is a separate binary, started before any front-end connects
//! and kept across front-end reconnections. It inherits exactly two
//! descriptors, its channels, at `ipc::worker_fds`; everything else the
//! broker holds is close-on-exec. The kernel SIGKILLs a worker whose broker
//! dies, so none outlives the device.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ipc::{worker_fds, Role};
use log::warn;
use nix::libc;
use nix::sys::signal::Signal;

pub const GPU_WORKER_BIN: &str = "gpu-airlock-gpu-worker";
pub const RENDER_WORKER_BIN: &str = "gpu-airlock-render-worker";

/// How long a worker whose channel closed may take to exit before it is
/// killed: it may have closed the channel and gone on running.
const EXIT_GRACE: Duration = Duration::from_millis(500);

pub struct Worker {
    pub role: Role,
    pub child: Child,
    /// A pidfd for the worker, opened at spawn: the broker signals its
    /// workers only through these, so its seccomp policy has no `kill` that
    /// could reach any other process.
    pidfd: OwnedFd,
}

/// Where the worker binaries are: `--worker-dir`; else beside this binary
/// (a build tree: `target/release/`); else, for an installed broker in
/// `PREFIX/bin`, `PREFIX/libexec/gpu-airlock/` (the Debian package's
/// layout: the workers are not commands of their own).
pub fn worker_path(dir: Option<&Path>, bin: &str) -> io::Result<PathBuf> {
    let candidates = match dir {
        Some(d) => vec![d.to_path_buf()],
        None => {
            let exe = std::env::current_exe()?;
            let here = exe
                .parent()
                .ok_or_else(|| io::Error::other("the broker's own path has no directory"))?;
            let mut dirs = vec![here.to_path_buf()];
            if let Some(prefix) = here.parent() {
                dirs.push(prefix.join("libexec/gpu-airlock"));
            }
            dirs
        }
    };
    for d in &candidates {
        let path = d.join(bin);
        if path.is_file() {
            return Ok(path);
        }
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|d| d.join(bin).display().to_string())
        .collect();
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{bin} not found (looked for {}); install it beside gpu-airlock or pass --worker-dir",
            tried.join(", ")
        ),
    ))
}

/// Starts `exe` with `broker_end` at fd 3 and `peer_end` at fd 4.
pub fn spawn(role: Role, exe: &Path, broker_end: OwnedFd, peer_end: OwnedFd) -> io::Result<Worker> {
    let broker_pid = nix::unistd::getpid();
    let (b, p) = (broker_end.as_raw_fd(), peer_end.as_raw_fd());
    let mut cmd = Command::new(exe);
    cmd.stdin(Stdio::null());
    // What systemd gave the broker is the broker's alone.
    for var in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(var);
    }
    if role == Role::RenderWorker {
        // Mesa (a 3D context type) would keep compiled shaders under the
        // user's cache directory; the jail has nowhere to write one, and
        // its policy no mkdir to try.
        cmd.env("MESA_SHADER_CACHE_DISABLE", "true");
    }
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (fcntl, dup2, prctl, getppid); it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Move both ends above the target numbers first, so placing one
            // cannot overwrite the other.
            let b2 = libc::fcntl(b, libc::F_DUPFD_CLOEXEC, 10);
            let p2 = libc::fcntl(p, libc::F_DUPFD_CLOEXEC, 10);
            if b2 < 0 || p2 < 0 {
                return Err(io::Error::last_os_error());
            }
            // dup2 leaves the new descriptors without close-on-exec: these
            // two, and only these, survive exec.
            if libc::dup2(b2, worker_fds::BROKER) < 0 || libc::dup2(p2, worker_fds::PEER) < 0 {
                return Err(io::Error::last_os_error());
            }
            policies::die_with_parent(broker_pid)
                .map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display())))?;
    // Our copies of the worker's ends close here.
    drop(broker_end);
    drop(peer_end);
    // The child cannot have been reaped yet (only we wait for it), so the
    // pid still names it.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; nothing else is touched.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
    let pidfd = match RawFd::try_from(fd) {
        // SAFETY: a non-negative return is a descriptor we now own.
        Ok(fd) if fd >= 0 => unsafe { OwnedFd::from_raw_fd(fd) },
        _ => {
            let err = io::Error::last_os_error();
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                err.kind(),
                format!("pidfd_open for {role}: {err}"),
            ));
        }
    };
    Ok(Worker { role, child, pidfd })
}

impl Worker {
    /// Reaps the worker, killing it if it does not exit by itself soon.
    pub fn reap(&mut self) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                warn!(
                    "{} (pid {}) closed its channel but kept running; killing it",
                    self.role,
                    self.child.id()
                );
                self.signal_kill();
                return self.child.wait();
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills and reaps the worker.
    pub fn kill(&mut self) {
        self.signal_kill();
        let _ = self.child.wait();
    }

    fn signal_kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Says how a process ended, in the words a user looks for in a log.
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        if code == policies::TRAP_EXIT_STATUS {
            return format!(
                "exited with status {code} (stopped by --seccomp trap; its own line above names the syscall)"
            );
        }
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            if sig == libc::SIGSYS {
                format!("was killed by {name} (a seccomp violation)")
            } else {
                format!("was killed by {name}")
            }
        }
        None => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exits_and_signals() {
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(describe(ExitStatus::from_raw(9)), "was killed by SIGKILL");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGSYS)),
            "was killed by SIGSYS (a seccomp violation)"
        );
    }
}
