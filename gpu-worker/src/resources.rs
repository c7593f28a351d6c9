//! 2D resources: what the guest creates, backs with its memory, transfers
//! into, and shows on scanouts.
//!
//! They live here, in gpu-worker, because guest memory does: a transfer is
//! one copy from the guest's backing pages into the resource, with no
//! process hop. (Blob and 3D resources, which need rutabaga, will live in
//! render-worker.) Every size is computed with checked arithmetic, every
//! rectangle is checked against its resource, every backing entry against
//! guest memory, and the memory all resources take together is capped by
//! `--max-resource-memory`; each refusal carries the spec's error code.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use ipc::{PixelRect, ScanoutSize, SharedSurface};
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use wire::*;

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
struct Pixels {
    map: MmapRegion,
    memfd: Arc<File>,
    len: usize,
}

impl Pixels {
    /// A zeroed buffer of `len` bytes, or why it cannot be allocated.
    fn new(len: usize) -> Result<Pixels, String> {
        let size = i64::try_from(len).map_err(|_| "larger than a file can be".to_string())?;
        let fd = memfd_create(
            "gpu-airlock-resource",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| format!("memfd_create: {e}"))?;
        if len > 0 {
            fallocate(&fd, FallocateFlags::empty(), 0, size)
                .map_err(|e| format!("cannot allocate {len} bytes: {e}"))?;
        }
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|e| format!("cannot seal the memfd: {e}"))?;
        // A mapping needs at least one byte; a zero-size resource never
        // exists (create_2d refuses it), but keep the type total.
        let memfd = Arc::new(File::from(fd));
        let map = MmapRegion::build(
            Some(FileOffset::from_arc(memfd.clone(), 0)),
            len.max(1),
            nix::libc::PROT_READ | nix::libc::PROT_WRITE,
            nix::libc::MAP_SHARED,
        )
        .map_err(|e| format!("cannot map {len} bytes: {e}"))?;
        Ok(Pixels { map, memfd, len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the region maps `len` (or 1 if 0) bytes for as long as
        // `self.map` lives, which the borrow of self guarantees. This
        // process is the only writer; the broker maps the memfd read-only.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice; `&mut self` makes this the only view in
        // this process.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), self.len) }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }
}

#[derive(Debug)]
struct Resource2d {
    width: u32,
    height: u32,
    /// Bytes per row of `data`.
    stride: u32,
    format: u32,
    data: Pixels,
    /// Whether the broker has been given `data`'s memfd.
    shared: bool,
    /// For the shadow of a guest-memory blob shown with SET_SCANOUT_BLOB:
    /// the blob's layout (offset of the first pixel, row stride) that
    /// flushes copy from. A 2D resource's transfers give their own offset
    /// and use the resource's stride.
    blob_layout: Option<(u64, u32)>,
    /// Guest memory ranges, in order, that back the resource.
    backing: Backing,
}

/// A resource's backing: guest ranges in order, with where each starts in
/// the concatenation, so a byte offset finds its range by binary search
/// rather than by a walk (a guest may send 2^18 ranges).
#[derive(Debug, Default)]
struct Backing {
    ranges: Vec<(GuestAddress, u32)>,
    /// `starts[i]`: offset of `ranges[i]` within the concatenation.
    starts: Vec<u64>,
}

impl Backing {
    fn new(ranges: Vec<(GuestAddress, u32)>) -> Self {
        let mut starts = Vec::with_capacity(ranges.len());
        let mut at = 0u64;
        for (_, len) in &ranges {
            starts.push(at);
            at += u64::from(*len); // at most 2^18 * 2^32: no overflow
        }
        Backing { ranges, starts }
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Reads `dst.len()` bytes at `offset` of the concatenated ranges.
    /// False if that runs past the backing or guest memory.
    fn read(&self, mem: &GuestMemoryMmap, offset: u64, dst: &mut [u8]) -> bool {
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

/// What a scanout shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanoutState {
    pub resource_id: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug)]
pub struct Resources {
    resources: HashMap<u32, Resource2d>,
    used_bytes: u64,
    max_bytes: u64,
    scanouts: Vec<Option<ScanoutState>>,
    cursor: Option<(u32, u32)>,
}

/// Whether `r` lies inside a `width`×`height` surface, without overflow.
fn rect_within(r: &Rect, width: u32, height: u32) -> bool {
    let (x, y, w, h) = (
        r.x.to_native(),
        r.y.to_native(),
        r.width.to_native(),
        r.height.to_native(),
    );
    x.checked_add(w).is_some_and(|right| right <= width)
        && y.checked_add(h).is_some_and(|bottom| bottom <= height)
}

impl Resources {
    pub fn new(scanouts: &[ScanoutSize], max_bytes: u64) -> Self {
        Resources {
            resources: HashMap::new(),
            used_bytes: 0,
            max_bytes,
            scanouts: vec![None; scanouts.len()],
            cursor: None,
        }
    }

    pub fn scanout(&self, scanout_id: usize) -> Option<ScanoutState> {
        self.scanouts.get(scanout_id).copied().flatten()
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Makes (or keeps, if its layout is unchanged) the host copy of a
    /// guest-memory blob that SET_SCANOUT_BLOB shows: `width`×`height` in
    /// `format`, rows `stride` apart from `offset` in the blob's `backing`.
    /// Returns whether a previous copy, now gone, had been shared (the
    /// broker must let go of it), even when the new one cannot be made.
    #[allow(clippy::too_many_arguments)]
    pub fn blob_shadow(
        &mut self,
        id: u32,
        width: u32,
        height: u32,
        format: u32,
        backing: &[(GuestAddress, u32)],
        offset: u64,
        stride: u32,
    ) -> (bool, Result<(), Refusal>) {
        if let Some(r) = self.resources.get(&id) {
            if (r.width, r.height, r.format, r.blob_layout)
                == (width, height, format, Some((offset, stride)))
            {
                return (false, Ok(()));
            }
        }
        let was_shared = match self.resources.contains_key(&id) {
            true => match self.unref(id) {
                Ok(shared) => shared,
                Err(r) => return (false, Err(r)),
            },
            false => false,
        };
        let create = ResourceCreate2d {
            resource_id: id.into(),
            format: format.into(),
            width: width.into(),
            height: height.into(),
        };
        if let Err(r) = self.create_2d(&create) {
            return (was_shared, Err(r));
        }
        if let Some(r) = self.resources.get_mut(&id) {
            r.backing = Backing::new(backing.to_vec());
            r.blob_layout = Some((offset, stride));
        }
        (was_shared, Ok(()))
    }

    /// Copies `rect` of a blob shadow from the blob's guest memory; no-op
    /// for an id that has no shadow (a blob never shown).
    pub fn refresh_blob_shadow(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        rect: &Rect,
    ) -> Result<(), Refusal> {
        let Some((offset, stride)) = self.resources.get(&id).and_then(|r| r.blob_layout) else {
            return Ok(());
        };
        let (x, y) = (u64::from(rect.x.to_native()), u64::from(rect.y.to_native()));
        let first = y
            .checked_mul(u64::from(stride))
            .and_then(|o| o.checked_add(x * u64::from(BYTES_PER_PIXEL)))
            .and_then(|o| o.checked_add(offset))
            .ok_or(Refusal {
                code: RESP_ERR_INVALID_PARAMETER,
                why: format!("flush rectangle {rect:?} overflows"),
            })?;
        let t = TransferToHost2d {
            r: *rect,
            offset: first.into(),
            resource_id: id.into(),
            padding: 0.into(),
        };
        self.transfer_to_host_2d(mem, &t)
    }

    /// Drops every resource (a device reset); returns the ids whose memory
    /// the broker had been given.
    pub fn reset(&mut self) -> Vec<u32> {
        let shared = self
            .resources
            .iter()
            .filter(|(_, r)| r.shared)
            .map(|(id, _)| *id)
            .collect();
        self.resources.clear();
        self.scanouts.iter_mut().for_each(|s| *s = None);
        self.cursor = None;
        self.used_bytes = 0;
        shared
    }

    /// Whether a 2D resource `id` exists.
    pub fn exists(&self, id: u32) -> bool {
        self.resources.contains_key(&id)
    }

    /// Counts `bytes` of host memory held elsewhere (a host blob in
    /// render-worker) against `--max-resource-memory`.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), Refusal> {
        let total = self.used_bytes.saturating_add(bytes);
        if total > self.max_bytes {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                format!(
                    "{bytes} more bytes; {} of {} are in use (--max-resource-memory)",
                    self.used_bytes, self.max_bytes
                ),
            );
        }
        self.used_bytes = total;
        Ok(())
    }

    pub fn release(&mut self, bytes: u64) {
        self.used_bytes = self.used_bytes.saturating_sub(bytes);
    }

    fn get(&self, id: u32) -> Result<&Resource2d, Refusal> {
        match self.resources.get(&id) {
            Some(r) => Ok(r),
            None => refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}")),
        }
    }

    fn get_mut(&mut self, id: u32) -> Result<&mut Resource2d, Refusal> {
        match self.resources.get_mut(&id) {
            Some(r) => Ok(r),
            None => refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}")),
        }
    }

    pub fn create_2d(&mut self, c: &ResourceCreate2d) -> Result<(), Refusal> {
        let (id, format, width, height) = (
            c.resource_id.to_native(),
            c.format.to_native(),
            c.width.to_native(),
            c.height.to_native(),
        );
        if id == 0 || self.resources.contains_key(&id) {
            return refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("resource id {id} is 0 or already in use"),
            );
        }
        if !FORMATS_2D.contains(&format) {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("format {format} is not a 2D format"),
            );
        }
        if width == 0 || height == 0 {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("resource of {width}x{height}"),
            );
        }
        let stride = width.checked_mul(BYTES_PER_PIXEL);
        let size = stride.and_then(|s| u64::from(s).checked_mul(u64::from(height)));
        let (Some(stride), Some(size)) = (stride, size) else {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                format!("{width}x{height} overflows"),
            );
        };
        let total = self.used_bytes.saturating_add(size);
        if total > self.max_bytes {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                format!(
                    "{width}x{height} needs {size} bytes; {} of {} are in use (--max-resource-memory)",
                    self.used_bytes, self.max_bytes
                ),
            );
        }
        let Ok(len) = usize::try_from(size) else {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                "resource larger than the address space",
            );
        };
        let data = match Pixels::new(len) {
            Ok(d) => d,
            Err(e) => return refuse(RESP_ERR_OUT_OF_MEMORY, e),
        };
        self.resources.insert(
            id,
            Resource2d {
                width,
                height,
                stride,
                format,
                data,
                shared: false,
                blob_layout: None,
                backing: Backing::default(),
            },
        );
        self.used_bytes = total;
        Ok(())
    }

    /// Releases a resource; true if its memory had been shared with the
    /// broker (which must then be told).
    pub fn unref(&mut self, id: u32) -> Result<bool, Refusal> {
        let Some(res) = self.resources.remove(&id) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}"));
        };
        self.used_bytes = self.used_bytes.saturating_sub(res.data.len as u64);
        // A scanout or cursor showing it shows nothing now.
        for s in self.scanouts.iter_mut() {
            if s.is_some_and(|s| s.resource_id == id) {
                *s = None;
            }
        }
        if self.cursor.is_some_and(|(r, _)| r == id) {
            self.cursor = None;
        }
        Ok(res.shared)
    }

    pub fn attach_backing(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        entries: &[MemEntry],
    ) -> Result<(), Refusal> {
        let mut backing = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let (addr, len) = (GuestAddress(e.addr.to_native()), e.length.to_native());
            if len == 0 || !mem.check_range(addr, len as usize, Permissions::Read) {
                return refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!(
                        "backing entry {i} ({:#x}, {len} bytes) is not inside guest memory",
                        addr.0
                    ),
                );
            }
            backing.push((addr, len));
        }
        let res = self.get_mut(id)?;
        if !res.backing.is_empty() {
            return refuse(
                RESP_ERR_UNSPEC,
                format!("resource {id} already has backing"),
            );
        }
        res.backing = Backing::new(backing);
        Ok(())
    }

    pub fn detach_backing(&mut self, id: u32) -> Result<(), Refusal> {
        let res = self.get_mut(id)?;
        if res.backing.is_empty() {
            return refuse(RESP_ERR_UNSPEC, format!("resource {id} has no backing"));
        }
        res.backing = Backing::default();
        Ok(())
    }

    pub fn transfer_to_host_2d(
        &mut self,
        mem: &GuestMemoryMmap,
        t: &TransferToHost2d,
    ) -> Result<(), Refusal> {
        let id = t.resource_id.to_native();
        let res = self.get_mut(id)?;
        if res.backing.is_empty() {
            return refuse(RESP_ERR_UNSPEC, format!("resource {id} has no backing"));
        }
        if !rect_within(&t.r, res.width, res.height) {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!(
                    "transfer rectangle {:?} is outside resource {id} ({}x{})",
                    t.r, res.width, res.height
                ),
            );
        }
        let (x, y, w, h) = (
            t.r.x.to_native(),
            t.r.y.to_native(),
            t.r.width.to_native(),
            t.r.height.to_native(),
        );
        // Inside the resource (checked above), so none of these overflow.
        let row_bytes = (w * BYTES_PER_PIXEL) as usize;
        let stride = res.stride as usize;
        let guest_stride = res.blob_layout.map_or(res.stride, |(_, s)| s);
        for row in 0..h as usize {
            // The guest's layout: rows `guest_stride` apart from `offset`.
            let src = (row as u64)
                .checked_mul(u64::from(guest_stride))
                .and_then(|o| o.checked_add(t.offset.to_native()));
            let dst = (y as usize + row) * stride + x as usize * BYTES_PER_PIXEL as usize;
            let ok = src.is_some_and(|src| {
                res.backing
                    .read(mem, src, &mut res.data.as_mut_slice()[dst..dst + row_bytes])
            });
            if !ok {
                return refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!(
                        "transfer row {row} reads past resource {id}'s backing (offset {})",
                        t.offset.to_native()
                    ),
                );
            }
        }
        Ok(())
    }

    pub fn set_scanout(&mut self, s: &SetScanout) -> Result<(), Refusal> {
        let (scanout_id, id) = (s.scanout_id.to_native(), s.resource_id.to_native());
        let Some(slot) = usize::try_from(scanout_id)
            .ok()
            .filter(|i| *i < self.scanouts.len())
        else {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!(
                    "scanout {scanout_id}, but the device has {}",
                    self.scanouts.len()
                ),
            );
        };
        if id == 0 {
            self.scanouts[slot] = None;
            return Ok(());
        }
        let res = self.get(id)?;
        if s.r.width.to_native() == 0
            || s.r.height.to_native() == 0
            || !rect_within(&s.r, res.width, res.height)
        {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!(
                    "scanout rectangle {:?} is empty or outside resource {id} ({}x{})",
                    s.r, res.width, res.height
                ),
            );
        }
        self.scanouts[slot] = Some(ScanoutState {
            resource_id: id,
            x: s.r.x.to_native(),
            y: s.r.y.to_native(),
            width: s.r.width.to_native(),
            height: s.r.height.to_native(),
        });
        Ok(())
    }

    /// Checks a flush; returns, for each scanout that shows part of the
    /// flushed rectangle, that part in the scanout's coordinates.
    pub fn flush(&self, f: &ResourceFlush) -> Result<Vec<(u32, PixelRect)>, Refusal> {
        let id = f.resource_id.to_native();
        let res = self.get(id)?;
        if !rect_within(&f.r, res.width, res.height) {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!(
                    "flush rectangle {:?} is outside resource {id} ({}x{})",
                    f.r, res.width, res.height
                ),
            );
        }
        // Inside the resource (checked above): no sum overflows.
        let (fx, fy) = (f.r.x.to_native(), f.r.y.to_native());
        let (fr, fb) = (fx + f.r.width.to_native(), fy + f.r.height.to_native());
        let mut out = Vec::new();
        for (i, s) in self.scanouts.iter().enumerate() {
            let Some(s) = s.filter(|s| s.resource_id == id) else {
                continue;
            };
            let (left, top) = (fx.max(s.x), fy.max(s.y));
            let (right, bottom) = (fr.min(s.x + s.width), fb.min(s.y + s.height));
            if left < right && top < bottom {
                out.push((
                    i as u32,
                    PixelRect {
                        x: left - s.x,
                        y: top - s.y,
                        width: right - left,
                        height: bottom - top,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// The broker's view of resource `id`, the first time it is asked for
    /// (and then never again until the resource is recreated).
    pub fn share(&mut self, id: u32) -> Result<Option<SharedSurface>, Refusal> {
        let res = self.get_mut(id)?;
        if res.shared {
            return Ok(None);
        }
        res.shared = true;
        Ok(Some(SharedSurface {
            resource_id: id,
            width: res.width,
            height: res.height,
            stride: res.stride,
            format: res.format,
        }))
    }

    /// The memfd holding resource `id`'s pixels.
    pub fn memfd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.resources.get(&id).map(|r| r.data.fd())
    }

    /// The 64×64 cursor image of resource `id` (its top-left corner,
    /// transparent where the resource is smaller) and its format.
    pub fn cursor_image(&self, id: u32) -> Result<(u32, Vec<u8>), Refusal> {
        let res = self.get(id)?;
        let mut image = vec![0u8; CURSOR_BYTES];
        let row_bytes = (res.width.min(CURSOR_SIZE) * BYTES_PER_PIXEL) as usize;
        let dst_stride = (CURSOR_SIZE * BYTES_PER_PIXEL) as usize;
        let src = res.data.as_slice();
        for row in 0..res.height.min(CURSOR_SIZE) as usize {
            let from = row * res.stride as usize;
            image[row * dst_stride..row * dst_stride + row_bytes]
                .copy_from_slice(&src[from..from + row_bytes]);
        }
        Ok((res.format, image))
    }

    pub fn update_cursor(&mut self, c: &UpdateCursor, move_only: bool) -> Result<(), Refusal> {
        let scanout_id = c.scanout_id.to_native();
        if scanout_id as usize >= self.scanouts.len() {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!("cursor on scanout {scanout_id}"),
            );
        }
        if move_only {
            return Ok(());
        }
        let id = c.resource_id.to_native();
        if id == 0 {
            self.cursor = None;
            return Ok(());
        }
        self.get(id)?;
        self.cursor = Some((id, scanout_id));
        Ok(())
    }

    /// The pixels of resource `id`, for tests and (soon) the display path.
    pub fn pixels(&self, id: u32) -> Option<&[u8]> {
        self.resources.get(&id).map(|r| r.data.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Le32;

    const MIB: u64 = 1 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (4 * MIB) as usize)]).unwrap()
    }

    fn res(scanouts: usize, max: u64) -> Resources {
        Resources::new(
            &vec![
                ScanoutSize {
                    width: 64,
                    height: 64
                };
                scanouts
            ],
            max,
        )
    }

    fn create(id: u32, format: u32, w: u32, h: u32) -> ResourceCreate2d {
        ResourceCreate2d {
            resource_id: Le32::from(id),
            format: Le32::from(format),
            width: Le32::from(w),
            height: Le32::from(h),
        }
    }

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect {
            x: Le32::from(x),
            y: Le32::from(y),
            width: Le32::from(w),
            height: Le32::from(h),
        }
    }

    fn entry(addr: u64, len: u32) -> MemEntry {
        MemEntry {
            addr: addr.into(),
            length: Le32::from(len),
            padding: Le32::from(0),
        }
    }

    fn code<T: std::fmt::Debug>(r: Result<T, Refusal>) -> u32 {
        r.unwrap_err().code
    }

    #[test]
    fn create_accepts_every_spec_format_and_refuses_others() {
        let mut r = res(1, 64 * MIB);
        for (i, f) in FORMATS_2D.iter().enumerate() {
            r.create_2d(&create(i as u32 + 1, *f, 16, 16)).unwrap();
        }
        assert_eq!(r.used_bytes(), 8 * 16 * 16 * 4);
        assert_eq!(
            code(r.create_2d(&create(100, 5, 16, 16))),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(r.create_2d(&create(0, 1, 16, 16))),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            code(r.create_2d(&create(1, 1, 16, 16))),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            code(r.create_2d(&create(101, 1, 0, 16))),
            RESP_ERR_INVALID_PARAMETER
        );
    }

    #[test]
    fn create_is_capped_by_max_resource_memory_and_overflow() {
        let mut r = res(1, 64 * 64 * 4);
        r.create_2d(&create(1, 1, 64, 64)).unwrap();
        assert_eq!(
            code(r.create_2d(&create(2, 1, 1, 1))),
            RESP_ERR_OUT_OF_MEMORY
        );
        r.unref(1).unwrap();
        assert_eq!(r.used_bytes(), 0);
        r.create_2d(&create(2, 1, 1, 1)).unwrap();
        let mut big = res(1, u64::MAX);
        assert_eq!(
            code(big.create_2d(&create(1, 1, u32::MAX, u32::MAX))),
            RESP_ERR_OUT_OF_MEMORY
        );
    }

    #[test]
    fn unref_of_unknown_resource_and_scanout_release() {
        let mut r = res(2, 64 * MIB);
        assert_eq!(code(r.unref(7)), RESP_ERR_INVALID_RESOURCE_ID);
        r.create_2d(&create(7, 1, 32, 32)).unwrap();
        r.set_scanout(&SetScanout {
            r: rect(0, 0, 32, 32),
            scanout_id: Le32::from(1),
            resource_id: Le32::from(7),
        })
        .unwrap();
        assert!(r.scanout(1).is_some());
        r.unref(7).unwrap();
        assert!(
            r.scanout(1).is_none(),
            "unref disables the scanout showing it"
        );
    }

    #[test]
    fn backing_entries_are_checked_against_guest_memory() {
        let m = mem();
        let mut r = res(1, 64 * MIB);
        r.create_2d(&create(1, 1, 16, 16)).unwrap();
        assert_eq!(
            code(r.attach_backing(&m, 1, &[entry(4 * MIB - 16, 32)])),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(r.attach_backing(&m, 1, &[entry(u64::MAX - 4, 16)])),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(r.attach_backing(&m, 1, &[entry(0, 0)])),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(r.attach_backing(&m, 2, &[entry(0, 16)])),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        r.attach_backing(&m, 1, &[entry(0, 512), entry(8192, 512)])
            .unwrap();
        assert_eq!(
            code(r.attach_backing(&m, 1, &[entry(0, 16)])),
            RESP_ERR_UNSPEC
        );
        r.detach_backing(1).unwrap();
        assert_eq!(code(r.detach_backing(1)), RESP_ERR_UNSPEC);
    }

    #[test]
    fn transfer_copies_sub_rectangles_across_scattered_backing() {
        let m = mem();
        let mut r = res(1, 64 * MIB);
        // 4x4 pixels, stride 16 bytes, backed by two 32-byte runs.
        r.create_2d(&create(1, 1, 4, 4)).unwrap();
        let guest: Vec<u8> = (0..64u8).collect();
        m.write_slice(&guest[..32], GuestAddress(0x1000)).unwrap();
        m.write_slice(&guest[32..], GuestAddress(0x9000)).unwrap();
        r.attach_backing(&m, 1, &[entry(0x1000, 32), entry(0x9000, 32)])
            .unwrap();
        // The 2x2 block at (1,1): offset = 1*16 + 1*4.
        r.transfer_to_host_2d(
            &m,
            &TransferToHost2d {
                r: rect(1, 1, 2, 2),
                offset: 20u64.into(),
                resource_id: Le32::from(1),
                padding: Le32::from(0),
            },
        )
        .unwrap();
        let px = r.pixels(1).unwrap();
        assert_eq!(&px[20..28], &guest[20..28]);
        assert_eq!(
            &px[36..44],
            &guest[36..44],
            "second row from the second run"
        );
        assert!(
            px[..20].iter().all(|b| *b == 0),
            "outside the rect untouched"
        );
        assert!(px[28..36].iter().all(|b| *b == 0));
    }

    #[test]
    fn transfer_refusals() {
        let m = mem();
        let mut r = res(1, 64 * MIB);
        r.create_2d(&create(1, 1, 4, 4)).unwrap();
        let t = |x, y, w, h, off: u64| TransferToHost2d {
            r: rect(x, y, w, h),
            offset: off.into(),
            resource_id: Le32::from(1),
            padding: Le32::from(0),
        };
        assert_eq!(
            code(r.transfer_to_host_2d(&m, &t(0, 0, 4, 4, 0))),
            RESP_ERR_UNSPEC
        );
        r.attach_backing(&m, 1, &[entry(0, 64)]).unwrap();
        r.transfer_to_host_2d(&m, &t(0, 0, 4, 4, 0)).unwrap();
        for bad in [
            t(1, 0, 4, 1, 0),
            t(0, 0, 1, 5, 0),
            t(u32::MAX, 0, 2, 1, 0),
            t(0, 0, 4, 4, 8),
            t(0, 0, 1, 1, u64::MAX),
        ] {
            assert_eq!(
                code(r.transfer_to_host_2d(&m, &bad)),
                RESP_ERR_INVALID_PARAMETER,
                "{bad:?}"
            );
        }
        let mut other = t(0, 0, 1, 1, 0);
        other.resource_id = Le32::from(9);
        assert_eq!(
            code(r.transfer_to_host_2d(&m, &other)),
            RESP_ERR_INVALID_RESOURCE_ID
        );
    }

    #[test]
    fn scanout_and_flush_checks() {
        let mut r = res(2, 64 * MIB);
        r.create_2d(&create(1, 1, 32, 32)).unwrap();
        let s = |id: u32, res: u32, rc: Rect| SetScanout {
            r: rc,
            scanout_id: Le32::from(id),
            resource_id: Le32::from(res),
        };
        assert_eq!(
            code(r.set_scanout(&s(2, 1, rect(0, 0, 32, 32)))),
            RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            code(r.set_scanout(&s(0, 5, rect(0, 0, 32, 32)))),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            code(r.set_scanout(&s(0, 1, rect(16, 0, 32, 32)))),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(r.set_scanout(&s(0, 1, rect(0, 0, 0, 32)))),
            RESP_ERR_INVALID_PARAMETER
        );
        r.set_scanout(&s(0, 1, rect(0, 0, 32, 32))).unwrap();
        r.set_scanout(&s(1, 1, rect(8, 8, 16, 16))).unwrap();
        let f = |res: u32, rc: Rect| ResourceFlush {
            r: rc,
            resource_id: Le32::from(res),
            padding: Le32::from(0),
        };
        let pr = |x, y, width, height| PixelRect {
            x,
            y,
            width,
            height,
        };
        assert_eq!(
            r.flush(&f(1, rect(0, 0, 32, 32))).unwrap(),
            vec![(0, pr(0, 0, 32, 32)), (1, pr(0, 0, 16, 16))]
        );
        // Scanout 1 shows (8,8)-(24,24): a flush of (20,4)-(30,12) reaches
        // it as (12,0)-(16,4) in its own coordinates.
        assert_eq!(
            r.flush(&f(1, rect(20, 4, 10, 8))).unwrap(),
            vec![(0, pr(20, 4, 10, 8)), (1, pr(12, 0, 4, 4))]
        );
        // Outside what scanout 1 shows: only scanout 0.
        assert_eq!(
            r.flush(&f(1, rect(0, 0, 8, 32))).unwrap(),
            vec![(0, pr(0, 0, 8, 32))]
        );
        assert_eq!(
            code(r.flush(&f(1, rect(0, 0, 33, 1)))),
            RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            code(r.flush(&f(2, rect(0, 0, 1, 1)))),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        // Resource 0 disables a scanout.
        r.set_scanout(&s(1, 0, rect(0, 0, 0, 0))).unwrap();
        assert_eq!(
            r.flush(&f(1, rect(0, 0, 32, 32))).unwrap(),
            vec![(0, pr(0, 0, 32, 32))]
        );
    }

    #[test]
    fn backing_reads_find_their_range_and_stop_at_the_end() {
        let m = mem();
        let data: Vec<u8> = (0..=255u8).collect();
        m.write_slice(&data, GuestAddress(0x1000)).unwrap();
        // Three ranges of 100, 56 and 100 bytes, out of order in memory.
        let b = Backing::new(vec![
            (GuestAddress(0x1000), 100),
            (GuestAddress(0x1000 + 200), 56),
            (GuestAddress(0x1000 + 100), 100),
        ]);
        let mut out = [0u8; 10];
        assert!(b.read(&m, 95, &mut out));
        assert_eq!(&out[..5], &data[95..100]);
        assert_eq!(&out[5..], &data[200..205], "crosses into the second range");
        assert!(b.read(&m, 150, &mut out));
        assert_eq!(&out[..6], &data[250..256]);
        assert_eq!(&out[6..], &data[100..104], "crosses into the third range");
        assert!(b.read(&m, 246, &mut out), "ends exactly at the last byte");
        assert!(!b.read(&m, 247, &mut out), "one byte past the end");
        assert!(!b.read(&m, u64::MAX, &mut out));
        assert!(Backing::default().read(&m, 0, &mut []));
        assert!(!Backing::default().read(&m, 0, &mut out));
    }

    #[test]
    fn pixel_memory_is_a_sealed_page_aligned_memfd() {
        for len in [1, 4096, 8 << 20] {
            let p = Pixels::new(len).unwrap();
            assert_eq!(p.as_slice().as_ptr() as usize % 4096, 0);
            assert_eq!(p.as_slice().len(), len);
            assert!(p.as_slice().iter().all(|b| *b == 0));
            let seals = fcntl(p.fd(), FcntlArg::F_GET_SEALS).unwrap();
            let want = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
            assert_eq!(SealFlag::from_bits_truncate(seals) & want, want);
            let size = nix::sys::stat::fstat(p.fd()).unwrap().st_size;
            assert_eq!(size as usize, len);
        }
        assert!(Pixels::new(usize::MAX).is_err());
    }

    #[test]
    fn sharing_happens_once_and_unref_reports_it() {
        let mut r = res(1, 64 * MIB);
        r.create_2d(&create(4, 1, 16, 8)).unwrap();
        let shared = r.share(4).unwrap().unwrap();
        assert_eq!((shared.width, shared.height, shared.stride), (16, 8, 64));
        assert_eq!(r.share(4).unwrap(), None, "shared once");
        assert!(r.memfd(4).is_some());
        assert!(r.unref(4).unwrap(), "unref says it was shared");
        r.create_2d(&create(5, 1, 16, 8)).unwrap();
        assert!(!r.unref(5).unwrap());
        assert_eq!(code(r.share(5)), RESP_ERR_INVALID_RESOURCE_ID);
    }

    #[test]
    fn cursor_image_is_the_top_left_64x64() {
        let m = mem();
        let mut r = res(1, 64 * MIB);
        r.create_2d(&create(6, 1, 80, 2)).unwrap();
        let pattern: Vec<u8> = (0..80 * 2 * 4).map(|i| (i % 253) as u8).collect();
        m.write_slice(&pattern, GuestAddress(0x1000)).unwrap();
        r.attach_backing(&m, 6, &[entry(0x1000, pattern.len() as u32)])
            .unwrap();
        let t = TransferToHost2d {
            r: rect(0, 0, 80, 2),
            resource_id: Le32::from(6),
            ..TransferToHost2d::default()
        };
        r.transfer_to_host_2d(&m, &t).unwrap();
        let (format, image) = r.cursor_image(6).unwrap();
        assert_eq!(format, 1);
        assert_eq!(image.len(), CURSOR_BYTES);
        assert_eq!(&image[..256], &pattern[..256], "row 0, first 64 pixels");
        assert_eq!(&image[256..512], &pattern[320..576], "row 1");
        assert!(image[512..].iter().all(|b| *b == 0), "transparent below");
    }

    #[test]
    fn cursor_checks() {
        let mut r = res(1, 64 * MIB);
        let c = |scanout: u32, res: u32| UpdateCursor {
            scanout_id: Le32::from(scanout),
            resource_id: Le32::from(res),
            ..UpdateCursor::default()
        };
        assert_eq!(
            code(r.update_cursor(&c(1, 0), false)),
            RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            code(r.update_cursor(&c(1, 0), true)),
            RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            code(r.update_cursor(&c(0, 3), false)),
            RESP_ERR_INVALID_RESOURCE_ID
        );
        r.create_2d(&create(3, 1, 64, 64)).unwrap();
        r.update_cursor(&c(0, 3), false).unwrap();
        r.update_cursor(&c(0, 0), false).unwrap();
        r.update_cursor(&c(0, 99), true).unwrap();
    }
}
