//! Cross-domain (capset 5) on the wire: the commands a guest writes into
//! SUBMIT_3D (EXECBUFFER), and what the host writes into its query and
//! channel rings, as rutabaga_gfx's `cross_domain_protocol.rs` lays them
//! out (upstream numbering; libkrun's fork numbers differently), each a
//! `#[repr(C)]` little-endian structure here, declared once for the guest
//! proxy, render-worker's framing check and the test harness.

use std::mem::size_of;

use vm_memory::{ByteValued, Le16, Le32, Le64};

/// The capset id of cross-domain contexts.
pub const CAPSET_CROSS_DOMAIN: u32 = 5;

pub const CMD_INIT: u8 = 1;
pub const CMD_GET_IMAGE_REQUIREMENTS: u8 = 2;
pub const CMD_POLL: u8 = 3;
pub const CMD_SEND: u8 = 4;
pub const CMD_RECEIVE: u8 = 5;
pub const CMD_READ: u8 = 6;
pub const CMD_WRITE: u8 = 7;

/// INIT's channel type for a Wayland compositor.
pub const CHANNEL_TYPE_WAYLAND: u32 = 1;
/// The ring index of the query ring (image requirements) and of the
/// channel ring (what the compositor sends), as fences name them.
pub const QUERY_RING: u32 = 0;
pub const CHANNEL_RING: u32 = 1;
/// Most descriptors one SEND or RECEIVE carries.
pub const MAX_IDENTIFIERS: usize = 28;

pub const ID_TYPE_VIRTGPU_BLOB: u32 = 1;
pub const ID_TYPE_VIRTGPU_SYNC: u32 = 2;
pub const ID_TYPE_READ_PIPE: u32 = 3;
pub const ID_TYPE_WRITE_PIPE: u32 = 4;

/// DRM_FORMAT_XRGB8888, the format GET_IMAGE_REQUIREMENTS names for a
/// shared-memory buffer.
pub const DRM_FORMAT_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");

/// `struct CrossDomainHeader`: before every command and ring message.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Header {
    pub cmd: u8,
    pub ring_idx: u8,
    /// The whole command's size, this header included.
    pub cmd_size: Le16,
    pub pad: Le32,
}

/// `struct CrossDomainInit`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Init {
    pub hdr: Header,
    pub query_ring_id: Le32,
    /// 0: no channel.
    pub channel_ring_id: Le32,
    /// 0: no channel; [`CHANNEL_TYPE_WAYLAND`].
    pub channel_type: Le32,
    pub internal_socket_uuid: [u8; 16],
}

/// `struct CrossDomainGetImageRequirements`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GetImageRequirements {
    pub hdr: Header,
    pub width: Le32,
    pub height: Le32,
    pub drm_format: Le32,
    pub flags: Le32,
}

/// `struct CrossDomainImageRequirements`, as the host writes it to the
/// query ring.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ImageRequirements {
    pub strides: [Le32; 4],
    pub offsets: [Le32; 4],
    pub modifier: Le64,
    pub size: Le64,
    pub blob_id: Le32,
    pub map_info: Le32,
    pub memory_idx: Le32,
    pub physical_device_idx: Le32,
}

/// `struct CrossDomainSendReceive` without the data that follows it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SendReceive {
    pub hdr: Header,
    pub num_identifiers: Le32,
    pub opaque_data_size: Le32,
    pub identifiers: [Le32; MAX_IDENTIFIERS],
    pub identifier_types: [Le32; MAX_IDENTIFIERS],
    pub identifier_sizes: [Le32; MAX_IDENTIFIERS],
}

/// `struct CrossDomainReadWrite` without the data that follows it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReadWrite {
    pub hdr: Header,
    pub identifier: Le32,
    pub hang_up: Le32,
    pub opaque_data_size: Le32,
    pub pad: Le32,
}

/// `struct CrossDomainCapabilities`, the capset's bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Capabilities {
    pub version: Le32,
    /// A bit per channel type (`1 << CHANNEL_TYPE_WAYLAND`, ...).
    pub supported_channels: Le32,
    pub supports_dmabuf: Le32,
    pub supports_external_gpu_memory: Le32,
}

// SAFETY (each): `#[repr(C)]` structures of u8, byte arrays and
// little-endian integers laid out with no padding (checked by the size
// tests below against rutabaga's sizes); every bit pattern is valid.
unsafe impl ByteValued for Header {}
unsafe impl ByteValued for Init {}
unsafe impl ByteValued for GetImageRequirements {}
unsafe impl ByteValued for ImageRequirements {}
unsafe impl ByteValued for SendReceive {}
unsafe impl ByteValued for ReadWrite {}
unsafe impl ByteValued for Capabilities {}

pub const HEADER_SIZE: usize = size_of::<Header>();
pub const INIT_SIZE: usize = size_of::<Init>();
pub const GET_IMAGE_REQUIREMENTS_SIZE: usize = size_of::<GetImageRequirements>();
pub const IMAGE_REQUIREMENTS_SIZE: usize = size_of::<ImageRequirements>();
pub const SEND_RECEIVE_SIZE: usize = size_of::<SendReceive>();
pub const READ_WRITE_SIZE: usize = size_of::<ReadWrite>();
pub const CAPABILITIES_SIZE: usize = size_of::<Capabilities>();

/// A header for command `cmd` of `size` bytes in all, on ring 0; None if
/// the size does not fit its 16 bits.
pub fn header(cmd: u8, size: usize) -> Option<Header> {
    Some(Header {
        cmd,
        ring_idx: 0,
        cmd_size: u16::try_from(size).ok()?.into(),
        pad: 0.into(),
    })
}

/// `T` from the first bytes of `bytes` (which need not be aligned); None
/// if there are too few.
pub fn read<T: ByteValued + Default>(bytes: &[u8]) -> Option<T> {
    let mut value = T::default();
    value
        .as_mut_slice()
        .copy_from_slice(bytes.get(..size_of::<T>())?);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structures_have_rutabagas_sizes() {
        assert_eq!(HEADER_SIZE, 8);
        assert_eq!(INIT_SIZE, 36);
        assert_eq!(GET_IMAGE_REQUIREMENTS_SIZE, 24);
        assert_eq!(IMAGE_REQUIREMENTS_SIZE, 64);
        assert_eq!(SEND_RECEIVE_SIZE, 352);
        assert_eq!(READ_WRITE_SIZE, 24);
        assert_eq!(CAPABILITIES_SIZE, 16);
    }

    #[test]
    fn fields_sit_at_rutabagas_offsets() {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&256u32.to_le_bytes());
        b[40..48].copy_from_slice(&(1u64 << 33).to_le_bytes());
        b[48..52].copy_from_slice(&9u32.to_le_bytes());
        b[52..56].copy_from_slice(&2u32.to_le_bytes());
        let r: ImageRequirements = read(&b[..]).unwrap();
        assert_eq!(r.strides[0].to_native(), 256);
        assert_eq!(r.size.to_native(), 1 << 33);
        assert_eq!((r.blob_id.to_native(), r.map_info.to_native()), (9, 2));
        assert!(read::<ImageRequirements>(&b[..63]).is_none());
        // Unaligned bytes read the same.
        let mut shifted = [0u8; 65];
        shifted[1..].copy_from_slice(&b);
        assert_eq!(read::<ImageRequirements>(&shifted[1..]), Some(r));
        let h = header(CMD_SEND, 101).unwrap();
        assert_eq!(h.as_slice(), &[CMD_SEND, 0, 101, 0, 0, 0, 0, 0]);
        assert!(header(CMD_SEND, 1 << 16).is_none());
    }
}
