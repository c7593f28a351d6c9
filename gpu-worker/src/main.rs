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
use ipc::{BrokerToGpu, Channel, GpuConfig, GpuToBroker, GpuToRender, RenderToGpu, Role};
use log::{error, info, warn};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

fn main() -> ExitCode {
    ipc::logging::init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("gpu-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let (broker_fd, peer_fd) = policies::take_worker_channels()?;
    let broker: Channel<GpuToBroker, BrokerToGpu> = Channel::new(broker_fd);
    let render: Channel<GpuToRender, RenderToGpu> = Channel::new(peer_fd);
    broker
        .handshake(Role::GpuWorker, Role::Broker)
        .map_err(|e| format!("handshake with the broker: {e}"))?;
    render
        .handshake(Role::GpuWorker, Role::RenderWorker)
        .map_err(|e| format!("handshake with render-worker: {e}"))?;
    render
        .send(&GpuToRender::Ping { nonce: 1 }, &[])
        .map_err(|e| format!("render-worker: {e}"))?;
    match render.recv() {
        Ok((RenderToGpu::Pong { nonce: 1 }, _)) => {}
        other => return Err(format!("render-worker did not answer its ping: {other:?}")),
    }

    let mut config: Option<GpuConfig> = None;
    // Each connection's channels go to the vhost-user thread in the order
    // they came.
    let (connection_tx, connection_rx): (Sender<Vec<OwnedFd>>, Receiver<Vec<OwnedFd>>) = channel();
    let mut connection_rx = Some(connection_rx);
    loop {
        let (msg, mut fds) = match broker.recv() {
            Ok(m) => m,
            Err(ipc::Error::Closed) => {
                info!("gpu-worker: the broker closed its channel; exiting");
                return Ok(());
            }
            Err(e) => return Err(format!("message from the broker: {e}")),
        };
        match msg {
            BrokerToGpu::Configure(c) => {
                c.validate()
                    .map_err(|e| format!("configuration refused: {e}"))?;
                if config.is_some() {
                    return Err("the broker sent a second configuration".into());
                }
                policies::enter(policies::Profile::GpuWorker, &c.jail)
                    .map_err(|e| format!("cannot enter the jail: {e}"))?;
                config = Some(c);
            }
            BrokerToGpu::VhostUserListener => {
                let config = config
                    .clone()
                    .ok_or("the broker sent a listener before the configuration")?;
                let connection_rx = connection_rx
                    .take()
                    .ok_or("the broker sent a second vhost-user listener")?;
                let fd = fds.pop().ok_or("listener message without its fd")?;
                // SAFETY: `fd` is a socket the broker created with listen();
                // ownership moves into the Listener.
                let listener = unsafe { Listener::from_raw_fd(fd.into_raw_fd()) };
                thread::Builder::new()
                    .name("vhost-user".into())
                    .spawn(move || serve(listener, config, connection_rx))
                    .map_err(|e| format!("cannot start the vhost-user thread: {e}"))?;
            }
            BrokerToGpu::Connection => {
                // The channel checked the count: display, render link.
                connection_tx
                    .send(fds)
                    .map_err(|_| "the vhost-user thread is gone".to_string())?;
            }
            BrokerToGpu::Ping { nonce } => broker
                .send(&GpuToBroker::Pong { nonce }, &[])
                .map_err(|e| format!("answering the broker: {e}"))?,
        }
    }
}

/// Serves one broker connection at a time, each with fresh device state.
/// The broker sends each connection's channels before it connects, so the
/// next channels belong to the next connection.
fn serve(mut listener: Listener, config: GpuConfig, connections: Receiver<Vec<OwnedFd>>) {
    loop {
        let Ok(mut fds) = connections.recv() else {
            // The main thread ended: so does the process.
            return;
        };
        let (Some(events), Some(render), Some(display)) = (fds.pop(), fds.pop(), fds.pop()) else {
            error!("gpu-worker: a connection came without its channels");
            std::process::exit(1);
        };
        let result = serve_one(&mut listener, &config, display, render, events);
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
    display: OwnedFd,
    render: OwnedFd,
    events: OwnedFd,
) -> Result<(), String> {
    let backend = Arc::new(
        GpuBackend::new(
            config,
            DisplayLink::new(Channel::new(display)),
            Link::new("render-worker", Channel::new(render)),
            Some(Channel::new(events)),
        )
        .map_err(|e| e.to_string())?,
    );
    let mut daemon = VhostUserDaemon::new(
        "gpu-worker".into(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| e.to_string())?;
    daemon.start(listener).map_err(|e| e.to_string())?;
    // render-worker's events (fences that signal later) wake the vring
    // thread like a kick.
    if let (Some(fd), Some(handler)) = (backend.events_fd(), daemon.get_epoll_handlers().first()) {
        handler
            .register_listener(fd, EventSet::IN, u64::from(RENDER_EVENTS))
            .map_err(|e| format!("cannot listen to render-worker's events: {e}"))?;
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
    backend
        .stop_worker_thread()
        .map_err(|e| format!("cannot stop the vring thread: {e}"))?;
    // The vring thread ends and drops its reference; whichever reference
    // is last closes the descriptors vhost-user-backend leaked (Drop).
    drop(backend);
    info!("gpu-worker: front-end disconnected; device state dropped");
    Ok(())
}
