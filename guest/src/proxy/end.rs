//! Why a client's connection ends: the client hung up, broke the protocol
//! (it is sent `wl_display.error`, or the error of the interface it broke,
//! with the code wayland-scanner generated for it), or the host side failed.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum End {
    /// The client hung up.
    #[error("the client hung up")]
    Gone,
    /// The client broke the protocol: the error it is sent.
    #[error("protocol error on object {object} (code {code}): {message}")]
    Client {
        object: u32,
        code: u32,
        message: String,
    },
    /// The host side failed or closed (the compositor went away, say).
    #[error("{0}")]
    Host(String),
}

/// The client broke the protocol on `object`: `code` is a generated error
/// enum's value (`wl_display::Error::InvalidObject`, `wl_shm::Error::InvalidFd`).
pub fn client_error(object: u32, code: impl Into<u32>, message: impl Into<String>) -> End {
    End::Client {
        object,
        code: code.into(),
        message: message.into(),
    }
}

/// The host side failed: `what` says how.
pub fn host(what: impl Display) -> End {
    End::Host(what.to_string())
}
