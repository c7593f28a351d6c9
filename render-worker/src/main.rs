//! render-worker's process: spawned by the broker with its channels at fixed
//! descriptor numbers (`ipc::worker_fds`). It alone holds rutabaga and the
//! compositor's (Wayland) socket: for each front-end connection it serves
//! gpu-worker's calls (contexts, blobs, fences) and the broker's map
//! requests go out from here, until the broker goes away.

mod device;
mod render_server;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;

use ipc::{
    Channel, Nothing, RenderCall, RenderConnection, RenderReply, RenderRequest,
    RenderWorkerRequest, Reply, Role, WorkerReport,
};
use log::{info, warn};

/// Why render-worker stops.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("the broker's channel: {0}")]
    Broker(ipc::Error),
    #[error("the broker sent {0}")]
    OutOfTurn(&'static str),
    #[error("cannot enter the jail: {0}")]
    Jail(policies::Error),
    #[error("configuration refused: {0}")]
    ConfigRefused(ipc::ConfigError),
    #[error(
        "this render-worker was built without the {0} context type(s) asked for \
         (--context-types): build it with `--features virgl`, which needs virglrenderer 1.3 \
         or later, or leave them out"
    )]
    NotBuilt(wire::ContextTypes),
    #[error(transparent)]
    Rutabaga(#[from] device::RutabagaFailed),
    #[error(transparent)]
    RenderServer(#[from] render_server::ServerError),
    #[error("cannot start the connection thread: {0}")]
    Thread(std::io::Error),
    #[error("the connection thread is gone")]
    ThreadGone,
}

fn main() -> ExitCode {
    ipc::logging::init();
    policies::run_worker::<WorkerReport, RenderWorkerRequest, Error>(Role::RenderWorker, run)
}

fn run(broker: &Channel<WorkerReport, RenderWorkerRequest>) -> Result<(), Error> {
    let mut connections: Option<Sender<RenderConnection<OwnedFd>>> = None;
    loop {
        match broker.recv() {
            Ok((RenderWorkerRequest::Configure(config), _)) => {
                if connections.is_some() {
                    return Err(Error::OutOfTurn("a second configuration"));
                }
                config.validate().map_err(Error::ConfigRefused)?;
                let missing = config.context_types.without(device::built_context_types());
                if !missing.is_empty() {
                    return Err(Error::NotBuilt(missing));
                }
                let max_contexts = config.max_contexts;
                let host_socket = config.wayland_socket.as_deref().map(Path::new);
                // A 3D context type loads the host's GPU stack (Mesa and
                // what it needs) once rutabaga starts, inside the jail.
                let three_d = config.context_types.iter().any(|t| t.is_3d());
                let (profile, gpu_stack): (_, Vec<&Path>) = match three_d {
                    true => (
                        policies::Profile::RenderWorker3d,
                        policies::GPU_STACK.iter().map(Path::new).collect(),
                    ),
                    false => (policies::Profile::RenderWorker, Vec::new()),
                };
                // venus runs in virglrenderer's render server, started
                // now, before this process's jail (which forbids making
                // processes), in a jail of its own.
                let server = match config.context_types.contains(wire::ContextType::Venus) {
                    true => Some(render_server::start(&config.jail, &gpu_stack)?),
                    false => None,
                };
                policies::enter_with_reach(
                    profile,
                    &config.jail,
                    host_socket.map(|p| (p, ipc::WAYLAND_SOCKET_IN_JAIL)),
                    &gpu_stack,
                )
                .map_err(Error::Jail)?;
                // Where the compositor is from inside the jail.
                let wayland: Option<PathBuf> = host_socket.map(|p| match config.jail.sandbox {
                    ipc::SandboxMode::Namespace => PathBuf::from(ipc::WAYLAND_SOCKET_IN_JAIL),
                    ipc::SandboxMode::None => p.to_path_buf(),
                });
                // The one rutabaga of this process, built inside the jail
                // on the thread that serves every connection: virglrenderer
                // initialises once per process, and its GL contexts belong
                // to the thread that made them. It says how many capsets
                // the device has.
                let renderer = device::RendererConfig {
                    wayland,
                    types: config.context_types,
                };
                let (tx, rx) = channel();
                let (built_tx, built) = channel();
                thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || serve(rx, renderer, server, max_contexts, built_tx))
                    .map_err(Error::Thread)?;
                let num_capsets = built.recv().map_err(|_| Error::ThreadGone)??;
                broker
                    .send(&WorkerReport::Ready { num_capsets }, &[])
                    .map_err(Error::Broker)?;
                connections = Some(tx);
            }
            Ok((RenderWorkerRequest::Connection, fds)) => {
                let tx = connections
                    .as_ref()
                    .ok_or(Error::OutOfTurn("a connection before the configuration"))?;
                let slots = RenderConnection::from_vec(fds)
                    .ok_or(Error::OutOfTurn("a connection without its channels"))?;
                tx.send(slots).map_err(|_| Error::ThreadGone)?;
            }
            Ok((RenderWorkerRequest::Ping { nonce }, _)) => broker
                .send(&WorkerReport::Pong { nonce }, &[])
                .map_err(Error::Broker)?,
            Err(ipc::Error::Closed) => {
                info!("render-worker: the broker closed its channel; exiting");
                return Ok(());
            }
            Err(e) => return Err(Error::Broker(e)),
        }
    }
}

/// Serves one front-end connection at a time, each with fresh state: the
/// broker sends each connection's channels (map channel, gpu-worker link)
/// before gpu-worker can use them.
fn serve(
    connections: Receiver<RenderConnection<OwnedFd>>,
    renderer: device::RendererConfig,
    server: Option<OwnedFd>,
    max_contexts: u32,
    built: Sender<Result<u32, device::RutabagaFailed>>,
) {
    let mut renderer = match device::Renderer::build(renderer, server) {
        Ok(r) => {
            let _ = built.send(Ok(r.num_capsets()));
            r
        }
        Err(e) => {
            let _ = built.send(Err(e));
            return;
        }
    };
    for channels in connections {
        let gpu: Channel<RenderReply, RenderCall> = Channel::new(channels.gpu);
        let map = Channel::new(channels.map);
        let events: Channel<ipc::RenderEvent, Nothing> = Channel::new(channels.events);
        // Each of the connection's channels opens with the handshake (the
        // event channel is one-way: a greeting only), within the deadlines
        // the broker set. A connection whose peers are not who they should
        // be is not served. The event channel greets first: gpu-worker
        // reads that greeting only once the link's has come.
        let greeted = events
            .greet(Role::RenderWorker)
            .and_then(|()| gpu.greet(Role::RenderWorker))
            .and_then(|()| map.greet(Role::RenderWorker))
            .and_then(|()| gpu.check_greeting(Role::GpuWorker))
            .and_then(|()| map.check_greeting(Role::Broker));
        if let Err(e) = greeted {
            warn!("render-worker: a connection's handshake failed ({e}); not serving it");
            continue;
        }
        let mut device = device::RenderDevice::new(map, events, renderer, max_contexts);
        let fences = device.fence_descriptor();
        loop {
            if let Some(fences) = &fences {
                match wait_for_either(&gpu, fences) {
                    Ok((call, fence)) => {
                        if fence {
                            device.retire_fences();
                        }
                        if !call {
                            continue;
                        }
                    }
                    Err(e) => {
                        warn!("render-worker: poll: {e}; dropping the connection");
                        break;
                    }
                }
            }
            let (call, fds) = match gpu.recv() {
                Ok(c) => c,
                Err(ipc::Error::Closed) => break,
                Err(e) => {
                    warn!("render-worker: link from gpu-worker: {e}; dropping the connection");
                    break;
                }
            };
            // The guest's memory map is a notice: nobody waits for its
            // answer (see gpu-worker's Link::notify).
            let notice = matches!(call.request, RenderRequest::Memory(_));
            let answer = device.handle(call, fds);
            if fences.is_some() {
                device.retire_fences();
            }
            if notice {
                if let Reply::Refused(r) = answer.reply {
                    warn!("render-worker: guest memory map refused: {r}");
                }
                continue;
            }
            if let Err(e) = gpu.send(&answer, &[]) {
                warn!("render-worker: link to gpu-worker: {e}; dropping the connection");
                break;
            }
        }
        renderer = device.finish();
        info!("render-worker: connection ended; its state is dropped");
    }
}

/// Waits until gpu-worker's link has a call (or closed) or rutabaga's
/// fence descriptor is readable; says which.
fn wait_for_either(
    gpu: &Channel<RenderReply, RenderCall>,
    fences: &OwnedFd,
) -> nix::Result<(bool, bool)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [
            PollFd::new(gpu.as_fd(), PollFlags::POLLIN),
            PollFd::new(fences.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                return Ok((ready(&fds[0]), ready(&fds[1])));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
