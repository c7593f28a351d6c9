//! Cross-domain's commands (capset 5), as a guest writes them into
//! EXECBUFFER and reads answers from its query ring: the layouts of
//! rutabaga_gfx's `cross_domain_protocol.rs` (upstream numbering; libkrun's
//! fork numbers differently), little-endian.

/// The capset id of cross-domain contexts.
pub const CAPSET_CROSS_DOMAIN: u32 = 5;

pub const CMD_INIT: u8 = 1;
pub const CMD_GET_IMAGE_REQUIREMENTS: u8 = 2;
pub const CMD_POLL: u8 = 3;
pub const CMD_SEND: u8 = 4;
pub const CMD_RECEIVE: u8 = 5;
pub const CMD_READ: u8 = 6;
pub const CMD_WRITE: u8 = 7;

pub const CHANNEL_TYPE_WAYLAND: u32 = 1;
pub const QUERY_RING: u32 = 0;
pub const CHANNEL_RING: u32 = 1;
pub const MAX_IDENTIFIERS: usize = 28;

pub const ID_TYPE_VIRTGPU_BLOB: u32 = 1;
pub const ID_TYPE_VIRTGPU_SYNC: u32 = 2;
pub const ID_TYPE_READ_PIPE: u32 = 3;
pub const ID_TYPE_WRITE_PIPE: u32 = 4;

/// DRM_FORMAT_XRGB8888.
pub const DRM_FORMAT_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");

/// `struct CrossDomainHeader`: 8 bytes before every command.
pub const HEADER_SIZE: usize = 8;
/// `struct CrossDomainInit`, its 16-byte socket UUID included.
pub const INIT_SIZE: usize = HEADER_SIZE + 12 + 16;
/// `struct CrossDomainGetImageRequirements`.
pub const GET_IMAGE_REQUIREMENTS_SIZE: usize = HEADER_SIZE + 16;
/// `struct CrossDomainImageRequirements`, as the host writes it to the
/// query ring.
pub const IMAGE_REQUIREMENTS_SIZE: usize = 64;
/// `struct CrossDomainCapabilities`, the capset's bytes.
pub const CAPABILITIES_SIZE: usize = 16;

/// A command: its header (`cmd`, ring index 0, `cmd_size` = the whole
/// command) followed by `body`.
pub fn command(cmd: u8, body: &[u8]) -> Vec<u8> {
    let size = HEADER_SIZE + body.len();
    let mut v = Vec::with_capacity(size);
    v.push(cmd);
    v.push(0);
    v.extend_from_slice(&(size as u16).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// CROSS_DOMAIN_CMD_INIT: the query ring's resource id, the channel
/// ring's (0 for none), and the channel type (0 for none).
pub fn init(query_ring: u32, channel_ring: u32, channel_type: u32) -> Vec<u8> {
    let mut body = words(&[query_ring, channel_ring, channel_type]);
    body.extend_from_slice(&[0; 16]);
    command(CMD_INIT, &body)
}

/// CROSS_DOMAIN_CMD_GET_IMAGE_REQUIREMENTS for a `width`×`height` image.
pub fn get_image_requirements(width: u32, height: u32, drm_format: u32, flags: u32) -> Vec<u8> {
    command(
        CMD_GET_IMAGE_REQUIREMENTS,
        &words(&[width, height, drm_format, flags]),
    )
}

/// `struct CrossDomainSendReceive` without its data: the header, the
/// identifier count, the data size, and three arrays of
/// [`MAX_IDENTIFIERS`] words (identifiers, their types, their sizes).
pub const SEND_RECEIVE_SIZE: usize = HEADER_SIZE + 8 + 3 * 4 * MAX_IDENTIFIERS;
/// `struct CrossDomainReadWrite` without its data.
pub const READ_WRITE_SIZE: usize = HEADER_SIZE + 16;
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
    if identifiers.len() > MAX_IDENTIFIERS || SEND_RECEIVE_SIZE + data.len() > usize::from(u16::MAX)
    {
        return None;
    }
    let mut ids = [0u32; MAX_IDENTIFIERS];
    let mut kinds = [0u32; MAX_IDENTIFIERS];
    let mut sizes = [0u32; MAX_IDENTIFIERS];
    for (i, ident) in identifiers.iter().enumerate() {
        (ids[i], kinds[i], sizes[i]) = (ident.id, ident.kind, ident.size);
    }
    let mut body = words(&[identifiers.len() as u32, data.len() as u32]);
    body.extend(words(&ids));
    body.extend(words(&kinds));
    body.extend(words(&sizes));
    body.extend_from_slice(data);
    Some(command(CMD_SEND, &body))
}

/// CROSS_DOMAIN_CMD_POLL: on the channel ring, fenced, it asks the host
/// for the next thing the compositor sends.
pub fn poll() -> Vec<u8> {
    command(CMD_POLL, &[0; 8])
}

/// CROSS_DOMAIN_CMD_WRITE: bytes for the host's end of a write pipe
/// (`hang_up` closes it). None if they do not fit the 16-bit size.
pub fn write(identifier: u32, data: &[u8], hang_up: bool) -> Option<Vec<u8>> {
    if READ_WRITE_SIZE + data.len() > usize::from(u16::MAX) {
        return None;
    }
    let mut body = words(&[identifier, u32::from(hang_up), data.len() as u32, 0]);
    body.extend_from_slice(data);
    Some(command(CMD_WRITE, &body))
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

impl RingMessage {
    /// From the channel ring's bytes; an error names what does not fit.
    pub fn parse(ring: &[u8]) -> Result<RingMessage, String> {
        let cmd = *ring.first().ok_or("an empty channel ring")?;
        match cmd {
            CMD_RECEIVE => {
                if ring.len() < SEND_RECEIVE_SIZE {
                    return Err(format!("a channel ring of {} bytes", ring.len()));
                }
                let count = u32_at(ring, 8) as usize;
                let size = u32_at(ring, 12) as usize;
                if count > MAX_IDENTIFIERS || SEND_RECEIVE_SIZE + size > ring.len() {
                    return Err(format!("a RECEIVE of {count} identifiers and {size} bytes"));
                }
                let array =
                    |which: usize, i: usize| u32_at(ring, 16 + 4 * (which * MAX_IDENTIFIERS + i));
                let identifiers = (0..count)
                    .map(|i| Identifier {
                        id: array(0, i),
                        kind: array(1, i),
                        size: array(2, i),
                    })
                    .collect();
                let data = ring[SEND_RECEIVE_SIZE..SEND_RECEIVE_SIZE + size].to_vec();
                Ok(RingMessage::Receive { identifiers, data })
            }
            CMD_READ => {
                if ring.len() < READ_WRITE_SIZE {
                    return Err(format!("a channel ring of {} bytes", ring.len()));
                }
                let size = u32_at(ring, 16) as usize;
                if READ_WRITE_SIZE + size > ring.len() {
                    return Err(format!("a READ of {size} bytes"));
                }
                Ok(RingMessage::Read {
                    identifier: u32_at(ring, 8),
                    hang_up: u32_at(ring, 12) != 0,
                    data: ring[READ_WRITE_SIZE..READ_WRITE_SIZE + size].to_vec(),
                })
            }
            other => Err(format!("channel ring command {other}")),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

/// `struct CrossDomainImageRequirements`.
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
        if b.len() < IMAGE_REQUIREMENTS_SIZE {
            return None;
        }
        let four = |at: usize| [0, 1, 2, 3].map(|i| u32_at(b, at + 4 * i));
        Some(ImageRequirements {
            strides: four(0),
            offsets: four(16),
            modifier: u64_at(b, 32),
            size: u64_at(b, 40),
            blob_id: u32_at(b, 48),
            map_info: u32_at(b, 52),
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
        if b.len() < CAPABILITIES_SIZE {
            return None;
        }
        Some(Capabilities {
            version: u32_at(b, 0),
            supported_channels: u32_at(b, 4),
            supports_dmabuf: u32_at(b, 8),
            supports_external_gpu_memory: u32_at(b, 12),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
