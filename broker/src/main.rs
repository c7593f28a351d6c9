//! gpu-airlock: a vhost-user virtio-gpu device backend in three processes.
//!
//! This binary is the broker. It owns the front-end's socket, spawns
//! gpu-worker and render-worker, relays each front-end connection to
//! gpu-worker (see `session`), and ends the device cleanly when a worker
//! dies.

mod capabilities;
mod cli;
mod config;
mod deadline;
mod display;
mod internal;
mod mapper;
mod serve;
mod session;
mod supervisor;
mod workers;

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use clap::Parser;
use ipc::{
    BrokerToGpu, BrokerToRender, Channel, DisplayToGpu, GpuToBroker, GpuToDisplay, JailConfig,
    MapAnswer, MapRequest, RenderToBroker, Role, SandboxMode,
};
use log::{error, info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use vhost::vhost_user::{BackendReqHandler, Error as VhostUserError, Frontend, Listener};

use cli::{Args, SandboxArg};
use config::{scanouts_or_default, DeviceConfig};
use session::Session;
use workers::{describe, Worker, GPU_WORKER_BIN, RENDER_WORKER_BIN};

/// The front-end connection being served, so the watchdog can close it.
type CurrentConnection = Arc<Mutex<Option<UnixStream>>>;

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

/// The front-end socket as the command line and the environment give it.
enum Chosen {
    Path(PathBuf),
    Socket(FrontendSocket),
}

fn choose_frontend(args: &Args) -> Result<Chosen, String> {
    let activated = supervisor::listen_fd()?;
    match (&args.socket_path, args.fd, activated) {
        (Some(path), None, None) => Ok(Chosen::Path(path.clone())),
        (None, Some(fd), None) => frontend_from_fd(fd, &format!("--fd {fd}")).map(Chosen::Socket),
        (None, None, Some(fd)) => {
            frontend_from_fd(fd, "the socket systemd passed (LISTEN_FDS)").map(Chosen::Socket)
        }
        (None, None, None) => Err(
            "give --socket-path PATH or --fd N, or start from a systemd socket unit (see --help)"
                .into(),
        ),
        _ => Err("give only one of --socket-path, --fd and a systemd socket (LISTEN_FDS)".into()),
    }
}

fn run(args: Args, frontend: Chosen, notifier: &supervisor::Notifier) -> Result<(), String> {
    let scanouts = scanouts_or_default(args.displays)?;
    let jail = JailConfig {
        sandbox: match args.sandbox {
            SandboxArg::Namespace => SandboxMode::Namespace,
            SandboxArg::None => SandboxMode::None,
        },
        seccomp: args.seccomp.into(),
    };
    let wayland_socket = wayland_socket(args.wayland_socket.as_deref())?;
    let mut config = DeviceConfig {
        scanouts,
        max_resource_memory: args.max_resource_memory << 20,
        max_contexts: args.max_contexts,
        shm_size: args.shm_size,
        num_capsets: 0,
        wayland_socket,
        jail,
    };

    let listener = match frontend {
        Chosen::Path(path) => FrontendSocket::Listening(
            Listener::new(&path, true)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?,
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

    let gpu_exe = workers::worker_path(args.worker_dir.as_deref(), GPU_WORKER_BIN)
        .map_err(|e| e.to_string())?;
    let render_exe = workers::worker_path(args.worker_dir.as_deref(), RENDER_WORKER_BIN)
        .map_err(|e| e.to_string())?;

    let (gpu_broker_end, gpu_end) = ipc::socketpair().map_err(|e| e.to_string())?;
    let (render_broker_end, render_end) = ipc::socketpair().map_err(|e| e.to_string())?;
    let (gpu_peer_end, render_peer_end) = ipc::socketpair().map_err(|e| e.to_string())?;
    let gpu = workers::spawn(Role::GpuWorker, &gpu_exe, gpu_end, gpu_peer_end)
        .map_err(|e| e.to_string())?;
    let render = match workers::spawn(Role::RenderWorker, &render_exe, render_end, render_peer_end)
    {
        Ok(w) => w,
        Err(e) => {
            let mut gpu = gpu;
            gpu.kill();
            return Err(e.to_string());
        }
    };
    let mut workers = [gpu, render];
    let gpu_ch: Arc<Channel<BrokerToGpu, GpuToBroker>> = Arc::new(Channel::new(gpu_broker_end));
    let render_ch: Arc<Channel<BrokerToRender, RenderToBroker>> =
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
        .map_err(|e| format!("cannot block SIGTERM and SIGINT: {e}"))?;
    let stops = SignalFd::with_flags(&stop_signals, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot make a signalfd: {e}"))?;

    // Capabilities belong to threads: drop them before the front-end thread
    // exists, so it starts with none.
    policies::drop_capabilities().map_err(|e| format!("cannot enter the jail: {e}"))?;
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
        .map_err(|e| format!("cannot start the mapper thread: {e}"))?;
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
        .map_err(|e| format!("cannot start the display thread: {e}"))?;
    let (ended, ended_watch) =
        UnixStream::pair().map_err(|e| format!("cannot make the end-of-service pair: {e}"))?;
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
        .map_err(|e| format!("cannot start the front-end thread: {e}"))?;
    deadline::start(started_tx_deadlines)
        .map_err(|e| format!("cannot start the deadline thread: {e}"))?;
    // The filter below covers every thread at once (TSYNC); let them all
    // finish starting (signal stack, name) first.
    for _ in 0..4 {
        started_rx
            .recv()
            .map_err(|_| "a broker thread did not start".to_string())?;
    }
    // Everything the broker needs a path or a new kind of descriptor for is
    // open; from here on it routes what it already holds.
    policies::apply_seccomp(policies::Profile::Broker, &jail)
        .map_err(|e| format!("cannot enter the jail: {e}"))?;
    match &args.socket_path {
        Some(p) => info!(
            "gpu-airlock ready on {} ({} scanout(s))",
            p.display(),
            config.scanouts.len()
        ),
        None => info!(
            "gpu-airlock ready on the socket it was given ({}; {} scanout(s))",
            args.fd
                .map_or_else(|| "systemd's".to_string(), |fd| format!("--fd {fd}")),
            config.scanouts.len()
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
    if let Some(conn) = current.lock().unwrap_or_else(|e| e.into_inner()).take() {
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

/// Why the broker stops.
enum Stop {
    /// A worker died or broke the protocol: exit 1.
    Worker(String),
    /// SIGTERM or SIGINT: exit 0.
    Signal(Signal),
    /// The one front-end `--fd` gave has disconnected: exit 0.
    FrontendGone,
}

/// The compositor socket: `--wayland-socket` (which must be a socket), or
/// $XDG_RUNTIME_DIR/$WAYLAND_DISPLAY if that is one, or none.
fn wayland_socket(given: Option<&Path>) -> Result<Option<String>, String> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket());
    if let Some(p) = given {
        if !is_socket(p) {
            return Err(format!("--wayland-socket {}: not a socket", p.display()));
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

fn open_parent_dir(socket: &Path) -> Result<OwnedFd, String> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open the directory of {}: {e}", socket.display()))
}

/// Removes the socket file through its directory's descriptor.
fn remove_socket(path: &Path, dir: Option<&OwnedFd>) {
    let (Some(dir), Some(name)) = (dir, path.file_name()) else {
        return;
    };
    if let Err(e) = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        warn!("cannot remove {}: {e}", path.display());
    }
}

/// Where front-ends come from: a listening socket (`--socket-path`, or
/// `--fd` of a listening socket: socket activation), or the one connected
/// socket `--fd` names (QEMU's backend-program convention, which libvirt
/// follows: it makes a socket pair and hands one end to each side).
enum FrontendSocket {
    Listening(Listener),
    Connected(UnixStream),
}

/// Takes over descriptor `fd` (named `what` in errors) as the front-end
/// socket: a Unix stream socket, listening or connected.
fn frontend_from_fd(fd: RawFd, what: &str) -> Result<FrontendSocket, String> {
    // SAFETY: the user or the service manager handed this descriptor over;
    // fstat and getsockopt on a borrowed descriptor only read its metadata.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(borrowed)
        .map_err(|e| format!("{what} is not an open descriptor: {e}"))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err(format!("{what} is not a socket"));
    }
    use nix::sys::socket::{getsockopt, sockopt};
    let family = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        .map_err(|e| format!("{what}: {e}"))?;
    let family = nix::sys::socket::SockaddrLike::family(&family);
    if family != Some(nix::sys::socket::AddressFamily::Unix) {
        let family = family.map_or_else(|| "unknown".to_string(), |f| format!("{f:?}"));
        return Err(format!("{what} is not a Unix socket (family {family})"));
    }
    let kind = getsockopt(&borrowed, sockopt::SockType).map_err(|e| format!("{what}: {e}"))?;
    if kind != nix::sys::socket::SockType::Stream {
        return Err(format!("{what} is a {kind:?} socket, not a stream socket"));
    }
    let listening =
        getsockopt(&borrowed, sockopt::AcceptConn).map_err(|e| format!("{what}: {e}"))?;
    nix::fcntl::fcntl(
        borrowed,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("{what}: {e}"))?;
    // SAFETY: the descriptor is an open stream socket we now own (checked
    // above).
    Ok(if listening {
        FrontendSocket::Listening(unsafe { Listener::from_raw_fd(fd) })
    } else {
        FrontendSocket::Connected(unsafe { UnixStream::from_raw_fd(fd) })
    })
}

/// Handshakes, configures render-worker, enters the broker's namespaces,
/// configures gpu-worker with what render-worker offers (its features
/// follow from the capsets), hands it the internal vhost-user listener,
/// and waits until both workers answer a ping.
fn start_workers(
    gpu: &Channel<BrokerToGpu, GpuToBroker>,
    render: &Channel<BrokerToRender, RenderToBroker>,
    config: &mut DeviceConfig,
    socket_dir: Option<&OwnedFd>,
) -> Result<internal::Internal, String> {
    gpu.handshake(Role::Broker, Role::GpuWorker)
        .map_err(|e| format!("gpu-worker: {e}"))?;
    render
        .handshake(Role::Broker, Role::RenderWorker)
        .map_err(|e| format!("render-worker: {e}"))?;
    render
        .send(
            &BrokerToRender::Configure(ipc::RenderConfig {
                jail: config.jail,
                wayland_socket: config.wayland_socket.clone(),
            }),
            &[],
        )
        .map_err(|e| format!("render-worker: {e}"))?;
    // The broker's own namespaces, empty root and landlock, before the
    // internal socket is bound: its abstract name then exists only in the
    // broker's private network namespace, where no other process can reach
    // it.
    if config.jail.sandbox == SandboxMode::Namespace {
        policies::enter_namespaces(policies::Profile::Broker, socket_dir.map(|d| d.as_fd()))
            .map_err(|e| format!("cannot enter the jail: {e}"))?;
    } else {
        warn!("broker: running without namespaces, an empty root or landlock (--sandbox none)");
    }
    let timeout = Some(Duration::from_secs(10));
    render
        .set_recv_timeout(timeout)
        .map_err(|e| e.to_string())?;
    match render.recv() {
        Ok((RenderToBroker::Ready { num_capsets }, _)) if num_capsets <= 64 => {
            config.num_capsets = num_capsets;
        }
        other => return Err(format!("render-worker did not start rutabaga: {other:?}")),
    }
    // gpu-worker's features follow from render-worker's capsets.
    gpu.send(&BrokerToGpu::Configure(config.gpu_config()), &[])
        .map_err(|e| format!("gpu-worker: {e}"))?;

    let (listener, internal) = internal::listener(config.jail.sandbox)?;
    gpu.send(&BrokerToGpu::VhostUserListener, &[listener.as_fd()])
        .map_err(|e| format!("gpu-worker: {e}"))?;
    drop(listener);

    gpu.set_recv_timeout(timeout).map_err(|e| e.to_string())?;
    gpu.send(&BrokerToGpu::Ping { nonce: 1 }, &[])
        .map_err(|e| format!("gpu-worker: {e}"))?;
    match gpu.recv() {
        Ok((GpuToBroker::Pong { nonce: 1 }, _)) => {}
        other => return Err(format!("gpu-worker did not become ready: {other:?}")),
    }
    gpu.set_recv_timeout(None).map_err(|e| e.to_string())?;
    render
        .send(&BrokerToRender::Ping { nonce: 1 }, &[])
        .map_err(|e| format!("render-worker: {e}"))?;
    match render.recv() {
        Ok((RenderToBroker::Pong { nonce: 1 }, _)) => {}
        other => return Err(format!("render-worker did not become ready: {other:?}")),
    }
    render.set_recv_timeout(None).map_err(|e| e.to_string())?;
    Ok(internal)
}

/// One front-end connection's display work: the broker's end of its
/// display channel and the display socket its session fills in.
type DisplayWork = (
    Channel<DisplayToGpu, GpuToDisplay>,
    Arc<display::DisplaySocket>,
);

/// One front-end connection's map work: the broker's end of render-worker's
/// map channel and the region its session fills in.
type MapWork = (Channel<MapAnswer, MapRequest>, Arc<mapper::HostVisible>);

/// What the front-end thread needs to serve connections.
struct FrontendService {
    /// Closed when the one connected front-end (`--fd`) has gone.
    ended: UnixStream,
    internal: Arc<internal::Internal>,
    config: DeviceConfig,
    current: CurrentConnection,
    gpu: Arc<Channel<BrokerToGpu, GpuToBroker>>,
    render: Arc<Channel<BrokerToRender, RenderToBroker>>,
    display: std::sync::mpsc::Sender<DisplayWork>,
    mapper: std::sync::mpsc::Sender<MapWork>,
}

/// A connection's relay to gpu-worker and what its session shares with the
/// display and mapper threads.
struct Relay {
    stream: UnixStream,
    display: Arc<display::DisplaySocket>,
    region: Arc<mapper::HostVisible>,
}

impl FrontendService {
    /// Serves front-end connections one after another, for as long as the
    /// broker lives.
    fn serve(self, socket: FrontendSocket) {
        let listener = match socket {
            FrontendSocket::Listening(l) => l,
            FrontendSocket::Connected(stream) => {
                info!("front-end connected (--fd)");
                if let Err(e) = self.serve_one(stream) {
                    warn!("{e}");
                }
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                // The one front-end has gone: the device ends, as QEMU's
                // own back-end does. Closing `ended` tells the main thread.
                info!("the front-end given with --fd disconnected");
                drop(self.ended);
                // The main thread ends the process; a thread that returned
                // would need syscalls (glibc's thread exit) the policy
                // does not allow.
                loop {
                    thread::park();
                }
            }
        };
        loop {
            let stream = match listener.accept() {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    error!("cannot accept a front-end connection: {e}");
                    std::process::exit(1);
                }
            };
            info!("front-end connected");
            if let Err(e) = self.serve_one(stream) {
                warn!("{e}");
            }
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
            info!("front-end disconnected; waiting for the next connection");
        }
    }

    /// Gives both workers the connection's channels, then connects to
    /// gpu-worker: each worker takes channels and connections in the same
    /// order.
    fn open_relay(&self) -> Result<Relay, String> {
        let pair = |what: &str| {
            ipc::socketpair().map_err(|e| format!("cannot make the {what} channel: {e}"))
        };
        let (display_ours, display_gpu) = pair("display")?;
        let (map_ours, map_render) = pair("map")?;
        let (link_gpu, link_render) = pair("render link")?;
        let (events_gpu, events_render) = pair("render events")?;
        // The receive timeouts of the ends that wait for answers, nested
        // (ipc::deadline): a worker waits for the broker less long than
        // gpu-worker waits for render-worker, which may be waiting on a map.
        use ipc::deadline::{timeval, BROKER_ANSWER, RENDER_ANSWER};
        for (fd, what, deadline) in [
            (&display_gpu, "display", BROKER_ANSWER),
            (&map_render, "map", BROKER_ANSWER),
            (&link_gpu, "render link", RENDER_ANSWER),
        ] {
            nix::sys::socket::setsockopt(
                fd,
                nix::sys::socket::sockopt::ReceiveTimeout,
                &timeval(deadline),
            )
            .map_err(|e| format!("cannot set the {what} channel's timeout: {e}"))?;
        }
        self.render
            .send(
                &BrokerToRender::Connection,
                &[
                    map_render.as_fd(),
                    link_render.as_fd(),
                    events_render.as_fd(),
                ],
            )
            .map_err(|e| format!("render-worker: {e}"))?;
        self.gpu
            .send(
                &BrokerToGpu::Connection,
                &[display_gpu.as_fd(), link_gpu.as_fd(), events_gpu.as_fd()],
            )
            .map_err(|e| format!("gpu-worker: {e}"))?;
        let display = Arc::new(display::DisplaySocket::default());
        self.display
            .send((Channel::new(display_ours), display.clone()))
            .map_err(|_| "the display thread is gone".to_string())?;
        let region = Arc::new(mapper::HostVisible::new(self.config.shm_size));
        self.mapper
            .send((Channel::new(map_ours), region.clone()))
            .map_err(|_| "the mapper thread is gone".to_string())?;
        let stream = self.internal.connect()?;
        Ok(Relay {
            stream,
            display,
            region,
        })
    }

    fn serve_one(&self, stream: UnixStream) -> Result<(), String> {
        let relay = match self.open_relay() {
            Ok(r) => r,
            Err(e) => {
                // gpu-worker would be left with a channel and no
                // connection, out of step: nothing sane to go on with.
                error!("{e}; exiting");
                std::process::exit(1);
            }
        };
        let (display, region) = (relay.display.clone(), relay.region.clone());
        // gpu-worker's answers may wait on render-worker: each relayed
        // request within ipc::deadline::RELAY_ANSWER, or the relay is cut
        // off (and the connection ends).
        let relay_cutoff = relay
            .stream
            .try_clone()
            .map(|s| Arc::new(OwnedFd::from(s)))
            .map_err(|e| format!("cannot keep the relay: {e}"))?;
        let session = Session::new(
            Frontend::from_stream(relay.stream, session::NUM_QUEUES),
            self.config.clone(),
            relay.display,
            relay.region,
        )
        .map_err(|e| format!("gpu-worker refused the relay: {e}"))?;
        let peek = stream
            .try_clone()
            .map_err(|e| format!("cannot keep the front-end connection: {e}"))?;
        let mut handler = BackendReqHandler::from_stream(stream, Arc::new(Mutex::new(session)));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            handler.try_clone_connection().ok();
        loop {
            // Blocks until the front-end's next request is there.
            match deadline::peek_vmm_socket(&peek) {
                Some((deadline::VmmSocket::Display, dup)) => display.expect(dup),
                Some((deadline::VmmSocket::BackendRequests, dup)) => region.expect(dup),
                None => {}
            }
            let handled = deadline::within(
                Some(&relay_cutoff),
                "the relay to gpu-worker",
                ipc::deadline::RELAY_ANSWER,
                || handler.handle_request(),
            );
            match handled {
                Ok(()) => {}
                Err(VhostUserError::Disconnected)
                | Err(VhostUserError::PartialMessage)
                | Err(VhostUserError::SocketBroken(_)) => return Ok(()),
                // A front-end that breaks the protocol loses its connection,
                // as with vhost-user-backend; the device itself keeps
                // running.
                Err(e) => {
                    return Err(format!(
                        "front-end request failed, closing the connection: {e}"
                    ))
                }
            }
        }
    }
}

/// Blocks until a worker dies or misbehaves; says what happened.
fn watch_workers(
    workers: &mut [Worker; 2],
    gpu: &Channel<BrokerToGpu, GpuToBroker>,
    render: &Channel<BrokerToRender, RenderToBroker>,
    stops: &SignalFd,
    ended: &UnixStream,
) -> Stop {
    loop {
        let mut fds = [
            PollFd::new(gpu.as_fd(), PollFlags::POLLIN),
            PollFd::new(render.as_fd(), PollFlags::POLLIN),
            PollFd::new(stops.as_fd(), PollFlags::POLLIN),
            PollFd::new(ended.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Stop::Worker(format!("cannot watch the workers: {e}")),
        }
        let ready = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
        if ready[3] {
            return Stop::FrontendGone;
        }
        if ready[2] {
            if let Ok(Some(info)) = stops.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    return Stop::Signal(sig);
                }
            }
        }
        for (i, is_ready) in ready.into_iter().take(2).enumerate() {
            if !is_ready {
                continue;
            }
            // Nothing is expected from a worker at this stage: a message is
            // a protocol violation, a close is a death.
            let outcome = if i == 0 {
                gpu.recv().map(|(m, _)| format!("{m:?}"))
            } else {
                render.recv().map(|(m, _)| format!("{m:?}"))
            };
            let w = &mut workers[i];
            let pid = w.child.id();
            if let Ok(msg) = outcome {
                warn!("{} (pid {pid}) sent {msg} unasked; killing it", w.role);
                w.kill();
                return Stop::Worker(format!("{} (pid {pid}) broke the ipc protocol", w.role));
            }
            return Stop::Worker(match w.reap() {
                Ok(status) => format!("{} (pid {pid}) {}", w.role, describe(status)),
                Err(e) => format!("{} (pid {pid}) is gone: {e}", w.role),
            });
        }
    }
}
