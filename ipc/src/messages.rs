//! The vocabulary: per channel one request enum, answered (where answers
//! are awaited) with the one generic [`Reply`].
//!
//! A reviewer can list everything a worker can ask of the broker by
//! reading [`DisplayRequest`] and [`MapRequest`], and everything it can
//! say unasked by reading [`WorkerReport`] and [`RenderEvent`]; nothing
//! else crosses.
//!
//! Channels made by the broker before the workers start (each opens with
//! the handshake, `Channel::handshake`):
//! - broker → gpu-worker: [`GpuWorkerRequest`], reports [`WorkerReport`]
//! - broker → render-worker: [`RenderWorkerRequest`], reports [`WorkerReport`]
//! - gpu-worker ⇄ render-worker: the handshake only ([`Nothing`] after it)
//!
//! Made anew for every front-end connection, their descriptors in the
//! named slots of [`GpuConnection`] and [`RenderConnection`], so that
//! nothing of one connection's device reaches the next (each opens with
//! the handshake too):
//! - gpu-worker → the broker's display thread: [`DisplayRequest`], answered
//!   by [`Reply<DisplayValue>`]
//! - render-worker → the broker's mapper thread: [`MapRequest`], answered by
//!   [`Reply<Nothing>`]
//! - gpu-worker → render-worker: [`RenderCall`] (a [`RenderRequest`] and the
//!   context fence that follows it), answered by [`RenderReply`]
//! - render-worker → gpu-worker, unasked: [`RenderEvent`]

use serde::{Deserialize, Serialize};

use crate::Message;
pub use wire::Refusal;
use wire::{MAX_SCANOUTS, MAX_SCANOUT_DIMENSION};

/// The one answer type of every request/answer channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<T> {
    /// Done; nothing more to say.
    Done,
    /// Done, with what was asked for.
    Value(T),
    /// Refused: the virtio-gpu response code for the guest (where a guest
    /// command is behind the request) and why, for the log.
    Refused(Refusal),
}

impl<T> Reply<T> {
    /// A refusal with ERR_UNSPEC: for the requests no guest code follows
    /// from (the display's, the broker's maps).
    pub fn refused(why: impl Into<String>) -> Self {
        Reply::Refused(Refusal::new(wire::RESP_ERR_UNSPEC, why))
    }
}

/// The message type of a direction that carries nothing (after the
/// handshake), and the value of a [`Reply`] that has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nothing {}

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
}

/// The most `--max-contexts` may be: virtio-gpu context ids are 32-bit,
/// but each context costs render-worker a thread.
pub const MAX_CONTEXTS: u32 = 4096;

impl GpuConfig {
    /// Checks what a receiver must not take on trust.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.scanouts.is_empty() || self.scanouts.len() > MAX_SCANOUTS {
            return Err(ConfigError::ScanoutCount(self.scanouts.len()));
        }
        if let Some(bad) = self.scanouts.iter().find(|s| !s.is_valid()) {
            return Err(ConfigError::ScanoutSize(*bad));
        }
        Ok(())
    }
}

/// A configuration a worker must not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("max_contexts {0} is outside 1..={MAX_CONTEXTS}")]
    MaxContexts(u32),
    #[error("{0} scanouts configured; a virtio-gpu device has 1 to {MAX_SCANOUTS}")]
    ScanoutCount(usize),
    #[error("scanout size {}x{} is outside 1..={MAX_SCANOUT_DIMENSION}", .0.width, .0.height)]
    ScanoutSize(ScanoutSize),
    #[error("context types {0:?} name capsets that are no context type")]
    ContextTypes(wire::ContextTypes),
    #[error("the cross-domain context type needs a compositor socket")]
    CrossDomainWithoutCompositor,
}

/// broker → gpu-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuWorkerRequest {
    /// The device configuration; sent once, right after the handshake.
    Configure(GpuConfig),
    /// A listening `AF_UNIX` socket (1 fd). For every front-end connection
    /// the broker connects to it with the `vhost` crate's `Frontend` and
    /// relays the memory table and vrings, so gpu-worker runs
    /// `vhost-user-backend` as if the broker were its VMM.
    VhostUserListener,
    /// Liveness and readiness probe; reported with [`WorkerReport::Pong`].
    Ping { nonce: u64 },
    /// The channels for the front-end connection the broker is about to
    /// relay, in the slots of [`GpuConnection`] (receive timeouts already
    /// set where answers are awaited).
    Connection,
}

/// A worker → the broker: what it reports, asked (a ping) or once
/// (render-worker's readiness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerReport {
    Pong {
        nonce: u64,
    },
    /// render-worker, once, after the jail and a first rutabaga built
    /// inside it: how many capsets the device offers
    /// (`virtio_gpu_config.num_capsets`).
    Ready {
        num_capsets: u32,
    },
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
    /// Most contexts a guest may have at once (each is a rutabaga context,
    /// and a cross-domain one a thread and a compositor connection):
    /// render-worker, which holds them, counts them.
    pub max_contexts: u32,
    /// The context types offered (`--context-types`): render-worker offers
    /// exactly their capsets, and refuses to start without one it was not
    /// built with.
    pub context_types: wire::ContextTypes,
}

impl RenderConfig {
    /// Checks what a receiver must not take on trust.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_contexts == 0 || self.max_contexts > MAX_CONTEXTS {
            return Err(ConfigError::MaxContexts(self.max_contexts));
        }
        if !self.context_types.is_valid() {
            return Err(ConfigError::ContextTypes(self.context_types));
        }
        if self.context_types.contains(wire::ContextType::CrossDomain)
            && self.wayland_socket.is_none()
        {
            return Err(ConfigError::CrossDomainWithoutCompositor);
        }
        Ok(())
    }
}

/// broker → render-worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderWorkerRequest {
    /// The confinement to enter and the compositor to reach; sent once,
    /// right after the handshake.
    Configure(RenderConfig),
    Ping {
        nonce: u64,
    },
    /// A new front-end connection, its channels in the slots of
    /// [`RenderConnection`]. render-worker drops all device state of the
    /// previous connection.
    Connection,
}

/// Descriptors that travel together, each in a named slot: the count a
/// message declares derives from the slots, and the receiver takes each
/// by name, never by position.
macro_rules! slots {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<T> {
            $($(#[$fdoc])* pub $field: T,)+
        }

        impl<T> $name<T> {
            /// How many descriptors travel.
            pub const SLOTS: usize = [$(stringify!($field)),+].len();

            /// The descriptors in the order they travel.
            pub fn into_vec(self) -> Vec<T> {
                vec![$(self.$field),+]
            }

            /// The slots from the descriptors a message carried; `None`
            /// unless there is exactly one per slot.
            pub fn from_vec(fds: Vec<T>) -> Option<Self> {
                if fds.len() != Self::SLOTS {
                    return None;
                }
                let mut fds = fds.into_iter();
                Some($name { $($field: fds.next()?,)+ })
            }
        }
    };
}

slots!(
    /// gpu-worker's channels for one front-end connection
    /// ([`GpuWorkerRequest::Connection`]).
    GpuConnection {
        /// To the broker's display thread ([`DisplayRequest`]).
        display,
        /// To render-worker ([`RenderCall`]).
        render,
        /// render-worker's events ([`RenderEvent`]).
        events,
    }
);

slots!(
    /// render-worker's channels for one front-end connection
    /// ([`RenderWorkerRequest::Connection`]).
    RenderConnection {
        /// To the broker's mapper thread ([`MapRequest`]).
        map,
        /// From gpu-worker ([`RenderCall`]).
        gpu,
        /// To gpu-worker ([`RenderEvent`]).
        events,
    }
);

/// render-worker → the broker's mapper thread: put a blob's memory into the
/// guest's host-visible region, or take it out. The broker checks each
/// request against the region and its live mappings before the VMM sees it.
/// Answered with [`Reply<Nothing>`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapRequest {
    /// Map `size` bytes of the blob's memory (1 fd), from `fd_offset` of
    /// the descriptor, at `shm_offset` of the host-visible region (shmid
    /// 1).
    Map {
        resource_id: u32,
        shm_offset: u64,
        size: u64,
        writable: bool,
        /// Where the blob's memory starts in its descriptor: 0, but for
        /// lavapipe's opaque memory, whose descriptor opens with a header.
        fd_offset: u64,
    },
    /// Unmap the blob's one mapping.
    Unmap { resource_id: u32 },
}

/// Most bytes of a SUBMIT_3D stream sent inline in its [`RenderCall`]
/// (one ipc frame of 64 KiB, with room for the rest of the message);
/// longer streams go through the submit buffer.
pub const MAX_INLINE_SUBMIT: usize = 60 * 1024;

/// Most guest memory regions a front-end may give (vhost-user's limit).
pub const MAX_MEMORY_REGIONS: usize = 8;

/// One region of guest memory: its descriptor travels with
/// [`RenderRequest::Memory`], in order.
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
pub enum RenderRequest {
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
    /// The connection's submit buffer (1 fd: a sealed memfd of
    /// `wire::command::MAX_SUBMIT_BYTES`), sent once, before the first
    /// [`RenderRequest::SubmitShared`].
    SubmitBuffer,
    /// A SUBMIT_3D too long for one frame ([`MAX_INLINE_SUBMIT`]): its
    /// stream is the first `len` bytes of the submit buffer, which
    /// gpu-worker does not touch again until this is answered.
    SubmitShared {
        ctx_id: u32,
        len: u32,
    },
    /// Nothing but the call's fence (a context command gpu-worker served
    /// itself, fenced on a context).
    FenceAlone,
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
    /// A resource of virgl's kind (RESOURCE_CREATE_3D).
    Create3d {
        resource_id: u32,
        create: Create3d,
    },
    /// Guest ranges (address, length) backing a 3D resource; each checked
    /// against guest memory by gpu-worker.
    AttachBacking {
        resource_id: u32,
        entries: Vec<(u64, u32)>,
    },
    DetachBacking {
        resource_id: u32,
    },
    /// TRANSFER_TO_HOST_3D or TRANSFER_FROM_HOST_3D between a 3D
    /// resource and its backing.
    Transfer3d(Transfer3d),
    /// The host copy that shows a 3D resource on a scanout (1 fd: the
    /// sealed memfd gpu-worker shares with the broker's display too),
    /// `stride` bytes a row, `width`×`height` pixels of 4 bytes.
    ScanoutShadow {
        resource_id: u32,
        width: u32,
        height: u32,
        stride: u32,
    },
    /// Read `rect` of a shown 3D resource back into its host copy (at a
    /// RESOURCE_FLUSH).
    ReadBack {
        resource_id: u32,
        rect: PixelRect,
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

impl RenderRequest {
    /// The request's name, for log lines: cheaper than its Debug form,
    /// which spells out a SUBMIT_3D's bytes.
    pub fn name(&self) -> &'static str {
        match self {
            RenderRequest::Memory(_) => "Memory",
            RenderRequest::GetCapsetInfo { .. } => "GetCapsetInfo",
            RenderRequest::GetCapset { .. } => "GetCapset",
            RenderRequest::CtxCreate { .. } => "CtxCreate",
            RenderRequest::CtxDestroy { .. } => "CtxDestroy",
            RenderRequest::CtxAttach { .. } => "CtxAttach",
            RenderRequest::CtxDetach { .. } => "CtxDetach",
            RenderRequest::Submit { .. } => "Submit",
            RenderRequest::SubmitBuffer => "SubmitBuffer",
            RenderRequest::SubmitShared { .. } => "SubmitShared",
            RenderRequest::FenceAlone => "FenceAlone",
            RenderRequest::CreateBlob { .. } => "CreateBlob",
            RenderRequest::Create3d { .. } => "Create3d",
            RenderRequest::AttachBacking { .. } => "AttachBacking",
            RenderRequest::DetachBacking { .. } => "DetachBacking",
            RenderRequest::Transfer3d(_) => "Transfer3d",
            RenderRequest::ScanoutShadow { .. } => "ScanoutShadow",
            RenderRequest::ReadBack { .. } => "ReadBack",
            RenderRequest::Unref { .. } => "Unref",
            RenderRequest::Reset => "Reset",
            RenderRequest::MapBlob { .. } => "MapBlob",
            RenderRequest::UnmapBlob { .. } => "UnmapBlob",
        }
    }
}

/// RESOURCE_CREATE_3D's fields, as gallium names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create3d {
    pub target: u32,
    pub format: u32,
    pub bind: u32,
    pub width: u32,
    pub height: u32,
    pub depth: u32,
    pub array_size: u32,
    pub last_level: u32,
    pub nr_samples: u32,
    pub flags: u32,
}

/// One 3D transfer: a box of `level`, and where it lies in the backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer3d {
    pub ctx_id: u32,
    pub resource_id: u32,
    /// To the host resource from its backing (TRANSFER_TO_HOST_3D), or
    /// back.
    pub to_host: bool,
    /// x, y, z, width, height, depth.
    pub boxed: [u32; 6],
    pub level: u32,
    pub stride: u32,
    pub layer_stride: u32,
    pub offset: u64,
}

/// A context fence (`ring` with VIRTIO_GPU_FLAG_INFO_RING_IDX), created
/// once its call's request is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub ctx_id: u32,
    pub ring: Option<u8>,
    pub fence_id: u64,
}

/// gpu-worker → render-worker: one request and the fence the guest put on
/// it, in one message, so a fenced command costs one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderCall {
    pub request: RenderRequest,
    pub fence: Option<Fence>,
}

/// What render-worker gives back for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderValue {
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
}

/// render-worker → gpu-worker: the answer to one [`RenderCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderReply {
    pub reply: Reply<RenderValue>,
    /// For a call with a fence that was served: whether the fence has
    /// signalled (`Some(false)`: a [`RenderEvent::FenceSignalled`] will
    /// say when).
    pub fence_signalled: Option<bool>,
}

/// render-worker → gpu-worker, unasked, on the per-connection event
/// channel: what happened since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderEvent {
    /// A fence that was answered as not yet signalled has signalled.
    FenceSignalled {
        ctx_id: u32,
        ring: Option<u8>,
        fence_id: u64,
    },
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
/// ask of the front-end's display. Every request gets one
/// [`Reply<DisplayValue>`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisplayRequest {
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

/// What the broker's display thread gives back for a [`DisplayRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisplayValue {
    /// The display's modes, one per scanout, or `None` when the front-end
    /// has no display socket (the `--display` sizes apply).
    Modes(Option<Vec<DisplayMode>>),
    /// The display's EDID, or `None` when it has none to give.
    Edid(Option<Vec<u8>>),
}

impl Message for GpuWorkerRequest {
    fn fd_count(&self) -> usize {
        match self {
            GpuWorkerRequest::Configure(_) | GpuWorkerRequest::Ping { .. } => 0,
            GpuWorkerRequest::VhostUserListener => 1,
            GpuWorkerRequest::Connection => GpuConnection::<()>::SLOTS,
        }
    }
}

impl Message for RenderWorkerRequest {
    fn fd_count(&self) -> usize {
        match self {
            RenderWorkerRequest::Configure(_) | RenderWorkerRequest::Ping { .. } => 0,
            RenderWorkerRequest::Connection => RenderConnection::<()>::SLOTS,
        }
    }
}

impl Message for RenderCall {
    fn name(&self) -> &'static str {
        self.request.name()
    }

    fn fd_count(&self) -> usize {
        match &self.request {
            RenderRequest::Memory(regions) => regions.len(),
            RenderRequest::SubmitBuffer | RenderRequest::ScanoutShadow { .. } => 1,
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

impl Message for DisplayRequest {
    fn fd_count(&self) -> usize {
        match self {
            DisplayRequest::ShareSurface(_) => 1,
            _ => 0,
        }
    }
}

impl<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug> Message for Reply<T> {
    fn fd_count(&self) -> usize {
        0
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
fdless!(WorkerReport, RenderReply, RenderEvent, Nothing);

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
        let msg = DisplayRequest::CursorUpdate {
            scanout: 15,
            x: u32::MAX,
            y: u32::MAX,
            hot_x: 63,
            hot_y: 63,
            format: 1,
            image: vec![0xff; wire::CURSOR_BYTES],
        };
        let (a, b) = crate::socketpair().unwrap();
        let tx: crate::Channel<DisplayRequest, Reply<DisplayValue>> = crate::Channel::new(a);
        let rx: crate::Channel<Reply<DisplayValue>, DisplayRequest> = crate::Channel::new(b);
        tx.send(&msg, &[]).unwrap();
        assert_eq!(rx.recv().unwrap().0, msg);
    }
}
