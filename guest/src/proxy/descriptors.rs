//! Descriptors across the channel, both ways, for the only kinds a relayed
//! interface carries besides shared memory (`globals` checks that):
//!
//! - from the compositor, a memfd (a keymap) arrives as a blob identifier
//!   and becomes a sealed guest memfd with its bytes; a pipe to write into
//!   (`wl_data_source.send`) becomes a guest pipe whose bytes go back with
//!   CROSS_DOMAIN_CMD_WRITE;
//! - from a client, the write end of a pipe (`wl_data_offer.receive`)
//!   becomes a host read pipe whose bytes come back as
//!   CROSS_DOMAIN_CMD_READ. Anything else is refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::{fstat, SFlag};

use super::host::Host;
use crate::cross_domain::{
    Identifier, ID_TYPE_READ_PIPE, ID_TYPE_VIRTGPU_BLOB, ID_TYPE_WRITE_PIPE,
};

/// The most bytes read from a client's pipe for one WRITE.
const PIPE_CHUNK: usize = 4096;

/// Whether `fd` is the write end of a pipe.
pub fn is_write_pipe(fd: &OwnedFd) -> bool {
    let fifo = fstat(fd)
        .is_ok_and(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
    let write_only = fcntl(fd, FcntlArg::F_GETFL)
        .is_ok_and(|f| OFlag::from_bits_truncate(f) & OFlag::O_ACCMODE == OFlag::O_WRONLY);
    fifo && write_only
}

/// A memfd holding `bytes`, sealed against every change.
pub fn sealed_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        c"airlock-compositor",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(file.into())
}

/// A descriptor that cannot cross.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("a descriptor the proxy cannot carry to the host (only the write end of a pipe)")]
    NotAWritePipe,
    #[error(
        "the compositor sent a descriptor of cross-domain kind {0}, which the proxy does not carry"
    )]
    UnknownKind(u32),
    #[error("the compositor's memory: {0}")]
    Import(io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One client's pipes across the channel.
#[derive(Default)]
pub struct Pipes {
    /// Host read pipes: identifier -> the client's write end.
    read: HashMap<u32, File>,
    /// Host write pipes: the read end the client writes into, and the
    /// identifier its bytes go to.
    write: Vec<(File, u32)>,
}

impl Pipes {
    /// A client's descriptor, as the host will know it.
    pub fn carry_to_host(
        &mut self,
        fd: OwnedFd,
        host: &mut dyn Host,
    ) -> Result<Identifier, DescriptorError> {
        if !is_write_pipe(&fd) {
            return Err(DescriptorError::NotAWritePipe);
        }
        let id = host.next_read_pipe();
        self.read.insert(id, File::from(fd));
        Ok(Identifier {
            id,
            kind: ID_TYPE_READ_PIPE,
            size: 0,
        })
    }

    /// A descriptor the compositor sent, made one the client can use.
    pub fn carry_from_host(
        &mut self,
        ident: Identifier,
        host: &dyn Host,
    ) -> Result<OwnedFd, DescriptorError> {
        match ident.kind {
            ID_TYPE_VIRTGPU_BLOB => {
                let bytes = host
                    .import(ident.id, ident.size)
                    .map_err(DescriptorError::Import)?;
                Ok(sealed_memfd(&bytes)?)
            }
            ID_TYPE_WRITE_PIPE => {
                let (read, write) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
                self.write.push((File::from(read), ident.id));
                Ok(write)
            }
            kind => Err(DescriptorError::UnknownKind(kind)),
        }
    }

    /// Bytes the host read from a read pipe's far end (CMD_READ): to the
    /// client's end, which goes with `hang_up` or a client that stopped
    /// reading.
    pub fn deliver(&mut self, identifier: u32, data: &[u8], hang_up: bool) {
        log::debug!(
            "read pipe {identifier:#x}: {} bytes from the host{}{}",
            data.len(),
            if hang_up { ", hung up" } else { "" },
            if self.read.contains_key(&identifier) {
                ""
            } else {
                " (no such pipe)"
            }
        );
        if let Some(pipe) = self.read.get_mut(&identifier) {
            if let Err(e) = pipe.write_all(data) {
                log::debug!("the client's pipe {identifier:#x}: {e}");
                self.read.remove(&identifier);
            }
        }
        if hang_up {
            self.read.remove(&identifier);
        }
    }

    /// The write pipes' guest ends, to poll for what the client wrote.
    pub fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.write.iter().map(|(f, _)| f.as_fd())
    }

    /// Carries what the client wrote into each ready write pipe (`ready`,
    /// in [`Pipes::poll_fds`]'s order) to the host; a pipe the client
    /// closed hangs up.
    pub fn pump(&mut self, ready: &[bool], host: &dyn Host) -> io::Result<()> {
        let mut keep = Vec::with_capacity(self.write.len());
        let mut result = Ok(());
        for (i, (pipe, id)) in std::mem::take(&mut self.write).into_iter().enumerate() {
            if !ready.get(i).copied().unwrap_or(false) {
                keep.push((pipe, id));
                continue;
            }
            let mut buf = vec![0u8; PIPE_CHUNK];
            let sent = match (&pipe).read(&mut buf) {
                Ok(0) | Err(_) => host.write_pipe(id, &[], true),
                Ok(n) => {
                    keep.push((pipe, id));
                    host.write_pipe(id, &buf[..n], false)
                }
            };
            if let Err(e) = sent {
                result = Err(e);
            }
        }
        self.write = keep;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::FakeHost;

    #[test]
    fn only_the_write_end_of_a_pipe_crosses_from_a_client() {
        let mut host = FakeHost::default();
        let mut pipes = Pipes::default();
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(matches!(
            pipes.carry_to_host(r, &mut host),
            Err(DescriptorError::NotAWritePipe)
        ));
        let memfd = sealed_memfd(b"x").unwrap();
        assert!(
            pipes.carry_to_host(memfd, &mut host).is_err(),
            "a file stays"
        );
        let ident = pipes.carry_to_host(w, &mut host).unwrap();
        assert_eq!(ident.kind, ID_TYPE_READ_PIPE);
        assert_eq!(ident.id, 0x8000_0001);
    }

    #[test]
    fn what_the_host_reads_reaches_the_clients_pipe_until_it_hangs_up() {
        let mut host = FakeHost::default();
        let mut pipes = Pipes::default();
        let (r, w) = nix::unistd::pipe().unwrap();
        let ident = pipes.carry_to_host(w, &mut host).unwrap();
        pipes.deliver(ident.id, b"clip", false);
        pipes.deliver(ident.id, b"board", true);
        pipes.deliver(ident.id, b"late", false);
        let mut got = String::new();
        File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "clipboard", "hang-up closed the client's end");
    }

    #[test]
    fn a_keymap_becomes_a_sealed_memfd_and_a_write_pipe_carries_bytes_back() {
        let mut host = FakeHost::default();
        host.blobs.insert(9, b"xkb keymap".to_vec());
        let mut pipes = Pipes::default();
        let memfd = pipes
            .carry_from_host(
                Identifier {
                    id: 9,
                    kind: ID_TYPE_VIRTGPU_BLOB,
                    size: 10,
                },
                &host,
            )
            .unwrap();
        let seals = fcntl(&memfd, FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(seals & SealFlag::F_SEAL_WRITE.bits(), 0);
        let mut keymap = [0u8; 10];
        std::os::unix::fs::FileExt::read_exact_at(&File::from(memfd), &mut keymap, 0).unwrap();
        assert_eq!(&keymap, b"xkb keymap");
        let write_end = pipes
            .carry_from_host(
                Identifier {
                    id: 33,
                    kind: ID_TYPE_WRITE_PIPE,
                    size: 0,
                },
                &host,
            )
            .unwrap();
        File::from(write_end).write_all(b"text").unwrap();
        assert_eq!(pipes.poll_fds().count(), 1);
        pipes.pump(&[true], &host).unwrap();
        pipes.pump(&[true], &host).unwrap();
        assert_eq!(
            host.writes.borrow().as_slice(),
            [(33, b"text".to_vec(), false), (33, vec![], true)]
        );
        assert_eq!(pipes.poll_fds().count(), 0, "closed by the client: gone");
        assert!(matches!(
            pipes.carry_from_host(
                Identifier {
                    id: 1,
                    kind: 42,
                    size: 0
                },
                &host
            ),
            Err(DescriptorError::UnknownKind(42))
        ));
    }
}
