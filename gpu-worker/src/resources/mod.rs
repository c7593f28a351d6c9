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
use std::os::fd::BorrowedFd;

use ipc::{ScanoutSize, SharedSurface};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use wire::*;

mod budget;
mod pixels;
mod scanouts;

pub use budget::MemoryBudget;
pub use pixels::read_ranges;
use pixels::{Backing, Pixels};
pub use scanouts::{ScanoutState, Scanouts};

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

#[derive(Debug)]
pub struct Resources {
    resources: HashMap<u32, Resource2d>,
    /// `--max-resource-memory`, for 2D resources and host blobs together.
    budget: MemoryBudget,
    scanouts: Scanouts,
}

impl Resource2d {
    /// Refuses `r` (the rectangle of a `what` on resource `id`) unless it
    /// lies inside the resource.
    fn check_rect(&self, id: u32, r: &Rect, what: &str) -> Result<(), Refusal> {
        if rect_within(r, self.width, self.height) {
            return Ok(());
        }
        refuse(
            RESP_ERR_INVALID_PARAMETER,
            format!(
                "{what} rectangle {r:?} is outside resource {id} ({}x{})",
                self.width, self.height
            ),
        )
    }
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
            budget: MemoryBudget::new(max_bytes),
            scanouts: Scanouts::new(scanouts.len()),
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.budget.used()
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
        self.scanouts = Scanouts::new(self.scanouts.shown.len());
        self.budget.clear();
        shared
    }

    /// Whether a 2D resource `id` exists.
    pub fn exists(&self, id: u32) -> bool {
        self.resources.contains_key(&id)
    }

    /// Counts `bytes` of host memory held elsewhere (a host blob in
    /// render-worker) against `--max-resource-memory`.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), Refusal> {
        self.budget.reserve(bytes)
    }

    pub fn release(&mut self, bytes: u64) {
        self.budget.release(bytes);
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
        self.budget.check(size)?;
        let Ok(len) = usize::try_from(size) else {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                "resource larger than the address space",
            );
        };
        let data = match Pixels::new(len) {
            Ok(d) => d,
            Err(e) => return refuse(RESP_ERR_OUT_OF_MEMORY, e.to_string()),
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
        self.budget.reserve(size)
    }

    /// Releases a resource; true if its memory had been shared with the
    /// broker (which must then be told).
    pub fn unref(&mut self, id: u32) -> Result<bool, Refusal> {
        let Some(res) = self.resources.remove(&id) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}"));
        };
        self.budget.release(res.data.len as u64);
        // A scanout or cursor showing it shows nothing now.
        self.scanouts.forget(id);
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
        res.check_rect(id, &t.r, "transfer")?;
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

    /// The pixels of resource `id`, for tests and (soon) the display path.
    pub fn pixels(&self, id: u32) -> Option<&[u8]> {
        self.resources.get(&id).map(|r| r.data.as_slice())
    }
}

#[cfg(test)]
mod tests;
