//! The vocabulary: one enum per direction of each channel.
//!
//! A reviewer can list every request a worker can make of the broker by
//! reading `GpuToBroker` and `RenderToBroker`; nothing else crosses.
//!
//! Channels, all made by the broker before the workers start:
//! - broker ⇄ gpu-worker: [`BrokerToGpu`] / [`GpuToBroker`]
//! - broker ⇄ render-worker: [`BrokerToRender`] / [`RenderToBroker`]
//! - gpu-worker ⇄ render-worker: [`GpuToRender`] / [`RenderToGpu`]

use serde::{Deserialize, Serialize};

use crate::Message;

/// Most scanouts a virtio-gpu device has (`VIRTIO_GPU_MAX_SCANOUTS`).
pub const MAX_SCANOUTS: usize = 16;

/// Largest width or height of one scanout we accept, in pixels.
pub const MAX_SCANOUT_DIMENSION: u32 = 16384;

/// The size of one scanout, as `--display WIDTHxHEIGHT` gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanoutSize {
    pub width: u32,
    pub height: u32,
}

impl ScanoutSize {
    pub fn is_valid(&self) -> bool {
        (1..=MAX_SCANOUT_DIMENSION).contains(&self.width)
            && (1..=MAX_SCANOUT_DIMENSION).contains(&self.height)
    }
}

/// What a syscall outside a process's seccomp policy gets (`--seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompMode {
    /// The process is killed with SIGSYS (the default).
    Kill,
    /// The process logs the syscall's name and exits.
    Trap,
    /// The kernel logs the syscall and lets it run (for writing policies).
    Log,
    /// No filter at all (debugging only).
    None,
}

/// Whether a process enters namespaces, an empty root and landlock
/// (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxMode {
    /// New user, mount, net and ipc namespaces, pivot_root into an empty
    /// read-only tmpfs, landlock (the default).
    Namespace,
    /// None of those (debugging, or a kernel that permits none of them).
    None,
}

/// The confinement a worker enters once it is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailConfig {
    pub sandbox: SandboxMode,
    pub seccomp: SeccompMode,
}

/// What gpu-worker needs to know about the device it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuConfig {
    pub scanouts: Vec<ScanoutSize>,
    /// Most bytes all of a guest's 2D resources may take together.
    pub max_resource_memory: u64,
    pub jail: JailConfig,
}

impl GpuConfig {
    /// Checks what a receiver must not take on trust.
    pub fn validate(&self) -> Result<(), String> {
        if self.scanouts.is_empty() || self.scanouts.len() > MAX_SCANOUTS {
            return Err(format!(
                "{} scanouts configured; a virtio-gpu device has 1 to {MAX_SCANOUTS}",
                self.scanouts.len()
            ));
        }
        if let Some(bad) = self.scanouts.iter().find(|s| !s.is_valid()) {
            return Err(format!(
                "scanout size {}x{} is outside 1..={MAX_SCANOUT_DIMENSION}",
                bad.width, bad.height
            ));
        }
        Ok(())
    }
}

/// broker → gpu-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerToGpu {
    /// The device configuration; sent once, right after the handshake.
    Configure(GpuConfig),
    /// A listening `AF_UNIX` socket (1 fd). For every front-end connection
    /// the broker connects to it with the `vhost` crate's `Frontend` and
    /// relays the memory table and vrings, so gpu-worker runs
    /// `vhost-user-backend` as if the broker were its VMM.
    VhostUserListener,
    /// Liveness and readiness probe; answered with [`GpuToBroker::Pong`].
    Ping { nonce: u64 },
}

/// gpu-worker → broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuToBroker {
    Pong { nonce: u64 },
}

/// broker → render-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerToRender {
    /// The confinement to enter; sent once, right after the handshake.
    Configure(JailConfig),
    Ping {
        nonce: u64,
    },
}

/// render-worker → broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderToBroker {
    Pong { nonce: u64 },
}

/// gpu-worker → render-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuToRender {
    Ping { nonce: u64 },
}

/// render-worker → gpu-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderToGpu {
    Pong { nonce: u64 },
}

impl Message for BrokerToGpu {
    fn fd_count(&self) -> usize {
        match self {
            BrokerToGpu::Configure(_) | BrokerToGpu::Ping { .. } => 0,
            BrokerToGpu::VhostUserListener => 1,
        }
    }
}

macro_rules! fdless {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn fd_count(&self) -> usize {
                0
            }
        }
    )*};
}
fdless!(
    GpuToBroker,
    BrokerToRender,
    RenderToBroker,
    GpuToRender,
    RenderToGpu
);
