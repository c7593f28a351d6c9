//! Contexts, capsets and blob resources: decoded and checked here, served
//! by rutabaga in render-worker.
//!
//! Resource ids are one namespace across 2D resources (kept here) and
//! blobs (kept by render-worker); gpu-worker remembers which ids are blobs
//! so every command reaches the process that holds the resource.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use std::cell::Cell;

use ipc::{
    Fence, MemoryRegion, RenderCall, RenderReply, RenderRequest, RenderValue, Reply,
    MAX_MEMORY_REGIONS,
};
use log::warn;
use vm_memory::{
    GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, Permissions,
};

use super::{ContextFence, GpuDevice, Handled};
use crate::resources::read_ranges;
use wire::command::MAX_BLOB_ENTRIES;
use wire::*;

/// What gpu-worker knows of a blob render-worker holds.
#[derive(Debug, Clone)]
pub struct Blob {
    size: u64,
    /// The guest memory behind a guest-memory blob (for SET_SCANOUT_BLOB);
    /// None for a host blob.
    guest: Option<Vec<(GuestAddress, u32)>>,
    /// Host memory it takes, counted in `--max-resource-memory`.
    host_bytes: u64,
}

impl Blob {
    fn host_bytes(&self) -> u64 {
        self.host_bytes
    }
}

/// The blob registry, resource UUIDs and live contexts of one connection.
#[derive(Debug)]
pub struct Blobs {
    blobs: Mutex<HashMap<u32, Blob>>,
    uuids: Mutex<HashMap<u32, [u8; 16]>>,
    contexts: Mutex<HashSet<u32>>,
    /// `--max-contexts`.
    max_contexts: AtomicU32,
}

impl Default for Blobs {
    fn default() -> Self {
        Blobs {
            blobs: Mutex::default(),
            uuids: Mutex::default(),
            contexts: Mutex::default(),
            max_contexts: AtomicU32::new(DEFAULT_MAX_CONTEXTS),
        }
    }
}

/// `--max-contexts`'s default.
pub const DEFAULT_MAX_CONTEXTS: u32 = 256;

impl Blobs {
    /// Forgets every blob and context (the device was reset).
    pub fn clear(&self) {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.uuids.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn set_max_contexts(&self, n: u32) {
        self.max_contexts.store(n, Ordering::Relaxed);
    }

    pub fn contains(&self, id: u32) -> bool {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }
}

/// The error codes render-worker may give the guest; anything else (it is
/// less trusted than this process's own checks) becomes ERR_UNSPEC.
fn sanitize(code: u32) -> u32 {
    match code {
        RESP_ERR_OUT_OF_MEMORY
        | RESP_ERR_INVALID_RESOURCE_ID
        | RESP_ERR_INVALID_CONTEXT_ID
        | RESP_ERR_INVALID_PARAMETER => code,
        _ => RESP_ERR_UNSPEC,
    }
}

impl GpuDevice {
    /// One call to render-worker, carrying the guest's fence on the
    /// command if `fence` still holds it; render-worker's refusal becomes
    /// the guest's.
    fn call(
        &self,
        request: RenderRequest,
        fence: &FenceSlot,
    ) -> Result<Option<RenderValue>, Refusal> {
        let carried = fence.take();
        let call = RenderCall {
            request,
            fence: carried,
        };
        let Some(RenderReply {
            reply,
            fence_signalled,
        }) = self.render.request(&call, &[])
        else {
            return refuse(RESP_ERR_UNSPEC, "render-worker is not reachable");
        };
        let value = match reply {
            Reply::Refused(r) => return refuse(sanitize(r.code), r.why),
            Reply::Done => None,
            Reply::Value(v) => Some(v),
        };
        match (carried, fence_signalled) {
            (None, None) => {}
            (Some(_), Some(signalled)) => fence.signalled.set(Some(signalled)),
            (carried, got) => {
                self.render.fail(&format!(
                    "answered fence state {got:?} to a call with fence {carried:?}"
                ));
                return refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn");
            }
        }
        Ok(value)
    }

    /// A call whose only answer is done.
    pub(super) fn call_done(
        &self,
        request: RenderRequest,
        fence: &FenceSlot,
    ) -> Result<(), Refusal> {
        let what = format!("{request:?}");
        match self.call(request, fence)? {
            None => Ok(()),
            Some(other) => {
                self.render.fail(&format!("answered {other:?} to {what}"));
                refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn")
            }
        }
    }

    /// A call with no fence whose only answer is done.
    pub(super) fn render_done(&self, request: RenderRequest) -> Result<(), Refusal> {
        self.call_done(request, &FenceSlot::default())
    }

    /// Gives render-worker the guest memory map (guest-memory blobs and
    /// cross-domain rings live in it).
    pub fn share_memory(&self, mem: &GuestMemoryMmap) {
        let mut regions = Vec::new();
        let mut fds = Vec::new();
        for region in GuestMemoryBackend::iter(mem) {
            let Some(file) = region.file_offset() else {
                warn!("gpu-worker: a guest memory region has no descriptor; render-worker cannot map it");
                return;
            };
            regions.push(MemoryRegion {
                guest_addr: region.start_addr().0,
                size: region.len(),
                file_offset: file.start(),
            });
            fds.push(file.file().as_fd());
        }
        if regions.is_empty() || regions.len() > MAX_MEMORY_REGIONS {
            return;
        }
        // A notice, not a request: see `Link::notify`.
        if !self.render.notify(
            &RenderCall {
                request: RenderRequest::Memory(regions),
                fence: None,
            },
            &fds,
        ) {
            warn!("gpu-worker: render-worker is not reachable to take guest memory");
        }
    }

    /// A context, capset or blob command: served by render-worker's
    /// rutabaga, then the context fence it carries, if any.
    pub(super) fn context_command(
        &self,
        mem: &GuestMemoryMmap,
        hdr: &CtrlHdr,
        command: GpuCommand,
    ) -> Handled {
        let Some(fence) = context_fence(hdr)? else {
            let response =
                self.blob_command(mem, hdr.ctx_id.to_native(), command, &FenceSlot::default())?;
            return Ok((response, None));
        };
        let slot = FenceSlot {
            fence: Some(fence),
            signalled: Cell::new(None),
        };
        let response = self.blob_command(mem, hdr.ctx_id.to_native(), command, &slot)?;
        // A command served here, not by render-worker: the fence alone.
        if slot.signalled.get().is_none() {
            self.call_done(RenderRequest::FenceAlone, &slot)?;
        }
        let signalled = slot.signalled.get().unwrap_or(true);
        Ok((
            response,
            Some(ContextFence {
                ctx_id: fence.ctx_id,
                ring: fence.ring,
                fence_id: fence.fence_id,
                signalled,
            }),
        ))
    }

    fn blob_command(
        &self,
        mem: &GuestMemoryMmap,
        ctx_id: u32,
        command: GpuCommand,
        fence: &FenceSlot,
    ) -> Result<GpuResponse, Refusal> {
        let needs_ctx = |ctx_id: u32| {
            if ctx_id == 0 {
                refuse(RESP_ERR_INVALID_CONTEXT_ID, "context id 0")
            } else {
                Ok(ctx_id)
            }
        };
        match command {
            GpuCommand::GetCapsetInfo { index } => {
                match self.call(RenderRequest::GetCapsetInfo { index }, fence)? {
                    Some(RenderValue::CapsetInfo {
                        id,
                        max_version,
                        max_size,
                    }) => Ok(GpuResponse::CapsetInfo {
                        id,
                        max_version,
                        max_size,
                    }),
                    _ => refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn"),
                }
            }
            GpuCommand::GetCapset { id, version } => {
                match self.call(RenderRequest::GetCapset { id, version }, fence)? {
                    Some(RenderValue::Capset(bytes)) => Ok(GpuResponse::Capset(bytes)),
                    _ => refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn"),
                }
            }
            GpuCommand::CtxCreate { context_init, name } => {
                let ctx_id = needs_ctx(ctx_id)?;
                // Held across the request, so two queues cannot both take
                // the last context.
                let mut live = self
                    .blobs
                    .contexts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let max = self.blobs.max_contexts.load(Ordering::Relaxed);
                if !live.contains(&ctx_id) && live.len() >= max as usize {
                    return refuse(
                        RESP_ERR_OUT_OF_MEMORY,
                        format!("context {ctx_id}: {max} contexts exist (--max-contexts)"),
                    );
                }
                self.call_done(
                    RenderRequest::CtxCreate {
                        ctx_id,
                        context_init,
                        name,
                    },
                    fence,
                )?;
                live.insert(ctx_id);
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::CtxDestroy => {
                let ctx_id = needs_ctx(ctx_id)?;
                self.call_done(RenderRequest::CtxDestroy { ctx_id }, fence)?;
                self.blobs
                    .contexts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ctx_id);
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::CtxAttachResource { resource_id }
            | GpuCommand::CtxDetachResource { resource_id } => {
                let ctx_id = needs_ctx(ctx_id)?;
                if !self.blobs.contains(resource_id) {
                    // Linux attaches every buffer a client opens to its
                    // context, dumb 2D buffers too. 2D resources live here
                    // and no context reads them: nothing to attach.
                    if self.resources().exists(resource_id) {
                        return Ok(GpuResponse::OkNoData);
                    }
                    return refuse(
                        RESP_ERR_INVALID_RESOURCE_ID,
                        format!("no resource {resource_id}"),
                    );
                }
                let request = if matches!(command, GpuCommand::CtxAttachResource { .. }) {
                    RenderRequest::CtxAttach {
                        ctx_id,
                        resource_id,
                    }
                } else {
                    RenderRequest::CtxDetach {
                        ctx_id,
                        resource_id,
                    }
                };
                self.call_done(request, fence)?;
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::Submit3d { commands } => {
                let ctx_id = needs_ctx(ctx_id)?;
                self.call_done(RenderRequest::Submit { ctx_id, commands }, fence)?;
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::CreateBlob { blob, entries } => {
                self.create_blob(mem, ctx_id, &blob, &entries, fence)
            }
            GpuCommand::MapBlob {
                resource_id,
                offset,
            } => {
                if !self.blobs.contains(resource_id) {
                    return refuse(
                        RESP_ERR_INVALID_RESOURCE_ID,
                        format!("resource {resource_id} is not a blob"),
                    );
                }
                match self.call(
                    RenderRequest::MapBlob {
                        resource_id,
                        offset,
                    },
                    fence,
                )? {
                    Some(RenderValue::Mapped { map_info }) => Ok(GpuResponse::MapInfo(map_info)),
                    _ => refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn"),
                }
            }
            GpuCommand::UnmapBlob { resource_id } => {
                if !self.blobs.contains(resource_id) {
                    return refuse(
                        RESP_ERR_INVALID_RESOURCE_ID,
                        format!("resource {resource_id} is not a blob"),
                    );
                }
                self.call_done(RenderRequest::UnmapBlob { resource_id }, fence)?;
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::AssignUuid { resource_id: id } => {
                if !self.blobs.contains(id) && !self.resources().exists(id) {
                    return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no resource {id}"));
                }
                let mut uuids = self.blobs.uuids.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(u) = uuids.get(&id) {
                    return Ok(GpuResponse::Uuid(*u));
                }
                let uuid = random_uuid()
                    .ok_or_else(|| Refusal::new(RESP_ERR_UNSPEC, "no randomness for a UUID"))?;
                uuids.insert(id, uuid);
                Ok(GpuResponse::Uuid(uuid))
            }
            other => refuse(
                RESP_ERR_UNSPEC,
                format!("{other:?} is not a context command"),
            ),
        }
    }

    fn create_blob(
        &self,
        mem: &GuestMemoryMmap,
        ctx_id: u32,
        b: &ResourceCreateBlob,
        decoded: &[MemEntry],
        fence: &FenceSlot,
    ) -> Result<GpuResponse, Refusal> {
        let (id, blob_mem, flags, n, size) = (
            b.resource_id.to_native(),
            b.blob_mem.to_native(),
            b.blob_flags.to_native(),
            decoded.len(),
            b.size.to_native(),
        );
        if id == 0 || self.blobs.contains(id) || self.resources().exists(id) {
            return refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("resource id {id} is 0 or already in use"),
            );
        }
        if size == 0 {
            return refuse(RESP_ERR_INVALID_PARAMETER, format!("blob {id} of 0 bytes"));
        }
        if flags & !BLOB_FLAGS_ALL != 0 {
            return refuse(RESP_ERR_INVALID_PARAMETER, format!("blob flags {flags:#x}"));
        }
        let guest_backed = match blob_mem {
            BLOB_MEM_GUEST | BLOB_MEM_HOST3D_GUEST => true,
            BLOB_MEM_HOST3D => false,
            _ => return refuse(RESP_ERR_INVALID_PARAMETER, format!("blob_mem {blob_mem}")),
        };
        if blob_mem != BLOB_MEM_GUEST && ctx_id == 0 {
            return refuse(
                RESP_ERR_INVALID_CONTEXT_ID,
                format!("host blob {id} needs a context"),
            );
        }
        let mut entries: Vec<(u64, u32)> = Vec::new();
        if guest_backed {
            if n == 0 {
                return refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!("{n} memory entries (1 to {MAX_BLOB_ENTRIES})"),
                );
            }
            let mut total = 0u64;
            for (i, e) in decoded.iter().enumerate() {
                let (addr, len) = (e.addr.to_native(), e.length.to_native());
                if len == 0
                    || !GuestMemory::check_range(
                        mem,
                        GuestAddress(addr),
                        len as usize,
                        Permissions::ReadWrite,
                    )
                {
                    return refuse(
                        RESP_ERR_INVALID_PARAMETER,
                        format!("entry {i} ({addr:#x}, {len} bytes) is not inside guest memory"),
                    );
                }
                total += u64::from(len);
                entries.push((addr, len));
            }
            if total < size {
                return refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!("blob {id} of {size} bytes backed by {total}"),
                );
            }
        } else if n != 0 {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("host blob {id} with {n} guest memory entries"),
            );
        }
        // A host blob takes host memory; so does any blob that names a
        // blob id on a context: rutabaga's cross-domain context allocates
        // the image its requirements describe (up to 4 GiB) whatever
        // blob_mem says.
        let blob_id = b.blob_id.to_native();
        let host_bytes = if guest_backed && (ctx_id == 0 || blob_id == 0) {
            0
        } else {
            size
        };
        self.resources().reserve(host_bytes)?;
        let created = self.call_done(
            RenderRequest::CreateBlob {
                ctx_id,
                resource_id: id,
                blob_mem,
                blob_flags: flags,
                blob_id,
                size,
                entries: entries.clone(),
            },
            fence,
        );
        if let Err(r) = created {
            self.resources().release(host_bytes);
            return Err(r);
        }
        let guest =
            guest_backed.then(|| entries.iter().map(|&(a, l)| (GuestAddress(a), l)).collect());
        self.blobs
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Blob {
                    size,
                    guest,
                    host_bytes,
                },
            );
        Ok(GpuResponse::OkNoData)
    }

    /// Releases a blob (RESOURCE_UNREF); false if `id` is not one.
    pub(super) fn unref_blob(&self, id: u32) -> Option<Result<(), Refusal>> {
        let blob = self
            .blobs
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)?;
        self.blobs
            .uuids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.resources().release(blob.host_bytes());
        // Its scanout copy, if it was shown, goes too (and from the display).
        if self.resources().exists(id) {
            if let Err(r) = self.unref(id) {
                warn!("gpu-worker: dropping blob {id}'s scanout copy: {}", r.why);
            }
        }
        Some(self.render_done(RenderRequest::Unref { resource_id: id }))
    }

    /// SET_SCANOUT_BLOB of a guest-memory blob: the device keeps a host
    /// copy in the blob's layout (refreshed from guest memory on each
    /// RESOURCE_FLUSH), shown like a 2D resource. Host blobs are not shown
    /// (their memory is render-worker's).
    pub(super) fn set_scanout_blob(&self, b: &SetScanoutBlob) -> Result<(), Refusal> {
        let (scanout_id, id) = (b.scanout_id.to_native(), b.resource_id.to_native());
        let plain = SetScanout {
            r: b.r,
            scanout_id: b.scanout_id,
            resource_id: b.resource_id,
        };
        if id == 0 {
            return self.set_scanout(&plain);
        }
        if scanout_id as usize >= self.scanouts.len() {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!(
                    "scanout {scanout_id}, but the device has {}",
                    self.scanouts.len()
                ),
            );
        }
        let Some(blob) = self
            .blobs
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
        else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no blob {id}"));
        };
        let Some(ranges) = blob.guest else {
            return refuse(
                RESP_ERR_UNSPEC,
                format!("blob {id} is a host blob: scanout of host blobs is not supported"),
            );
        };
        let (w, h, format) = (
            b.width.to_native(),
            b.height.to_native(),
            b.format.to_native(),
        );
        let (stride, offset) = (
            b.strides[0].to_native(),
            u64::from(b.offsets[0].to_native()),
        );
        if !is_2d_format(format) {
            return refuse(RESP_ERR_INVALID_PARAMETER, format!("format {format}"));
        }
        let size = ipc::ScanoutSize {
            width: w,
            height: h,
        };
        let row = u64::from(w) * u64::from(BYTES_PER_PIXEL);
        let end = u64::from(stride)
            .checked_mul(u64::from(h.saturating_sub(1)))
            .and_then(|e| e.checked_add(offset))
            .and_then(|e| e.checked_add(row));
        if !size.is_valid() || u64::from(stride) < row || end.is_none_or(|e| e > blob.size) {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!(
                    "{w}x{h}, stride {stride}, offset {offset} does not fit blob {id} of {} bytes",
                    blob.size
                ),
            );
        }
        let (was_shared, made) = self
            .resources()
            .blob_shadow(id, w, h, format, &ranges, offset, stride);
        // The old copy is gone either way: the broker lets go of it.
        if was_shared {
            self.display.command(
                &ipc::DisplayRequest::ReleaseSurface { resource_id: id },
                &[],
            );
        }
        made?;
        self.set_scanout(&plain)
    }

    /// TRANSFER_TO_HOST_2D on a blob. Linux sends it for every dumb buffer
    /// it flushes, and makes dumb buffers guest-memory blobs once
    /// RESOURCE_BLOB is offered without VIRGL. The device reads a
    /// guest-memory blob's pages where it needs them (a scanout copy is
    /// refreshed on RESOURCE_FLUSH), so there is nothing to copy; QEMU
    /// answers the same. A host blob has no guest pages to transfer from.
    pub(super) fn transfer_to_blob(&self, t: &TransferToHost2d) -> Result<(), Refusal> {
        let id = t.resource_id.to_native();
        let Some((size, guest)) = self.with_blob(id, |b| (b.size, b.guest.is_some())) else {
            return refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no blob {id}"));
        };
        if !guest {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("TRANSFER_TO_HOST_2D to host blob {id}, which has no guest pages"),
            );
        }
        let offset = t.offset.to_native();
        if offset >= size {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("transfer offset {offset} past blob {id} of {size} bytes"),
            );
        }
        Ok(())
    }

    /// UPDATE_CURSOR naming a guest-memory blob (Linux's cursor buffers are
    /// dumb buffers, so blobs once RESOURCE_BLOB is offered): the image is
    /// the blob's first 64×64 pixels, rows 256 bytes apart, in ARGB8888
    /// (the only cursor format Linux uses), read from guest memory now.
    pub(super) fn blob_cursor(
        &self,
        mem: &GuestMemoryMmap,
        c: &UpdateCursor,
    ) -> Result<(), Refusal> {
        let (scanout, id) = (c.scanout_id.to_native(), c.resource_id.to_native());
        if scanout as usize >= self.scanouts.len() {
            return refuse(
                RESP_ERR_INVALID_SCANOUT_ID,
                format!("cursor on scanout {scanout}"),
            );
        }
        let mut image = vec![0u8; CURSOR_BYTES];
        // Read in place: a blob may have many ranges, not worth a copy.
        let read = self.with_blob(id, |blob| match &blob.guest {
            None => refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("cursor from host blob {id}, which has no guest pages"),
            ),
            Some(ranges)
                if blob.size < image.len() as u64 || !read_ranges(mem, ranges, 0, &mut image) =>
            {
                refuse(
                    RESP_ERR_INVALID_PARAMETER,
                    format!(
                        "blob {id} of {} bytes holds no 64x64 cursor image",
                        blob.size
                    ),
                )
            }
            Some(_) => Ok(()),
        });
        read.unwrap_or_else(|| refuse(RESP_ERR_INVALID_RESOURCE_ID, format!("no blob {id}")))?;
        self.display.command(
            &ipc::DisplayRequest::CursorUpdate {
                scanout,
                x: c.x.to_native(),
                y: c.y.to_native(),
                hot_x: c.hot_x.to_native().min(CURSOR_SIZE - 1),
                hot_y: c.hot_y.to_native().min(CURSOR_SIZE - 1),
                format: FORMAT_B8G8R8A8_UNORM,
                image,
            },
            &[],
        );
        Ok(())
    }

    /// `f` of blob `id`, under the registry's lock; None if `id` is none.
    fn with_blob<R>(&self, id: u32, f: impl FnOnce(&Blob) -> R) -> Option<R> {
        self.blobs
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(f)
    }
}

/// The guest's fence on a context (or a context's ring), which
/// render-worker's rutabaga signals, at once or later. Fences of context 0
/// are signalled by the response itself: no context fence.
fn context_fence(hdr: &CtrlHdr) -> Result<Option<Fence>, Refusal> {
    let flags = hdr.flags.to_native();
    let ctx_id = hdr.ctx_id.to_native();
    if flags & FLAG_FENCE == 0 || ctx_id == 0 {
        return Ok(None);
    }
    let ring = (flags & FLAG_INFO_RING_IDX != 0).then_some(hdr.ring_idx);
    if ring.is_some_and(|r| r > 63) {
        return refuse(RESP_ERR_INVALID_PARAMETER, format!("ring index {ring:?}"));
    }
    Ok(Some(Fence {
        ctx_id,
        ring,
        fence_id: hdr.fence_id.to_native(),
    }))
}

/// The guest's fence on the command being served, carried by the first
/// call to render-worker that serves it.
#[derive(Debug, Default)]
pub(super) struct FenceSlot {
    fence: Option<Fence>,
    /// Once carried: whether it had signalled when render-worker answered.
    signalled: Cell<Option<bool>>,
}

impl FenceSlot {
    /// The fence, if no call has carried it yet.
    fn take(&self) -> Option<Fence> {
        self.fence.filter(|_| self.signalled.get().is_none())
    }
}

/// A version-4 UUID from getrandom(2).
fn random_uuid() -> Option<[u8; 16]> {
    let mut uuid = [0u8; 16];
    // SAFETY: the kernel writes at most uuid.len() bytes into the buffer.
    let n = unsafe { nix::libc::getrandom(uuid.as_mut_ptr().cast(), uuid.len(), 0) };
    if usize::try_from(n).ok() != Some(uuid.len()) {
        return None;
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    Some(uuid)
}
