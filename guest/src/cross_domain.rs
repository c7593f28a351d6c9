//! Cross-domain's commands (capset 5) as the guest proxy writes them into
//! EXECBUFFER and reads answers from its rings: built from and parsed into
//! the structures of `wire::cross_domain` (rutabaga_gfx's layouts).

use vm_memory::{ByteValued, Le32};
use wire::cross_domain::{self as cd, header, read};
pub use wire::cross_domain::{
    CAPABILITIES_SIZE, CAPSET_CROSS_DOMAIN, CHANNEL_RING, CHANNEL_TYPE_WAYLAND,
    CMD_GET_IMAGE_REQUIREMENTS, CMD_INIT, CMD_POLL, CMD_READ, CMD_RECEIVE, CMD_SEND, CMD_WRITE,
    DRM_FORMAT_XRGB8888, GET_IMAGE_REQUIREMENTS_SIZE, HEADER_SIZE, ID_TYPE_READ_PIPE,
    ID_TYPE_VIRTGPU_BLOB, ID_TYPE_VIRTGPU_SYNC, ID_TYPE_WRITE_PIPE, IMAGE_REQUIREMENTS_SIZE,
    INIT_SIZE, MAX_IDENTIFIERS, QUERY_RING, READ_WRITE_SIZE, SEND_RECEIVE_SIZE,
};

/// A command: its header (`cmd`, ring index 0, `cmd_size` = the whole
/// command) followed by `body`. The commands built here are far below the
/// 16-bit size; those with caller-sized data check it first.
pub fn command(cmd: u8, body: &[u8]) -> Vec<u8> {
    let size = HEADER_SIZE + body.len();
    let hdr = header(cmd, size).unwrap_or_default();
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(hdr.as_slice());
    v.extend_from_slice(body);
    v
}

/// CROSS_DOMAIN_CMD_INIT: the query ring's resource id, the channel
/// ring's (0 for none), and the channel type (0 for none).
pub fn init(query_ring: u32, channel_ring: u32, channel_type: u32) -> Vec<u8> {
    let init = cd::Init {
        hdr: header(CMD_INIT, INIT_SIZE).unwrap_or_default(),
        query_ring_id: query_ring.into(),
        channel_ring_id: channel_ring.into(),
        channel_type: channel_type.into(),
        internal_socket_uuid: [0; 16],
    };
    init.as_slice().to_vec()
}

/// CROSS_DOMAIN_CMD_GET_IMAGE_REQUIREMENTS for a `width`×`height` image.
pub fn get_image_requirements(width: u32, height: u32, drm_format: u32, flags: u32) -> Vec<u8> {
    let get = cd::GetImageRequirements {
        hdr: header(CMD_GET_IMAGE_REQUIREMENTS, GET_IMAGE_REQUIREMENTS_SIZE).unwrap_or_default(),
        width: width.into(),
        height: height.into(),
        drm_format: drm_format.into(),
        flags: flags.into(),
    };
    get.as_slice().to_vec()
}

/// The most data the host puts into one RECEIVE or READ (rutabaga's
/// 4 KiB receive buffer less the header), and so the size a channel
/// ring must have beyond the header.
pub const MAX_RECEIVE_DATA: usize = 4096 - SEND_RECEIVE_SIZE;

/// One descriptor crossing the channel: an identifier of a kind
/// (`ID_TYPE_*`), and for a blob the bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identifier {
    pub id: u32,
    pub kind: u32,
    pub size: u32,
}

/// CROSS_DOMAIN_CMD_SEND: `data` for the compositor, with at most
/// [`MAX_IDENTIFIERS`] descriptors. None if there are more, or if the
/// command would not fit its 16-bit size.
pub fn send(data: &[u8], identifiers: &[Identifier]) -> Option<Vec<u8>> {
    if identifiers.len() > MAX_IDENTIFIERS {
        return None;
    }
    let mut send = cd::SendReceive {
        hdr: header(CMD_SEND, SEND_RECEIVE_SIZE + data.len())?,
        num_identifiers: (identifiers.len() as u32).into(),
        opaque_data_size: (data.len() as u32).into(),
        ..Default::default()
    };
    for (i, ident) in identifiers.iter().enumerate() {
        send.identifiers[i] = ident.id.into();
        send.identifier_types[i] = ident.kind.into();
        send.identifier_sizes[i] = ident.size.into();
    }
    let mut v = send.as_slice().to_vec();
    v.extend_from_slice(data);
    Some(v)
}

/// CROSS_DOMAIN_CMD_POLL: on the channel ring, fenced, it asks the host
/// for the next thing the compositor sends.
pub fn poll() -> Vec<u8> {
    command(CMD_POLL, &[0; 8])
}

/// CROSS_DOMAIN_CMD_WRITE: bytes for the host's end of a write pipe
/// (`hang_up` closes it). None if they do not fit the 16-bit size.
pub fn write(identifier: u32, data: &[u8], hang_up: bool) -> Option<Vec<u8>> {
    let write = cd::ReadWrite {
        hdr: header(CMD_WRITE, READ_WRITE_SIZE + data.len())?,
        identifier: identifier.into(),
        hang_up: u32::from(hang_up).into(),
        opaque_data_size: (data.len() as u32).into(),
        pad: 0.into(),
    };
    let mut v = write.as_slice().to_vec();
    v.extend_from_slice(data);
    Some(v)
}

/// What the host wrote into the channel ring before signalling a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingMessage {
    /// Bytes from the compositor, with the descriptors it sent.
    Receive {
        identifiers: Vec<Identifier>,
        data: Vec<u8>,
    },
    /// Bytes from the host's end of a read pipe; `hang_up` when it closed.
    Read {
        identifier: u32,
        hang_up: bool,
        data: Vec<u8>,
    },
}

/// A channel ring that holds no message the proxy knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a channel ring of {0} bytes")]
    Short(usize),
    #[error("a RECEIVE of {count} identifiers and {size} bytes")]
    Receive { count: usize, size: usize },
    #[error("a READ of {0} bytes")]
    Read(usize),
    #[error("channel ring command {0}")]
    Unknown(u8),
}

impl RingMessage {
    /// From the channel ring's bytes; an error names what does not fit.
    pub fn parse(ring: &[u8]) -> Result<RingMessage, RingError> {
        let cmd = *ring.first().ok_or(RingError::Short(0))?;
        match cmd {
            CMD_RECEIVE => {
                let msg: cd::SendReceive = read(ring).ok_or(RingError::Short(ring.len()))?;
                let count = msg.num_identifiers.to_native() as usize;
                let size = msg.opaque_data_size.to_native() as usize;
                if count > MAX_IDENTIFIERS || SEND_RECEIVE_SIZE + size > ring.len() {
                    return Err(RingError::Receive { count, size });
                }
                let identifiers = (0..count)
                    .map(|i| Identifier {
                        id: msg.identifiers[i].to_native(),
                        kind: msg.identifier_types[i].to_native(),
                        size: msg.identifier_sizes[i].to_native(),
                    })
                    .collect();
                let data = ring[SEND_RECEIVE_SIZE..SEND_RECEIVE_SIZE + size].to_vec();
                Ok(RingMessage::Receive { identifiers, data })
            }
            CMD_READ => {
                let msg: cd::ReadWrite = read(ring).ok_or(RingError::Short(ring.len()))?;
                let size = msg.opaque_data_size.to_native() as usize;
                if READ_WRITE_SIZE + size > ring.len() {
                    return Err(RingError::Read(size));
                }
                Ok(RingMessage::Read {
                    identifier: msg.identifier.to_native(),
                    hang_up: msg.hang_up.to_native() != 0,
                    data: ring[READ_WRITE_SIZE..READ_WRITE_SIZE + size].to_vec(),
                })
            }
            other => Err(RingError::Unknown(other)),
        }
    }
}

/// `struct CrossDomainImageRequirements`, the fields the proxy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRequirements {
    pub strides: [u32; 4],
    pub offsets: [u32; 4],
    pub modifier: u64,
    pub size: u64,
    pub blob_id: u32,
    pub map_info: u32,
}

impl ImageRequirements {
    /// From the query ring's first bytes; None if too short.
    pub fn parse(b: &[u8]) -> Option<ImageRequirements> {
        let r: cd::ImageRequirements = read(b)?;
        Some(ImageRequirements {
            strides: r.strides.map(Le32::to_native),
            offsets: r.offsets.map(Le32::to_native),
            modifier: r.modifier.to_native(),
            size: r.size.to_native(),
            blob_id: r.blob_id.to_native(),
            map_info: r.map_info.to_native(),
        })
    }
}

/// `struct CrossDomainCapabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub version: u32,
    /// A bit per channel type (`1 << CHANNEL_TYPE_WAYLAND`, ...).
    pub supported_channels: u32,
    pub supports_dmabuf: u32,
    pub supports_external_gpu_memory: u32,
}

impl Capabilities {
    pub fn parse(b: &[u8]) -> Option<Capabilities> {
        let c: cd::Capabilities = read(b)?;
        Some(Capabilities {
            version: c.version.to_native(),
            supported_channels: c.supported_channels.to_native(),
            supports_dmabuf: c.supports_dmabuf.to_native(),
            supports_external_gpu_memory: c.supports_external_gpu_memory.to_native(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn commands_have_rutabagas_sizes_and_headers() {
        let init = init(7, 0, 0);
        assert_eq!(init.len(), INIT_SIZE);
        assert_eq!(INIT_SIZE, 36);
        assert_eq!(&init[..4], &[CMD_INIT, 0, 36, 0]);
        assert_eq!(u32_at(&init, 8), 7);
        let reqs = get_image_requirements(64, 32, DRM_FORMAT_XRGB8888, 0);
        assert_eq!(reqs.len(), GET_IMAGE_REQUIREMENTS_SIZE);
        assert_eq!(&reqs[..4], &[CMD_GET_IMAGE_REQUIREMENTS, 0, 24, 0]);
        assert_eq!(&reqs[16..20], b"XR24");
    }

    #[test]
    fn send_and_receive_have_rutabagas_layout() {
        assert_eq!(SEND_RECEIVE_SIZE, 352);
        let blob = Identifier {
            id: 9,
            kind: ID_TYPE_VIRTGPU_BLOB,
            size: 4096,
        };
        let cmd = send(b"hello", &[blob]).unwrap();
        assert_eq!(cmd.len(), SEND_RECEIVE_SIZE + 5);
        assert_eq!(&cmd[..4], &[CMD_SEND, 0, 101, 1]);
        assert_eq!((u32_at(&cmd, 8), u32_at(&cmd, 12)), (1, 5));
        assert_eq!(u32_at(&cmd, 16), 9);
        assert_eq!(u32_at(&cmd, 16 + 4 * MAX_IDENTIFIERS), ID_TYPE_VIRTGPU_BLOB);
        assert_eq!(u32_at(&cmd, 16 + 8 * MAX_IDENTIFIERS), 4096);
        assert!(send(&[], &[blob; MAX_IDENTIFIERS + 1]).is_none());
        // The host's RECEIVE has SEND's layout under another command.
        let mut ring = vec![0u8; 4096];
        ring[..cmd.len()].copy_from_slice(&cmd);
        ring[0] = CMD_RECEIVE;
        let got = RingMessage::parse(&ring).unwrap();
        assert_eq!(
            got,
            RingMessage::Receive {
                identifiers: vec![blob],
                data: b"hello".to_vec()
            }
        );
        ring[12..16].copy_from_slice(&4000u32.to_le_bytes());
        assert!(RingMessage::parse(&ring).is_err());
    }

    #[test]
    fn read_and_write_have_rutabagas_layout() {
        let cmd = write(0x8000_0001, b"abc", true).unwrap();
        assert_eq!(cmd.len(), READ_WRITE_SIZE + 3);
        assert_eq!(
            (u32_at(&cmd, 8), u32_at(&cmd, 12), u32_at(&cmd, 16)),
            (0x8000_0001, 1, 3)
        );
        let mut ring = vec![0u8; 64];
        ring[..cmd.len()].copy_from_slice(&cmd);
        ring[0] = CMD_READ;
        assert_eq!(
            RingMessage::parse(&ring).unwrap(),
            RingMessage::Read {
                identifier: 0x8000_0001,
                hang_up: true,
                data: b"abc".to_vec()
            }
        );
    }

    #[test]
    fn image_requirements_parse_at_their_offsets() {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&256u32.to_le_bytes());
        b[40..48].copy_from_slice(&(1u64 << 33).to_le_bytes());
        b[48..52].copy_from_slice(&9u32.to_le_bytes());
        b[52..56].copy_from_slice(&2u32.to_le_bytes());
        let r = ImageRequirements::parse(&b).unwrap();
        assert_eq!(r.strides[0], 256);
        assert_eq!(r.size, 1 << 33);
        assert_eq!((r.blob_id, r.map_info), (9, 2));
        assert!(ImageRequirements::parse(&b[..63]).is_none());
    }
}
