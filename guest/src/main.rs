//! `gpu-airlock-guest`: the Wayland socket inside the VM. Each client that
//! connects gets a cross-domain channel of its own to the host's
//! compositor, through gpu-airlock's virtio-gpu device, and its messages
//! relayed both ways (see `airlock_guest::proxy`).
//!
//! Started by hand it binds its socket; started by a systemd user socket
//! unit (`gpu-airlock-guest.socket`, `LISTEN_FDS`) it serves the listening
//! socket it is given, which systemd keeps.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_guest::proxy::{End, Proxy};
use airlock_guest::virtgpu::Gpu;
use clap::Parser;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{SigSet, Signal};

/// A Wayland proxy for Linux guests of gpu-airlock: clients connect to
/// $XDG_RUNTIME_DIR/NAME, and their windows show on the host compositor
/// through virtio-gpu cross-domain contexts.
#[derive(Parser, Debug)]
#[command(name = "gpu-airlock-guest", version)]
struct Args {
    /// The socket's name in $XDG_RUNTIME_DIR.
    #[arg(long, default_value = "wayland-0", value_name = "NAME")]
    socket: String,
    /// The virtio-gpu render node (default: the first one driven by
    /// virtio_gpu).
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
}

fn serve(stream: UnixStream, node: &Path, client: u64) {
    // The channel first, so that a client turned away is told (its socket
    // closed) only after the line saying why.
    let channel = match airlock_guest::channel::Channel::open(node) {
        Ok(c) => c,
        Err(e) => {
            log::error!("client {client}: no channel to the host's compositor: {e}");
            drop(stream);
            return;
        }
    };
    let mut proxy = Proxy::with_host(stream, Box::new(channel));
    log::info!("client {client}: connected");
    let end = proxy.run();
    let stats = proxy.stats;
    match end {
        End::Gone => log::info!("client {client}: disconnected"),
        End::Client {
            object,
            code,
            message,
        } => log::warn!(
            "client {client}: protocol error on object {object} (code {code}): {message}"
        ),
        End::Host(why) => log::warn!("client {client}: ended: {why}"),
    }
    // This thread served this client alone: its CPU time is the client's.
    let cpu_us = getrusage(UsageWho::RUSAGE_THREAD).map_or(0, |u| {
        let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
        us(u.user_time()) + us(u.system_time())
    });
    log::info!(
        "client {client}: {} commits, {} bytes copied, {cpu_us} us of CPU",
        stats.commits,
        stats.bytes_copied
    );
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") else {
        eprintln!("gpu-airlock-guest: XDG_RUNTIME_DIR is not set");
        return ExitCode::from(2);
    };
    if args.socket.contains('/') || args.socket.is_empty() {
        eprintln!(
            "gpu-airlock-guest: --socket takes a name, not a path: {:?}",
            args.socket
        );
        return ExitCode::from(2);
    }
    let node = match args.device.map_or_else(Gpu::find_render_node, Ok) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("gpu-airlock-guest: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: main, before any thread exists: nothing reads the
    // environment concurrently.
    let activated = match unsafe { sd_notify::listen_fds_and_unset_env() } {
        Ok(fds) => fds.collect::<Vec<RawFd>>(),
        Err(e) => {
            eprintln!("gpu-airlock-guest: LISTEN_FDS: {e}");
            return ExitCode::from(2);
        }
    };
    let path = Path::new(&runtime).join(&args.socket);
    match activated.as_slice() {
        [] => {}
        [fd] => return serve_activated(*fd, node),
        many => {
            eprintln!(
                "gpu-airlock-guest: LISTEN_FDS passes {} sockets; it serves one (its socket unit's)",
                many.len()
            );
            return ExitCode::from(2);
        }
    }
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            eprintln!(
                "gpu-airlock-guest: {} is served by another process",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        // A socket left by a proxy that did not stop cleanly.
        let _ = std::fs::remove_file(&path);
    }
    // SIGTERM and SIGINT are taken by one thread, which removes the socket
    // and exits; every other thread blocks them.
    let mut stops = SigSet::empty();
    stops.add(Signal::SIGTERM);
    stops.add(Signal::SIGINT);
    if let Err(e) = stops.thread_block() {
        eprintln!("gpu-airlock-guest: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gpu-airlock-guest: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let stop_path = path.clone();
    std::thread::spawn(move || {
        let signal = stops.wait();
        let _ = std::fs::remove_file(&stop_path);
        log::info!("stopping ({signal:?})");
        std::process::exit(0);
    });
    log::info!("serving {} through {}", path.display(), node.display());
    accept(&listener, &node)
}

/// Serves the listening socket a systemd socket unit passed: systemd owns
/// the socket file, so a stop leaves it (and the next client starts the
/// service again).
fn serve_activated(fd: RawFd, node: PathBuf) -> ExitCode {
    // SAFETY: LISTEN_FDS passed this descriptor to this process (checked
    // by LISTEN_PID), and nothing else owns it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    if let Err(e) = listener.local_addr() {
        eprintln!("gpu-airlock-guest: the socket systemd passed is not a Unix socket: {e}");
        return ExitCode::from(2);
    }
    log::info!(
        "serving the socket systemd passed ({:?}) through {}",
        listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf)),
        node.display()
    );
    accept(&listener, &node)
}

/// Each client on a thread of its own.
fn accept(listener: &UnixListener, node: &Path) -> ExitCode {
    let clients = AtomicU64::new(0);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let client = clients.fetch_add(1, Ordering::Relaxed) + 1;
                let node = node.to_path_buf();
                std::thread::spawn(move || serve(stream, &node, client));
            }
            Err(e) => log::warn!("accept: {e}"),
        }
    }
    ExitCode::SUCCESS
}
