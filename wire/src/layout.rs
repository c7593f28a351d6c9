//! The virtio-gpu structures as the guest lays them out (spec 5.7.6).
//! Numbers come from `virtio-bindings`; only the layouts, which that crate
//! cannot give a foreign `ByteValued`, are written here.

use vm_memory::{ByteValued, Le32, Le64};

use crate::MAX_SCANOUTS;

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

/// Body of `struct virtio_gpu_cmd_get_edid`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GetEdid {
    pub scanout: Le32,
    pub padding: Le32,
}
// SAFETY: two Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for GetEdid {}

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

/// Body of `struct virtio_gpu_resource_create_3d`: a resource of virgl's
/// kind, its fields gallium's (`pipe_texture_target`, `virgl_formats`,
/// `VIRGL_BIND_*`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResourceCreate3d {
    pub resource_id: Le32,
    pub target: Le32,
    pub format: Le32,
    pub bind: Le32,
    pub width: Le32,
    pub height: Le32,
    pub depth: Le32,
    pub array_size: Le32,
    pub last_level: Le32,
    pub nr_samples: Le32,
    pub flags: Le32,
    pub padding: Le32,
}
// SAFETY: twelve Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceCreate3d {}

/// `struct virtio_gpu_box`: a box in texels of one level.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Box3d {
    pub x: Le32,
    pub y: Le32,
    pub z: Le32,
    pub w: Le32,
    pub h: Le32,
    pub d: Le32,
}
// SAFETY: six Le32, no padding, every bit pattern valid.
unsafe impl ByteValued for Box3d {}

/// Body of `struct virtio_gpu_transfer_host_3d` (TRANSFER_TO_HOST_3D and
/// TRANSFER_FROM_HOST_3D): a box of one level, and where it lies in the
/// resource's backing.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TransferHost3d {
    pub box_: Box3d,
    pub offset: Le64,
    pub resource_id: Le32,
    pub level: Le32,
    pub stride: Le32,
    pub layer_stride: Le32,
}
// SAFETY: a Box3d (24 bytes), an Le64 at offset 24 and four Le32: no
// padding, every bit pattern valid.
unsafe impl ByteValued for TransferHost3d {}

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
        assert_eq!(size_of::<GetEdid>(), 32 - 24);
        assert_eq!(size_of::<RespEdid>(), 24 + 8 + 1024);
        // Bodies: the spec's struct sizes less the 24-byte header.
        assert_eq!(size_of::<ResourceCreate2d>(), 40 - 24);
        assert_eq!(size_of::<ResourceId>(), 32 - 24);
        assert_eq!(size_of::<SetScanout>(), 48 - 24);
        assert_eq!(size_of::<ResourceFlush>(), 48 - 24);
        assert_eq!(size_of::<TransferToHost2d>(), 56 - 24);
        assert_eq!(size_of::<AttachBacking>(), 32 - 24);
        assert_eq!(size_of::<ResourceCreate3d>(), 72 - 24);
        assert_eq!(size_of::<TransferHost3d>(), 72 - 24);
        assert_eq!(size_of::<MemEntry>(), 16);
        assert_eq!(size_of::<UpdateCursor>(), 56 - 24);
    }
}
