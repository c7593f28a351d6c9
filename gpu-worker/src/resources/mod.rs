//! The device's resources, one table of them: every resource id the guest
//! made, 2D or blob, with its UUID, what it shows and what it counts
//! against `--max-resource-memory`, in one entry, so that RESOURCE_UNREF
//! is one removal and a device reset one clear.
//!
//! 2D pixels live here, in gpu-worker, because guest memory does: a
//! transfer is one copy from the guest's backing pages into the resource,
//! with no process hop. A blob's memory is render-worker's (rutabaga); its
//! entry here keeps what routing and scanout need of it (its size, its
//! guest pages, the host copy SET_SCANOUT_BLOB shows). Every size is
//! computed with checked arithmetic, every rectangle is checked against its
//! resource, every backing entry against guest memory; each refusal carries
//! the spec's error code.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;

use ipc::{ScanoutSize, SharedSurface};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use wire::*;

mod budget;
mod pixels;
mod scanouts;
mod surface;
mod three_d;

pub use budget::MemoryBudget;
pub use pixels::read_ranges;
use pixels::Backing;
pub(crate) use pixels::Pixels;
pub use scanouts::{ScanoutState, Scanouts};
use surface::Surface;
pub use three_d::ThreeD;
use three_d::PIPE_BUFFER;

/// What gpu-worker keeps of a blob render-worker holds.
#[derive(Debug, Clone)]
pub struct Blob {
    pub size: u64,
    /// The guest memory behind a guest-memory blob (for SET_SCANOUT_BLOB,
    /// a cursor); None for a host blob.
    pub guest: Option<Vec<(GuestAddress, u32)>>,
}

/// One resource id's entry.
#[derive(Debug)]
struct Resource {
    kind: Kind,
    /// RESOURCE_ASSIGN_UUID's answer, for the resource's life.
    uuid: Option<[u8; 16]>,
    /// Host memory it counts against `--max-resource-memory`, besides a
    /// blob's shadow (counted by the shadow's own size): a 2D resource's
    /// pixels, a host blob's memory in render-worker.
    charge: u64,
}

#[derive(Debug)]
enum Kind {
    TwoD(Surface),
    /// A resource of virgl's kind (RESOURCE_CREATE_3D): rutabaga holds it,
    /// in render-worker; this entry keeps what checks need, and the host
    /// copy that shows it once SET_SCANOUT named it (render-worker reads
    /// the resource back into it at each flush).
    ThreeD {
        shape: ThreeD,
        shadow: Option<Surface>,
    },
    /// A blob, with the host copy that shows it once SET_SCANOUT_BLOB
    /// named it.
    Blob {
        blob: Blob,
        shadow: Option<Surface>,
    },
}

/// What RESOURCE_UNREF took away, for those who must hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreffed {
    /// The broker had been given its pixels (or its shadow's).
    pub shared: bool,
    /// render-worker holds it (a blob's memory, a 3D resource).
    pub rendered: bool,
}

#[derive(Debug)]
pub struct Resources {
    table: HashMap<u32, Resource>,
    /// `--max-resource-memory`, for 2D resources and host blobs together.
    budget: MemoryBudget,
    scanouts: Scanouts,
}

impl Resource {
    /// Whether render-worker holds it (a blob's memory, a 3D resource).
    fn is_rendered(&self) -> bool {
        matches!(self.kind, Kind::Blob { .. } | Kind::ThreeD { .. })
    }

    fn surface(&self) -> Option<&Surface> {
        match &self.kind {
            Kind::TwoD(s) => Some(s),
            Kind::Blob { shadow, .. } | Kind::ThreeD { shadow, .. } => shadow.as_ref(),
        }
    }

    fn surface_mut(&mut self) -> Option<&mut Surface> {
        match &mut self.kind {
            Kind::TwoD(s) => Some(s),
            Kind::Blob { shadow, .. } | Kind::ThreeD { shadow, .. } => shadow.as_mut(),
        }
    }
}

/// Why resource `id` (`res`) has no pixels to show.
fn no_surface(res: Option<&Resource>, id: u32) -> String {
    match res.map(|r| &r.kind) {
        Some(Kind::Blob { .. }) => format!("blob {id} is not shown (SET_SCANOUT_BLOB first)"),
        Some(Kind::ThreeD { .. }) => format!("3D resource {id} is not shown (SET_SCANOUT first)"),
        _ => format!("no resource {id}"),
    }
}

/// The guest ranges of backing `entries`, each checked to lie inside guest
/// memory with `access`.
pub fn backing_ranges(
    mem: &GuestMemoryMmap,
    entries: &[MemEntry],
    access: Permissions,
) -> Result<Vec<(GuestAddress, u32)>, Refusal> {
    let mut backing = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let (addr, len) = (GuestAddress(e.addr.to_native()), e.length.to_native());
        if len == 0 || !mem.check_range(addr, len as usize, access) {
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
    Ok(backing)
}

impl Resources {
    pub fn new(scanouts: &[ScanoutSize], max_bytes: u64) -> Self {
        Resources {
            table: HashMap::new(),
            budget: MemoryBudget::new(max_bytes),
            scanouts: Scanouts::new(scanouts.len()),
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.budget.used()
    }

    /// How many resource ids are in use.
    pub fn count(&self) -> usize {
        self.table.len()
    }

    /// Whether resource id `id` is in use, by a resource of any kind.
    pub fn exists(&self, id: u32) -> bool {
        self.table.contains_key(&id)
    }

    /// Whether `id` is a blob (render-worker holds its memory).
    pub fn is_blob(&self, id: u32) -> bool {
        matches!(
            self.table.get(&id),
            Some(Resource {
                kind: Kind::Blob { .. },
                ..
            })
        )
    }

    /// Whether render-worker holds resource `id` (a blob, a 3D resource):
    /// a context reaches only those.
    pub fn is_rendered(&self, id: u32) -> bool {
        self.table.get(&id).is_some_and(Resource::is_rendered)
    }

    /// 3D resource `id`, if it is one.
    pub fn three_d(&self, id: u32) -> Option<ThreeD> {
        match self.table.get(&id) {
            Some(Resource {
                kind: Kind::ThreeD { shape, .. },
                ..
            }) => Some(*shape),
            _ => None,
        }
    }

    /// Marks 3D resource `id` as backed or not.
    pub fn set_backed(&mut self, id: u32, backed: bool) {
        if let Some(Resource {
            kind: Kind::ThreeD { shape, .. },
            ..
        }) = self.table.get_mut(&id)
        {
            shape.backed = backed;
        }
    }

    /// Takes resource id `id` for a 3D resource render-worker has created,
    /// which counts `charge` bytes (reserved already).
    pub fn add_3d(&mut self, id: u32, shape: ThreeD, charge: u64) {
        self.table.insert(
            id,
            Resource {
                kind: Kind::ThreeD {
                    shape,
                    shadow: None,
                },
                uuid: None,
                charge,
            },
        );
    }

    /// Refuses `id` for a new resource: 0, or in use.
    pub fn check_new_id(&self, id: u32) -> Result<(), Refusal> {
        if id == 0 || self.table.contains_key(&id) {
            return refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("resource id {id} is 0 or already in use"),
            );
        }
        Ok(())
    }

    /// Blob `id`, if it is one.
    pub fn blob(&self, id: u32) -> Option<&Blob> {
        match self.table.get(&id) {
            Some(Resource {
                kind: Kind::Blob { blob, .. },
                ..
            }) => Some(blob),
            _ => None,
        }
    }

    /// Whether blob `id` has a copy shown with SET_SCANOUT_BLOB.
    pub fn blob_is_shown(&self, id: u32) -> bool {
        matches!(
            self.table.get(&id),
            Some(Resource {
                kind: Kind::Blob {
                    shadow: Some(_),
                    ..
                },
                ..
            })
        )
    }

    /// Takes resource id `id` for a blob render-worker has created, which
    /// counts `charge` bytes (reserved already with [`Resources::reserve`]).
    pub fn add_blob(&mut self, id: u32, blob: Blob, charge: u64) {
        self.table.insert(
            id,
            Resource {
                kind: Kind::Blob { blob, shadow: None },
                uuid: None,
                charge,
            },
        );
    }

    /// Resource `id`'s UUID (RESOURCE_ASSIGN_UUID): the one it was given
    /// before, or a new one from `fresh`.
    pub fn assign_uuid(
        &mut self,
        id: u32,
        fresh: impl FnOnce() -> Result<[u8; 16], Refusal>,
    ) -> Result<[u8; 16], Refusal> {
        let Some(res) = self.table.get_mut(&id) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}"));
        };
        if let Some(uuid) = res.uuid {
            return Ok(uuid);
        }
        let uuid = fresh()?;
        res.uuid = Some(uuid);
        Ok(uuid)
    }

    /// Makes (or keeps, if its layout is unchanged) the host copy of a
    /// guest-memory blob that SET_SCANOUT_BLOB shows: `width`×`height` in
    /// `format`, rows `stride` apart from `offset` in the blob's guest
    /// pages. Returns whether a previous copy, now gone, had been shared
    /// (the broker must let go of it), even when the new one cannot be made.
    pub fn blob_shadow(
        &mut self,
        id: u32,
        width: u32,
        height: u32,
        format: u32,
        offset: u64,
        stride: u32,
    ) -> (bool, Result<(), Refusal>) {
        let Some(Resource {
            kind: Kind::Blob { blob, shadow },
            ..
        }) = self.table.get_mut(&id)
        else {
            return (
                false,
                refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no blob {id}")),
            );
        };
        if let Some(s) = shadow {
            if (s.width, s.height, s.format, s.blob_layout)
                == (width, height, format, Some((offset, stride)))
            {
                return (false, Ok(()));
            }
        }
        let Some(ranges) = blob.guest.clone() else {
            return (
                false,
                refuse(RESP_ERR_UNSPEC, format!("blob {id} is a host blob")),
            );
        };
        let old = shadow.take();
        let was_shared = old.as_ref().is_some_and(|s| s.shared);
        if let Some(old) = old {
            self.budget.release(old.data.len as u64);
        }
        // The old copy showed nothing the new one shows.
        self.scanouts.forget(id);
        let mut surface = match Surface::new(&mut self.budget, id, format, width, height) {
            Ok(s) => s,
            Err(r) => return (was_shared, Err(r)),
        };
        surface.backing = Backing::new(ranges);
        surface.blob_layout = Some((offset, stride));
        if let Some(Resource {
            kind: Kind::Blob { shadow, .. },
            ..
        }) = self.table.get_mut(&id)
        {
            *shadow = Some(surface);
        }
        (was_shared, Ok(()))
    }

    /// Copies `rect` of a blob's shadow from the blob's guest memory; no-op
    /// for a blob that has no shadow (never shown).
    pub fn refresh_blob_shadow(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        rect: &Rect,
    ) -> Result<(), Refusal> {
        let Some((offset, stride)) = self.surface(id).ok().and_then(|r| r.blob_layout) else {
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
        self.transfer(mem, id, rect, first)
    }

    /// Drops every resource (a device reset); returns the ids whose pixels
    /// the broker had been given.
    pub fn reset(&mut self) -> Vec<u32> {
        let shared = self
            .table
            .iter()
            .filter(|(_, r)| r.surface().is_some_and(|s| s.shared))
            .map(|(id, _)| *id)
            .collect();
        self.table.clear();
        self.scanouts = Scanouts::new(self.scanouts.shown.len());
        self.budget.clear();
        shared
    }

    /// Counts `bytes` of host memory held elsewhere (a host blob in
    /// render-worker) against `--max-resource-memory`.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), Refusal> {
        self.budget.reserve(bytes)
    }

    pub fn release(&mut self, bytes: u64) {
        self.budget.release(bytes);
    }

    /// The pixels of resource `id`: a 2D resource, or a shown blob's copy.
    fn surface(&self, id: u32) -> Result<&Surface, Refusal> {
        match self.table.get(&id).and_then(Resource::surface) {
            Some(r) => Ok(r),
            None => refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                no_surface(self.table.get(&id), id),
            ),
        }
    }

    fn surface_mut(&mut self, id: u32) -> Result<&mut Surface, Refusal> {
        let why = no_surface(self.table.get(&id), id);
        match self.table.get_mut(&id).and_then(Resource::surface_mut) {
            Some(r) => Ok(r),
            None => refuse(RESP_ERR_INVALID_RESOURCE_ID, why),
        }
    }

    /// The 2D resource `id` (not a blob's copy).
    fn two_d_mut(&mut self, id: u32) -> Result<&mut Surface, Refusal> {
        match self.table.get_mut(&id) {
            Some(Resource {
                kind: Kind::TwoD(s),
                ..
            }) => Ok(s),
            Some(Resource {
                kind: Kind::ThreeD { .. },
                ..
            }) => refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("resource {id} is a 3D resource, not a 2D resource"),
            ),
            Some(_) => refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("resource {id} is a blob, not a 2D resource"),
            ),
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
        self.check_new_id(id)?;
        let surface = Surface::new(&mut self.budget, id, format, width, height)?;
        self.table.insert(
            id,
            Resource {
                charge: surface.data.len as u64,
                kind: Kind::TwoD(surface),
                uuid: None,
            },
        );
        Ok(())
    }

    /// Releases resource `id`, of whatever kind, with all it holds here:
    /// its memory's charge, its UUID, what it showed.
    pub fn unref(&mut self, id: u32) -> Result<Unreffed, Refusal> {
        let Some(res) = self.table.remove(&id) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}"));
        };
        let shown = res.surface().map_or(0, |s| s.data.len as u64);
        let shadow = if res.is_rendered() { shown } else { 0 };
        self.budget.release(res.charge + shadow);
        // A scanout or cursor showing it shows nothing now.
        self.scanouts.forget(id);
        Ok(Unreffed {
            shared: res.surface().is_some_and(|s| s.shared),
            rendered: res.is_rendered(),
        })
    }

    pub fn attach_backing(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        entries: &[MemEntry],
    ) -> Result<(), Refusal> {
        let backing = backing_ranges(mem, entries, Permissions::Read)?;
        let res = self.two_d_mut(id)?;
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
        let res = self.two_d_mut(id)?;
        if res.backing.is_empty() {
            return refuse(RESP_ERR_UNSPEC, format!("resource {id} has no backing"));
        }
        res.backing = Backing::default();
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D on a 2D resource.
    pub fn transfer_to_host_2d(
        &mut self,
        mem: &GuestMemoryMmap,
        t: &TransferToHost2d,
    ) -> Result<(), Refusal> {
        let id = t.resource_id.to_native();
        if self.three_d(id).is_some() {
            // Its shadow is render-worker's to fill, never the guest's.
            return refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("resource {id} is a 3D resource, not a 2D resource"),
            );
        }
        self.transfer(mem, id, &t.r, t.offset.to_native())
    }

    /// Makes (or keeps) the host copy of 3D resource `id` that shows it on
    /// a scanout: a surface of its size and format, counted against
    /// `--max-resource-memory`. Returns the new copy's memfd, stride and
    /// size when one was made (render-worker is to be given it), None when
    /// the copy existed.
    pub fn three_d_shadow(&mut self, id: u32) -> Result<Option<(BorrowedFd<'_>, u32)>, Refusal> {
        let Some(Resource {
            kind: Kind::ThreeD { shape, shadow },
            ..
        }) = self.table.get_mut(&id)
        else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no 3D resource {id}"));
        };
        if shadow.is_some() {
            return Ok(None);
        }
        let shape = *shape;
        if shape.target == PIPE_BUFFER || shape.depth != 1 || shape.array_size != 1 {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("3D resource {id} ({shape:?}) is not a 2D image to show"),
            );
        }
        let surface = Surface::new(
            &mut self.budget,
            id,
            shape.format,
            shape.width,
            shape.height,
        )?;
        let Some(Resource {
            kind: Kind::ThreeD { shadow, .. },
            ..
        }) = self.table.get_mut(&id)
        else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no 3D resource {id}"));
        };
        let made = shadow.insert(surface);
        Ok(Some((made.data.fd(), made.stride)))
    }

    /// Copies `rect` of resource `id` (a 2D resource, or a shown blob's
    /// copy) from its backing, the guest's rows starting `offset` bytes in.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        rect: &Rect,
        offset: u64,
    ) -> Result<(), Refusal> {
        let res = self.surface_mut(id)?;
        if res.backing.is_empty() {
            return refuse(RESP_ERR_UNSPEC, format!("resource {id} has no backing"));
        }
        res.check_rect(id, rect, "transfer")?;
        let (x, y, w, h) = (
            rect.x.to_native(),
            rect.y.to_native(),
            rect.width.to_native(),
            rect.height.to_native(),
        );
        // Inside the resource (checked above), so none of these overflow.
        let row_bytes = (w * BYTES_PER_PIXEL) as usize;
        let stride = res.stride as usize;
        let guest_stride = res.blob_layout.map_or(res.stride, |(_, s)| s);
        for row in 0..h as usize {
            // The guest's layout: rows `guest_stride` apart from `offset`.
            let src = (row as u64)
                .checked_mul(u64::from(guest_stride))
                .and_then(|o| o.checked_add(offset));
            let dst = (y as usize + row) * stride + x as usize * BYTES_PER_PIXEL as usize;
            let ok = src.is_some_and(|src| {
                res.backing
                    .read(mem, src, &mut res.data.as_mut_slice()[dst..dst + row_bytes])
            });
            if !ok {
                return refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!(
                        "transfer row {row} reads past resource {id}'s backing (offset {offset})"
                    ),
                );
            }
        }
        Ok(())
    }

    /// The broker's view of resource `id`, the first time it is asked for
    /// (and then never again until the resource is recreated).
    pub fn share(&mut self, id: u32) -> Result<Option<SharedSurface>, Refusal> {
        let res = self.surface_mut(id)?;
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
        self.surface(id).ok().map(|r| r.data.fd())
    }

    /// Whether resource `id` has pixels here (a 2D resource, a shown blob
    /// or 3D resource).
    pub fn has_surface(&self, id: u32) -> bool {
        self.surface(id).is_ok()
    }

    /// The pixels of resource `id`, for tests and (soon) the display path.
    pub fn pixels(&self, id: u32) -> Option<&[u8]> {
        self.surface(id).ok().map(|r| r.data.as_slice())
    }
}

#[cfg(test)]
mod tests;
