//! Contexts, capsets and blob resources: decoded and checked here, served
//! by rutabaga in render-worker.
//!
//! Resource ids are one namespace across 2D resources and blobs, kept in
//! one table (`Resources`); a blob's entry says it is one, so every command
//! reaches the process that holds the resource.

use ipc::{RenderRequest, RenderValue};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::render::FenceSlot;
use super::GpuDevice;
use crate::resources::Blob;
use ipc::LockExt;
use wire::command::{self, MAX_BLOB_ENTRIES};
use wire::*;

/// A context command's context: never 0.
fn needs_ctx(ctx_id: u32) -> Result<u32, Refusal> {
    if ctx_id == 0 {
        refuse(RESP_ERR_INVALID_CONTEXT_ID, "context id 0")
    } else {
        Ok(ctx_id)
    }
}

fn out_of_turn<T>() -> Result<T, Refusal> {
    refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn")
}

impl GpuDevice {
    pub(super) fn capset_info(
        &self,
        index: u32,
        fence: &FenceSlot,
    ) -> Result<GpuResponse, Refusal> {
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
            _ => out_of_turn(),
        }
    }

    pub(super) fn capset(
        &self,
        id: u32,
        version: u32,
        fence: &FenceSlot,
    ) -> Result<GpuResponse, Refusal> {
        match self.call(RenderRequest::GetCapset { id, version }, fence)? {
            Some(RenderValue::Capset(bytes)) => Ok(GpuResponse::Capset(bytes)),
            _ => out_of_turn(),
        }
    }

    pub(super) fn ctx_create(
        &self,
        ctx_id: u32,
        context_init: u32,
        name: String,
        fence: &FenceSlot,
    ) -> Result<(), Refusal> {
        let ctx_id = needs_ctx(ctx_id)?;
        self.call_done(
            RenderRequest::CtxCreate {
                ctx_id,
                context_init,
                name,
            },
            fence,
        )
    }

    pub(super) fn ctx_destroy(&self, ctx_id: u32, fence: &FenceSlot) -> Result<(), Refusal> {
        let ctx_id = needs_ctx(ctx_id)?;
        self.call_done(RenderRequest::CtxDestroy { ctx_id }, fence)
    }

    /// CTX_ATTACH_RESOURCE (`attach`) or CTX_DETACH_RESOURCE.
    pub(super) fn ctx_resource(
        &self,
        ctx_id: u32,
        resource_id: u32,
        attach: bool,
        fence: &FenceSlot,
    ) -> Result<(), Refusal> {
        let ctx_id = needs_ctx(ctx_id)?;
        let (exists, rendered) = {
            let resources = self.resources();
            (
                resources.exists(resource_id),
                resources.is_rendered(resource_id),
            )
        };
        if !exists {
            return refuse(
                RESP_ERR_INVALID_RESOURCE_ID,
                format!("no resource {resource_id}"),
            );
        }
        if !rendered {
            // Linux attaches every buffer a client opens to its context,
            // dumb 2D buffers too. 2D resources live here and no context
            // reads them: nothing to attach.
            return Ok(());
        }
        let request = match attach {
            true => RenderRequest::CtxAttach {
                ctx_id,
                resource_id,
            },
            false => RenderRequest::CtxDetach {
                ctx_id,
                resource_id,
            },
        };
        self.call_done(request, fence)
    }

    /// SUBMIT_3D: the stream inline in the call when it fits one ipc
    /// frame, else through the connection's submit buffer (made and given
    /// to render-worker the first time), which this process writes only
    /// between calls, as each call is answered before the next.
    pub(super) fn submit(
        &self,
        ctx_id: u32,
        commands: Vec<u8>,
        fence: &FenceSlot,
    ) -> Result<(), Refusal> {
        let ctx_id = needs_ctx(ctx_id)?;
        if commands.len() <= ipc::MAX_INLINE_SUBMIT {
            return self.call_done(RenderRequest::Submit { ctx_id, commands }, fence);
        }
        let mut buffer = self.submit_buffer.lock_or_recover();
        if buffer.is_none() {
            let made = crate::resources::Pixels::new(command::MAX_SUBMIT_BYTES)
                .map_err(|e| Refusal::new(RESP_ERR_OUT_OF_MEMORY, format!("submit buffer: {e}")))?;
            self.render_done_with_fd(RenderRequest::SubmitBuffer, made.fd())?;
            *buffer = Some(made);
        }
        let Some(shared) = buffer.as_mut() else {
            return refuse(RESP_ERR_UNSPEC, "no submit buffer");
        };
        let Some(room) = shared.as_mut_slice().get_mut(..commands.len()) else {
            return refuse(
                RESP_ERR_INVALID_PARAMETER,
                format!("SUBMIT_3D of {} bytes", commands.len()),
            );
        };
        room.copy_from_slice(&commands);
        let len = commands.len() as u32;
        self.call_done(RenderRequest::SubmitShared { ctx_id, len }, fence)
    }

    /// Refuses `resource_id` unless it is a blob.
    fn needs_blob(&self, resource_id: u32) -> Result<(), Refusal> {
        if self.resources().is_blob(resource_id) {
            return Ok(());
        }
        refuse(
            RESP_ERR_INVALID_RESOURCE_ID,
            format!("resource {resource_id} is not a blob"),
        )
    }

    pub(super) fn map_blob(
        &self,
        resource_id: u32,
        offset: u64,
        fence: &FenceSlot,
    ) -> Result<GpuResponse, Refusal> {
        self.needs_blob(resource_id)?;
        let request = RenderRequest::MapBlob {
            resource_id,
            offset,
        };
        match self.call(request, fence)? {
            Some(RenderValue::Mapped { map_info }) => Ok(GpuResponse::MapInfo(map_info)),
            _ => out_of_turn(),
        }
    }

    pub(super) fn unmap_blob(&self, resource_id: u32, fence: &FenceSlot) -> Result<(), Refusal> {
        self.needs_blob(resource_id)?;
        self.call_done(RenderRequest::UnmapBlob { resource_id }, fence)
    }

    pub(super) fn create_blob(
        &self,
        mem: &GuestMemoryMmap,
        ctx_id: u32,
        b: &ResourceCreateBlob,
        decoded: &[MemEntry],
        fence: &FenceSlot,
    ) -> Result<(), Refusal> {
        let (id, blob_mem, flags, n, size) = (
            b.resource_id.to_native(),
            b.blob_mem.to_native(),
            b.blob_flags.to_native(),
            decoded.len(),
            b.size.to_native(),
        );
        self.resources().check_new_id(id)?;
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
        self.resources()
            .add_blob(id, Blob { size, guest }, host_bytes);
        Ok(())
    }
}

/// A version-4 UUID (RFC 9562), from the kernel's random numbers.
pub(super) fn random_uuid() -> Result<[u8; 16], Refusal> {
    let mut uuid = [0u8; 16];
    getrandom::fill(&mut uuid)
        .map_err(|e| Refusal::new(RESP_ERR_UNSPEC, format!("no randomness for a UUID: {e}")))?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    Ok(uuid)
}
