//! What a service manager gives the broker and expects of it: systemd's
//! socket activation (`LISTEN_FDS`, through the `sd-notify` crate) and its
//! readiness protocol (`READY=1` once the device serves, `STOPPING=1` at
//! the end).
//!
//! The notification socket is connected before the broker enters its jail:
//! inside, neither its path (an empty root) nor an abstract name (a network
//! namespace of its own) is reachable. So the crate's `notify`, which
//! connects anew each time, cannot be used there; the messages are still
//! the crate's (`NotifyState`), sent on the socket connected here.

use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::warn;

use crate::error::{Context, Error};
use sd_notify::NotifyState;

/// The one listening socket systemd passed (`LISTEN_FDS`), if any. The
/// variables are removed from the environment, so the workers never see
/// them. Must run before the broker starts a thread.
pub fn listen_fd() -> Result<Option<RawFd>, Error> {
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        let ours = std::process::id().to_string();
        if pid.trim() != ours && std::env::var_os("LISTEN_FDS").is_some() {
            return Err(Error::ListenFdsForAnother {
                pid,
                ours: std::process::id(),
            });
        }
    }
    // SAFETY: called from main before any thread exists (see above), so
    // nothing reads the environment concurrently.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() }.context("LISTEN_FDS")?;
    let fds: Vec<RawFd> = fds.collect();
    match fds.as_slice() {
        [] => Ok(None),
        [fd] => Ok(Some(*fd)),
        more => Err(Error::ListenFdsMany(more.len())),
    }
}

/// The service manager's notification socket, connected while it can be.
pub struct Notifier(Option<UnixDatagram>);

impl Notifier {
    /// Connects to `NOTIFY_SOCKET` (a path, or `@` and an abstract name),
    /// if it is set, and removes it from the environment so the workers
    /// cannot notify in the broker's name. Must run before any thread.
    pub fn connect() -> Notifier {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier(None);
        };
        // SAFETY: called from main before any thread exists.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(std::path::Path::new(&target)),
        };
        let socket = addr.and_then(|a| {
            let s = UnixDatagram::unbound()?;
            s.connect_addr(&a)?;
            Ok(s)
        });
        match socket {
            Ok(s) => Notifier(Some(s)),
            Err(e) => {
                warn!("cannot reach the service manager at NOTIFY_SOCKET={target:?}: {e}");
                Notifier(None)
            }
        }
    }

    fn send(&self, state: NotifyState) {
        let Some(socket) = &self.0 else {
            return;
        };
        let message = format!("{state}\n");
        if let Err(e) = socket.send(message.as_bytes()) {
            warn!("cannot tell the service manager {state}: {e}");
        }
    }

    /// The device serves front-ends.
    pub fn ready(&self) {
        self.send(NotifyState::Ready);
    }

    /// The broker is ending its workers and leaving.
    pub fn stopping(&self) {
        self.send(NotifyState::Stopping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_go_to_the_socket_connected_at_start() {
        let dir = std::env::temp_dir().join(format!("gpu-airlock-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.connect(&path).unwrap();
        let notifier = Notifier(Some(client));
        notifier.ready();
        notifier.stopping();
        let mut buf = [0u8; 64];
        for want in ["READY=1\n", "STOPPING=1\n"] {
            let n = manager.recv(&mut buf).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), want);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
