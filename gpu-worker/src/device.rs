//! The virtio-gpu device model: turns one descriptor chain from the control
//! or cursor queue into one response.
//!
//! This is the code that reads guest-controlled bytes, so it assumes every
//! chain is hostile. A chain is validated as a whole before any command in
//! it is looked at (`chain`); the command is decoded by the wire crate
//! (`GpuCommand::decode`) and served by one handler, chosen in one match
//! here (2D resources, scanouts and cursor in `twod`, contexts and blobs in
//! `blob`, blobs shown like 2D resources in `shown_blob`); guest
//! memory is reached only through `virtio-queue`'s `Reader` and `Writer`,
//! which check every range against the memory map; and every outcome is a
//! response (or a zero-length used entry where no response fits), never a
//! panic.

use ipc::LockExt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ipc::{DisplayRequest, DisplayValue, RenderCall, RenderReply, RenderRequest, ScanoutSize};
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{GuestMemoryMmap, Le32};
use wire::{CtrlHdr, GpuCommand, GpuResponse, Queue, Refusal, RespDisplayInfo, RespEdid};
use wire::{RESP_ERR_INVALID_PARAMETER, RESP_ERR_UNSPEC};

mod blob;
mod render;
mod shown_blob;
mod three_d;
mod twod;

use crate::chain::{self, ChainError};
use crate::display::DisplayLink;
use crate::edid;
use crate::link::Link;
use crate::resources::Resources;
use ipc::limited_warn as guest_warn;
use ipc::ratelimit::LogLimiter;
use render::{context_fence, FenceSlot};

/// A fence on a context's ring, as the guest asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextFence {
    pub ctx_id: u32,
    pub ring: Option<u8>,
    pub fence_id: u64,
    /// Whether it had signalled by the time the command was answered.
    pub signalled: bool,
}

/// What processing a chain gave: the used entry's length, and the context
/// fence the command carried, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub len: u32,
    pub fence: Option<ContextFence>,
}

/// The link to render-worker for one connection.
pub type RenderLink = Link<RenderCall, RenderReply>;

/// The device state gpu-worker keeps for one front-end connection.
#[derive(Debug)]
pub struct GpuDevice {
    scanouts: Vec<ScanoutSize>,
    resources: Mutex<Resources>,
    display: DisplayLink,
    /// render-worker, which serves what needs rutabaga.
    render: RenderLink,
    /// The mode sizes last reported to the guest: the display's once it
    /// gave any, else `--display`'s. A generated EDID matches them.
    reported: Mutex<Vec<ScanoutSize>>,
    /// The virtio features the driver acked: a command of a feature it did
    /// not ack is not served.
    acked: AtomicU64,
    /// The connection's submit buffer, shared with render-worker at the
    /// first SUBMIT_3D too long for one ipc frame.
    submit_buffer: Mutex<Option<crate::resources::Pixels>>,
    log: LogLimiter,
}

/// What serving a command gives: the response, and the context fence the
/// command carried (its used entry may wait for it).
type Handled = Result<(GpuResponse, Option<ContextFence>), Refusal>;

impl GpuDevice {
    pub fn new(
        scanouts: Vec<ScanoutSize>,
        max_resource_memory: u64,
        display: DisplayLink,
        render: RenderLink,
    ) -> Self {
        GpuDevice {
            render,
            resources: Mutex::new(Resources::new(&scanouts, max_resource_memory)),
            reported: Mutex::new(scanouts.clone()),
            acked: AtomicU64::new(0),
            submit_buffer: Mutex::new(None),
            scanouts,
            display,
            log: LogLimiter::default(),
        }
    }

    /// Drops all device state of the driver (a device reset): 2D resources
    /// (and the broker's view of them), blobs and contexts (render-worker's
    /// state, mappings included), the display modes reported.
    pub fn reset(&self) {
        let shared = self.resources().reset();
        for resource_id in shared {
            self.display
                .command(&DisplayRequest::ReleaseSurface { resource_id }, &[]);
        }
        if self.render.is_connected() {
            if let Err(r) = self.render_done(RenderRequest::Reset) {
                log::warn!("gpu-worker: render-worker did not reset: {}", r.why);
            }
        }
        *self.reported.lock_or_recover() = self.scanouts.clone();
    }

    /// The features the driver acked (SET_FEATURES).
    pub fn set_acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Relaxed);
    }

    /// The 2D resources, for inspection in tests.
    pub fn resources(&self) -> std::sync::MutexGuard<'_, Resources> {
        self.resources.lock_or_recover()
    }

    /// Processes one chain and returns how many bytes were written into it,
    /// the `len` of its used-ring entry.
    pub fn process_chain<T>(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<T>,
        queue: Queue,
    ) -> u32
    where
        T: Deref<Target = GuestMemoryMmap> + Clone,
    {
        self.process_chain_fenced(mem, chain, queue).len
    }

    /// As [`GpuDevice::process_chain`], and says which context fence the
    /// command carried: its used entry may have to wait for it.
    pub fn process_chain_fenced<T>(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<T>,
        queue: Queue,
    ) -> Completion
    where
        T: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let unfenced = |len| Completion { len, fence: None };
        let head = chain.head_index();
        if let Err(e) = chain::validate(chain.clone()) {
            guest_warn!(
                self.log,
                "{queue:?} queue: refusing chain at head {head}: {e}"
            );
            // Answer on whatever writable space there is, if it is sound:
            // not on a chain that loops, whose writable space the queue's
            // iterator yields once per lap (the fuzzer found an answer of
            // 24 bytes claimed for a 21-byte descriptor that pointed at
            // itself).
            if !chain::writable_ranges_disjoint(chain.clone()) {
                return unfenced(0);
            }
            return unfenced(match Writer::new(mem, chain) {
                Ok(mut w) => GpuResponse::Error(RESP_ERR_UNSPEC).encode(None, &mut w),
                Err(_) => 0,
            });
        }

        let (mut reader, mut writer) =
            match (Reader::new(mem, chain.clone()), Writer::new(mem, chain)) {
                (Ok(r), Ok(w)) => (r, w),
                _ => {
                    guest_warn!(
                        self.log,
                        "{queue:?} queue: refusing chain at head {head}: {}",
                        ChainError::OutsideMemory
                    );
                    return unfenced(0);
                }
            };

        let hdr: CtrlHdr = match reader.read_obj() {
            Ok(hdr) => hdr,
            Err(_) => {
                guest_warn!(
                    self.log,
                    "{queue:?} queue: request of {} bytes is shorter than a command header",
                    reader.bytes_read() + reader.available_bytes()
                );
                return unfenced(GpuResponse::Error(RESP_ERR_UNSPEC).encode(None, &mut writer));
            }
        };
        let (response, fence) = match self.execute(mem, queue, &hdr, &mut reader) {
            Ok(done) => done,
            Err(r) => {
                guest_warn!(
                    self.log,
                    "{queue:?} queue: command {:#x} refused: {r}",
                    hdr.type_.to_native()
                );
                (r.into(), None)
            }
        };
        Completion {
            len: response.encode(Some(&hdr), &mut writer),
            fence,
        }
    }

    /// Decodes one request and serves it: every command's handler is
    /// chosen here, once.
    fn execute(
        &self,
        mem: &GuestMemoryMmap,
        queue: Queue,
        hdr: &CtrlHdr,
        reader: &mut Reader<'_>,
    ) -> Handled {
        let command = GpuCommand::decode(queue, hdr, reader)?;
        if let Some(feature) = command.required_feature() {
            if self.acked.load(Ordering::Relaxed) & (1 << feature.bit) == 0 {
                return Err(Refusal::new(
                    RESP_ERR_UNSPEC,
                    format!(
                        "it needs feature {}, which the driver did not ack",
                        feature.name
                    ),
                ));
            }
        }
        let fence = FenceSlot::new(match command.is_context_command() {
            true => context_fence(hdr)?,
            false => None,
        });
        let ctx_id = hdr.ctx_id.to_native();
        let done = GpuResponse::OkNoData;
        use GpuCommand::*;
        let response = match command {
            GetDisplayInfo => GpuResponse::DisplayInfo(self.display_info()),
            GetEdid { scanout } => GpuResponse::Edid(self.edid(scanout)?),
            ResourceCreate2d(c) => self.resources().create_2d(&c).map(|()| done)?,
            ResourceUnref { resource_id } => self.unref(resource_id).map(|()| done)?,
            AttachBacking {
                resource_id,
                entries,
            } => {
                let three_d = self.resources().three_d(resource_id);
                match three_d {
                    Some(shape) => self.attach_backing_3d(mem, resource_id, shape, &entries),
                    None => self.resources().attach_backing(mem, resource_id, &entries),
                }
                .map(|()| done)?
            }
            DetachBacking { resource_id } => {
                let three_d = self.resources().three_d(resource_id);
                match three_d {
                    Some(shape) => self.detach_backing_3d(resource_id, shape),
                    None => self.resources().detach_backing(resource_id),
                }
                .map(|()| done)?
            }
            TransferToHost2d(t) => self.transfer_to_host_2d(mem, &t).map(|()| done)?,
            SetScanout(s) => self
                .set_scanout(s.scanout_id.to_native(), s.resource_id.to_native(), &s.r)
                .map(|()| done)?,
            ResourceFlush(f) => self.flush(mem, &f).map(|()| done)?,
            SetScanoutBlob(b) => self.set_scanout_blob(&b).map(|()| done)?,
            UpdateCursor(c) => self.update_cursor(mem, &c).map(|()| done)?,
            MoveCursor(c) => self.move_cursor(&c).map(|()| done)?,
            AssignUuid { resource_id } => GpuResponse::Uuid(
                self.resources()
                    .assign_uuid(resource_id, blob::random_uuid)?,
            ),
            GetCapsetInfo { index } => self.capset_info(index, &fence)?,
            GetCapset { id, version } => self.capset(id, version, &fence)?,
            CtxCreate { context_init, name } => self
                .ctx_create(ctx_id, context_init, name, &fence)
                .map(|()| done)?,
            CtxDestroy => self.ctx_destroy(ctx_id, &fence).map(|()| done)?,
            CtxAttachResource { resource_id } => self
                .ctx_resource(ctx_id, resource_id, true, &fence)
                .map(|()| done)?,
            CtxDetachResource { resource_id } => self
                .ctx_resource(ctx_id, resource_id, false, &fence)
                .map(|()| done)?,
            Submit3d { commands } => self.submit(ctx_id, commands, &fence).map(|()| done)?,
            ResourceCreate3d(c) => self.create_3d(&c, &fence).map(|()| done)?,
            Transfer3d { transfer, to_host } => self
                .transfer_3d(ctx_id, &transfer, to_host, &fence)
                .map(|()| done)?,
            CreateBlob { blob, entries } => self
                .create_blob(mem, ctx_id, &blob, &entries, &fence)
                .map(|()| done)?,
            MapBlob {
                resource_id,
                offset,
            } => self.map_blob(resource_id, offset, &fence)?,
            UnmapBlob { resource_id } => self.unmap_blob(resource_id, &fence).map(|()| done)?,
        };
        Ok((response, self.finish_fence(&fence)?))
    }

    /// The display's modes when the front-end has a display, else the
    /// `--display` sizes, for the scanouts this device has.
    fn display_info(&self) -> Box<RespDisplayInfo> {
        let mut resp = Box::<RespDisplayInfo>::default();
        let mut reported = self.scanouts.clone();
        match self.display.request(&DisplayRequest::GetDisplayInfo, &[]) {
            Some(DisplayValue::Modes(Some(modes))) => {
                for ((mode, m), size) in resp.pmodes.iter_mut().zip(&modes).zip(&mut reported) {
                    mode.r.x = Le32::from(m.rect.x);
                    mode.r.y = Le32::from(m.rect.y);
                    mode.r.width = Le32::from(m.rect.width);
                    mode.r.height = Le32::from(m.rect.height);
                    mode.enabled = Le32::from(u32::from(m.enabled));
                    let candidate = ScanoutSize {
                        width: m.rect.width,
                        height: m.rect.height,
                    };
                    if m.enabled && candidate.is_valid() {
                        *size = candidate;
                    }
                }
            }
            _ => {
                for (mode, size) in resp.pmodes.iter_mut().zip(&self.scanouts) {
                    mode.r.width = Le32::from(size.width);
                    mode.r.height = Le32::from(size.height);
                    mode.enabled = Le32::from(1);
                }
            }
        }
        *self.reported.lock_or_recover() = reported;
        resp
    }

    /// The display's EDID for `scanout`, or one built for the size last
    /// reported.
    fn edid(&self, scanout: u32) -> Result<Box<RespEdid>, Refusal> {
        let Some(index) = usize::try_from(scanout)
            .ok()
            .filter(|i| *i < self.scanouts.len())
        else {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                format!(
                    "GET_EDID for scanout {scanout}, but the device has {}",
                    self.scanouts.len()
                ),
            ));
        };
        let mut resp = Box::<RespEdid>::default();
        match self
            .display
            .request(&DisplayRequest::GetEdid { scanout }, &[])
        {
            Some(DisplayValue::Edid(Some(blob)))
                if !blob.is_empty() && blob.len() <= resp.edid.len() =>
            {
                resp.size = Le32::from(blob.len() as u32);
                resp.edid[..blob.len()].copy_from_slice(&blob);
            }
            _ => {
                let size = self.reported.lock_or_recover()[index];
                let block = edid::build(size.width, size.height, scanout);
                resp.size = Le32::from(edid::EDID_LEN as u32);
                resp.edid[..edid::EDID_LEN].copy_from_slice(&block);
            }
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests;
