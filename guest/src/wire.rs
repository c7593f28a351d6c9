//! The Wayland wire format, as the proxy needs it: a message's header and
//! its arguments walked by the signature that wayland-backend's interface
//! descriptions (generated from the protocol XML) give for it.
//! wayland-backend parses messages too, but keeps that parser private to
//! its own connection types, which own the socket; the proxy must see the
//! bytes of two sockets it relays, so it walks them here.

use wayland_backend::protocol::ArgumentType;

/// The largest message libwayland sends or accepts (its connection buffer).
pub const MAX_MESSAGE: usize = 4096;
pub const HEADER: usize = 8;

/// Bytes that are not a Wayland message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a message of {size} bytes to object {object}")]
    BadSize { object: u32, size: usize },
    #[error("arguments cut short at byte {0}")]
    CutShort(usize),
    #[error("a {0}-byte argument past the message")]
    PastTheMessage(usize),
    #[error("a string without its NUL")]
    NoNul,
    #[error("{0} bytes past the arguments")]
    Trailing(usize),
}

/// A message's header: the object, the opcode, the whole size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub object: u32,
    pub opcode: u16,
    pub size: usize,
}

impl Header {
    /// The header at the start of `bytes`, if there are 8 bytes; an error
    /// if its size cannot be a message's.
    pub fn peek(bytes: &[u8]) -> Result<Option<Header>, WireError> {
        let (Some(object), Some(word)) = (ne_word(bytes, 0), ne_word(bytes, 4)) else {
            return Ok(None);
        };
        let size = (word >> 16) as usize;
        if size < HEADER || !size.is_multiple_of(4) || size > MAX_MESSAGE {
            return Err(WireError::BadSize { object, size });
        }
        Ok(Some(Header {
            object,
            opcode: (word & 0xffff) as u16,
            size,
        }))
    }
}

/// The native-endian word at `at`, if there are four bytes there.
fn ne_word(bytes: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_ne_bytes(w))
}

/// One argument as it was on the wire (strings without their NUL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Int(i32),
    Uint(u32),
    Fixed(i32),
    Str(Option<Vec<u8>>),
    Object(u32),
    NewId(u32),
    Array(Vec<u8>),
    /// A descriptor: not in the bytes, the next of the message's fds.
    Fd,
}

impl Arg {
    pub fn uint(&self) -> u32 {
        match *self {
            Arg::Uint(v) | Arg::Object(v) | Arg::NewId(v) => v,
            Arg::Int(v) | Arg::Fixed(v) => v as u32,
            _ => 0,
        }
    }

    pub fn int(&self) -> i32 {
        self.uint() as i32
    }
}

/// The arguments of a message body by `signature`; an error names what is
/// cut short or malformed.
pub fn parse(body: &[u8], signature: &[ArgumentType]) -> Result<Vec<Arg>, WireError> {
    let mut at = 0;
    let word = |at: &mut usize| -> Result<u32, WireError> {
        let w = ne_word(body, *at).ok_or(WireError::CutShort(*at))?;
        *at += 4;
        Ok(w)
    };
    let mut args = Vec::with_capacity(signature.len());
    for kind in signature {
        let arg = match kind {
            ArgumentType::Int => Arg::Int(word(&mut at)? as i32),
            ArgumentType::Uint => Arg::Uint(word(&mut at)?),
            ArgumentType::Fixed => Arg::Fixed(word(&mut at)? as i32),
            ArgumentType::Object(_) => Arg::Object(word(&mut at)?),
            ArgumentType::NewId => Arg::NewId(word(&mut at)?),
            ArgumentType::Fd => Arg::Fd,
            ArgumentType::Str(_) | ArgumentType::Array => {
                let len = word(&mut at)? as usize;
                let padded = len.div_ceil(4) * 4;
                let bytes = at
                    .checked_add(padded)
                    .and_then(|end| body.get(at..end))
                    .ok_or(WireError::PastTheMessage(len))?;
                at += padded;
                if matches!(kind, ArgumentType::Array) {
                    Arg::Array(bytes[..len].to_vec())
                } else if len == 0 {
                    Arg::Str(None)
                } else if bytes[len - 1] != 0 {
                    return Err(WireError::NoNul);
                } else {
                    Arg::Str(Some(bytes[..len - 1].to_vec()))
                }
            }
        };
        args.push(arg);
    }
    if at != body.len() {
        return Err(WireError::Trailing(body.len() - at));
    }
    Ok(args)
}

/// A whole message: header and arguments (descriptors travel aside).
pub fn message(object: u32, opcode: u16, args: &[Arg]) -> Vec<u8> {
    let mut body: Vec<u8> = Vec::new();
    fn bytes(body: &mut Vec<u8>, b: &[u8], nul: bool) {
        let len = b.len() + usize::from(nul);
        body.extend_from_slice(&(len as u32).to_ne_bytes());
        body.extend_from_slice(b);
        if nul {
            body.push(0);
        }
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    for arg in args {
        match arg {
            Arg::Int(v) | Arg::Fixed(v) => body.extend_from_slice(&v.to_ne_bytes()),
            Arg::Uint(v) | Arg::Object(v) | Arg::NewId(v) => {
                body.extend_from_slice(&v.to_ne_bytes())
            }
            Arg::Str(None) => body.extend_from_slice(&0u32.to_ne_bytes()),
            Arg::Str(Some(s)) => bytes(&mut body, s, true),
            Arg::Array(a) => bytes(&mut body, a, false),
            Arg::Fd => {}
        }
    }
    let size = HEADER + body.len();
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&object.to_ne_bytes());
    m.extend_from_slice(&(((size as u32) << 16) | u32::from(opcode)).to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use wayland_backend::protocol::AllowNull;

    #[test]
    fn a_message_parses_back_to_its_arguments() {
        let args = vec![
            Arg::Uint(7),
            Arg::Str(Some(b"wl_shm".to_vec())),
            Arg::Int(-3),
            Arg::Fd,
            Arg::Array(vec![1, 2, 3, 4, 5]),
            Arg::NewId(0xff00_0001),
            Arg::Str(None),
        ];
        let sig = [
            ArgumentType::Uint,
            ArgumentType::Str(AllowNull::No),
            ArgumentType::Int,
            ArgumentType::Fd,
            ArgumentType::Array,
            ArgumentType::NewId,
            ArgumentType::Str(AllowNull::Yes),
        ];
        let m = message(3, 2, &args);
        let h = Header::peek(&m).unwrap().unwrap();
        assert_eq!((h.object, h.opcode, h.size), (3, 2, m.len()));
        // "wl_shm\0" is 7 bytes, padded to 8; the array's 5 to 8.
        assert_eq!(m.len(), 8 + 4 + 4 + 8 + 4 + 4 + 8 + 4 + 4);
        assert_eq!(parse(&m[8..], &sig).unwrap(), args);
    }

    #[test]
    fn malformed_bodies_and_headers_are_refused() {
        let m = message(3, 0, &[Arg::Str(Some(b"abc".to_vec()))]);
        let sig = [ArgumentType::Str(AllowNull::No)];
        assert!(parse(&m[8..m.len() - 4], &sig).is_err(), "cut short");
        let mut no_nul = m.clone();
        no_nul[15] = b'x';
        assert!(parse(&no_nul[8..], &sig).is_err(), "no NUL");
        assert!(parse(&m[8..], &[]).is_err(), "bytes past the arguments");
        let mut huge = m.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(
            parse(&huge[8..], &sig).is_err(),
            "a length past the message"
        );
        for size in [0u32, 4, 10, 8192] {
            let mut h = m.clone();
            h[4..8].copy_from_slice(&(size << 16).to_ne_bytes());
            assert!(Header::peek(&h).is_err(), "size {size}");
        }
        assert_eq!(Header::peek(&m[..7]).unwrap(), None);
    }
}
