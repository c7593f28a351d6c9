//! render-worker's process: spawned by the broker with its channels at fixed
//! descriptor numbers (`ipc::worker_fds`). It alone holds rutabaga and the
//! compositor's (Wayland) socket: for each front-end connection it serves
//! gpu-worker's calls (contexts, blobs, fences) and the broker's map
//! requests go out from here, until the broker goes away.

mod device;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;

use ipc::{
    Channel, Nothing, RenderCall, RenderConnection, RenderReply, RenderRequest,
    RenderWorkerRequest, Reply, Role, WorkerReport,
};
use log::{error, info, warn};

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
                policies::enter_with_socket(
                    policies::Profile::RenderWorker,
                    &config.jail,
                    host_socket.map(|p| (p, ipc::WAYLAND_SOCKET_IN_JAIL)),
                )
                .map_err(Error::Jail)?;
                // Where the compositor is from inside the jail.
                let wayland: Option<PathBuf> = host_socket.map(|p| match config.jail.sandbox {
                    ipc::SandboxMode::Namespace => PathBuf::from(ipc::WAYLAND_SOCKET_IN_JAIL),
                    ipc::SandboxMode::None => p.to_path_buf(),
                });
                // A first rutabaga inside the jail: it must work there, and
                // it says how many capsets the device has.
                let renderer = device::RendererConfig {
                    wayland,
                    types: config.context_types,
                };
                let probe = device::build_rutabaga(Default::default(), &renderer)?;
                broker
                    .send(
                        &WorkerReport::Ready {
                            num_capsets: probe.get_num_capsets(),
                        },
                        &[],
                    )
                    .map_err(Error::Broker)?;
                drop(probe);
                let (tx, rx) = channel();
                thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || serve(rx, renderer, max_contexts))
                    .map_err(Error::Thread)?;
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
    max_contexts: u32,
) {
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
        let mut device =
            match device::RenderDevice::new(map, events, renderer.clone(), max_contexts) {
                Ok(d) => d,
                Err(e) => {
                    error!("render-worker: {e}; exiting");
                    std::process::exit(1);
                }
            };
        loop {
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
        drop(device);
        info!("render-worker: connection ended; its state is dropped");
    }
}
