//! The front-end side: where front-ends come from (`--socket-path`,
//! `--fd`, systemd's socket), and the thread that serves them one after
//! another, each through a fresh relay to gpu-worker and fresh
//! per-connection channels for both workers.

use ipc::LockExt;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;

use ipc::{
    Channel, DisplayRequest, DisplayValue, GpuConnection, GpuWorkerRequest, MapRequest, Nothing,
    RenderConnection, RenderWorkerRequest, Reply, Role, WorkerReport,
};
use log::{error, info, warn};
use vhost::vhost_user::{BackendReqHandler, Error as VhostUserError, Frontend, Listener};

use crate::cli::Args;
use crate::config::DeviceConfig;
use crate::error::{Context, Error};
use crate::session::{self, Session};
use crate::{display, internal, mapper, supervisor, watchdog};

/// The front-end connection being served, so the watchdog can close it.
pub type CurrentConnection = Arc<Mutex<Option<UnixStream>>>;

/// The front-end socket as the command line and the environment give it.
pub enum Chosen {
    Path(PathBuf),
    Socket(FrontendSocket),
}

pub fn choose_frontend(args: &Args) -> Result<Chosen, Error> {
    let activated = supervisor::listen_fd()?;
    match (&args.socket_path, args.fd, activated) {
        (Some(path), None, None) => Ok(Chosen::Path(path.clone())),
        (None, Some(fd), None) => frontend_from_fd(fd, &format!("--fd {fd}")).map(Chosen::Socket),
        (None, None, Some(fd)) => {
            frontend_from_fd(fd, "the socket systemd passed (LISTEN_FDS)").map(Chosen::Socket)
        }
        (None, None, None) => Err(Error::NoFrontend),
        _ => Err(Error::TwoFrontends),
    }
}

/// Where front-ends come from: a listening socket (`--socket-path`, or
/// `--fd` of a listening socket: socket activation), or the one connected
/// socket `--fd` names (QEMU's backend-program convention, which libvirt
/// follows: it makes a socket pair and hands one end to each side).
pub enum FrontendSocket {
    Listening(Listener),
    Connected(UnixStream),
}

/// Takes over descriptor `fd` (named `what` in errors) as the front-end
/// socket: a Unix stream socket, listening or connected.
fn frontend_from_fd(fd: RawFd, what: &str) -> Result<FrontendSocket, Error> {
    // SAFETY: the user or the service manager handed this descriptor over;
    // fstat and getsockopt on a borrowed descriptor only read its metadata.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let st =
        nix::sys::stat::fstat(borrowed).context(format!("{what} is not an open descriptor"))?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err(Error::NotASocket { what: what.into() });
    }
    use nix::sys::socket::{getsockopt, sockopt};
    let family =
        nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd).context(what)?;
    let family = nix::sys::socket::SockaddrLike::family(&family);
    if family != Some(nix::sys::socket::AddressFamily::Unix) {
        let family = family.map_or_else(|| "unknown".to_string(), |f| format!("{f:?}"));
        return Err(Error::NotUnix {
            what: what.into(),
            family,
        });
    }
    let kind = getsockopt(&borrowed, sockopt::SockType).context(what)?;
    if kind != nix::sys::socket::SockType::Stream {
        return Err(Error::NotStream {
            what: what.into(),
            kind: format!("{kind:?}"),
        });
    }
    let listening = getsockopt(&borrowed, sockopt::AcceptConn).context(what)?;
    nix::fcntl::fcntl(
        borrowed,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context(what)?;
    // SAFETY: the descriptor is an open stream socket we now own (checked
    // above).
    Ok(if listening {
        FrontendSocket::Listening(unsafe { Listener::from_raw_fd(fd) })
    } else {
        FrontendSocket::Connected(unsafe { UnixStream::from_raw_fd(fd) })
    })
}

/// One front-end connection's display work: the broker's end of its
/// display channel and the display socket its session fills in.
pub type DisplayWork = (
    Channel<Reply<DisplayValue>, DisplayRequest>,
    Arc<display::DisplaySocket>,
);

/// One front-end connection's map work: the broker's end of render-worker's
/// map channel and the region its session fills in.
pub type MapWork = (
    Channel<Reply<Nothing>, MapRequest>,
    Arc<mapper::HostVisible>,
);

/// What the front-end thread needs to serve connections.
pub struct FrontendService {
    /// Closed when the one connected front-end (`--fd`) has gone.
    pub ended: UnixStream,
    pub internal: Arc<internal::Internal>,
    pub config: DeviceConfig,
    pub current: CurrentConnection,
    pub gpu: Arc<Channel<GpuWorkerRequest, WorkerReport>>,
    pub render: Arc<Channel<RenderWorkerRequest, WorkerReport>>,
    pub display: std::sync::mpsc::Sender<DisplayWork>,
    pub mapper: std::sync::mpsc::Sender<MapWork>,
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
    pub fn serve(self, socket: FrontendSocket) {
        let listener = match socket {
            FrontendSocket::Listening(l) => l,
            FrontendSocket::Connected(stream) => {
                info!("front-end connected (--fd)");
                if let Err(e) = self.serve_one(stream) {
                    warn!("{e}");
                }
                *self.current.lock_or_recover() = None;
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
            *self.current.lock_or_recover() = None;
            info!("front-end disconnected; waiting for the next connection");
        }
    }

    /// Gives both workers the connection's channels, then connects to
    /// gpu-worker: each worker takes channels and connections in the same
    /// order.
    fn open_relay(&self) -> Result<Relay, Error> {
        let pair =
            |what: &str| ipc::socketpair().context(format!("cannot make the {what} channel"));
        let (display_ours, display_gpu) = pair("display")?;
        let (map_ours, map_render) = pair("map")?;
        let (link_gpu, link_render) = pair("render link")?;
        let (events_gpu, events_render) = pair("render events")?;
        // The receive timeouts of the ends that wait for answers, nested
        // (ipc::deadline): a worker waits for the broker less long than
        // gpu-worker waits for render-worker, which may be waiting on a map.
        use ipc::deadline::{timeval, BROKER_ANSWER, RENDER_ANSWER};
        // gpu-worker's end of the event channel waits only for its
        // greeting (events are read when epoll says they are there).
        for (fd, what, deadline) in [
            (&display_gpu, "display", BROKER_ANSWER),
            (&map_render, "map", BROKER_ANSWER),
            (&link_gpu, "render link", RENDER_ANSWER),
            (&events_gpu, "render events", RENDER_ANSWER),
        ] {
            nix::sys::socket::setsockopt(
                fd,
                nix::sys::socket::sockopt::ReceiveTimeout,
                &timeval(deadline),
            )
            .context(format!("cannot set the {what} channel's timeout"))?;
        }
        // The broker's ends greet first, so each worker finds the
        // greeting there when it takes its channels.
        let display_ours: Channel<Reply<DisplayValue>, DisplayRequest> = Channel::new(display_ours);
        let map_ours: Channel<Reply<Nothing>, MapRequest> = Channel::new(map_ours);
        display_ours
            .greet(Role::Broker)
            .and_then(|()| map_ours.greet(Role::Broker))
            .context("cannot greet on a connection's channel")?;
        let render = RenderConnection {
            map: map_render.as_fd(),
            gpu: link_render.as_fd(),
            events: events_render.as_fd(),
        };
        self.render
            .send(&RenderWorkerRequest::Connection, &render.into_vec())
            .context("render-worker")?;
        let gpu = GpuConnection {
            display: display_gpu.as_fd(),
            render: link_gpu.as_fd(),
            events: events_gpu.as_fd(),
        };
        self.gpu
            .send(&GpuWorkerRequest::Connection, &gpu.into_vec())
            .context("gpu-worker")?;
        let display = Arc::new(display::DisplaySocket::default());
        self.display
            .send((display_ours, display.clone()))
            .map_err(|_| Error::ThreadGone("display"))?;
        let region = Arc::new(mapper::HostVisible::new(self.config.shm_size));
        self.mapper
            .send((map_ours, region.clone()))
            .map_err(|_| Error::ThreadGone("mapper"))?;
        let stream = self.internal.connect()?;
        Ok(Relay {
            stream,
            display,
            region,
        })
    }

    fn serve_one(&self, stream: UnixStream) -> Result<(), Error> {
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
            .context("cannot keep the relay")?;
        let session = Session::new(
            Frontend::from_stream(relay.stream, session::NUM_QUEUES),
            self.config.clone(),
            relay.display,
            relay.region,
        )
        .context("gpu-worker refused the relay")?;
        let peek = stream
            .try_clone()
            .context("cannot keep the front-end connection")?;
        let mut handler = BackendReqHandler::from_stream(stream, Arc::new(Mutex::new(session)));
        *self.current.lock_or_recover() = handler.try_clone_connection().ok();
        loop {
            // Blocks until the front-end's next request is there.
            match watchdog::peek_vmm_socket(&peek) {
                Some((watchdog::VmmSocket::Display, dup)) => display.expect(dup),
                Some((watchdog::VmmSocket::BackendRequests, dup)) => region.expect(dup),
                None => {}
            }
            let handled = watchdog::within(
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
                Err(e) => return Err(Error::FrontendBroke(e)),
            }
        }
    }
}
