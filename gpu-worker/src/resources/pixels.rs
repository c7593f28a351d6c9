//! Where a 2D resource's bytes are: its pixel memory (a sealed memfd,
//! shared read-only with the broker for the display path) and its backing
//! (the guest ranges it is transferred from).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

/// A resource's pixel memory: a memfd, mapped here read-write, that the
/// broker may map read-only to present flushes without a copy through ipc.
///
/// The memfd is sealed against shrinking and growing (and further seals)
/// before anyone else sees it, so the broker can map it knowing its size
/// holds. Its pages are allocated up front with fallocate, so running out
/// of memory is an error at RESOURCE_CREATE_2D, never a fault later. The
/// mapping starts on a page boundary: rows copied between page-aligned
/// guest memory and a buffer 16 bytes off the page (where malloc puts large
/// blocks) run ~40% slower with `rep movsb` on AMD CPUs.
#[derive(Debug)]
pub(crate) struct Pixels {
    map: MmapRegion,
    memfd: Arc<File>,
    pub(super) len: usize,
}

/// Why a resource's pixel memory cannot be had (the guest gets
/// ERR_OUT_OF_MEMORY).
#[derive(Debug, thiserror::Error)]
pub enum PixelsError {
    #[error("larger than a file can be")]
    TooLarge,
    #[error("memfd_create: {0}")]
    Memfd(nix::errno::Errno),
    #[error("cannot allocate {0} bytes: {1}")]
    Allocate(usize, nix::errno::Errno),
    #[error("cannot seal the memfd: {0}")]
    Seal(nix::errno::Errno),
    #[error("cannot map {0} bytes: {1}")]
    Map(usize, vm_memory::mmap::MmapRegionError),
}

impl Pixels {
    /// A zeroed buffer of `len` bytes, or why it cannot be allocated.
    pub(crate) fn new(len: usize) -> Result<Pixels, PixelsError> {
        let size = i64::try_from(len).map_err(|_| PixelsError::TooLarge)?;
        let fd = memfd_create(
            "gpu-airlock-resource",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(PixelsError::Memfd)?;
        if len > 0 {
            fallocate(&fd, FallocateFlags::empty(), 0, size)
                .map_err(|e| PixelsError::Allocate(len, e))?;
        }
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(PixelsError::Seal)?;
        // A mapping needs at least one byte; a zero-size resource never
        // exists (create_2d refuses it), but keep the type total.
        let memfd = Arc::new(File::from(fd));
        let map = MmapRegion::build(
            Some(FileOffset::from_arc(memfd.clone(), 0)),
            len.max(1),
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
            nix::libc::MAP_SHARED,
        )
        .map_err(|e| PixelsError::Map(len, e))?;
        Ok(Pixels { map, memfd, len })
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: the region maps `len` (or 1 if 0) bytes for as long as
        // `self.map` lives, which the borrow of self guarantees. This
        // process is the only writer; the broker maps the memfd read-only.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice; `&mut self` makes this the only view in
        // this process.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), self.len) }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }
}

/// A resource's backing: guest ranges in order, with where each starts in
/// the concatenation, so a byte offset finds its range by binary search
/// rather than by a walk (a guest may send 2^18 ranges).
#[derive(Debug, Default)]
pub(super) struct Backing {
    ranges: Vec<(GuestAddress, u32)>,
    /// `starts[i]`: offset of `ranges[i]` within the concatenation.
    starts: Vec<u64>,
}

impl Backing {
    pub(super) fn new(ranges: Vec<(GuestAddress, u32)>) -> Self {
        let mut starts = Vec::with_capacity(ranges.len());
        let mut at = 0u64;
        for (_, len) in &ranges {
            starts.push(at);
            at += u64::from(*len); // at most 2^18 * 2^32: no overflow
        }
        Backing { ranges, starts }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Reads `dst.len()` bytes at `offset` of the concatenated ranges.
    /// False if that runs past the backing or guest memory.
    pub(super) fn read(&self, mem: &GuestMemoryMmap, offset: u64, dst: &mut [u8]) -> bool {
        // The range holding `offset`: the last one starting at or before it.
        let mut i = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(0) => return dst.is_empty(),
            Err(i) => i - 1,
        };
        let mut within = offset - self.starts.get(i).copied().unwrap_or(0);
        let mut done = 0;
        while done < dst.len() {
            let Some(&(addr, len)) = self.ranges.get(i) else {
                return false;
            };
            let len = u64::from(len);
            if within >= len {
                return false;
            }
            let n = ((len - within) as usize).min(dst.len() - done);
            let Some(at) = addr.0.checked_add(within) else {
                return false;
            };
            if mem
                .read_slice(&mut dst[done..done + n], GuestAddress(at))
                .is_err()
            {
                return false;
            }
            done += n;
            within = 0;
            i += 1;
        }
        true
    }
}

/// Reads `dst.len()` bytes at `offset` of the concatenation of `ranges` in
/// guest memory (a guest-memory blob's backing). False if that runs past
/// the ranges or guest memory.
pub fn read_ranges(
    mem: &GuestMemoryMmap,
    ranges: &[(GuestAddress, u32)],
    offset: u64,
    dst: &mut [u8],
) -> bool {
    Backing::new(ranges.to_vec()).read(mem, offset, dst)
}
