//! Contexts, capsets and blob resources: decoded and checked here, served
//! by rutabaga in render-worker.
//!
//! Resource ids are one namespace across 2D resources (kept here) and
//! blobs (kept by render-worker); gpu-worker remembers which ids are blobs
//! so every command reaches the process that holds the resource.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;

use ipc::{RenderRequest, RenderValue};
use log::warn;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::render::{context_fence, FenceSlot};
use super::{ContextFence, GpuDevice, Handled};
use wire::command::MAX_BLOB_ENTRIES;
use wire::*;

/// What gpu-worker knows of a blob render-worker holds.
#[derive(Debug, Clone)]
pub struct Blob {
    pub(super) size: u64,
    /// The guest memory behind a guest-memory blob (for SET_SCANOUT_BLOB);
    /// None for a host blob.
    pub(super) guest: Option<Vec<(GuestAddress, u32)>>,
    /// Host memory it takes, counted in `--max-resource-memory`.
    pub(super) host_bytes: u64,
}

impl Blob {
    fn host_bytes(&self) -> u64 {
        self.host_bytes
    }
}

/// The blob registry and resource UUIDs of one connection: what routing
/// and scanout need of the blobs render-worker holds (contexts are
/// render-worker's alone, `--max-contexts` included).
#[derive(Debug, Default)]
pub struct Blobs {
    pub(super) blobs: Mutex<HashMap<u32, Blob>>,
    uuids: Mutex<HashMap<u32, [u8; 16]>>,
}

impl Blobs {
    /// Forgets every blob (the device was reset).
    pub fn clear(&self) {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.uuids.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn contains(&self, id: u32) -> bool {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }
}

impl GpuDevice {
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
                self.call_done(
                    RenderRequest::CtxCreate {
                        ctx_id,
                        context_init,
                        name,
                    },
                    fence,
                )?;
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::CtxDestroy => {
                let ctx_id = needs_ctx(ctx_id)?;
                self.call_done(RenderRequest::CtxDestroy { ctx_id }, fence)?;
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
