//! Start-up: the workers' handshakes and configuration, the broker's own
//! namespaces, the internal vhost-user listener, and readiness; and the
//! host paths the broker opens before its jail (the compositor's socket,
//! the directory of its own).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use ipc::{Channel, GpuWorkerRequest, RenderWorkerRequest, Role, SandboxMode, WorkerReport};
use log::{info, warn};

use crate::config::DeviceConfig;
use crate::error::{Context, Error};
use crate::internal;

/// Sends a worker `ping` (nonce 1) and waits for its pong, within the
/// channel's receive timeout, which is cleared after.
fn ping<Req: ipc::Message>(
    worker: &Channel<Req, WorkerReport>,
    role: Role,
    ping: &Req,
) -> Result<(), Error> {
    worker.send(ping, &[]).context(role.to_string())?;
    match worker.recv() {
        Ok((WorkerReport::Pong { nonce: 1 }, _)) => {}
        other => {
            return Err(Error::WorkerNotReady {
                role,
                what: "become ready",
                got: format!("{other:?}"),
            })
        }
    }
    worker.set_recv_timeout(None).context(role.to_string())
}

/// Handshakes, configures render-worker, enters the broker's namespaces,
/// configures gpu-worker with what render-worker offers (its features
/// follow from the capsets), hands it the internal vhost-user listener,
/// and waits until both workers answer a ping.
pub fn start_workers(
    gpu: &Channel<GpuWorkerRequest, WorkerReport>,
    render: &Channel<RenderWorkerRequest, WorkerReport>,
    config: &mut DeviceConfig,
    socket_dir: Option<&OwnedFd>,
) -> Result<internal::Internal, Error> {
    gpu.handshake(Role::Broker, Role::GpuWorker)
        .context("gpu-worker")?;
    render
        .handshake(Role::Broker, Role::RenderWorker)
        .context("render-worker")?;
    render
        .send(
            &RenderWorkerRequest::Configure(ipc::RenderConfig {
                jail: config.jail,
                wayland_socket: config.wayland_socket.clone(),
                max_contexts: config.max_contexts,
                context_types: config.context_types,
            }),
            &[],
        )
        .context("render-worker")?;
    // The broker's own namespaces, empty root and landlock, before the
    // internal socket is bound: its abstract name then exists only in the
    // broker's private network namespace, where no other process can reach
    // it.
    if config.jail.sandbox == SandboxMode::Namespace {
        policies::enter_namespaces(policies::Profile::Broker, socket_dir.map(|d| d.as_fd()))
            .context("cannot enter the jail")?;
    } else {
        warn!("broker: running without namespaces, an empty root or landlock (--sandbox none)");
    }
    let timeout = Some(Duration::from_secs(10));
    render.set_recv_timeout(timeout).context("render-worker")?;
    match render.recv() {
        Ok((WorkerReport::Ready { num_capsets }, _)) if num_capsets <= 64 => {
            config.num_capsets = num_capsets;
        }
        other => {
            let got = match other {
                // It said why on its own line, just before.
                Err(ipc::Error::Closed) => "it ended first (its line above says why)".into(),
                other => format!("{other:?}"),
            };
            return Err(Error::WorkerNotReady {
                role: Role::RenderWorker,
                what: "start rutabaga",
                got,
            });
        }
    }
    // gpu-worker's features follow from render-worker's capsets.
    gpu.send(&GpuWorkerRequest::Configure(config.gpu_config()), &[])
        .context("gpu-worker")?;

    let (listener, internal) = internal::listener(config.jail.sandbox)?;
    gpu.send(&GpuWorkerRequest::VhostUserListener, &[listener.as_fd()])
        .context("gpu-worker")?;
    drop(listener);

    gpu.set_recv_timeout(timeout).context("gpu-worker")?;
    ping(gpu, Role::GpuWorker, &GpuWorkerRequest::Ping { nonce: 1 })?;
    ping(
        render,
        Role::RenderWorker,
        &RenderWorkerRequest::Ping { nonce: 1 },
    )?;
    Ok(internal)
}

/// The compositor socket: `--wayland-socket` (which must be a socket), or
/// $XDG_RUNTIME_DIR/$WAYLAND_DISPLAY if that is one, or none.
pub fn wayland_socket(given: Option<&Path>) -> Result<Option<String>, Error> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket());
    if let Some(p) = given {
        if !is_socket(p) {
            return Err(Error::WaylandNotASocket(p.to_path_buf()));
        }
        return Ok(Some(p.display().to_string()));
    }
    let (Some(dir), Some(display)) = (
        std::env::var_os("XDG_RUNTIME_DIR"),
        std::env::var_os("WAYLAND_DISPLAY"),
    ) else {
        return Ok(None);
    };
    let p = Path::new(&dir).join(display);
    if is_socket(&p) {
        info!("compositor socket from the environment: {}", p.display());
        Ok(Some(p.display().to_string()))
    } else {
        warn!(
            "$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY ({}) is not a socket; no cross-domain",
            p.display()
        );
        Ok(None)
    }
}

pub fn open_parent_dir(socket: &Path) -> Result<OwnedFd, Error> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context(format!("cannot open the directory of {}", socket.display()))
}

/// Removes the socket file through its directory's descriptor.
pub fn remove_socket(path: &Path, dir: Option<&OwnedFd>) {
    let (Some(dir), Some(name)) = (dir, path.file_name()) else {
        return;
    };
    if let Err(e) = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        warn!("cannot remove {}: {e}", path.display());
    }
}
