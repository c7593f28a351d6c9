//! virtio-gpu wire structures (virtio spec 1.3, 5.7.6), as the guest lays
//! them out in its memory: little-endian fields, `#[repr(C)]`, `ByteValued`
//! so they are read and written only through bounds-checked guest-memory
//! accessors. Numbers come from `virtio-bindings`; only the layouts, which
//! that crate cannot give a foreign `ByteValued`, are written here.

use virtio_bindings::virtio_gpu as b;
use vm_memory::{ByteValued, Le32, Le64};

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

/// The 2D formats of the spec (5.7.6.8), all four bytes per pixel.
pub const FORMATS_2D: [u32; 8] = [
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM,
    b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
];
pub const BYTES_PER_PIXEL: u32 = 4;
/// DRM_FORMAT_ARGB8888 in memory: Linux's cursor format.
pub const FORMAT_B8G8R8A8: u32 = b::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM;

/// Virtio feature bit: the device answers GET_EDID.
pub const F_EDID: u32 = b::VIRTIO_GPU_F_EDID;
/// Virtio feature bit: contexts and 3D commands. Offered with any context
/// type, not only virgl's (see `backend::device_features`).
pub const F_VIRGL: u32 = b::VIRTIO_GPU_F_VIRGL;
/// Virtio feature bits of the blob path.
pub const F_RESOURCE_UUID: u32 = b::VIRTIO_GPU_F_RESOURCE_UUID;
pub const F_RESOURCE_BLOB: u32 = b::VIRTIO_GPU_F_RESOURCE_BLOB;
pub const F_CONTEXT_INIT: u32 = b::VIRTIO_GPU_F_CONTEXT_INIT;

pub const CONTEXT_INIT_CAPSET_ID_MASK: u32 = b::VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK;
pub const BLOB_MEM_GUEST: u32 = b::VIRTIO_GPU_BLOB_MEM_GUEST;
pub const BLOB_MEM_HOST3D: u32 = b::VIRTIO_GPU_BLOB_MEM_HOST3D;
pub const BLOB_MEM_HOST3D_GUEST: u32 = b::VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST;
pub const BLOB_FLAG_USE_MAPPABLE: u32 = b::VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE;
pub const BLOB_FLAGS_ALL: u32 = b::VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE
    | b::VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE
    | b::VIRTIO_GPU_BLOB_FLAG_USE_CROSS_DEVICE;

/// `struct virtio_gpu_ctrl_hdr`: opens every request and every response.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtrlHdr {
    pub type_: Le32,
    pub flags: Le32,
    pub fence_id: Le64,
    pub ctx_id: Le32,
    pub ring_idx: u8,
    pub padding: [u8; 3],
}
// SAFETY: plain little-endian integers and bytes, no padding between fields
// (4+4+8+4+1+3 = 24, 8-byte aligned), every bit pattern is valid.
unsafe impl ByteValued for CtrlHdr {}

/// `struct virtio_gpu_rect`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Rect {
    pub x: Le32,
    pub y: Le32,
    pub width: Le32,
    pub height: Le32,
}
// SAFETY: four Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for Rect {}

/// One `pmodes[]` entry of `struct virtio_gpu_resp_display_info`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DisplayOne {
    pub r: Rect,
    pub enabled: Le32,
    pub flags: Le32,
}
// SAFETY: a Rect and two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for DisplayOne {}

/// `struct virtio_gpu_resp_display_info`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespDisplayInfo {
    pub hdr: CtrlHdr,
    pub pmodes: [DisplayOne; MAX_SCANOUTS],
}
// SAFETY: a CtrlHdr and an array of DisplayOne, both ByteValued, no padding.
unsafe impl ByteValued for RespDisplayInfo {}

/// `struct virtio_gpu_cmd_get_edid`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CmdGetEdid {
    pub hdr: CtrlHdr,
    pub scanout: Le32,
    pub padding: Le32,
}
// SAFETY: a CtrlHdr and two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for CmdGetEdid {}

/// `struct virtio_gpu_resp_edid`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RespEdid {
    pub hdr: CtrlHdr,
    pub size: Le32,
    pub padding: Le32,
    pub edid: [u8; 1024],
}
// SAFETY: a CtrlHdr, two Le32 and bytes, no padding, every bit pattern valid.
unsafe impl ByteValued for RespEdid {}

impl Default for RespEdid {
    fn default() -> Self {
        RespEdid {
            hdr: CtrlHdr::default(),
            size: Le32::from(0),
            padding: Le32::from(0),
            edid: [0; 1024],
        }
    }
}

// The command bodies below follow the `CtrlHdr` each request opens with;
// the header is read first, then the body.

/// Body of `struct virtio_gpu_resource_create_2d`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResourceCreate2d {
    pub resource_id: Le32,
    pub format: Le32,
    pub width: Le32,
    pub height: Le32,
}
// SAFETY: four Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceCreate2d {}

/// Body of `virtio_gpu_resource_unref` and `virtio_gpu_resource_detach_backing`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResourceId {
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceId {}

/// Body of `struct virtio_gpu_set_scanout`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SetScanout {
    pub r: Rect,
    pub scanout_id: Le32,
    pub resource_id: Le32,
}
// SAFETY: a Rect and two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for SetScanout {}

/// Body of `struct virtio_gpu_resource_flush`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResourceFlush {
    pub r: Rect,
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: a Rect and two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceFlush {}

/// Body of `struct virtio_gpu_transfer_to_host_2d`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TransferToHost2d {
    pub r: Rect,
    pub offset: Le64,
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: a Rect (16 bytes), an Le64 at offset 16 and two Le32: no padding,
// every bit pattern valid.
unsafe impl ByteValued for TransferToHost2d {}

/// Body of `struct virtio_gpu_resource_attach_backing`; `nr_entries`
/// `MemEntry`s follow it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AttachBacking {
    pub resource_id: Le32,
    pub nr_entries: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for AttachBacking {}

/// `struct virtio_gpu_mem_entry`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemEntry {
    pub addr: Le64,
    pub length: Le32,
    pub padding: Le32,
}
// SAFETY: an Le64 and two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for MemEntry {}

/// Body of `struct virtio_gpu_update_cursor` (MOVE_CURSOR uses the same).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UpdateCursor {
    pub scanout_id: Le32,
    pub x: Le32,
    pub y: Le32,
    pub pos_padding: Le32,
    pub resource_id: Le32,
    pub hot_x: Le32,
    pub hot_y: Le32,
    pub padding: Le32,
}
// SAFETY: eight Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for UpdateCursor {}

/// `struct virtio_gpu_ctx_create` after its header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CtxCreate {
    pub nlen: Le32,
    pub context_init: Le32,
    pub debug_name: [u8; 64],
}
impl Default for CtxCreate {
    fn default() -> Self {
        CtxCreate {
            nlen: Le32::default(),
            context_init: Le32::default(),
            debug_name: [0; 64],
        }
    }
}
// SAFETY: two Le32 and bytes, no padding, every bit pattern valid.
unsafe impl ByteValued for CtxCreate {}

/// `struct virtio_gpu_ctx_resource` (attach, detach) after its header.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtxResource {
    pub resource_id: Le32,
    pub padding: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for CtxResource {}

/// `struct virtio_gpu_cmd_submit` after its header; `size` bytes follow.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CmdSubmit {
    pub size: Le32,
    pub padding: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for CmdSubmit {}

/// `struct virtio_gpu_get_capset_info` after its header.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GetCapsetInfo {
    pub capset_index: Le32,
    pub padding: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for GetCapsetInfo {}

/// `struct virtio_gpu_resp_capset_info`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespCapsetInfo {
    pub hdr: CtrlHdr,
    pub capset_id: Le32,
    pub capset_max_version: Le32,
    pub capset_max_size: Le32,
    pub padding: Le32,
}
// SAFETY: a header and four Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for RespCapsetInfo {}

/// `struct virtio_gpu_get_capset` after its header.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GetCapset {
    pub capset_id: Le32,
    pub capset_version: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for GetCapset {}

/// `struct virtio_gpu_resource_create_blob` after its header;
/// `nr_entries` memory entries follow.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResourceCreateBlob {
    pub resource_id: Le32,
    pub blob_mem: Le32,
    pub blob_flags: Le32,
    pub nr_entries: Le32,
    pub blob_id: Le64,
    pub size: Le64,
}
// SAFETY: four Le32 and two Le64, no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceCreateBlob {}

/// `struct virtio_gpu_resource_map_blob` after its header.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResourceMapBlob {
    pub resource_id: Le32,
    pub padding: Le32,
    pub offset: Le64,
}
// SAFETY: two Le32 and an Le64, no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceMapBlob {}

/// `struct virtio_gpu_resp_map_info`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespMapInfo {
    pub hdr: CtrlHdr,
    pub map_info: Le32,
    pub padding: Le32,
}
// SAFETY: a header and two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for RespMapInfo {}

/// `struct virtio_gpu_set_scanout_blob` after its header.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SetScanoutBlob {
    pub r: Rect,
    pub scanout_id: Le32,
    pub resource_id: Le32,
    pub width: Le32,
    pub height: Le32,
    pub format: Le32,
    pub padding: Le32,
    pub strides: [Le32; 4],
    pub offsets: [Le32; 4],
}
// SAFETY: a Rect and Le32s, no padding, every bit pattern valid.
unsafe impl ByteValued for SetScanoutBlob {}

/// `struct virtio_gpu_resp_resource_uuid`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RespResourceUuid {
    pub hdr: CtrlHdr,
    pub uuid: [u8; 16],
}
// SAFETY: a header and bytes, no padding, every bit pattern valid.
unsafe impl ByteValued for RespResourceUuid {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn layouts_match_the_spec() {
        assert_eq!(size_of::<CtrlHdr>(), 24);
        // The blob path (spec 5.7.6.8: sizes with the header).
        assert_eq!(size_of::<CtxCreate>(), 96 - 24);
        assert_eq!(size_of::<CtxResource>(), 32 - 24);
        assert_eq!(size_of::<CmdSubmit>(), 32 - 24);
        assert_eq!(size_of::<GetCapsetInfo>(), 32 - 24);
        assert_eq!(size_of::<RespCapsetInfo>(), 40);
        assert_eq!(size_of::<GetCapset>(), 32 - 24);
        assert_eq!(size_of::<ResourceCreateBlob>(), 56 - 24);
        assert_eq!(size_of::<ResourceMapBlob>(), 40 - 24);
        assert_eq!(size_of::<RespMapInfo>(), 32);
        assert_eq!(size_of::<RespResourceUuid>(), 40);
        assert_eq!(size_of::<SetScanoutBlob>(), 96 - 24);
        assert_eq!(size_of::<Rect>(), 16);
        assert_eq!(size_of::<RespDisplayInfo>(), 24 + 16 * 24);
        assert_eq!(size_of::<CmdGetEdid>(), 32);
        assert_eq!(size_of::<RespEdid>(), 24 + 8 + 1024);
        // Bodies: the spec's struct sizes less the 24-byte header.
        assert_eq!(size_of::<ResourceCreate2d>(), 40 - 24);
        assert_eq!(size_of::<ResourceId>(), 32 - 24);
        assert_eq!(size_of::<SetScanout>(), 48 - 24);
        assert_eq!(size_of::<ResourceFlush>(), 48 - 24);
        assert_eq!(size_of::<TransferToHost2d>(), 56 - 24);
        assert_eq!(size_of::<AttachBacking>(), 32 - 24);
        assert_eq!(size_of::<MemEntry>(), 16);
        assert_eq!(size_of::<UpdateCursor>(), 56 - 24);
    }
}
