//! venus's render server: virglrenderer runs every venus context in a
//! process of `virgl_render_server`'s (it forks one per context), and
//! offers venus only with one. virglrenderer would fork and exec the
//! server itself from inside render-worker, which render-worker's jail
//! forbids (no process, no exec); so render-worker starts it before
//! entering its own jail, in a jail of its own (namespaces, an empty root
//! with the GPU stack and the server's binary read-only, landlock, no
//! capabilities, `Profile::RenderServer`'s filter), and hands its end of
//! the socket to rutabaga (`RutabagaBuilder::set_server_descriptor`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipc::JailConfig;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

/// Where Debian (and virglrenderer's default build) installs the server;
/// `RENDER_SERVER_EXEC_PATH` overrides it, as it does for virglrenderer.
const DEFAULT_PATH: &str = "/usr/libexec/virgl_render_server";
/// The server's socket, in the server's descriptor table.
const SERVER_FD: i32 = 3;

/// Why the render server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "venus needs virglrenderer's render server, not found at {0} (Debian: \
         libvirglrenderer1 ships it; RENDER_SERVER_EXEC_PATH names another)"
    )]
    Missing(PathBuf),
    #[error("venus's render server's socket: {0}")]
    Socket(nix::Error),
    #[error("cannot start venus's render server {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
}

/// The server's path.
fn path() -> PathBuf {
    std::env::var_os("RENDER_SERVER_EXEC_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Starts the render server jailed as `jail` asks, with `gpu_stack`
/// readable; returns rutabaga's end of its socket. Call while this process
/// has one thread (before its own jail): the child enters its jail between
/// fork and exec.
pub fn start(jail: &JailConfig, gpu_stack: &[&Path]) -> Result<OwnedFd, ServerError> {
    let server = path();
    if !server.is_file() {
        return Err(ServerError::Missing(server));
    }
    // virglrenderer's proxy speaks SOCK_SEQPACKET.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ServerError::Socket)?;
    let mut reach: Vec<PathBuf> = gpu_stack.iter().map(|p| p.to_path_buf()).collect();
    reach.push(server.clone());
    let jail = *jail;
    let parent = nix::unistd::getpid();
    let theirs_raw = theirs.as_raw_fd();
    let mut command = Command::new(&server);
    command.arg("--socket-fd").arg(SERVER_FD.to_string());
    // SAFETY: runs in the child between fork and exec, in a copy of a
    // process that had one thread (so no lock is held by another); it
    // allocates, which is sound for that reason.
    unsafe {
        command.pre_exec(move || {
            let io = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
            // dup2 leaves the new descriptor without close-on-exec.
            if nix::libc::dup2(theirs_raw, SERVER_FD) != SERVER_FD {
                return Err(std::io::Error::last_os_error());
            }
            policies::cloexec_inherited_fds(&[SERVER_FD]).map_err(|e| io(&e))?;
            policies::die_with_parent(parent).map_err(|e| io(&e))?;
            let reach: Vec<&Path> = reach.iter().map(PathBuf::as_path).collect();
            policies::enter_with_reach(policies::Profile::RenderServer, &jail, None, &reach)
                .map_err(|e| io(&e))
        });
    }
    command
        .spawn()
        .map_err(|e| ServerError::Spawn(server.clone(), e))?;
    drop(theirs);
    log::info!(
        "render-worker: venus's render server {} started",
        server.display()
    );
    Ok(ours)
}
