//! render-worker's process: spawned by the broker with its channels at fixed
//! descriptor numbers (`ipc::worker_fds`). It will hold rutabaga and every
//! GPU and Wayland descriptor; today it completes its handshakes and answers
//! liveness probes until the broker goes away.

use std::process::ExitCode;

use ipc::{BrokerToRender, Channel, GpuToRender, RenderToBroker, RenderToGpu, Role};
use log::{error, info};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
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

    let mut jailed = false;
    loop {
        match broker.recv() {
            Ok((BrokerToRender::Configure(jail), _)) => {
                if jailed {
                    return Err("the broker sent a second configuration".into());
                }
                policies::enter(policies::Profile::RenderWorker, &jail)
                    .map_err(|e| format!("cannot enter the jail: {e}"))?;
                jailed = true;
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
