//! Guest memory as render-worker maps it (for guest-memory blobs and 3D
//! backing), and the memfds gpu-worker hands over: the submit buffer.

use std::fs::File;
use std::os::fd::OwnedFd;

use ipc::{MemoryRegion, Reply};
use rutabaga_gfx::RutabagaIovec;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{refused, Answer, RenderDevice, ERR_UNSPEC};

/// A memfd from gpu-worker, mapped: only sealed against shrinking and at
/// least `len` bytes long, so no access to the mapping can fault (lseek,
/// not fstat: render-worker's policy has no C-library fstat).
pub(super) fn map_sealed(
    fd: OwnedFd,
    len: usize,
    prot: i32,
) -> Result<vm_memory::mmap::MmapRegion<()>, String> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let sealed = fcntl(&fd, FcntlArg::F_GET_SEALS)
        .map(SealFlag::from_bits_truncate)
        .is_ok_and(|s| s.contains(SealFlag::F_SEAL_SHRINK));
    let size = nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekEnd);
    if !sealed || size.map_or(true, |l| (l as u64) < len as u64) || len == 0 {
        return Err(format!(
            "not sealed against shrinking, or shorter than {len} bytes ({size:?})"
        ));
    }
    vm_memory::mmap::MmapRegion::<()>::build(
        Some(FileOffset::new(File::from(fd), 0)),
        len,
        prot,
        nix::libc::MAP_SHARED,
    )
    .map_err(|e| format!("cannot map it: {e}"))
}

/// gpu-worker's submit buffer, mapped read-only here.
pub(super) struct SubmitBuffer(pub(super) vm_memory::mmap::MmapRegion<()>);

impl SubmitBuffer {
    /// The first `len` bytes, if the buffer holds that many.
    pub(super) fn get(&self, range: std::ops::RangeTo<usize>) -> Option<&[u8]> {
        if range.end > self.0.size() {
            return None;
        }
        // SAFETY: the region maps `size()` bytes of a memfd sealed against
        // shrinking for as long as `self.0` lives (the borrow of self);
        // gpu-worker may write it meanwhile, which changes only bytes
        // (copied out before use), never the mapping.
        Some(unsafe { std::slice::from_raw_parts(self.0.as_ptr(), range.end) })
    }
}

/// Why a guest-memory blob's ranges cannot be reached here.
#[derive(Debug, thiserror::Error)]
pub(super) enum GuestRange {
    #[error("no guest memory was given for a guest-memory blob")]
    NoMemory,
    #[error("guest range {addr:#x}+{len}: {why}")]
    Outside { addr: u64, len: u32, why: String },
}

/// One guest memory map, as SET_MEM_TABLE gave it.
pub(super) struct MemoryMap {
    pub(super) generation: u64,
    pub(super) mem: GuestMemoryMmap,
}

impl RenderDevice {
    /// The connection's submit buffer, from gpu-worker (less trusted than
    /// this process with the GPU: it parses guest bytes): taken once, only
    /// sealed against shrinking and at least `MAX_SUBMIT_BYTES` long (so
    /// no read of it can fault), and mapped read-only.
    pub(super) fn take_submit_buffer(&mut self, fds: Vec<OwnedFd>) -> Answer {
        if self.submit_buffer.is_some() {
            return refused(ERR_UNSPEC, "a second submit buffer");
        }
        let Ok([fd]) = <[OwnedFd; 1]>::try_from(fds) else {
            return refused(ERR_UNSPEC, "a submit buffer without its one descriptor");
        };
        let len = wire::command::MAX_SUBMIT_BYTES;
        match map_sealed(fd, len, nix::libc::PROT_READ) {
            Ok(map) => {
                self.submit_buffer = Some(SubmitBuffer(map));
                Reply::Done
            }
            Err(why) => refused(ERR_UNSPEC, format!("the submit buffer: {why}")),
        }
    }

    pub(super) fn set_memory(&mut self, regions: Vec<MemoryRegion>, fds: Vec<OwnedFd>) -> Answer {
        if regions.len() != fds.len() {
            return refused(ERR_UNSPEC, "memory regions without their descriptors");
        }
        let ranges: Vec<_> = regions
            .iter()
            .zip(fds)
            .map(|(r, fd)| {
                (
                    GuestAddress(r.guest_addr),
                    r.size as usize,
                    Some(FileOffset::new(File::from(fd), r.file_offset)),
                )
            })
            .collect();
        match GuestMemoryMmap::from_ranges_with_files(&ranges) {
            Ok(mem) => {
                self.memory.push(MemoryMap {
                    generation: self.next_generation,
                    mem,
                });
                self.next_generation += 1;
                self.prune_memory();
                Reply::Done
            }
            Err(e) => refused(ERR_UNSPEC, format!("cannot map guest memory: {e}")),
        }
    }

    /// Drops every memory map but the current one that no blob needs.
    pub(super) fn prune_memory(&mut self) {
        let Some(current) = self.memory.last().map(|m| m.generation) else {
            return;
        };
        let held = &self.held;
        self.memory.retain(|m| {
            m.generation == current || held.values().any(|b| b.generation == Some(m.generation))
        });
    }

    /// Host addresses of guest ranges, each inside one region of the
    /// current guest memory map, and that map's generation.
    pub(super) fn iovecs(
        &self,
        entries: &[(u64, u32)],
    ) -> Result<(Vec<RutabagaIovec>, u64), GuestRange> {
        let current = self.memory.last().ok_or(GuestRange::NoMemory)?;
        let mem = &current.mem;
        entries
            .iter()
            .map(|&(addr, len)| {
                let slice = mem
                    .get_slice(GuestAddress(addr), len as usize)
                    .map_err(|e| GuestRange::Outside {
                        addr,
                        len,
                        why: e.to_string(),
                    })?;
                Ok(RutabagaIovec {
                    base: slice.ptr_guard_mut().as_ptr().cast(),
                    len: len as usize,
                })
            })
            .collect::<Result<_, GuestRange>>()
            .map(|v| (v, current.generation))
    }
}
