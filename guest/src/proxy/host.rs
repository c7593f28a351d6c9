//! What the proxy needs of the host: one cross-domain channel (in a VM, a
//! virtgpu context of its own: `crate::channel::Channel`) and the host
//! images that back shared-memory buffers. A trait, so that every room of
//! the proxy is tested without a VM against a host the test plays.

use std::io;
use std::os::fd::BorrowedFd;

use crate::channel::{Channel, HostImage as ChannelImage};
use crate::cross_domain::{Identifier, RingMessage};

/// The host side of one client's channel.
pub trait Host {
    /// Polls readable when [`Host::take_messages`] has something.
    fn poll_fd(&self) -> BorrowedFd<'_>;
    /// What the host wrote to the channel ring since the last call.
    fn take_messages(&mut self) -> io::Result<Vec<RingMessage>>;
    /// SEND: Wayland bytes and the descriptors they carry.
    fn send(&self, data: &[u8], identifiers: &[Identifier]) -> io::Result<()>;
    /// WRITE: bytes for the compositor's end of write pipe `identifier`.
    fn write_pipe(&self, identifier: u32, data: &[u8], hang_up: bool) -> io::Result<()>;
    /// The identifier the host will give the next read pipe of a SEND.
    fn next_read_pipe(&mut self) -> u32;
    /// A mapped host image of `rows` rows of at least `row_bytes` bytes.
    fn image(&mut self, row_bytes: u32, rows: u32) -> io::Result<Box<dyn HostImage>>;
    /// The bytes of a blob the compositor sent (`size` bytes).
    fn import(&self, identifier: u32, size: u32) -> io::Result<Vec<u8>>;
}

/// Host memory the guest writes a buffer's pixels into.
pub trait HostImage {
    /// Bytes between rows.
    fn stride(&self) -> u32;
    /// Its size in bytes, as the host allocated it.
    fn size(&self) -> u64;
    fn bytes_mut(&mut self) -> &mut [u8];
    /// What names it to the host in a SEND.
    fn identifier(&self) -> Identifier;
}

impl Host for Channel {
    fn poll_fd(&self) -> BorrowedFd<'_> {
        Channel::poll_fd(self)
    }

    fn take_messages(&mut self) -> io::Result<Vec<RingMessage>> {
        Channel::take_messages(self)
    }

    fn send(&self, data: &[u8], identifiers: &[Identifier]) -> io::Result<()> {
        Channel::send(self, data, identifiers)
    }

    fn write_pipe(&self, identifier: u32, data: &[u8], hang_up: bool) -> io::Result<()> {
        Channel::write_pipe(self, identifier, data, hang_up)
    }

    fn next_read_pipe(&mut self) -> u32 {
        Channel::next_read_pipe(self)
    }

    fn image(&mut self, row_bytes: u32, rows: u32) -> io::Result<Box<dyn HostImage>> {
        Ok(Box::new(Channel::image(self, row_bytes, rows)?))
    }

    fn import(&self, identifier: u32, size: u32) -> io::Result<Vec<u8>> {
        Channel::import(self, identifier, size)
    }
}

impl HostImage for ChannelImage {
    fn stride(&self) -> u32 {
        self.stride
    }

    fn size(&self) -> u64 {
        self.blob.blob.size
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.blob.bytes_mut()
    }

    fn identifier(&self) -> Identifier {
        self.blob.identifier()
    }
}
