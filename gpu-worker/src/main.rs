//! gpu-worker's process: spawned by the broker with its channels at fixed
//! descriptor numbers (`ipc::worker_fds`), never by a user.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use gpu_worker::backend::{GpuBackend, RENDER_EVENTS};
use gpu_worker::display::DisplayLink;
use gpu_worker::link::Link;
use ipc::{Channel, GpuConfig, GpuConnection, GpuWorkerRequest, Role, WorkerReport};
use log::{error, info, warn};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// Why gpu-worker stops.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("message from the broker: {0}")]
    Broker(ipc::Error),
    #[error("configuration refused: {0}")]
    ConfigRefused(ipc::ConfigError),
    #[error("cannot enter the jail: {0}")]
    Jail(policies::Error),
    #[error("the broker sent {0}")]
    OutOfTurn(&'static str),
    #[error("cannot start the vhost-user thread: {0}")]
    Thread(std::io::Error),
    #[error("the vhost-user thread is gone")]
    ThreadGone,
    #[error("cannot make the device: {0}")]
    Backend(std::io::Error),
    #[error("vhost-user service: {0}")]
    Daemon(vhost_user_backend::Error),
    #[error("cannot listen to render-worker's events: {0}")]
    Events(std::io::Error),
    #[error("cannot stop the vring thread: {0}")]
    StopVring(std::io::Error),
}

fn main() -> ExitCode {
    ipc::logging::init();
    policies::run_worker::<WorkerReport, GpuWorkerRequest, Error>(Role::GpuWorker, run)
}

fn run(broker: &Channel<WorkerReport, GpuWorkerRequest>) -> Result<(), Error> {
    let mut config: Option<GpuConfig> = None;
    // Each connection's channels go to the vhost-user thread in the order
    // they came.
    let (connection_tx, connection_rx): (
        Sender<GpuConnection<OwnedFd>>,
        Receiver<GpuConnection<OwnedFd>>,
    ) = channel();
    let mut connection_rx = Some(connection_rx);
    loop {
        let (msg, mut fds) = match broker.recv() {
            Ok(m) => m,
            Err(ipc::Error::Closed) => {
                info!("gpu-worker: the broker closed its channel; exiting");
                return Ok(());
            }
            Err(e) => return Err(Error::Broker(e)),
        };
        match msg {
            GpuWorkerRequest::Configure(c) => {
                c.validate().map_err(Error::ConfigRefused)?;
                if config.is_some() {
                    return Err(Error::OutOfTurn("a second configuration"));
                }
                policies::enter(policies::Profile::GpuWorker, &c.jail).map_err(Error::Jail)?;
                config = Some(c);
            }
            GpuWorkerRequest::VhostUserListener => {
                let config = config
                    .clone()
                    .ok_or(Error::OutOfTurn("a listener before the configuration"))?;
                let connection_rx = connection_rx
                    .take()
                    .ok_or(Error::OutOfTurn("a second vhost-user listener"))?;
                let fd = fds
                    .pop()
                    .ok_or(Error::OutOfTurn("a listener message without its fd"))?;
                // SAFETY: `fd` is a socket the broker created with listen();
                // ownership moves into the Listener.
                let listener = unsafe { Listener::from_raw_fd(fd.into_raw_fd()) };
                thread::Builder::new()
                    .name("vhost-user".into())
                    .spawn(move || serve(listener, config, connection_rx))
                    .map_err(Error::Thread)?;
            }
            GpuWorkerRequest::Connection => {
                let slots = GpuConnection::from_vec(fds)
                    .ok_or(Error::OutOfTurn("a connection without its channels"))?;
                connection_tx.send(slots).map_err(|_| Error::ThreadGone)?;
            }
            GpuWorkerRequest::Ping { nonce } => broker
                .send(&WorkerReport::Pong { nonce }, &[])
                .map_err(Error::Broker)?,
        }
    }
}

/// Serves one broker connection at a time, each with fresh device state.
/// The broker sends each connection's channels before it connects, so the
/// next channels belong to the next connection.
fn serve(mut listener: Listener, config: GpuConfig, connections: Receiver<GpuConnection<OwnedFd>>) {
    loop {
        let Ok(channels) = connections.recv() else {
            // The main thread ended: so does the process.
            return;
        };
        let result = serve_one(&mut listener, &config, channels);
        if let Err(e) = result {
            // The listener itself failing leaves nothing to serve: end the
            // process, and the broker reports it.
            error!("gpu-worker: vhost-user service failed: {e}");
            std::process::exit(1);
        }
    }
}

fn serve_one(
    listener: &mut Listener,
    config: &GpuConfig,
    channels: GpuConnection<OwnedFd>,
) -> Result<(), Error> {
    let display = Channel::new(channels.display);
    let render = Channel::new(channels.render);
    let events = Channel::new(channels.events);
    // Each of the connection's channels opens with the handshake, within
    // the deadline the broker set on it. One whose peer is not who it
    // should be is not used: the device carries on without it, as without
    // a display.
    let display = greeted(display, Role::Broker, "the display channel");
    let render = greeted(render, Role::RenderWorker, "the render-worker link");
    // render-worker greets on its event channel before the link, so that
    // greeting is there once the link's was; without the link's, the
    // events are of no use, and waiting for them would only add a second
    // deadline to the first.
    let events = match render {
        Some(_) => checked(events, Role::RenderWorker, "render-worker's events"),
        None => None,
    };
    let backend = Arc::new(
        GpuBackend::new(
            config,
            display.map_or_else(DisplayLink::none, DisplayLink::new),
            render.map_or_else(
                || Link::none("render-worker"),
                |c| Link::new("render-worker", c),
            ),
            events,
        )
        .map_err(Error::Backend)?,
    );
    let mut daemon = VhostUserDaemon::new(
        "gpu-worker".into(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(Error::Daemon)?;
    daemon.start(listener).map_err(Error::Daemon)?;
    // render-worker's events (fences that signal later) wake the vring
    // thread like a kick.
    if let (Some(fd), Some(handler)) = (backend.events_fd(), daemon.get_epoll_handlers().first()) {
        handler
            .register_listener(fd, EventSet::IN, u64::from(RENDER_EVENTS))
            .map_err(Error::Events)?;
        backend.set_epoll_handler(Arc::downgrade(handler));
    }
    info!("gpu-worker: front-end connected");
    match daemon.wait() {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => {}
        Err(e) => warn!("gpu-worker: front-end connection ended with an error: {e}"),
    }
    drop(daemon);
    backend.stop_worker_thread().map_err(Error::StopVring)?;
    // The vring thread ends and drops its reference; whichever reference
    // is last closes the descriptors vhost-user-backend leaked (Drop).
    drop(backend);
    info!("gpu-worker: front-end disconnected; device state dropped");
    Ok(())
}

/// `channel` once it has greeted its peer and checked the peer's greeting;
/// `None` (logged) if that failed.
fn greeted<Tx: ipc::Message, Rx: ipc::Message>(
    channel: Channel<Tx, Rx>,
    peer: Role,
    what: &str,
) -> Option<Channel<Tx, Rx>> {
    if let Err(e) = channel.greet(Role::GpuWorker) {
        warn!("gpu-worker: {what}: {e}; going on without it");
        return None;
    }
    checked(channel, peer, what)
}

/// `channel` once the peer's greeting checked out (a channel this end
/// only reads: no greeting of its own).
fn checked<Tx: ipc::Message, Rx: ipc::Message>(
    channel: Channel<Tx, Rx>,
    peer: Role,
    what: &str,
) -> Option<Channel<Tx, Rx>> {
    match channel.check_greeting(peer) {
        Ok(()) => Some(channel),
        Err(e) => {
            warn!("gpu-worker: {what}: handshake: {e}; going on without it");
            None
        }
    }
}
