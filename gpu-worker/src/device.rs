//! The virtio-gpu device model: turns one descriptor chain from the control
//! or cursor queue into one response.
//!
//! This is the code that reads guest-controlled bytes, so it assumes every
//! chain is hostile. A chain is validated as a whole before any command in
//! it is looked at; guest memory is reached only through `virtio-queue`'s
//! `Reader` and `Writer`, which check every range against the memory map;
//! and every outcome is a response (or a zero-length used entry where no
//! response fits), never a panic.

use std::io::{Read, Write};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ipc::{DisplayToGpu, GpuToDisplay, PixelRect, RenderAnswer, RenderCommand, ScanoutSize};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap, Le32};

mod blob;

use crate::display::DisplayLink;
use crate::edid;
use crate::link::Link;
use crate::protocol::*;
use crate::resources::{Refusal, Resources, MAX_BACKING_ENTRIES};
use ipc::limited_warn as guest_warn;
use ipc::ratelimit::LogLimiter;

/// Which virtqueue a chain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Control,
    Cursor,
}

/// Why a chain was refused before its command was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The chain has no descriptors: its head lies past the queue.
    Empty,
    /// A descriptor still points onward after the queue size was walked
    /// (a loop) or points past the descriptor table.
    Broken,
    /// A descriptor of length zero.
    ZeroLength,
    /// A device-readable descriptor after a device-writable one.
    ReadableAfterWritable,
    /// A descriptor's range is not inside guest memory.
    OutsideMemory,
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainError::Empty => "its head index lies past the queue",
            ChainError::Broken => "it loops or points past the descriptor table",
            ChainError::ZeroLength => "it has a zero-length descriptor",
            ChainError::ReadableAfterWritable => "a readable descriptor follows a writable one",
            ChainError::OutsideMemory => "a descriptor points outside guest memory",
        })
    }
}

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
pub type RenderLink = Link<RenderCommand, RenderAnswer>;

/// The device state gpu-worker keeps for one front-end connection.
#[derive(Debug)]
pub struct GpuDevice {
    scanouts: Vec<ScanoutSize>,
    resources: Mutex<Resources>,
    display: DisplayLink,
    /// render-worker, which serves what needs rutabaga.
    render: RenderLink,
    /// Which resource ids are blobs (held by render-worker).
    blobs: blob::Blobs,
    /// The mode sizes last reported to the guest: the display's once it
    /// gave any, else `--display`'s. A generated EDID matches them.
    reported: Mutex<Vec<ScanoutSize>>,
    /// The virtio features the driver acked: a command of a feature it did
    /// not ack is not served.
    acked: AtomicU64,
    log: LogLimiter,
}

/// The feature bit a command needs the driver to have acked, if any.
fn required_feature(cmd: u32) -> Option<(u32, &'static str)> {
    match cmd {
        CMD_GET_EDID => Some((F_EDID, "EDID")),
        CMD_RESOURCE_ASSIGN_UUID => Some((F_RESOURCE_UUID, "RESOURCE_UUID")),
        CMD_RESOURCE_CREATE_BLOB
        | CMD_SET_SCANOUT_BLOB
        | CMD_RESOURCE_MAP_BLOB
        | CMD_RESOURCE_UNMAP_BLOB => Some((F_RESOURCE_BLOB, "RESOURCE_BLOB")),
        CMD_CTX_CREATE
        | CMD_CTX_DESTROY
        | CMD_CTX_ATTACH_RESOURCE
        | CMD_CTX_DETACH_RESOURCE
        | CMD_SUBMIT_3D => Some((F_VIRGL, "VIRGL")),
        _ => None,
    }
}

impl GpuDevice {
    pub fn new(
        scanouts: Vec<ScanoutSize>,
        max_resource_memory: u64,
        display: DisplayLink,
        render: RenderLink,
    ) -> Self {
        GpuDevice {
            render,
            blobs: blob::Blobs::default(),
            resources: Mutex::new(Resources::new(&scanouts, max_resource_memory)),
            reported: Mutex::new(scanouts.clone()),
            acked: AtomicU64::new(0),
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
                .command(&GpuToDisplay::ReleaseSurface { resource_id }, &[]);
        }
        self.blobs.clear();
        if self.render.is_connected() {
            if let Err(r) = self.render_done(&RenderCommand::Reset) {
                log::warn!("gpu-worker: render-worker did not reset: {}", r.why);
            }
        }
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = self.scanouts.clone();
    }

    /// `--max-contexts`: most contexts the guest may have at once.
    pub fn set_max_contexts(&self, n: u32) {
        self.blobs.set_max_contexts(n);
    }

    /// The features the driver acked (SET_FEATURES).
    pub fn set_acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Relaxed);
    }

    /// The 2D resources, for inspection in tests.
    pub fn resources(&self) -> std::sync::MutexGuard<'_, Resources> {
        self.resources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Processes one chain and returns how many bytes were written into it,
    /// the `len` of its used-ring entry.
    pub fn process_chain<T>(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<T>,
        queue: QueueKind,
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
        queue: QueueKind,
    ) -> Completion
    where
        T: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let mut fence = None;
        let len = self.process(mem, chain, queue, &mut fence);
        Completion { len, fence }
    }

    fn process<T>(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<T>,
        queue: QueueKind,
        fence: &mut Option<ContextFence>,
    ) -> u32
    where
        T: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let head = chain.head_index();
        if let Err(e) = validate_chain(chain.clone()) {
            guest_warn!(
                self.log,
                "{queue:?} queue: refusing chain at head {head}: {e}"
            );
            // Answer on whatever writable space there is, if it is sound:
            // not on a chain that loops, whose writable space the queue's
            // iterator yields once per lap (the fuzzer found an answer of
            // 24 bytes claimed for a 21-byte descriptor that pointed at
            // itself).
            if !writable_ranges_disjoint(chain.clone()) {
                return 0;
            }
            return match Writer::new(mem, chain) {
                Ok(mut w) => write_response(&mut w, &err_hdr(RESP_ERR_UNSPEC, None)),
                Err(_) => 0,
            };
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
                    return 0;
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
                return write_response(&mut writer, &err_hdr(RESP_ERR_UNSPEC, None));
            }
        };

        let response = match self.dispatch(mem, &hdr, &mut reader, queue) {
            Response::Fenced(inner, f) => {
                *fence = Some(f);
                *inner
            }
            r => r,
        };
        match response {
            Response::Fenced(..) => {
                write_response(&mut writer, &err_hdr(RESP_ERR_UNSPEC, Some(&hdr)))
            }
            Response::Display(mut r) => {
                r.hdr = reply_hdr(RESP_OK_DISPLAY_INFO, &hdr);
                write_response(&mut writer, &*r)
            }
            Response::Edid(mut r) => {
                r.hdr = reply_hdr(RESP_OK_EDID, &hdr);
                write_response(&mut writer, &*r)
            }
            Response::CapsetInfo(mut r) => {
                r.hdr = reply_hdr(RESP_OK_CAPSET_INFO, &hdr);
                write_response(&mut writer, &*r)
            }
            Response::Capset(bytes) => {
                let resp_hdr = reply_hdr(RESP_OK_CAPSET, &hdr);
                if writer.available_bytes() >= std::mem::size_of::<CtrlHdr>() + bytes.len() {
                    let ok = writer.write_all(resp_hdr.as_slice()).is_ok()
                        && writer.write_all(&bytes).is_ok();
                    if ok {
                        u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX)
                    } else {
                        0
                    }
                } else {
                    write_response(&mut writer, &err_hdr(RESP_ERR_UNSPEC, Some(&hdr)))
                }
            }
            Response::MapInfo(map_info) => {
                let r = RespMapInfo {
                    hdr: reply_hdr(RESP_OK_MAP_INFO, &hdr),
                    map_info: Le32::from(map_info),
                    padding: Le32::from(0),
                };
                write_response(&mut writer, &r)
            }
            Response::Uuid(uuid) => {
                let r = RespResourceUuid {
                    hdr: reply_hdr(RESP_OK_RESOURCE_UUID, &hdr),
                    uuid,
                };
                write_response(&mut writer, &r)
            }
            Response::Ok => write_response(&mut writer, &reply_hdr(RESP_OK_NODATA, &hdr)),
            Response::Error(code) => write_response(&mut writer, &err_hdr(code, Some(&hdr))),
        }
    }

    fn dispatch(
        &self,
        mem: &GuestMemoryMmap,
        hdr: &CtrlHdr,
        reader: &mut Reader<'_>,
        queue: QueueKind,
    ) -> Response {
        let cmd = hdr.type_.to_native();
        if let Some((bit, name)) = required_feature(cmd) {
            if self.acked.load(Ordering::Relaxed) & (1 << bit) == 0 {
                guest_warn!(
                    self.log,
                    "{queue:?} queue: command {cmd:#x} needs feature {name}, which the driver did \
                     not ack; answering ERR_UNSPEC"
                );
                return Response::Error(RESP_ERR_UNSPEC);
            }
        }
        let result = match (queue, cmd) {
            (QueueKind::Control, CMD_GET_DISPLAY_INFO) => {
                return Response::Display(Box::new(self.display_info()))
            }
            (QueueKind::Control, CMD_GET_EDID) => return self.get_edid(reader),
            (QueueKind::Control, CMD_RESOURCE_CREATE_2D) => {
                body(reader).and_then(|c: ResourceCreate2d| {
                    let id = c.resource_id.to_native();
                    if self.blobs.contains(id) {
                        return Err(Refusal {
                            code: RESP_ERR_INVALID_RESOURCE_ID,
                            why: format!("resource id {id} is a blob"),
                        });
                    }
                    self.resources().create_2d(&c)
                })
            }
            (QueueKind::Control, CMD_RESOURCE_UNREF) => body::<ResourceId>(reader).and_then(|b| {
                let id = b.resource_id.to_native();
                self.unref_blob(id).unwrap_or_else(|| self.unref(id))
            }),
            (
                QueueKind::Control,
                CMD_GET_CAPSET_INFO
                | CMD_GET_CAPSET
                | CMD_RESOURCE_CREATE_BLOB
                | CMD_CTX_CREATE
                | CMD_CTX_DESTROY
                | CMD_CTX_ATTACH_RESOURCE
                | CMD_CTX_DETACH_RESOURCE
                | CMD_SUBMIT_3D
                | CMD_RESOURCE_MAP_BLOB
                | CMD_RESOURCE_UNMAP_BLOB
                | CMD_RESOURCE_ASSIGN_UUID,
            ) => match self
                .blob_command(mem, hdr, reader, cmd)
                .and_then(|r| self.context_fence(hdr).map(|f| (r, f)))
            {
                Ok((r, None)) => return r,
                Ok((r, Some(f))) => return Response::Fenced(Box::new(r), f),
                Err(r) => Err(r),
            },
            (QueueKind::Control, CMD_RESOURCE_ATTACH_BACKING) => self.attach_backing(mem, reader),
            (QueueKind::Control, CMD_RESOURCE_DETACH_BACKING) => body::<ResourceId>(reader)
                .and_then(|b| self.resources().detach_backing(b.resource_id.into())),
            (QueueKind::Control, CMD_TRANSFER_TO_HOST_2D) => {
                body(reader).and_then(|t: TransferToHost2d| {
                    if self.blobs.contains(t.resource_id.to_native()) {
                        return self.transfer_to_blob(&t);
                    }
                    self.resources().transfer_to_host_2d(mem, &t)
                })
            }
            (QueueKind::Control, CMD_SET_SCANOUT) => {
                body(reader).and_then(|s| self.set_scanout(&s))
            }
            (QueueKind::Control, CMD_RESOURCE_FLUSH) => {
                body(reader).and_then(|f| self.flush(mem, &f))
            }
            (QueueKind::Control, CMD_SET_SCANOUT_BLOB) => self.set_scanout_blob(reader),
            (QueueKind::Cursor, CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR) => {
                body(reader).and_then(|c: UpdateCursor| {
                    let id = c.resource_id.to_native();
                    if cmd == CMD_UPDATE_CURSOR && self.blobs.contains(id) {
                        return self.blob_cursor(mem, &c);
                    }
                    self.cursor(&c, cmd == CMD_MOVE_CURSOR)
                })
            }
            // The spec's commands that need a 3D renderer (none is built
            // here).
            (QueueKind::Control, CMD_RESOURCE_CREATE_3D..=CMD_TRANSFER_FROM_HOST_3D) => {
                guest_warn!(
                    self.log,
                    "{queue:?} queue: command {cmd:#x} is not implemented; answering ERR_UNSPEC"
                );
                return Response::Error(RESP_ERR_UNSPEC);
            }
            _ => {
                guest_warn!(
                    self.log,
                    "{queue:?} queue: unknown command {cmd:#x}; answering ERR_UNSPEC"
                );
                return Response::Error(RESP_ERR_UNSPEC);
            }
        };
        match result {
            Ok(()) => Response::Ok,
            Err(r) => {
                guest_warn!(
                    self.log,
                    "{queue:?} queue: command {cmd:#x} refused: {}",
                    r.why
                );
                Response::Error(r.code)
            }
        }
    }

    fn attach_backing(
        &self,
        mem: &GuestMemoryMmap,
        reader: &mut Reader<'_>,
    ) -> Result<(), Refusal> {
        let a: AttachBacking = body(reader)?;
        let n = a.nr_entries.to_native();
        if n == 0 || n > MAX_BACKING_ENTRIES {
            return Err(Refusal {
                code: RESP_ERR_INVALID_PARAMETER,
                why: format!("{n} backing entries (1 to {MAX_BACKING_ENTRIES} allowed)"),
            });
        }
        // The request must really hold the entries it announces.
        let needed = n as usize * std::mem::size_of::<MemEntry>();
        if reader.available_bytes() < needed {
            return Err(Refusal {
                code: RESP_ERR_INVALID_PARAMETER,
                why: format!(
                    "{n} backing entries announced, {} bytes follow",
                    reader.available_bytes()
                ),
            });
        }
        let entries: Vec<MemEntry> = (0..n)
            .map(|_| reader.read_obj::<MemEntry>())
            .collect::<Result<_, _>>()
            .map_err(|_| Refusal {
                code: RESP_ERR_INVALID_PARAMETER,
                why: "backing entries could not be read".into(),
            })?;
        self.resources()
            .attach_backing(mem, a.resource_id.to_native(), &entries)
    }

    /// The display's modes when the front-end has a display, else the
    /// `--display` sizes, for the scanouts this device has.
    fn display_info(&self) -> RespDisplayInfo {
        let mut resp = RespDisplayInfo::default();
        let mut reported = self.scanouts.clone();
        match self.display.request(&GpuToDisplay::GetDisplayInfo, &[]) {
            Some(DisplayToGpu::DisplayInfo(Some(modes))) => {
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
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = reported;
        resp
    }

    fn get_edid(&self, reader: &mut Reader<'_>) -> Response {
        // The header was already consumed: read the rest of the command.
        let mut rest = [0u8; 8];
        if reader.read_exact(&mut rest).is_err() {
            guest_warn!(self.log, "GET_EDID request is too short");
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        }
        let scanout = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let Some(index) = usize::try_from(scanout)
            .ok()
            .filter(|i| *i < self.scanouts.len())
        else {
            guest_warn!(
                self.log,
                "GET_EDID for scanout {scanout}, but the device has {}",
                self.scanouts.len()
            );
            return Response::Error(RESP_ERR_INVALID_PARAMETER);
        };
        let mut resp = RespEdid::default();
        match self
            .display
            .request(&GpuToDisplay::GetEdid { scanout }, &[])
        {
            Some(DisplayToGpu::Edid(Some(blob)))
                if !blob.is_empty() && blob.len() <= resp.edid.len() =>
            {
                resp.size = Le32::from(blob.len() as u32);
                resp.edid[..blob.len()].copy_from_slice(&blob);
            }
            _ => {
                let size = self.reported.lock().unwrap_or_else(|e| e.into_inner())[index];
                let block = edid::build(size.width, size.height, scanout);
                resp.size = Le32::from(edid::EDID_LEN as u32);
                resp.edid[..edid::EDID_LEN].copy_from_slice(&block);
            }
        }
        Response::Edid(Box::new(resp))
    }

    fn unref(&self, id: u32) -> Result<(), Refusal> {
        let was_shared = self.resources().unref(id)?;
        if was_shared {
            self.display
                .command(&GpuToDisplay::ReleaseSurface { resource_id: id }, &[]);
        }
        Ok(())
    }

    fn set_scanout(&self, s: &SetScanout) -> Result<(), Refusal> {
        let mut resources = self.resources();
        resources.set_scanout(s)?;
        let (scanout, id) = (s.scanout_id.to_native(), s.resource_id.to_native());
        if !self.display.is_connected() {
            return Ok(());
        }
        if id == 0 {
            self.display.command(
                &GpuToDisplay::SetScanout {
                    scanout,
                    source: None,
                },
                &[],
            );
            return Ok(());
        }
        // The broker maps the resource's memory the first time it is shown.
        if let Some(surface) = resources.share(id)? {
            let fd = resources.memfd(id).into_iter().collect::<Vec<_>>();
            self.display
                .command(&GpuToDisplay::ShareSurface(surface), &fd);
        }
        let rect = PixelRect {
            x: s.r.x.to_native(),
            y: s.r.y.to_native(),
            width: s.r.width.to_native(),
            height: s.r.height.to_native(),
        };
        self.display.command(
            &GpuToDisplay::SetScanout {
                scanout,
                source: Some((id, rect)),
            },
            &[],
        );
        Ok(())
    }

    fn flush(&self, mem: &GuestMemoryMmap, f: &ResourceFlush) -> Result<(), Refusal> {
        let id = f.resource_id.to_native();
        if self.blobs.contains(id) {
            // A blob shown with SET_SCANOUT_BLOB: refresh the host copy
            // from guest memory first. One never shown has nothing to flush.
            let mut resources = self.resources();
            if !resources.exists(id) {
                return Ok(());
            }
            resources.refresh_blob_shadow(mem, id, &f.r)?;
        }
        let parts = self.resources().flush(f)?;
        for (scanout, rect) in parts {
            self.display
                .command(&GpuToDisplay::Flush { scanout, rect }, &[]);
        }
        Ok(())
    }

    fn cursor(&self, c: &UpdateCursor, move_only: bool) -> Result<(), Refusal> {
        let mut resources = self.resources();
        resources.update_cursor(c, move_only)?;
        let (scanout, x, y) = (c.scanout_id.to_native(), c.x.to_native(), c.y.to_native());
        let id = c.resource_id.to_native();
        // As QEMU's own back-end does: a move naming no resource hides the
        // cursor (Linux sends that when the cursor plane is off).
        let msg = if id == 0 {
            GpuToDisplay::CursorHide { scanout }
        } else if move_only {
            GpuToDisplay::CursorMove { scanout, x, y }
        } else {
            let (format, image) = resources.cursor_image(id)?;
            GpuToDisplay::CursorUpdate {
                scanout,
                x,
                y,
                hot_x: c.hot_x.to_native().min(ipc::CURSOR_SIZE - 1),
                hot_y: c.hot_y.to_native().min(ipc::CURSOR_SIZE - 1),
                format,
                image,
            }
        };
        drop(resources);
        self.display.command(&msg, &[]);
        Ok(())
    }
}

enum Response {
    /// A response whose used entry waits for (or is ordered by) a context
    /// fence.
    Fenced(Box<Response>, ContextFence),
    Ok,
    Display(Box<RespDisplayInfo>),
    Edid(Box<RespEdid>),
    CapsetInfo(Box<RespCapsetInfo>),
    Capset(Vec<u8>),
    MapInfo(u32),
    Uuid([u8; 16]),
    Error(u32),
}

/// Reads a command's body; a request too short for it is refused.
fn body<T: ByteValued>(reader: &mut Reader<'_>) -> Result<T, Refusal> {
    reader.read_obj::<T>().map_err(|_| Refusal {
        code: RESP_ERR_INVALID_PARAMETER,
        why: format!(
            "request too short for its {}-byte body",
            std::mem::size_of::<T>()
        ),
    })
}

/// Whether the writable descriptors a refused chain yields are distinct
/// ranges of memory (a chain that loops yields the same ones again).
fn writable_ranges_disjoint<T>(chain: DescriptorChain<T>) -> bool
where
    T: Deref<Target = GuestMemoryMmap>,
{
    let mut ranges: Vec<(u64, u64)> = chain
        .filter(|d| d.is_write_only())
        .map(|d| (d.addr().0, d.addr().0.saturating_add(u64::from(d.len()))))
        .collect();
    ranges.sort_unstable();
    ranges.windows(2).all(|w| w[0].1 <= w[1].0)
}

/// Checks the shape of a whole chain before any of it is trusted.
pub fn validate_chain<T>(chain: DescriptorChain<T>) -> Result<(), ChainError>
where
    T: Deref<Target = GuestMemoryMmap>,
{
    let mut last: Option<Descriptor> = None;
    let mut seen_writable = false;
    for desc in chain {
        if desc.len() == 0 {
            return Err(ChainError::ZeroLength);
        }
        if desc.is_write_only() {
            seen_writable = true;
        } else if seen_writable {
            return Err(ChainError::ReadableAfterWritable);
        }
        last = Some(desc);
    }
    match last {
        None => Err(ChainError::Empty),
        // The iterator stops silently at its time-to-live or at an index past
        // the table; a last descriptor that still has NEXT set shows it.
        Some(d) if d.has_next() => Err(ChainError::Broken),
        Some(_) => Ok(()),
    }
}

/// The response header for `request`: fenced requests get their fence back.
fn reply_hdr(type_: u32, request: &CtrlHdr) -> CtrlHdr {
    let mut hdr = CtrlHdr {
        type_: Le32::from(type_),
        ..CtrlHdr::default()
    };
    let flags = request.flags.to_native();
    if flags & FLAG_FENCE != 0 {
        // Commands complete before their response is written, so the fence
        // is signalled by this very response.
        hdr.flags = Le32::from(flags & (FLAG_FENCE | FLAG_INFO_RING_IDX));
        hdr.fence_id = request.fence_id;
        hdr.ctx_id = request.ctx_id;
        if flags & FLAG_INFO_RING_IDX != 0 {
            hdr.ring_idx = request.ring_idx;
        }
    }
    hdr
}

fn err_hdr(code: u32, request: Option<&CtrlHdr>) -> CtrlHdr {
    match request {
        Some(r) => reply_hdr(code, r),
        None => CtrlHdr {
            type_: Le32::from(code),
            ..CtrlHdr::default()
        },
    }
}

/// Writes `resp` if it fits; otherwise an ERR_UNSPEC header if that fits;
/// otherwise nothing. Returns the bytes written.
fn write_response<R: ByteValued>(writer: &mut Writer<'_>, resp: &R) -> u32 {
    let fits = |n: usize| writer.available_bytes() >= n;
    let written = if fits(std::mem::size_of::<R>()) {
        writer.write_all(resp.as_slice())
    } else if fits(std::mem::size_of::<CtrlHdr>()) {
        writer.write_all(err_hdr(RESP_ERR_UNSPEC, None).as_slice())
    } else {
        return 0;
    };
    match written {
        Ok(()) => u32::try_from(writer.bytes_written()).unwrap_or(u32::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;
    use vm_memory::{Bytes, GuestAddress};

    const VRING_DESC_F_NEXT: u16 = 1;
    const VRING_DESC_F_WRITE: u16 = 2;
    const REQ: u64 = 0x10_000;
    const RESP: u64 = 0x20_000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).unwrap()
    }

    fn device() -> GpuDevice {
        let device = bare_device();
        device.set_acked_features(u64::MAX);
        device
    }

    fn bare_device() -> GpuDevice {
        GpuDevice::new(
            vec![
                ScanoutSize {
                    width: 1280,
                    height: 800,
                },
                ScanoutSize {
                    width: 640,
                    height: 480,
                },
            ],
            1 << 28,
            DisplayLink::none(),
            Link::none("render-worker"),
        )
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// Runs `descs` (a chain starting at descriptor 0) through the device.
    fn run(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> u32 {
        let vq = MockSplitQueue::new(mem, 16);
        for (i, d) in descs.iter().enumerate() {
            vq.desc_table().store(i as u16, *d).unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0u16);
        vq.avail().idx().store(1u16);
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(mem).unwrap().next().unwrap();
        device().process_chain(mem, chain, QueueKind::Control)
    }

    fn request(mem: &GuestMemoryMmap, type_: u32, flags: u32, extra: &[u8]) -> u32 {
        let hdr = CtrlHdr {
            type_: Le32::from(type_),
            flags: Le32::from(flags),
            fence_id: 42u64.into(),
            ctx_id: Le32::from(3),
            ring_idx: 1,
            padding: [0; 3],
        };
        mem.write_obj(hdr, GuestAddress(REQ)).unwrap();
        mem.write_slice(extra, GuestAddress(REQ + 24)).unwrap();
        (24 + extra.len()) as u32
    }

    fn response_hdr(mem: &GuestMemoryMmap) -> CtrlHdr {
        mem.read_obj(GuestAddress(RESP)).unwrap()
    }

    #[test]
    fn display_info_reports_each_scanout() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        let n = run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 1024, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n as usize, std::mem::size_of::<RespDisplayInfo>());
        let r: RespDisplayInfo = m.read_obj(GuestAddress(RESP)).unwrap();
        assert_eq!(r.hdr.type_.to_native(), RESP_OK_DISPLAY_INFO);
        assert_eq!(r.pmodes[0].r.width.to_native(), 1280);
        assert_eq!(r.pmodes[1].r.height.to_native(), 480);
        assert_eq!(r.pmodes[1].enabled.to_native(), 1);
        assert_eq!(r.pmodes[2].enabled.to_native(), 0);
    }

    #[test]
    fn fence_is_echoed() {
        let m = mem();
        let len = request(
            &m,
            CMD_GET_DISPLAY_INFO,
            FLAG_FENCE | FLAG_INFO_RING_IDX,
            &[],
        );
        run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 1024, VRING_DESC_F_WRITE, 0),
            ],
        );
        let h = response_hdr(&m);
        assert_eq!(h.flags.to_native(), FLAG_FENCE | FLAG_INFO_RING_IDX);
        assert_eq!(h.fence_id.to_native(), 42);
        assert_eq!(h.ctx_id.to_native(), 3);
        assert_eq!(h.ring_idx, 1);
    }

    #[test]
    fn unfenced_request_gets_no_fence() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 1024, VRING_DESC_F_WRITE, 0),
            ],
        );
        let h = response_hdr(&m);
        assert_eq!(h.flags.to_native(), 0);
        assert_eq!(h.fence_id.to_native(), 0);
    }

    #[test]
    fn edid_for_each_scanout_and_refused_past_them() {
        let m = mem();
        let len = request(&m, CMD_GET_EDID, 0, &[1, 0, 0, 0, 0, 0, 0, 0]);
        let chain = [
            desc(REQ, len, VRING_DESC_F_NEXT, 1),
            desc(RESP, 2048, VRING_DESC_F_WRITE, 0),
        ];
        run(&m, &chain);
        let r: RespEdid = m.read_obj(GuestAddress(RESP)).unwrap();
        assert_eq!(r.hdr.type_.to_native(), RESP_OK_EDID);
        assert_eq!(r.size.to_native(), 128);
        assert_eq!(r.edid[..128], edid::build(640, 480, 1));

        request(&m, CMD_GET_EDID, 0, &[2, 0, 0, 0, 0, 0, 0, 0]);
        run(&m, &chain);
        assert_eq!(
            response_hdr(&m).type_.to_native(),
            RESP_ERR_INVALID_PARAMETER
        );
    }

    #[test]
    fn a_command_of_a_feature_not_acked_gets_err_unspec() {
        let m = mem();
        let chain = |len| {
            [
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 2048, VRING_DESC_F_WRITE, 0),
            ]
        };
        let run_on = |dev: &GpuDevice, descs: &[RawDescriptor]| {
            let vq = MockSplitQueue::new(&m, 16);
            for (i, d) in descs.iter().enumerate() {
                vq.desc_table().store(i as u16, *d).unwrap();
            }
            vq.avail().ring().ref_at(0).unwrap().store(0u16);
            vq.avail().idx().store(1u16);
            let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
            let c = q.iter(&m).unwrap().next().unwrap();
            dev.process_chain(&m, c, QueueKind::Control)
        };
        let dev = bare_device();
        // EDID of scanout 0, without F_EDID acked, then with it.
        let len = request(&m, CMD_GET_EDID, 0, &[0; 8]);
        run_on(&dev, &chain(len));
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
        dev.set_acked_features(1 << F_EDID);
        run_on(&dev, &chain(len));
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_OK_EDID);
        // A blob without RESOURCE_BLOB, a context without VIRGL.
        for cmd in [CMD_RESOURCE_CREATE_BLOB, CMD_CTX_CREATE, CMD_SUBMIT_3D] {
            let len = request(&m, cmd, 0, &[0; 96]);
            run_on(&dev, &chain(len));
            assert_eq!(
                response_hdr(&m).type_.to_native(),
                RESP_ERR_UNSPEC,
                "{cmd:#x}"
            );
        }
    }

    #[test]
    fn unknown_and_unimplemented_commands_get_err_unspec() {
        let m = mem();
        for cmd in [0xdead, CMD_RESOURCE_CREATE_3D, CMD_TRANSFER_FROM_HOST_3D, 0] {
            let len = request(&m, cmd, 0, &[]);
            let n = run(
                &m,
                &[
                    desc(REQ, len, VRING_DESC_F_NEXT, 1),
                    desc(RESP, 64, VRING_DESC_F_WRITE, 0),
                ],
            );
            assert_eq!(n, 24);
            assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
        }
    }

    #[test]
    fn response_too_large_for_buffer_degrades_to_error_header() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        let n = run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 30, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 24);
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
        // No room even for a header: nothing written.
        let n = run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 8, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn short_request_gets_error() {
        let m = mem();
        let n = run(
            &m,
            &[
                desc(REQ, 8, VRING_DESC_F_NEXT, 1),
                desc(RESP, 64, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 24);
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    }

    #[test]
    fn looping_chain_is_refused() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        let n = run(&m, &[desc(REQ, len, VRING_DESC_F_NEXT, 0)]);
        assert_eq!(n, 0);
    }

    #[test]
    fn chain_past_the_table_is_refused_with_error_response() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        // Writable descriptor first would be out of order; here the writable
        // one is sound but its NEXT points past the 16-entry table.
        let n = run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 999),
            ],
        );
        assert_eq!(n, 24);
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    }

    #[test]
    fn a_looping_chain_gets_no_answer_written_around_its_loop() {
        let m = mem();
        request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        // One 21-byte writable descriptor that points at itself: the
        // iterator yields it until its time-to-live runs out.
        let n = run(
            &m,
            &[desc(RESP, 21, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0)],
        );
        assert_eq!(n, 0, "no answer claimed past the 21 bytes there are");
    }

    #[test]
    fn zero_length_and_out_of_memory_descriptors_are_refused() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        let n = run(
            &m,
            &[
                desc(REQ, 0, VRING_DESC_F_NEXT, 1),
                desc(RESP, 64, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 24);
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);

        let n = run(
            &m,
            &[
                desc(0xffff_ffff_0000, len, VRING_DESC_F_NEXT, 1),
                desc(RESP, 64, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 0);

        let n = run(
            &m,
            &[
                desc(REQ, len, VRING_DESC_F_NEXT, 1),
                desc(u64::MAX - 8, 64, VRING_DESC_F_WRITE, 0),
            ],
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn readable_after_writable_is_refused() {
        let m = mem();
        let len = request(&m, CMD_GET_DISPLAY_INFO, 0, &[]);
        let n = run(
            &m,
            &[
                desc(RESP, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
                desc(REQ, len, 0, 0),
            ],
        );
        // The writable part is sound, so the refusal is answered there.
        assert_eq!(n, 24);
        assert_eq!(response_hdr(&m).type_.to_native(), RESP_ERR_UNSPEC);
    }

    #[test]
    fn validate_accepts_well_formed_chain() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        vq.desc_table()
            .store(0, desc(REQ, 24, VRING_DESC_F_NEXT, 1))
            .unwrap();
        vq.desc_table()
            .store(1, desc(RESP, 24, VRING_DESC_F_WRITE, 0))
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0u16);
        vq.avail().idx().store(1u16);
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&m).unwrap().next().unwrap();
        assert_eq!(validate_chain(chain), Ok(()));
    }
}
