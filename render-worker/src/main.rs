//! render-worker's process: spawned by the broker with its channels at fixed
//! descriptor numbers (`ipc::worker_fds`). It will hold rutabaga and every
//! GPU and Wayland descriptor; today it completes its handshakes and answers
//! liveness probes until the broker goes away.

mod device;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;

use ipc::{
    BrokerToRender, Channel, GpuToRender, RenderAnswer, RenderCommand, RenderToBroker, RenderToGpu,
    Role,
};
use log::{error, info, warn};

fn main() -> ExitCode {
    ipc::logging::init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("render-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let (broker_fd, peer_fd) = policies::take_worker_channels()?;
    let broker: Channel<RenderToBroker, BrokerToRender> = Channel::new(broker_fd);
    let gpu: Channel<RenderToGpu, GpuToRender> = Channel::new(peer_fd);
    broker
        .handshake(Role::RenderWorker, Role::Broker)
        .map_err(|e| format!("handshake with the broker: {e}"))?;
    gpu.handshake(Role::RenderWorker, Role::GpuWorker)
        .map_err(|e| format!("handshake with gpu-worker: {e}"))?;
    match gpu.recv() {
        Ok((GpuToRender::Ping { nonce }, _)) => gpu
            .send(&RenderToGpu::Pong { nonce }, &[])
            .map_err(|e| format!("answering gpu-worker: {e}"))?,
        Err(e) => return Err(format!("gpu-worker: {e}")),
    }

    let mut connections: Option<Sender<Vec<OwnedFd>>> = None;
    loop {
        match broker.recv() {
            Ok((BrokerToRender::Configure(config), _)) => {
                if connections.is_some() {
                    return Err("the broker sent a second configuration".into());
                }
                let host_socket = config.wayland_socket.as_deref().map(Path::new);
                policies::enter_with_socket(
                    policies::Profile::RenderWorker,
                    &config.jail,
                    host_socket.map(|p| (p, ipc::WAYLAND_SOCKET_IN_JAIL)),
                )
                .map_err(|e| format!("cannot enter the jail: {e}"))?;
                // Where the compositor is from inside the jail.
                let wayland: Option<PathBuf> = host_socket.map(|p| match config.jail.sandbox {
                    ipc::SandboxMode::Namespace => PathBuf::from(ipc::WAYLAND_SOCKET_IN_JAIL),
                    ipc::SandboxMode::None => p.to_path_buf(),
                });
                // A first rutabaga inside the jail: it must work there, and
                // it says how many capsets the device has.
                let probe = device::build_rutabaga(Default::default(), wayland.clone())?;
                broker
                    .send(
                        &RenderToBroker::Ready {
                            num_capsets: probe.get_num_capsets(),
                        },
                        &[],
                    )
                    .map_err(|e| format!("telling the broker: {e}"))?;
                drop(probe);
                let (tx, rx) = channel();
                thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || serve(rx, wayland))
                    .map_err(|e| format!("cannot start the connection thread: {e}"))?;
                connections = Some(tx);
            }
            Ok((BrokerToRender::Connection, fds)) => {
                let tx = connections
                    .as_ref()
                    .ok_or("the broker sent a connection before the configuration")?;
                tx.send(fds)
                    .map_err(|_| "the connection thread is gone".to_string())?;
            }
            Ok((BrokerToRender::Ping { nonce }, _)) => broker
                .send(&RenderToBroker::Pong { nonce }, &[])
                .map_err(|e| format!("answering the broker: {e}"))?,
            Err(ipc::Error::Closed) => {
                info!("render-worker: the broker closed its channel; exiting");
                return Ok(());
            }
            Err(e) => return Err(format!("message from the broker: {e}")),
        }
    }
}

/// Serves one front-end connection at a time, each with fresh state: the
/// broker sends each connection's channels (map channel, gpu-worker link)
/// before gpu-worker can use them.
fn serve(connections: Receiver<Vec<OwnedFd>>, wayland: Option<PathBuf>) {
    for mut fds in connections {
        let (Some(events), Some(link), Some(map)) = (fds.pop(), fds.pop(), fds.pop()) else {
            error!("render-worker: a connection came without its channels");
            std::process::exit(1);
        };
        let gpu: Channel<RenderAnswer, RenderCommand> = Channel::new(link);
        let mut device = match device::RenderDevice::new(
            Channel::new(map),
            Channel::new(events),
            wayland.clone(),
        ) {
            Ok(d) => d,
            Err(e) => {
                error!("render-worker: {e}; exiting");
                std::process::exit(1);
            }
        };
        loop {
            let (command, fds) = match gpu.recv() {
                Ok(c) => c,
                Err(ipc::Error::Closed) => break,
                Err(e) => {
                    warn!("render-worker: link from gpu-worker: {e}; dropping the connection");
                    break;
                }
            };
            // The guest's memory map is a notice: nobody waits for its
            // answer (see gpu-worker's Link::notify).
            let notice = matches!(command, RenderCommand::Memory(_));
            let answer = device.handle(command, fds);
            if notice {
                if let RenderAnswer::Refused { why, .. } = answer {
                    warn!("render-worker: guest memory map refused: {why}");
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
