//! The namespace layers of the jail: new user, mount, network and IPC
//! namespaces, pivot_root into an empty read-only tmpfs, then landlock.
//!
//! Why the sequence is safe: the process first becomes root of a new user
//! namespace (mapped to its own uid outside, nothing more), which is what
//! lets it make mount changes no one else sees. It makes every mount
//! private so nothing propagates back to the host, mounts a tmpfs on
//! `/tmp` of its own view, and pivot_roots into it with the `pivot_root(".",
//! ".")` idiom: the old root ends up stacked under the new one and is
//! detached at once, so no path leads back to the host filesystem. The new
//! root is then remounted read-only, nosuid, nodev, noexec. Descriptors the
//! process already holds (guest memory, sockets, eventfds) keep working;
//! paths do not. Landlock then refuses every filesystem access left, except
//! what a caller grants beneath a directory it opened before the jail.

use std::fs;
use std::os::fd::BorrowedFd;
use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, ABI,
};
use log::info;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, getgid, getuid, pivot_root};

use crate::{Error, Profile};

/// Where the empty root is mounted before pivot_root (in the process's own
/// mount namespace; the host's /tmp is untouched).
const NEW_ROOT: &str = "/tmp";

/// The namespaces every process gets. A pid namespace is not among them:
/// `unshare(CLONE_NEWPID)` only moves a process's future children, and no
/// gpu-airlock process creates any after start-up.
fn namespaces() -> CloneFlags {
    CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
}

/// Enters new namespaces and an empty root, then landlock. `removable_in`
/// is a directory (opened before) beneath which the process may still
/// remove files: the broker's socket directory, so it can remove its socket
/// when the device ends.
pub fn enter_namespaces(
    profile: Profile,
    removable_in: Option<BorrowedFd<'_>>,
) -> Result<(), Error> {
    enter_namespaces_with(profile, removable_in, None, &[])
}

/// The GPU stack a render-worker with a 3D context type loads and reads
/// (libEGL and the vendor files glvnd picks it by, Mesa's drivers, LLVM,
/// drirc, the Vulkan loader's ICD files, the loader's cache): the paths of
/// these that exist are bound read-only, at the same path, into its empty
/// root, and landlock lets it read and execute beneath them, nothing else.
/// Directories of libraries, not single files: which ones Mesa and its
/// dependencies dlopen differs by distribution and version.
pub const GPU_STACK: [&str; 9] = [
    "/usr/lib",
    "/usr/lib64",
    "/usr/share/glvnd",
    "/usr/share/drirc.d",
    "/usr/share/vulkan",
    "/etc/ld.so.cache",
    "/etc/drirc",
    "/lib",
    "/lib64",
];

/// As [`enter_namespaces`], and makes one host socket (render-worker's
/// Wayland compositor) reachable at `socket.1` in the empty root, with a
/// bind mount of that socket alone: nothing else of its directory; and
/// each of `read_only` (files or directories) at its own path, read-only,
/// readable and executable beneath (a host symlink there, such as a
/// merged-/usr `/lib`, is made again as the same symlink).
pub fn enter_namespaces_with(
    profile: Profile,
    removable_in: Option<BorrowedFd<'_>>,
    socket: Option<(&Path, &str)>,
    read_only: &[&Path],
) -> Result<(), Error> {
    let (uid, gid) = (getuid(), getgid());
    unshare(namespaces()).map_err(Error::Unshare)?;
    // An unprivileged process may map only its own ids, and only once
    // setgroups is denied.
    fs::write("/proc/self/setgroups", "deny").map_err(Error::WriteSetgroups)?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(Error::WriteUidMap)?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(Error::WriteGidMap)?;
    make_mounts_private()?;
    // Held by descriptor before the pivot, for landlock's rules after it.
    let mut reachable = Vec::new();
    for path in read_only {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let fd = nix::fcntl::open(
            *path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::BindSocket(path.display().to_string(), e.to_string()))?;
        reachable.push(fd);
    }
    pivot_into_empty_root(socket, read_only)?;
    restrict_filesystem(profile, removable_in, &reachable)
}

fn make_mounts_private() -> Result<(), Error> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(Error::MakeMountsPrivate)
}

fn pivot_into_empty_root(socket: Option<(&Path, &str)>, read_only: &[&Path]) -> Result<(), Error> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // The socket may live beneath the directory the empty root is mounted
    // on (/tmp): hold it by descriptor first, and bind from that.
    let bind_err = |host: &Path, e: &dyn std::fmt::Display| {
        Error::BindSocket(host.display().to_string(), e.to_string())
    };
    let held = match socket {
        Some((host, name)) => Some((
            host,
            name,
            nix::fcntl::open(
                host,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| bind_err(host, &e))?,
        )),
        None => None,
    };
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        flags,
        Some("size=16k,mode=0555"),
    )
    .map_err(Error::MountTmpfs)?;
    if let Some((host, name, fd)) = held {
        // An empty file to mount the socket over, then the bind mount.
        let target = Path::new(NEW_ROOT).join(name.trim_start_matches('/'));
        fs::File::create(&target).map_err(|e| bind_err(host, &e))?;
        let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| bind_err(host, &e))?;
        // rutabaga's cross-domain tells a descriptor the compositor sent
        // (a keymap memfd, a dma-buf) by its /proc/self/fd link, and
        // refuses what it cannot name; the process's own descriptor table,
        // bound at that path, is all of /proc it sees.
        let fds = Path::new(NEW_ROOT).join("proc/self/fd");
        fs::create_dir_all(&fds).map_err(|e| bind_err(Path::new("/proc/self/fd"), &e))?;
        mount(
            Some("/proc/self/fd"),
            &fds,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| bind_err(Path::new("/proc/self/fd"), &e))?;
    }
    for host in read_only {
        bind_read_only(host).map_err(|e| bind_err(host, &e))?;
    }
    chdir(NEW_ROOT).map_err(Error::Chdir)?;
    pivot_root(".", ".").map_err(Error::PivotRoot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::UnmountOldRoot)?;
    chdir("/").map_err(Error::Chdir)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        None::<&str>,
    )
    .map_err(Error::RemountReadOnly)
}

/// Makes `host` reachable at the same path in the empty root: a bind mount,
/// remounted read-only, nosuid and nodev (executable: libraries are mapped
/// so); a symlink is made again as the same symlink.
fn bind_read_only(host: &Path) -> Result<(), String> {
    let target = Path::new(NEW_ROOT).join(host.strip_prefix("/").map_err(|e| e.to_string())?);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let meta = fs::symlink_metadata(host).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        let to = fs::read_link(host).map_err(|e| e.to_string())?;
        return std::os::unix::fs::symlink(to, &target).map_err(|e| e.to_string());
    }
    if meta.is_dir() {
        fs::create_dir_all(&target).map_err(|e| e.to_string())?;
    } else {
        fs::File::create(&target).map_err(|e| e.to_string())?;
    }
    mount(
        Some(host),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("read-only remount: {e}"))
}

/// Denies every filesystem access (and TCP bind/connect) landlock can name,
/// at the highest ABI both this crate and the kernel know.
fn restrict_filesystem(
    profile: Profile,
    removable_in: Option<BorrowedFd<'_>>,
    readable: &[std::os::fd::OwnedFd],
) -> Result<(), Error> {
    let abi = ABI::V10;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .map_err(|e| Error::Landlock(e.to_string()))?;
    if let Some(dir) = removable_in {
        ruleset = ruleset
            .add_rule(PathBeneath::new(dir, AccessFs::RemoveFile))
            .map_err(|e| Error::Landlock(e.to_string()))?;
    }
    for fd in readable {
        // Read and execute only (a file rule takes the file's accesses).
        ruleset = ruleset
            .add_rule(PathBeneath::new(
                fd,
                AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
            ))
            .map_err(|e| Error::Landlock(e.to_string()))?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| Error::Landlock(e.to_string()))?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as i32,
        _ => 0,
    };
    match status.ruleset {
        RulesetStatus::NotEnforced => Err(Error::LandlockUnavailable),
        enforced => {
            let stack = match readable.is_empty() {
                true => String::new(),
                false => format!(", with {} paths of the GPU stack read-only", readable.len()),
            };
            info!(
                "{}: jailed in new user, mount, net and ipc namespaces, an empty read-only root{stack}, \
                 and landlock ABI {abi} ({enforced:?})",
                profile.name()
            );
            Ok(())
        }
    }
}
