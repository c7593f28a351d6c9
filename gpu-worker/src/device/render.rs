//! gpu-worker's calls to render-worker for one connection: each request
//! in one round trip with the guest's context fence, render-worker's
//! answers checked (a refusal's code is sanitized, an answer out of turn
//! drops the link), and the guest memory map it is given.

use std::cell::Cell;
use std::os::fd::AsFd;

use ipc::{
    Fence, MemoryRegion, RenderCall, RenderReply, RenderRequest, RenderValue, Reply,
    MAX_MEMORY_REGIONS,
};
use log::warn;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use wire::*;

use super::{ContextFence, GpuDevice};

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
    pub(super) fn call(
        &self,
        request: RenderRequest,
        fence: &FenceSlot,
    ) -> Result<Option<RenderValue>, Refusal> {
        self.call_with_fds(request, fence, &[])
    }

    /// As [`GpuDevice::call`], with descriptors for the request.
    fn call_with_fds(
        &self,
        request: RenderRequest,
        fence: &FenceSlot,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<Option<RenderValue>, Refusal> {
        let carried = fence.take();
        let call = RenderCall {
            request,
            fence: carried,
        };
        let Some(RenderReply {
            reply,
            fence_signalled,
        }) = self.render.request(&call, fds)
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
        self.call_done_with_fds(request, fence, &[])
    }

    fn call_done_with_fds(
        &self,
        request: RenderRequest,
        fence: &FenceSlot,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(), Refusal> {
        let what = request.name();
        match self.call_with_fds(request, fence, fds)? {
            None => Ok(()),
            Some(other) => {
                self.render.fail(&format!("answered {other:?} to {what}"));
                refuse(RESP_ERR_UNSPEC, "render-worker answered out of turn")
            }
        }
    }

    /// The context fence of a command served, once its handler is done: a
    /// command served without a call to render-worker (one gpu-worker
    /// answers itself) sends the fence alone, for rutabaga to signal in
    /// order on its ring.
    pub(super) fn finish_fence(&self, slot: &FenceSlot) -> Result<Option<ContextFence>, Refusal> {
        let Some(fence) = slot.fence else {
            return Ok(None);
        };
        if slot.signalled.get().is_none() {
            self.call_done(RenderRequest::FenceAlone, slot)?;
        }
        Ok(Some(ContextFence {
            ctx_id: fence.ctx_id,
            ring: fence.ring,
            fence_id: fence.fence_id,
            signalled: slot.signalled.get().unwrap_or(true),
        }))
    }

    /// A call with no fence whose only answer is done.
    pub(super) fn render_done(&self, request: RenderRequest) -> Result<(), Refusal> {
        self.call_done(request, &FenceSlot::default())
    }

    /// As [`GpuDevice::render_done`], with one descriptor.
    pub(super) fn render_done_with_fd(
        &self,
        request: RenderRequest,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), Refusal> {
        self.call_done_with_fds(request, &FenceSlot::default(), &[fd])
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
}

/// The guest's fence on a context (or a context's ring), which
/// render-worker's rutabaga signals, at once or later. Fences of context 0
/// are signalled by the response itself: no context fence.
pub(super) fn context_fence(hdr: &CtrlHdr) -> Result<Option<Fence>, Refusal> {
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
    pub(super) fence: Option<Fence>,
    /// Once carried: whether it had signalled when render-worker answered.
    pub(super) signalled: Cell<Option<bool>>,
}

impl FenceSlot {
    pub(super) fn new(fence: Option<Fence>) -> Self {
        FenceSlot {
            fence,
            signalled: Cell::new(None),
        }
    }

    /// The fence, if no call has carried it yet.
    fn take(&self) -> Option<Fence> {
        self.fence.filter(|_| self.signalled.get().is_none())
    }
}
