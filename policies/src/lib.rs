//! The confinement every gpu-airlock process shares.
//!
//! This crate grows into the whole jail (namespaces, pivot_root, landlock,
//! capabilities, no_new_privs, seccomp; see the jail issue). What is here
//! today is the part every worker needs from its first instruction: it dies
//! with the broker, and it holds no descriptor it was not meant to inherit.

use std::fs;
use std::os::fd::RawFd;

use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot ask for SIGKILL on the broker's death (prctl PR_SET_PDEATHSIG): {0}")]
    ParentDeathSignal(nix::errno::Errno),
    #[error("the broker died before this worker armed its parent-death signal")]
    ParentGone,
    #[error("cannot list this process's descriptors in /proc/self/fd: {0}")]
    ListFds(std::io::Error),
    #[error("cannot close inherited descriptor {0}: {1}")]
    CloseFd(RawFd, nix::errno::Errno),
}

/// Makes the kernel SIGKILL this process when its parent (the broker) dies,
/// so no worker outlives the device it served.
///
/// The broker may already be gone by the time this runs (the signal is only
/// armed from now on), so the parent is checked afterwards.
pub fn die_with_parent(expected_parent: nix::unistd::Pid) -> Result<(), Error> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::ParentDeathSignal)?;
    if nix::unistd::getppid() != expected_parent {
        return Err(Error::ParentGone);
    }
    Ok(())
}

/// Closes every descriptor above stderr that is not in `keep`.
///
/// The broker creates everything close-on-exec; this is the second line, for
/// descriptors a launcher (a shell, a supervisor) leaked into the broker and
/// so into us.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), Error> {
    let mut open = Vec::new();
    for entry in fs::read_dir("/proc/self/fd").map_err(Error::ListFds)? {
        let entry = entry.map_err(Error::ListFds)?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            open.push(fd);
        }
    }
    // The directory handle used for listing is among `open` and already
    // closed; EBADF for it is expected.
    for fd in open {
        if fd <= 2 || keep.contains(&fd) {
            continue;
        }
        match nix::unistd::close(fd) {
            Ok(()) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(Error::CloseFd(fd, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn closes_what_is_not_kept() {
        let (keep_r, _keep_w) = nix::unistd::pipe().unwrap();
        let (drop_r, _drop_w) = nix::unistd::pipe().unwrap();
        let drop_raw = drop_r.into_raw_fd();
        // Keep every other descriptor the test harness holds open.
        let mut keep: Vec<RawFd> = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd != drop_raw)
            .collect();
        keep.push(keep_r.as_raw_fd());
        close_inherited_fds(&keep).unwrap();
        let is_open = |fd: RawFd| std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists();
        assert!(!is_open(drop_raw));
        assert!(is_open(keep_r.as_raw_fd()));
    }
}
