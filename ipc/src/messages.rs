//! The vocabulary: one enum per direction of each channel.
//!
//! A reviewer can list every request a worker can make of the broker by
//! reading `GpuToBroker` and `RenderToBroker`; nothing else crosses.
//!
//! Channels, all made by the broker before the workers start:
//! - broker ⇄ gpu-worker: [`BrokerToGpu`] / [`GpuToBroker`]
//! - broker ⇄ render-worker: [`BrokerToRender`] / [`RenderToBroker`]
//! - gpu-worker ⇄ render-worker: [`GpuToRender`] / [`RenderToGpu`]
//!
//! And, made anew for every front-end connection and handed over with
//! [`BrokerToGpu::Connection`] and [`BrokerToRender::Connection`], so that
//! nothing of one connection's device reaches the next:
//! - gpu-worker ⇄ broker's display thread: [`GpuToDisplay`] / [`DisplayToGpu`]
//! - render-worker ⇄ broker's mapper thread: [`MapRequest`] / [`MapAnswer`]
//! - gpu-worker ⇄ render-worker: [`RenderCommand`] / [`RenderAnswer`]

use serde::{Deserialize, Serialize};

use crate::Message;
use wire::{MAX_SCANOUTS, MAX_SCANOUT_DIMENSION};

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
    /// Whether render-worker offers any context type (a capset). Only then
    /// does the device offer VIRTIO_GPU_F_VIRGL: Linux's driver gates
    /// EXECBUFFER, host blobs and context attachment on it, whatever the
    /// context type (crosvm offers it for cross-domain alone too).
    pub contexts: bool,
    /// Most contexts a guest may have at once (each is a rutabaga context,
    /// and a cross-domain one a thread and a compositor connection).
    pub max_contexts: u32,
}

/// The most `--max-contexts` may be: virtio-gpu context ids are 32-bit,
/// but each context costs render-worker a thread.
pub const MAX_CONTEXTS: u32 = 4096;

impl GpuConfig {
    /// Checks what a receiver must not take on trust.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_contexts == 0 || self.max_contexts > MAX_CONTEXTS {
            return Err(format!(
                "max_contexts {} is outside 1..={MAX_CONTEXTS}",
                self.max_contexts
            ));
        }
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
    /// The channels for the front-end connection the broker is about to
    /// relay (3 fds, `SOCK_SEQPACKET`, receive timeouts already set where
    /// answers are awaited): the display channel ([`GpuToDisplay`]
    /// requests, one [`DisplayToGpu`] answer each), the link to
    /// render-worker ([`RenderCommand`], one [`RenderAnswer`] each), and
    /// render-worker's event channel ([`RenderEvent`]).
    Connection,
}

/// gpu-worker → broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuToBroker {
    Pong { nonce: u64 },
}

/// Where render-worker finds the Wayland compositor inside its jail.
pub const WAYLAND_SOCKET_IN_JAIL: &str = "/wayland-0";

/// What render-worker needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderConfig {
    pub jail: JailConfig,
    /// The compositor's socket on the host (`--wayland-socket`). It is
    /// bind-mounted at [`WAYLAND_SOCKET_IN_JAIL`] in render-worker's empty
    /// root, and the cross-domain capset is offered only with it.
    pub wayland_socket: Option<String>,
}

/// broker → render-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerToRender {
    /// The confinement to enter and the compositor to reach; sent once,
    /// right after the handshake.
    Configure(RenderConfig),
    Ping {
        nonce: u64,
    },
    /// A new front-end connection (3 fds): the map channel to the broker
    /// ([`MapRequest`], one [`MapAnswer`] each), the link from gpu-worker,
    /// and the event channel to gpu-worker ([`RenderEvent`]).
    /// render-worker drops all device state of the previous connection.
    Connection,
}

/// render-worker → the broker's mapper thread: put a blob's memory into the
/// guest's host-visible region, or take it out. The broker checks each
/// request against the region and its live mappings before the VMM sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapRequest {
    /// Map `size` bytes of the blob's memory (1 fd) at `shm_offset` of the
    /// host-visible region (shmid 1).
    Map {
        resource_id: u32,
        shm_offset: u64,
        size: u64,
        writable: bool,
    },
    /// Unmap the blob's one mapping.
    Unmap { resource_id: u32 },
}

/// The broker's mapper thread → render-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapAnswer {
    Done,
    /// Refused; the reason goes to the guest-facing log.
    Refused(String),
}

/// Most guest memory regions a front-end may give (vhost-user's limit).
pub const MAX_MEMORY_REGIONS: usize = 8;

/// One region of guest memory: its descriptor travels with
/// [`RenderCommand::Memory`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegion {
    pub guest_addr: u64,
    pub size: u64,
    /// Where the region starts in its descriptor.
    pub file_offset: u64,
}

/// gpu-worker → render-worker, per connection: the commands gpu-worker has
/// decoded and checked that rutabaga serves. Every guest address has been
/// checked against guest memory; render-worker checks again against its
/// own mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderCommand {
    Ping {
        nonce: u64,
    },
    /// The guest's memory (one fd per region), replacing any earlier map.
    /// A notice: render-worker does not answer it (gpu-worker sends it
    /// while a request of the vring thread may be waiting).
    Memory(Vec<MemoryRegion>),
    GetCapsetInfo {
        index: u32,
    },
    GetCapset {
        id: u32,
        version: u32,
    },
    CtxCreate {
        ctx_id: u32,
        context_init: u32,
        name: String,
    },
    CtxDestroy {
        ctx_id: u32,
    },
    CtxAttach {
        ctx_id: u32,
        resource_id: u32,
    },
    CtxDetach {
        ctx_id: u32,
        resource_id: u32,
    },
    Submit {
        ctx_id: u32,
        commands: Vec<u8>,
    },
    /// A fence on a context's ring (`ring` with VIRTIO_GPU_FLAG_INFO_RING_IDX).
    Fence {
        ctx_id: u32,
        ring: Option<u8>,
        fence_id: u64,
    },
    CreateBlob {
        ctx_id: u32,
        resource_id: u32,
        blob_mem: u32,
        blob_flags: u32,
        blob_id: u64,
        size: u64,
        /// Guest ranges (address, length) backing a guest-memory blob.
        entries: Vec<(u64, u32)>,
    },
    Unref {
        resource_id: u32,
    },
    /// The device was reset: unmap every blob, drop every context and
    /// blob, start rutabaga afresh.
    Reset,
    /// Map the blob at `offset` of the host-visible region.
    MapBlob {
        resource_id: u32,
        offset: u64,
    },
    UnmapBlob {
        resource_id: u32,
    },
}

/// render-worker → gpu-worker: one answer per command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderAnswer {
    Pong {
        nonce: u64,
    },
    Done,
    /// Refused, with the virtio-gpu response code for the guest and why.
    Refused {
        code: u32,
        why: String,
    },
    CapsetInfo {
        id: u32,
        max_version: u32,
        max_size: u32,
    },
    Capset(Vec<u8>),
    /// The blob is mapped; the spec's `map_info` (cache type).
    Mapped {
        map_info: u32,
    },
    /// The fence signalled.
    Signalled,
    /// The fence will signal later: a [`RenderEvent::FenceSignalled`]
    /// says when.
    Pending,
}

/// render-worker → gpu-worker, unasked, on the per-connection event
/// channel: what happened since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderEvent {
    /// A fence that was [`RenderAnswer::Pending`] signalled.
    FenceSignalled {
        ctx_id: u32,
        ring: Option<u8>,
        fence_id: u64,
    },
}

/// The message type of a channel's direction that carries nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nothing {}

/// render-worker → broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderToBroker {
    Pong {
        nonce: u64,
    },
    /// Sent once, after the jail and a first rutabaga built inside it: how
    /// many capsets the device offers (`virtio_gpu_config.num_capsets`).
    Ready {
        num_capsets: u32,
    },
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

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl PixelRect {
    /// Whether the rectangle is non-empty and lies inside a
    /// `width`×`height` surface, without overflow.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        self.width > 0
            && self.height > 0
            && self.x.checked_add(self.width).is_some_and(|r| r <= width)
            && self.y.checked_add(self.height).is_some_and(|b| b <= height)
    }
}

/// A 2D resource's pixel memory, shared read-only with the broker so a
/// flush reaches the display without a copy through ipc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSurface {
    pub resource_id: u32,
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    /// A `VIRTIO_GPU_FORMAT_*` 2D format.
    pub format: u32,
}

/// One scanout's mode as the display reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayMode {
    pub enabled: bool,
    pub rect: PixelRect,
}

/// gpu-worker → the broker's display thread: what the guest's 2D commands
/// ask of the front-end's display. Every request gets one [`DisplayToGpu`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuToDisplay {
    /// The display's preferred modes (VHOST_USER_GPU_GET_DISPLAY_INFO).
    GetDisplayInfo,
    /// The display's EDID for one scanout (VHOST_USER_GPU_GET_EDID).
    GetEdid { scanout: u32 },
    /// A resource's pixels (1 fd: a memfd sealed against shrinking and
    /// growing), sent before the resource is first shown.
    ShareSurface(SharedSurface),
    /// A shared resource is gone; the broker unmaps it.
    ReleaseSurface { resource_id: u32 },
    /// Show `source` (a rectangle of a shared resource) on a scanout, or
    /// disable the scanout (`None`).
    SetScanout {
        scanout: u32,
        source: Option<(u32, PixelRect)>,
    },
    /// Present `rect` (in scanout coordinates) of what a scanout shows.
    Flush { scanout: u32, rect: PixelRect },
    /// A new cursor image (64×64 pixels in `format`) at a position.
    CursorUpdate {
        scanout: u32,
        x: u32,
        y: u32,
        hot_x: u32,
        hot_y: u32,
        format: u32,
        image: Vec<u8>,
    },
    /// Move the cursor, keeping its image.
    CursorMove { scanout: u32, x: u32, y: u32 },
    /// Hide the cursor.
    CursorHide { scanout: u32 },
}

/// The broker's display thread → gpu-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisplayToGpu {
    /// Done (for a front-end without a display socket: nothing to do).
    Done,
    /// Refused; the reason goes to gpu-worker's log.
    Refused(String),
    /// The display's modes, one per scanout, or `None` when the front-end
    /// has no display socket (the `--display` sizes apply).
    DisplayInfo(Option<Vec<DisplayMode>>),
    /// The display's EDID, or `None` when it has none to give.
    Edid(Option<Vec<u8>>),
}

impl Message for BrokerToGpu {
    fn fd_count(&self) -> usize {
        match self {
            BrokerToGpu::Configure(_) | BrokerToGpu::Ping { .. } => 0,
            BrokerToGpu::VhostUserListener => 1,
            BrokerToGpu::Connection => 3,
        }
    }
}

impl Message for BrokerToRender {
    fn fd_count(&self) -> usize {
        match self {
            BrokerToRender::Configure(_) | BrokerToRender::Ping { .. } => 0,
            BrokerToRender::Connection => 3,
        }
    }
}

impl Message for RenderCommand {
    fn fd_count(&self) -> usize {
        match self {
            RenderCommand::Memory(regions) => regions.len(),
            _ => 0,
        }
    }
}

impl Message for MapRequest {
    fn fd_count(&self) -> usize {
        match self {
            MapRequest::Map { .. } => 1,
            MapRequest::Unmap { .. } => 0,
        }
    }
}

impl Message for GpuToDisplay {
    fn fd_count(&self) -> usize {
        match self {
            GpuToDisplay::ShareSurface(_) => 1,
            _ => 0,
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
    RenderToBroker,
    MapAnswer,
    RenderAnswer,
    RenderEvent,
    Nothing,
    GpuToRender,
    RenderToGpu,
    DisplayToGpu
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_fit_only_inside_without_overflow() {
        let r = |x, y, width, height| PixelRect {
            x,
            y,
            width,
            height,
        };
        assert!(r(0, 0, 64, 32).fits_in(64, 32));
        assert!(r(63, 31, 1, 1).fits_in(64, 32));
        assert!(!r(0, 0, 65, 32).fits_in(64, 32));
        assert!(!r(0, 0, 0, 32).fits_in(64, 32));
        assert!(!r(u32::MAX, 0, 2, 1).fits_in(u32::MAX, 32));
        assert!(!r(0, u32::MAX, 1, 2).fits_in(64, u32::MAX));
    }

    #[test]
    fn a_cursor_image_fits_in_one_frame() {
        let msg = GpuToDisplay::CursorUpdate {
            scanout: 15,
            x: u32::MAX,
            y: u32::MAX,
            hot_x: 63,
            hot_y: 63,
            format: 1,
            image: vec![0xff; wire::CURSOR_BYTES],
        };
        let (a, b) = crate::socketpair().unwrap();
        let tx: crate::Channel<GpuToDisplay, DisplayToGpu> = crate::Channel::new(a);
        let rx: crate::Channel<DisplayToGpu, GpuToDisplay> = crate::Channel::new(b);
        tx.send(&msg, &[]).unwrap();
        assert_eq!(rx.recv().unwrap().0, msg);
    }
}
