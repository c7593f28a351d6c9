//! The cross-domain framing check, apart from the process so that the
//! fuzz targets (fuzz/) and render-worker run the same code.

/// `CROSS_DOMAIN_CMD_INIT`.
pub const CROSS_DOMAIN_CMD_INIT: u8 = 1;
pub const CROSS_DOMAIN_CMD_GET_IMAGE_REQUIREMENTS: u8 = 2;

/// What one walk of a cross-domain stream found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// An INIT that opens a channel.
    pub opens_channel: bool,
    /// GET_IMAGE_REQUIREMENTS commands.
    pub requirements: usize,
}

/// A cross-domain stream rutabaga must not walk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("a cross-domain header cut short at byte {at}")]
    HeaderCutShort { at: usize },
    #[error("a cross-domain command of {size} bytes at byte {at} of {len}")]
    BadSize { size: usize, at: usize, len: usize },
}

/// The size of a cross-domain command header (`CrossDomainHeader`).
pub const CROSS_DOMAIN_HEADER: usize = 8;

/// Checks the framing of a cross-domain command stream before rutabaga
/// walks it: rutabaga advances by each header's `cmd_size` until the
/// stream is empty, so a `cmd_size` of 0 would spin its thread forever, and
/// one past the end is refused only after the command ran. Returns whether
/// the stream holds an INIT that opens a channel (CROSS_DOMAIN_CMD_INIT
/// with a channel type, the word 16 bytes in), and how many image
/// requirements it asks.
pub fn check_cross_domain_framing(commands: &[u8]) -> Result<Walk, FramingError> {
    let mut at = 0;
    let mut walk = Walk::default();
    while at < commands.len() {
        let hdr = commands
            .get(at..at + CROSS_DOMAIN_HEADER)
            .ok_or(FramingError::HeaderCutShort { at })?;
        let size = usize::from(u16::from_le_bytes([hdr[2], hdr[3]]));
        if size < CROSS_DOMAIN_HEADER || at + size > commands.len() {
            return Err(FramingError::BadSize {
                size,
                at,
                len: commands.len(),
            });
        }
        if hdr[0] == CROSS_DOMAIN_CMD_GET_IMAGE_REQUIREMENTS {
            walk.requirements += 1;
        }
        if hdr[0] == CROSS_DOMAIN_CMD_INIT {
            if let Some(t) = commands[at..at + size].get(16..20) {
                walk.opens_channel |= u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 0;
            }
        }
        at += size;
    }
    Ok(walk)
}
