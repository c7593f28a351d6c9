//! virtio-gpu on the wire (virtio spec 1.3, 5.7.6), in one place for every
//! gpu-airlock process and its tests.
//!
//! - the spec's numbers (commands, responses, flags, features, formats),
//!   taken from `virtio-bindings`, each declared once here;
//! - [`layout`]: the structures as the guest lays them out in its memory
//!   (little-endian fields, `#[repr(C)]`, `ByteValued`, so they are read
//!   and written only through bounds-checked guest-memory accessors);
//! - [`command`]: [`GpuCommand::decode`], which turns the bytes after a
//!   request's header into one typed command, or a [`Refusal`];
//! - [`response`]: [`GpuResponse::encode`], which writes one response into
//!   the chain's writable part, degrading to an error header where it does
//!   not fit.
//!
//! Nothing here knows about processes or state: a newcomer finds each
//! virtio-gpu message in exactly one decode arm here and one handler in
//! gpu-worker.

use virtio_bindings::virtio_gpu as b;

pub mod command;
pub mod context_types;
pub mod cross_domain;
pub mod layout;
pub mod response;

pub use command::{GpuCommand, Queue};
pub use context_types::{ContextType, ContextTypes};
pub use layout::*;
pub use response::GpuResponse;

pub const CMD_GET_DISPLAY_INFO: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO;
pub const CMD_GET_EDID: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID;
pub const CMD_RESOURCE_CREATE_2D: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D;
pub const CMD_RESOURCE_UNREF: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF;
pub const CMD_SET_SCANOUT: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT;
pub const CMD_RESOURCE_FLUSH: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH;
pub const CMD_TRANSFER_TO_HOST_2D: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D;
pub const CMD_RESOURCE_ATTACH_BACKING: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING;
pub const CMD_RESOURCE_DETACH_BACKING: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING;
pub const CMD_RESOURCE_ASSIGN_UUID: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID;
pub const CMD_SET_SCANOUT_BLOB: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT_BLOB;
pub const CMD_CTX_CREATE: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE;
pub const CMD_RESOURCE_UNMAP_BLOB: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB;
pub const CMD_GET_CAPSET_INFO: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO;
pub const CMD_GET_CAPSET: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET;
pub const CMD_RESOURCE_CREATE_BLOB: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB;
pub const CMD_CTX_DESTROY: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DESTROY;
pub const CMD_CTX_ATTACH_RESOURCE: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE;
pub const CMD_CTX_DETACH_RESOURCE: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE;
pub const CMD_SUBMIT_3D: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SUBMIT_3D;
pub const CMD_RESOURCE_CREATE_3D: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_3D;
pub const CMD_TRANSFER_TO_HOST_3D: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D;
pub const CMD_TRANSFER_FROM_HOST_3D: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D;
pub const CMD_RESOURCE_MAP_BLOB: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB;
pub const CMD_UPDATE_CURSOR: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR;
pub const CMD_MOVE_CURSOR: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR;

pub const RESP_OK_NODATA: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA;
pub const RESP_OK_DISPLAY_INFO: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
pub const RESP_OK_EDID: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID;
pub const RESP_OK_CAPSET_INFO: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET_INFO;
pub const RESP_OK_CAPSET: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_CAPSET;
pub const RESP_OK_RESOURCE_UUID: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_RESOURCE_UUID;
pub const RESP_OK_MAP_INFO: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_MAP_INFO;
pub const RESP_ERR_INVALID_CONTEXT_ID: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
pub const RESP_ERR_UNSPEC: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;
pub const RESP_ERR_OUT_OF_MEMORY: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
pub const RESP_ERR_INVALID_PARAMETER: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;

pub const FLAG_FENCE: u32 = b::VIRTIO_GPU_FLAG_FENCE;
pub const FLAG_INFO_RING_IDX: u32 = b::VIRTIO_GPU_FLAG_INFO_RING_IDX;
pub const MAX_SCANOUTS: usize = b::VIRTIO_GPU_MAX_SCANOUTS as usize;

/// The 2D formats of the spec (5.7.6.8), named by their bytes in memory,
/// all four bytes per pixel.
pub const FORMAT_B8G8R8A8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM;
pub const FORMAT_B8G8R8X8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM;
pub const FORMAT_A8R8G8B8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM;
pub const FORMAT_X8R8G8B8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM;
pub const FORMAT_R8G8B8A8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM;
pub const FORMAT_X8B8G8R8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM;
pub const FORMAT_A8B8G8R8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM;
pub const FORMAT_R8G8B8X8_UNORM: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM;
/// Every 2D format.
pub const FORMATS_2D: [u32; 8] = [
    FORMAT_B8G8R8A8_UNORM,
    FORMAT_B8G8R8X8_UNORM,
    FORMAT_A8R8G8B8_UNORM,
    FORMAT_X8R8G8B8_UNORM,
    FORMAT_R8G8B8A8_UNORM,
    FORMAT_X8B8G8R8_UNORM,
    FORMAT_A8B8G8R8_UNORM,
    FORMAT_R8G8B8X8_UNORM,
];
pub const BYTES_PER_PIXEL: u32 = 4;

/// Virtio feature bit: the device answers GET_EDID.
pub const F_EDID: u32 = b::VIRTIO_GPU_F_EDID;
/// Virtio feature bit: contexts and 3D commands. Offered with any context
/// type, not only virgl's (see [`device_features`]).
pub const F_VIRGL: u32 = b::VIRTIO_GPU_F_VIRGL;
/// Virtio feature bits of the blob path.
pub const F_RESOURCE_UUID: u32 = b::VIRTIO_GPU_F_RESOURCE_UUID;
pub const F_RESOURCE_BLOB: u32 = b::VIRTIO_GPU_F_RESOURCE_BLOB;
pub const F_CONTEXT_INIT: u32 = b::VIRTIO_GPU_F_CONTEXT_INIT;
/// vhost-user's bit in a back-end's virtio features: it speaks the
/// protocol-feature negotiation (vhost-user.rst, VHOST_USER_F_PROTOCOL_FEATURES).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;

/// Every virtio feature a gpu-airlock device offers: the transport's
/// (version 1, indirect descriptors, event index, vhost-user's protocol
/// features) and virtio-gpu's, with VIRGL when render-worker has a context
/// type (`contexts`; Linux sends no context command without it, whatever
/// the context type). gpu-worker offers these, and the broker offers the
/// VMM no bit outside them, whatever gpu-worker says.
pub fn device_features(contexts: bool) -> u64 {
    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
    let virgl = if contexts { 1 << F_VIRGL } else { 0 };
    virgl
        | 1 << VIRTIO_F_VERSION_1
        | 1 << VIRTIO_RING_F_INDIRECT_DESC
        | 1 << VIRTIO_RING_F_EVENT_IDX
        | 1 << F_EDID
        | 1 << F_RESOURCE_UUID
        | 1 << F_RESOURCE_BLOB
        | 1 << F_CONTEXT_INIT
        | 1 << VHOST_USER_F_PROTOCOL_FEATURES
}

pub const CONTEXT_INIT_CAPSET_ID_MASK: u32 = b::VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK;
pub const BLOB_MEM_GUEST: u32 = b::VIRTIO_GPU_BLOB_MEM_GUEST;
pub const BLOB_MEM_HOST3D: u32 = b::VIRTIO_GPU_BLOB_MEM_HOST3D;
pub const BLOB_MEM_HOST3D_GUEST: u32 = b::VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST;
pub const BLOB_FLAG_USE_MAPPABLE: u32 = b::VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE;
pub const BLOB_FLAGS_ALL: u32 = b::VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE
    | b::VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE
    | b::VIRTIO_GPU_BLOB_FLAG_USE_CROSS_DEVICE;

/// The 64x64 cursor image of UPDATE_CURSOR (and of vhost-user-gpu's
/// `VhostUserGpuCursorUpdate`): its width and height in pixels.
pub const CURSOR_SIZE: u32 = 64;
/// Bytes in one cursor image.
pub const CURSOR_BYTES: usize = (CURSOR_SIZE * CURSOR_SIZE * BYTES_PER_PIXEL) as usize;
/// Largest width or height of one scanout gpu-airlock accepts, in pixels.
pub const MAX_SCANOUT_DIMENSION: u32 = 16384;

/// Whether `format` is one of the spec's 2D formats.
pub fn is_2d_format(format: u32) -> bool {
    FORMATS_2D.contains(&format)
}

/// A request refused: the response code the guest gets, and why (for the
/// guest-facing log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{why}")]
pub struct Refusal {
    pub code: u32,
    pub why: String,
}

impl Refusal {
    pub fn new(code: u32, why: impl Into<String>) -> Self {
        Refusal {
            code,
            why: why.into(),
        }
    }

    /// ERR_INVALID_PARAMETER, the answer to a malformed request.
    pub fn invalid(why: impl Into<String>) -> Self {
        Refusal::new(RESP_ERR_INVALID_PARAMETER, why)
    }
}

/// Refuses with `code`.
pub fn refuse<T>(code: u32, why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::new(code, why))
}
