//! The cross-domain framing check, apart from the process so that the
//! fuzz targets (fuzz/) and render-worker run the same code. The layouts
//! are `wire::cross_domain`'s.

use wire::cross_domain::{read, Header, Init, CMD_GET_IMAGE_REQUIREMENTS, CMD_INIT, HEADER_SIZE};

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
        let hdr: Header = read(&commands[at..]).ok_or(FramingError::HeaderCutShort { at })?;
        let size = usize::from(hdr.cmd_size.to_native());
        if size < HEADER_SIZE || at + size > commands.len() {
            return Err(FramingError::BadSize {
                size,
                at,
                len: commands.len(),
            });
        }
        let command = &commands[at..at + size];
        match hdr.cmd {
            CMD_GET_IMAGE_REQUIREMENTS => walk.requirements += 1,
            // An INIT too short for its channel type opens none (rutabaga
            // refuses it).
            CMD_INIT => {
                walk.opens_channel |=
                    read::<Init>(command).is_some_and(|i| i.channel_type.to_native() != 0)
            }
            _ => {}
        }
        at += size;
    }
    Ok(walk)
}
