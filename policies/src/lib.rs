//! The confinement every gpu-airlock process shares.
//!
//! The jail every gpu-airlock process enters, and what each worker does
//! first: it dies with the broker and holds no descriptor it was not meant
//! to inherit. [`enter`] then takes a process through every layer in order
//! (namespaces, an empty root and landlock in `sandbox`; capabilities;
//! no_new_privs and the seccomp filter of its profile, `seccomp/*.json`,
//! compiled at build time). Each step fails with an error naming the step.

mod sandbox;
pub mod seccomp;

use std::fs;
use std::os::fd::RawFd;

use caps::CapSet;
use ipc::{JailConfig, SandboxMode, SeccompMode};
use nix::sys::signal::Signal;

pub use sandbox::{enter_namespaces, enter_namespaces_with, GPU_STACK};
pub use seccomp::{Profile, ThreadKind, TRAP_EXIT_STATUS};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot ask for SIGKILL on the broker's death (prctl PR_SET_PDEATHSIG): {0}")]
    ParentDeathSignal(nix::errno::Errno),
    #[error("the broker died before this worker armed its parent-death signal")]
    ParentGone,
    #[error("cannot list this process's descriptors or threads in /proc/self: {0}")]
    ListFds(std::io::Error),
    #[error("cannot close inherited descriptor {0}: {1}")]
    CloseFd(RawFd, nix::errno::Errno),
    #[error("cannot drop capability set {0:?}: {1}")]
    DropCapabilities(CapSet, caps::errors::CapsError),
    #[error(
        "capabilities must be dropped while the process has one thread, but it has {0}: \
         the others would keep theirs"
    )]
    NotSingleThreaded(usize),
    #[error(
        "cannot create new user, mount, net and ipc namespaces (unshare: {0}); this kernel or \
         its settings forbid it: run with --sandbox none to go without namespaces, an empty \
         root and landlock"
    )]
    Unshare(nix::errno::Errno),
    #[error("cannot deny setgroups in the new user namespace: {0}")]
    WriteSetgroups(std::io::Error),
    #[error("cannot write the new user namespace's uid_map: {0}")]
    WriteUidMap(std::io::Error),
    #[error("cannot write the new user namespace's gid_map: {0}")]
    WriteGidMap(std::io::Error),
    #[error("cannot make mounts private in the new mount namespace: {0}")]
    MakeMountsPrivate(nix::errno::Errno),
    #[error("cannot make {0} reachable in the empty root: {1}")]
    BindSocket(String, String),
    #[error("cannot mount the empty root (tmpfs): {0}")]
    MountTmpfs(nix::errno::Errno),
    #[error("cannot change directory while building the root: {0}")]
    Chdir(nix::errno::Errno),
    #[error("pivot_root into the empty root failed: {0}")]
    PivotRoot(nix::errno::Errno),
    #[error("cannot detach the old root: {0}")]
    UnmountOldRoot(nix::errno::Errno),
    #[error("cannot remount the empty root read-only: {0}")]
    RemountReadOnly(nix::errno::Errno),
    #[error("landlock: {0}")]
    Landlock(String),
    #[error(
        "landlock is not available on this kernel; run with --sandbox none to go without \
         namespaces, an empty root and landlock"
    )]
    LandlockUnavailable,
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::errno::Errno),
    #[error("cannot install the SIGSYS handler for --seccomp trap: {0}")]
    TrapHandler(nix::errno::Errno),
    #[error("cannot install the seccomp filter: {0}; use --seccomp none to run without one")]
    Seccomp(seccompiler::Error),
}

/// Enters the whole jail of `profile` as `config` asks, in order:
/// namespaces, empty root and landlock ([`enter_namespaces`], unless
/// `--sandbox none`), [`drop_capabilities`], then [`apply_seccomp`]. Call it
/// once everything the process needs a path for is open, while it has one
/// thread.
pub fn enter(profile: Profile, config: &JailConfig) -> Result<(), Error> {
    enter_with_socket(profile, config, None)
}

/// As [`enter`], with one host socket made reachable at `socket.1` inside
/// the empty root (see [`sandbox::enter_namespaces_with`]). Without the
/// namespace layer the host path is used as it is.
pub fn enter_with_socket(
    profile: Profile,
    config: &JailConfig,
    socket: Option<(&std::path::Path, &str)>,
) -> Result<(), Error> {
    enter_with_reach(profile, config, socket, &[])
}

/// As [`enter_with_socket`], with `read_only` paths (that exist) bound
/// read-only at their own paths and readable beneath (render-worker's GPU
/// stack, [`GPU_STACK`]).
pub fn enter_with_reach(
    profile: Profile,
    config: &JailConfig,
    socket: Option<(&std::path::Path, &str)>,
    read_only: &[&std::path::Path],
) -> Result<(), Error> {
    ensure_single_threaded()?;
    one_malloc_arena();
    let present: Vec<&std::path::Path> = read_only
        .iter()
        .copied()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if config.sandbox == SandboxMode::Namespace {
        sandbox::enter_namespaces_with(profile, None, socket, &present)?;
    } else {
        log::warn!(
            "{}: running without namespaces, an empty root or landlock (--sandbox none)",
            profile.name()
        );
    }
    drop_capabilities()?;
    apply_seccomp(profile, config)
}

/// Makes every thread allocate from glibc's main arena. A thread arena
/// that shrinks makes glibc open /proc/sys/vm/overcommit_memory (once, in
/// `check_may_shrink_heap`), which no policy allows: a guest that made
/// render-worker free a few hundred kilobytes on its connection thread
/// (destroying a context with thousands of image requirements) killed it
/// with SIGSYS. The main arena shrinks with brk.
///
/// And blocks up to [`MMAP_THRESHOLD`] come from that heap, not from a
/// mapping of their own: glibc's realloc of a mapped block calls mremap,
/// which the workers' vring thread may not, and a guest that sent the
/// longest backing list (4 MiB of entries, collected into a growing Vec)
/// killed gpu-worker with SIGSYS. Call before the jail.
pub fn one_malloc_arena() {
    // SAFETY: mallopt changes a malloc parameter; M_ARENA_MAX takes any
    // positive count and affects only arenas created later.
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };
    // SAFETY: as above; M_MMAP_THRESHOLD takes a size up to
    // HEAP_MAX_SIZE / 2 (32 MiB on 64-bit) and fixes the threshold there
    // (no dynamic raising).
    unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
}

/// glibc's largest mmap threshold on 64-bit (`HEAP_MAX_SIZE / 2`): every
/// guest-driven allocation in the workers is far smaller (the longest
/// backing list, 4 MiB).
pub const MMAP_THRESHOLD: i32 = 32 << 20;

/// Fails unless the process has exactly one thread: user namespaces and
/// capability sets are per-thread matters, and a second thread would keep
/// what the first gave up.
pub fn ensure_single_threaded() -> Result<(), Error> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Error::NotSingleThreaded(threads));
    }
    Ok(())
}

/// Installs the seccomp filter of `profile` on every thread of the process
/// (and sets no_new_privs), as `config.seccomp` asks.
pub fn apply_seccomp(profile: Profile, config: &JailConfig) -> Result<(), Error> {
    match seccomp::program(profile, config.seccomp) {
        None => {
            log::warn!(
                "{}: running without a seccomp filter (--seccomp none)",
                profile.name()
            );
            nix::sys::prctl::set_no_new_privs().map_err(Error::NoNewPrivs)?;
        }
        Some(program) => {
            if config.seccomp == SeccompMode::Trap {
                seccomp::install_trap_handler(profile).map_err(Error::TrapHandler)?;
            }
            // Sets no_new_privs first, then installs the filters on every
            // thread of the process (TSYNC): the threads filter first, as
            // the policy itself does not allow `seccomp`.
            if let Some(threads) = seccomp::threads_program(profile) {
                seccompiler::apply_filter_all_threads(&threads).map_err(Error::Seccomp)?;
            }
            seccompiler::apply_filter_all_threads(&program).map_err(Error::Seccomp)?;
        }
    }
    Ok(())
}

/// Installs thread kind `kind`'s filter on the calling thread alone (the
/// process's filter stays; the tighter of the two decides), as
/// `config.seccomp` asks. no_new_privs is already set by the process's.
pub fn apply_thread_seccomp(kind: ThreadKind, config: &JailConfig) -> Result<(), Error> {
    if let Some(program) = seccomp::thread_program(kind, config.seccomp) {
        seccompiler::apply_filter(&program).map_err(Error::Seccomp)?;
    }
    Ok(())
}

/// How many threads this process has.
///
/// After pivot_root there is no /proc. A process gets there only through
/// `enter_namespaces`, whose `unshare(CLONE_NEWUSER)` the kernel refuses to
/// a process with more than one thread; so a missing /proc counts as one
/// thread, and callers create no thread between the two steps.
fn thread_count() -> Result<usize, Error> {
    match fs::read_dir("/proc/self/task") {
        Ok(dir) => Ok(dir.count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(Error::ListFds(e)),
    }
}

/// Drops every capability: bounding (needs CAP_SETPCAP, so first), ambient,
/// inheritable, then effective and permitted.
///
/// Capability sets belong to a thread, not a process, and a new thread
/// copies its creator's: so this refuses to run while the process has more
/// than one thread, which would leave the others privileged.
pub fn drop_capabilities() -> Result<(), Error> {
    ensure_single_threaded()?;
    for cap in caps::all() {
        // A capability the bounding set never had is fine; failing to drop
        // one it has is not.
        if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| Error::DropCapabilities(CapSet::Bounding, e))?;
        }
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| Error::DropCapabilities(set, e))?;
    }
    Ok(())
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

/// A worker's channels once both start-up handshakes are done.
pub struct WorkerChannels<Tx: ipc::Message, Rx: ipc::Message> {
    /// To the broker.
    pub broker: ipc::Channel<Tx, Rx>,
    /// The start-up link to the other worker: its handshake says both
    /// workers are of this build (each connection brings its own
    /// channels).
    pub peer: ipc::Channel<ipc::Nothing, ipc::Nothing>,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Inherited(#[from] Error),
    #[error(transparent)]
    NotAChannel(#[from] ipc::worker_fds::NotAChannel),
    #[error("handshake with {peer}: {error}")]
    Handshake { peer: ipc::Role, error: ipc::Error },
}

/// Every worker's first step, the one bootstrap both share: close
/// whatever it inherited besides its two channels, take those
/// (`ipc::worker_fds`), and complete the handshake with the broker and
/// then with the other worker.
pub fn bootstrap<Tx: ipc::Message, Rx: ipc::Message>(
    me: ipc::Role,
) -> Result<WorkerChannels<Tx, Rx>, BootstrapError> {
    use ipc::worker_fds::{BROKER, PEER};
    use ipc::Role;
    close_inherited_fds(&[BROKER, PEER])?;
    let (broker_fd, peer_fd) = ipc::worker_fds::take()?;
    let channels = WorkerChannels {
        broker: ipc::Channel::new(broker_fd),
        peer: ipc::Channel::new(peer_fd),
    };
    let other = if me == Role::GpuWorker {
        Role::RenderWorker
    } else {
        Role::GpuWorker
    };
    let handshake = |peer: Role, result: Result<(), ipc::Error>| {
        result.map_err(|error| BootstrapError::Handshake { peer, error })
    };
    handshake(Role::Broker, channels.broker.handshake(me, Role::Broker))?;
    handshake(other, channels.peer.handshake(me, other))?;
    Ok(channels)
}

/// A worker process's whole life: [`bootstrap`], then `run` on its channel
/// from the broker, the error of either logged as `{me}: {error}`. The
/// start-up link to the other worker is kept open until `run` returns (its
/// handshake said both workers are of this build). The error is logged
/// while the channels are still open: the broker ends a worker as soon as
/// they close, and a line logged after that would be lost.
pub fn run_worker<Tx: ipc::Message, Rx: ipc::Message, E: std::fmt::Display>(
    me: ipc::Role,
    run: impl FnOnce(&ipc::Channel<Tx, Rx>) -> Result<(), E>,
) -> std::process::ExitCode {
    let channels = match bootstrap::<Tx, Rx>(me) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{me}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = run(&channels.broker);
    if let Err(e) = &result {
        log::error!("{me}: {e}");
    }
    drop(channels);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// The descriptors this process has open (among them, closed by the time
/// this returns, the listing's own).
fn open_fds() -> Result<Vec<RawFd>, Error> {
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
    Ok(open)
}

/// Closes every descriptor above stderr that is not in `keep`.
///
/// The broker creates everything close-on-exec; this is the second line, for
/// descriptors a launcher (a shell, a supervisor) leaked into the broker and
/// so into us.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), Error> {
    let open = open_fds()?;
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

/// Marks every descriptor above stderr that is not in `keep`
/// close-on-exec: for a process about to exec another program, whose
/// exec-error pipe (std's `Command`) must stay open until then.
pub fn cloexec_inherited_fds(keep: &[RawFd]) -> Result<(), Error> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let open = open_fds()?;
    for raw in open {
        if raw <= 2 || keep.contains(&raw) {
            continue;
        }
        // SAFETY: the descriptor is this process's (listed above; the
        // listing's own is closed by now, EBADF); only its flag changes.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        match fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            Ok(_) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(Error::CloseFd(raw, e)),
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

    #[test]
    fn marks_close_on_exec_what_is_not_kept() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        let (keep_r, _keep_w) = nix::unistd::pipe2(OFlag::empty()).unwrap();
        let (other_r, _other_w) = nix::unistd::pipe2(OFlag::empty()).unwrap();
        let cloexec = |fd: &std::os::fd::OwnedFd| {
            FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap())
                .contains(FdFlag::FD_CLOEXEC)
        };
        assert!(!cloexec(&keep_r) && !cloexec(&other_r));
        cloexec_inherited_fds(&[keep_r.as_raw_fd()]).unwrap();
        assert!(!cloexec(&keep_r), "what is kept stays open across exec");
        assert!(cloexec(&other_r), "the rest closes at exec");
    }
}
