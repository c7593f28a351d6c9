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
pub const CMD_UPDATE_CURSOR: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR;
pub const CMD_MOVE_CURSOR: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR;

pub const RESP_OK_NODATA: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA;
pub const RESP_OK_DISPLAY_INFO: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
pub const RESP_OK_EDID: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID;
pub const RESP_ERR_UNSPEC: u32 = b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
pub const RESP_ERR_INVALID_PARAMETER: u32 =
    b::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;

pub const FLAG_FENCE: u32 = b::VIRTIO_GPU_FLAG_FENCE;
pub const FLAG_INFO_RING_IDX: u32 = b::VIRTIO_GPU_FLAG_INFO_RING_IDX;
pub const MAX_SCANOUTS: usize = b::VIRTIO_GPU_MAX_SCANOUTS as usize;

/// Virtio feature bit: the device answers GET_EDID.
pub const F_EDID: u32 = b::VIRTIO_GPU_F_EDID;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn layouts_match_the_spec() {
        assert_eq!(size_of::<CtrlHdr>(), 24);
        assert_eq!(size_of::<Rect>(), 16);
        assert_eq!(size_of::<RespDisplayInfo>(), 24 + 16 * 24);
        assert_eq!(size_of::<CmdGetEdid>(), 32);
        assert_eq!(size_of::<RespEdid>(), 24 + 8 + 1024);
    }
}
