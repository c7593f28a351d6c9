//! gpu-airlock: a vhost-user virtio-gpu device backend in three processes.
//!
//! This binary is the broker. It owns the front-end's socket, spawns
//! gpu-worker and render-worker, relays each front-end connection to
//! gpu-worker (see `session`), and ends the device cleanly when a worker
//! dies.

mod capabilities;
mod cli;
mod config;
mod display;
mod error;
mod frontend;
mod internal;
mod limits;
mod mapper;
mod serve;
mod session;
mod startup;
mod supervisor;
mod watch;
mod watchdog;
mod workers;

use ipc::LockExt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;

use clap::Parser;
use ipc::{
    Channel, GpuWorkerRequest, JailConfig, RenderWorkerRequest, Role, SandboxMode, WorkerReport,
};
use log::{error, info};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use vhost::vhost_user::Listener;

use cli::{Args, SandboxArg};
use config::{scanouts_or_default, DeviceConfig};
use error::{Context, Error};
use frontend::{
    choose_frontend, Chosen, CurrentConnection, DisplayWork, FrontendService, FrontendSocket,
    MapWork,
};
use startup::{open_parent_dir, remove_socket, start_workers, wayland_socket};
use watch::{watch_workers, Stop};
use workers::{GPU_WORKER_BIN, RENDER_WORKER_BIN};

fn main() -> ExitCode {
    // Before any thread: the broker's threads allocate from the main arena
    // (see policies::one_malloc_arena).
    policies::one_malloc_arena();
    ipc::logging::init();
    let args = Args::parse();
    if args.print_capabilities {
        print!("{}", capabilities::json());
        return ExitCode::SUCCESS;
    }
    // Where front-ends come from, checked before anything is started: a
    // wrong choice is bad input (exit 2, as clap's own errors), and leaves
    // nothing behind.
    let frontend = match choose_frontend(&args) {
        Ok(f) => f,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let notifier = supervisor::Notifier::connect();
    match run(args, frontend, &notifier) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The context types offered (`--context-types`, by default cross-domain
/// where there is a compositor), and the compositor socket where
/// cross-domain is one of them.
fn context_types(
    given: Option<wire::ContextTypes>,
    wayland_socket: Option<String>,
) -> Result<(wire::ContextTypes, Option<String>), Error> {
    let cross_domain = wire::ContextTypes::of(&[wire::ContextType::CrossDomain]);
    let Some(types) = given else {
        let types = match wayland_socket {
            Some(_) => cross_domain,
            None => wire::ContextTypes::NONE,
        };
        return Ok((types, wayland_socket));
    };
    if !types.contains(wire::ContextType::CrossDomain) {
        if let Some(socket) = &wayland_socket {
            info!("not offering cross-domain to {socket}: --context-types {types}");
        }
        return Ok((types, None));
    }
    if wayland_socket.is_none() {
        return Err(Error::CrossDomainWithoutCompositor);
    }
    Ok((types, wayland_socket))
}

fn run(args: Args, frontend: Chosen, notifier: &supervisor::Notifier) -> Result<(), Error> {
    let scanouts = scanouts_or_default(args.displays).map_err(Error::Config)?;
    let jail = JailConfig {
        sandbox: match args.sandbox {
            SandboxArg::Namespace => SandboxMode::Namespace,
            SandboxArg::None => SandboxMode::None,
        },
        seccomp: args.seccomp.into(),
    };
    let wayland_socket = wayland_socket(args.wayland_socket.as_deref())?;
    let (context_types, wayland_socket) = context_types(args.context_types, wayland_socket)?;
    let mut config = DeviceConfig {
        scanouts,
        max_resource_memory: args.max_resource_memory << 20,
        max_contexts: args.max_contexts,
        shm_size: args.shm_size,
        num_capsets: 0,
        wayland_socket,
        context_types,
        jail,
    };
    // Before the workers, which inherit the limits raised here.
    let allowed = limits::apply(
        config.max_contexts,
        config
            .context_types
            .contains(wire::ContextType::CrossDomain),
    );
    config.max_contexts = allowed.max_contexts;

    let listener = match frontend {
        Chosen::Path(path) => FrontendSocket::Listening(
            Listener::new(&path, true).context(format!("cannot listen on {}", path.display()))?,
        ),
        Chosen::Socket(socket) => socket,
    };

    // After pivot_root the socket's path is gone from the broker's view; a
    // descriptor of its directory (which landlock lets the broker remove
    // files beneath) still reaches it.
    let socket_dir = match &args.socket_path {
        Some(path) => Some(open_parent_dir(path)?),
        None => None,
    };

    let gpu_exe =
        workers::worker_path(args.worker_dir.as_deref(), GPU_WORKER_BIN).map_err(Error::Spawn)?;
    let render_exe = workers::worker_path(args.worker_dir.as_deref(), RENDER_WORKER_BIN)
        .map_err(Error::Spawn)?;

    let pair = || ipc::socketpair().context("cannot make a worker's channel");
    let (gpu_broker_end, gpu_end) = pair()?;
    let (render_broker_end, render_end) = pair()?;
    let (gpu_peer_end, render_peer_end) = pair()?;
    let gpu =
        workers::spawn(Role::GpuWorker, &gpu_exe, gpu_end, gpu_peer_end).map_err(Error::Spawn)?;
    let render = match workers::spawn(Role::RenderWorker, &render_exe, render_end, render_peer_end)
    {
        Ok(w) => w,
        Err(e) => {
            let mut gpu = gpu;
            gpu.kill();
            return Err(Error::Spawn(e));
        }
    };
    let mut workers = [gpu, render];
    let gpu_ch: Arc<Channel<GpuWorkerRequest, WorkerReport>> =
        Arc::new(Channel::new(gpu_broker_end));
    let render_ch: Arc<Channel<RenderWorkerRequest, WorkerReport>> =
        Arc::new(Channel::new(render_broker_end));

    let internal = match start_workers(&gpu_ch, &render_ch, &mut config, socket_dir.as_ref()) {
        Ok(addr) => addr,
        Err(e) => {
            for w in &mut workers {
                w.kill();
            }
            return Err(e);
        }
    };

    // SIGTERM and SIGINT (systemd's stop, a terminal's ^C) end the device
    // cleanly: blocked in every thread from here on (the workers are
    // started already and keep the default), and read from a signalfd by
    // the watch below.
    let mut stop_signals = SigSet::empty();
    stop_signals.add(Signal::SIGTERM);
    stop_signals.add(Signal::SIGINT);
    stop_signals
        .thread_block()
        .context("cannot block SIGTERM and SIGINT")?;
    let stops = SignalFd::with_flags(&stop_signals, SfdFlags::SFD_CLOEXEC)
        .context("cannot make a signalfd")?;

    // Capabilities belong to threads: drop them before the front-end thread
    // exists, so it starts with none.
    policies::drop_capabilities().context("cannot enter the jail")?;
    let current: CurrentConnection = Arc::new(Mutex::new(None));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (display_tx, display_rx) = std::sync::mpsc::channel::<DisplayWork>();
    let (mapper_tx, mapper_rx) = std::sync::mpsc::channel::<MapWork>();
    let display_started = started_tx.clone();
    let mapper_started = started_tx.clone();
    let started_tx_deadlines = started_tx.clone();
    thread::Builder::new()
        .name("mapper".into())
        .spawn(move || {
            let _ = mapper_started.send(());
            // One connection's map channel at a time; the next one's work
            // ends the service of the one before.
            let mut work = mapper_rx.recv().ok();
            while let Some((channel, region)) = work {
                work = mapper::serve(channel, region, &mapper_rx).or_else(|| mapper_rx.recv().ok());
            }
            // The front-end thread is gone: the process is ending.
            loop {
                thread::park();
            }
        })
        .context("cannot start the mapper thread")?;
    let (scanout_count, max_bytes) = (config.scanouts.len(), config.max_resource_memory);
    thread::Builder::new()
        .name("display".into())
        .spawn(move || {
            let _ = display_started.send(());
            // One connection's display channel at a time; the next one's
            // work ends the service of the one before.
            let mut work = display_rx.recv().ok();
            while let Some((channel, socket)) = work {
                work = display::serve(channel, socket, scanout_count, max_bytes, &display_rx)
                    .or_else(|| display_rx.recv().ok());
            }
            loop {
                thread::park();
            }
        })
        .context("cannot start the display thread")?;
    let (ended, ended_watch) = UnixStream::pair().context("cannot make the end-of-service pair")?;
    let internal = Arc::new(internal);
    let frontends = FrontendService {
        ended,
        internal: internal.clone(),
        config: config.clone(),
        current: current.clone(),
        gpu: gpu_ch.clone(),
        render: render_ch.clone(),
        display: display_tx,
        mapper: mapper_tx,
    };
    thread::Builder::new()
        .name("vhost-user".into())
        .spawn(move || {
            let _ = started_tx.send(());
            frontends.serve(listener)
        })
        .context("cannot start the front-end thread")?;
    watchdog::start(started_tx_deadlines).context("cannot start the watchdog thread")?;
    // The filter below covers every thread at once (TSYNC); let them all
    // finish starting (signal stack, name) first.
    for _ in 0..4 {
        started_rx.recv().map_err(|_| Error::ThreadDidNotStart)?;
    }
    // Everything the broker needs a path or a new kind of descriptor for is
    // open; from here on it routes what it already holds.
    policies::apply_seccomp(policies::Profile::Broker, &jail).context("cannot enter the jail")?;
    match &args.socket_path {
        Some(p) => info!(
            "gpu-airlock ready on {} ({} scanout(s), context types {})",
            p.display(),
            config.scanouts.len(),
            config.context_types
        ),
        None => info!(
            "gpu-airlock ready on the socket it was given ({}; {} scanout(s), context types {})",
            args.fd
                .map_or_else(|| "systemd's".to_string(), |fd| format!("--fd {fd}")),
            config.scanouts.len(),
            config.context_types
        ),
    }
    notifier.ready();

    let stop = watch_workers(&mut workers, &gpu_ch, &render_ch, &stops, &ended_watch);
    let status = match &stop {
        Stop::Worker(reason) => {
            error!("{reason}; closing the front-end connection and exiting");
            1
        }
        Stop::Signal(sig) => {
            info!("{sig}: stopping the workers, removing the socket and exiting");
            0
        }
        Stop::FrontendGone => {
            info!("stopping the workers and exiting");
            0
        }
    };
    notifier.stopping();
    if let Some(conn) = current.lock_or_recover().take() {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    for w in &mut workers {
        w.kill();
    }
    if let Some(path) = &args.socket_path {
        remove_socket(path, socket_dir.as_ref());
    }
    internal.remove();
    std::process::exit(status);
}
