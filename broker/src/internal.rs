//! The internal vhost-user link: the socket gpu-worker serves vhost-user
//! on, for the broker alone.
//!
//! No process but the broker may ever connect to it: the first connection
//! gpu-worker accepts becomes its front-end. Under `--sandbox namespace`
//! the socket has an abstract name bound inside the broker's private
//! network namespace, which no other process shares. Under `--sandbox
//! none` there is no such namespace, and an abstract name would be
//! reachable by every local user, so the socket is a file in a directory
//! made for it with mode 0700 (mkdtemp): only the broker's user (who can
//! ptrace the broker anyway) can reach it. In both modes the broker checks
//! on each connection, with SO_PEERCRED, that the listener it reached is
//! the one it made.

use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;

use ipc::SandboxMode;
use log::warn;
use nix::fcntl::OFlag;
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::{Context, Error};

/// The socket's file name inside its private directory.
const SOCKET_NAME: &str = "vhost-user.sock";

/// The internal listener's address, and under `--sandbox none` its
/// private directory, removed with [`Internal::remove`].
pub struct Internal {
    addr: SocketAddr,
    dir: Option<PrivateDir>,
    /// The broker's pid, read before the seccomp filter (which has no
    /// getpid).
    pid: i32,
}

struct PrivateDir {
    path: PathBuf,
    /// The directory itself, for removing the socket file in it.
    fd: OwnedFd,
    /// Its parent, for removing the directory.
    parent: OwnedFd,
}

fn open_dir(path: &std::path::Path) -> Result<OwnedFd, Error> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(format!("cannot open {}", path.display()))
}

/// Makes the listener (bound and listening) gpu-worker is to serve.
pub fn listener(sandbox: SandboxMode) -> Result<(UnixListener, Internal), Error> {
    match sandbox {
        SandboxMode::Namespace => {
            let name = format!("gpu-airlock/{}/{}", std::process::id(), random_hex()?);
            let addr = SocketAddr::from_abstract_name(name.as_bytes())
                .context("the internal socket's name")?;
            let listener = UnixListener::bind_addr(&addr)
                .context("cannot create the internal vhost-user socket")?;
            Ok((
                listener,
                Internal {
                    addr,
                    dir: None,
                    pid: own_pid(),
                },
            ))
        }
        SandboxMode::None => {
            let parent_path = std::env::temp_dir();
            let path =
                nix::unistd::mkdtemp(&parent_path.join("gpu-airlock-XXXXXX")).context(format!(
                    "cannot make a private directory in {}",
                    parent_path.display()
                ))?;
            let dir = PrivateDir {
                fd: open_dir(&path)?,
                parent: open_dir(&parent_path)?,
                path,
            };
            let socket = dir.path.join(SOCKET_NAME);
            let listener = UnixListener::bind(&socket).context(format!(
                "cannot create the internal vhost-user socket {}",
                socket.display()
            ))?;
            let addr = SocketAddr::from_pathname(&socket).context("the internal socket's path")?;
            Ok((
                listener,
                Internal {
                    addr,
                    dir: Some(dir),
                    pid: own_pid(),
                },
            ))
        }
    }
}

impl Internal {
    /// Connects to gpu-worker, checking that the listener reached is the
    /// broker's own (SO_PEERCRED names the process that called listen).
    pub fn connect(&self) -> Result<UnixStream, Error> {
        let stream = UnixStream::connect_addr(&self.addr).context("cannot reach gpu-worker")?;
        let peer = getsockopt(&stream, sockopt::PeerCredentials)
            .context("cannot read the internal socket's owner")?;
        if peer.pid() != self.pid {
            return Err(Error::NotOurListener(peer.pid()));
        }
        Ok(stream)
    }

    /// Removes the private directory and its socket (`--sandbox none`);
    /// an abstract name goes with the broker's network namespace.
    pub fn remove(&self) {
        if let Some(dir) = &self.dir {
            dir.remove();
        }
    }
}

/// A start-up that fails part-way leaves nothing behind; the broker's
/// normal end calls [`Internal::remove`], as it leaves with `exit`.
impl Drop for PrivateDir {
    fn drop(&mut self) {
        self.remove();
    }
}

impl PrivateDir {
    fn remove(&self) {
        match unlinkat(self.fd.as_fd(), SOCKET_NAME, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => warn!("cannot remove {}/{SOCKET_NAME}: {e}", self.path.display()),
        }
        let Some(name) = self.path.file_name() else {
            return;
        };
        match unlinkat(self.parent.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => warn!("cannot remove {}: {e}", self.path.display()),
        }
    }
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(-1)
}

/// 128 random bits in hex, from the kernel's random numbers (getrandom(2),
/// not /dev/urandom: this may run inside the empty root).
fn random_hex() -> Result<String, Error> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| Error::NoRandomness(std::io::Error::from(e)))?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_directory_is_0700_and_removed() {
        let (listener, internal) = listener(SandboxMode::None).unwrap();
        let dir = internal.dir.as_ref().unwrap().path.clone();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        let stream = internal.connect().unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop((stream, accepted, listener));
        internal.remove();
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[test]
    fn abstract_name_is_random_and_reachable() {
        let (listener, internal) = listener(SandboxMode::Namespace).unwrap();
        let (_other, second) = super::listener(SandboxMode::Namespace).unwrap();
        assert_ne!(
            internal.addr.as_abstract_name(),
            second.addr.as_abstract_name()
        );
        let _stream = internal.connect().unwrap();
        listener.accept().unwrap();
    }
}
