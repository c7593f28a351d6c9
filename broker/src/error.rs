//! The broker's errors: what went wrong at start-up or on a connection,
//! as variants, each with the message an operator reads.

use std::path::PathBuf;

use ipc::Role;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operation failed for a reason below: what the broker was doing,
    /// and why.
    #[error("{what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: Cause,
    },

    // Where front-ends come from (bad input: exit 2).
    #[error("give --socket-path PATH or --fd N, or start from a systemd socket unit (see --help)")]
    NoFrontend,
    #[error("give only one of --socket-path, --fd and a systemd socket (LISTEN_FDS)")]
    TwoFrontends,
    #[error("{what} is not a socket")]
    NotASocket { what: String },
    #[error("{what} is not a Unix socket (family {family})")]
    NotUnix { what: String, family: String },
    #[error("{what} is a {kind} socket, not a stream socket")]
    NotStream { what: String, kind: String },
    #[error(
        "LISTEN_FDS is meant for process {pid}, not this one ({ours}); unset LISTEN_FDS and \
         LISTEN_PID or start gpu-airlock from the socket unit"
    )]
    ListenFdsForAnother { pid: String, ours: u32 },
    #[error("LISTEN_FDS passes {0} sockets; gpu-airlock serves one (one socket unit per VM)")]
    ListenFdsMany(usize),
    #[error("--wayland-socket {}: not a socket", .0.display())]
    WaylandNotASocket(PathBuf),
    #[error(
        "--context-types cross-domain needs a compositor: give --wayland-socket, or set \
         XDG_RUNTIME_DIR and WAYLAND_DISPLAY"
    )]
    CrossDomainWithoutCompositor,

    /// A command-line value (after clap's own checks).
    #[error(transparent)]
    Config(crate::config::ConfigError),

    // The workers at start-up.
    /// A worker's executable cannot be found or started.
    #[error(transparent)]
    Spawn(std::io::Error),
    #[error("{role} did not {what}: {got}")]
    WorkerNotReady {
        role: Role,
        what: &'static str,
        got: String,
    },
    #[error("a broker thread did not start")]
    ThreadDidNotStart,
    #[error("the {0} thread is gone")]
    ThreadGone(&'static str),

    // The internal vhost-user link.
    #[error("the internal vhost-user socket belongs to process {0}, not to this broker")]
    NotOurListener(i32),
    #[error("cannot draw a random socket name: {0}")]
    NoRandomness(std::io::Error),

    // A front-end connection.
    #[error("front-end request failed, closing the connection: {0}")]
    FrontendBroke(vhost::vhost_user::Error),
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sys(#[from] nix::errno::Errno),
    #[error(transparent)]
    Ipc(#[from] ipc::Error),
    #[error(transparent)]
    Jail(#[from] policies::Error),
    #[error(transparent)]
    VhostUser(#[from] vhost::vhost_user::Error),
    #[error(transparent)]
    Vhost(#[from] vhost::Error),
    #[error(transparent)]
    Broker(#[from] Box<Error>),
}

/// Says what the broker was doing when an operation failed.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, Error>;
}

impl<T, E: Into<Cause>> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, Error> {
        self.map_err(|e| Error::Failed {
            what: what.into(),
            source: e.into(),
        })
    }
}

impl From<Error> for Cause {
    fn from(e: Error) -> Self {
        Cause::Broker(Box::new(e))
    }
}
