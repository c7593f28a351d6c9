//! The broker's display thread: the only code that writes to the
//! front-end's display socket (QEMU's `VHOST_USER_GPU_SET_SOCKET`).
//!
//! gpu-worker asks for display output over a per-connection ipc channel
//! ([`ipc::DisplayRequest`]); this thread checks every request against what
//! it has been told (scanouts, shared surfaces and their sizes) and speaks
//! the vhost-user-gpu protocol through the `vhost` crate's `GpuBackend`.
//!
//! Pixels: a resource's memory is a sealed memfd gpu-worker shares once;
//! the broker maps it read-only and copies each flushed rectangle straight
//! into the `UPDATE` message, converting to the display's x8r8g8b8 on the
//! way. So a flush costs one copy here (as in QEMU's own back-end), and no
//! pixel crosses ipc. Why the broker, not gpu-worker, writes to QEMU: the
//! `vhost` crate hands the display socket over only as a `GpuBackend`, and
//! the broker is where every message to the VMM is checked. The cost was
//! measured by `benches` transfer-2d (see ARCHITECTURE.md).
//!
//! It runs on its own thread because QEMU answers display requests from
//! its main loop, which can be blocked waiting on a vhost-user reply from
//! the front-end thread: the two must never wait on each other.

use ipc::LockExt;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use ipc::{
    Channel, DisplayMode, DisplayRequest, DisplayValue, PixelRect, Reply, Role, SharedSurface,
};
use log::{info, warn};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use vhost::vhost_user::gpu_message::{
    VhostUserGpuCursorPos, VhostUserGpuCursorUpdate, VhostUserGpuEdidRequest, VhostUserGpuScanout,
    VhostUserGpuUpdate,
};
use vhost::vhost_user::message::VhostUserU64;
use vhost::vhost_user::GpuBackend;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

/// The front-end's display socket, as the vhost-user session received it.
/// QEMU sends a new one on every DRIVER_OK; each gets a new generation.
/// Beside it, a duplicate of its descriptor, for cutting it off when the
/// VMM does not answer in time (crate::watchdog).
#[derive(Default)]
pub struct DisplaySocket {
    current: Mutex<Option<(u64, GpuBackend, crate::watchdog::Cutoff)>>,
    /// The duplicate the front-end thread peeked from the SET_SOCKET
    /// message being handled; the next `set` takes it.
    peeked: Mutex<crate::watchdog::Cutoff>,
}

impl DisplaySocket {
    /// The duplicate of the socket the next [`DisplaySocket::set`] brings.
    pub fn expect(&self, dup: OwnedFd) {
        *self.peeked.lock_or_recover() = Some(Arc::new(dup));
    }

    pub fn set(&self, display: GpuBackend) {
        let dup = self.peeked.lock_or_recover().take();
        let mut current = self.current.lock_or_recover();
        let generation = current.as_ref().map_or(1, |(g, _, _)| g + 1);
        *current = Some((generation, display, dup));
    }

    fn get(&self) -> Option<(u64, GpuBackend)> {
        let current = self.current.lock_or_recover();
        current.as_ref().map(|(g, b, _)| (*g, b.clone()))
    }

    /// The current socket's duplicate, to arm a deadline with.
    fn cutoff(&self) -> Option<Arc<OwnedFd>> {
        let current = self.current.lock_or_recover();
        current.as_ref().and_then(|(_, _, dup)| dup.clone())
    }
}

type WorkerChannel = Channel<Answer, DisplayRequest>;

/// VHOST_USER_GPU_PROTOCOL_F_EDID: bit 0. (vhost 0.18's
/// `VhostUserGpuProtocolFeatures` declares `EDID = 0` as the flag's value,
/// not its bit, so `contains(EDID)` holds for every set: not usable.)
const PROTOCOL_F_EDID: u64 = 1 << 0;

/// Serves one connection's display channel until gpu-worker closes it or
/// the next connection's work arrives on `next` (returned).
pub fn serve<W>(
    channel: WorkerChannel,
    socket: Arc<DisplaySocket>,
    scanouts: usize,
    max_bytes: u64,
    next: &std::sync::mpsc::Receiver<W>,
) -> Option<W> {
    let mut display = Display::new(socket, scanouts, max_bytes);
    crate::serve::requests(
        &channel,
        "gpu-worker's display",
        Role::GpuWorker,
        next,
        |request, fd| {
            // Every display message of one request, replies included, within
            // the VMM's deadline: past it the socket is cut off and marked
            // failed, and gpu-worker gets its answer before its own deadline.
            let socket = display.socket.cutoff();
            crate::watchdog::within(
                socket.as_ref(),
                "the display socket",
                ipc::deadline::VMM_REPLY,
                || display.handle(request, fd),
            )
        },
    )
}

/// A resource's pixels, mapped read-only.
struct Surface {
    info: SharedSurface,
    map: MmapRegion,
}

#[derive(Default, Clone, Copy)]
struct Scanout {
    /// The shared resource and the rectangle of it this scanout shows.
    source: Option<(u32, PixelRect)>,
    /// The size the display was last told (SCANOUT) for this socket.
    told: Option<(u32, u32)>,
}

/// What the display has been told, and the socket it was told on.
struct Display {
    socket: Arc<DisplaySocket>,
    /// The generation of the socket `scanouts[..].told` and `edid` refer to.
    generation: u64,
    /// A generation whose socket failed: not used again.
    broken: u64,
    /// Whether the display offered the EDID protocol feature (None: not
    /// asked yet on this socket).
    edid: Option<bool>,
    /// The display's last reported modes.
    modes: Option<Vec<DisplayMode>>,
    scanouts: Vec<Scanout>,
    surfaces: BTreeMap<u32, Surface>,
    mapped_bytes: u64,
    max_bytes: u64,
    /// The pixels of one UPDATE, reused.
    buf: Vec<u8>,
}

/// What the display thread answers a request.
type Answer = Reply<DisplayValue>;

fn refused(why: impl Into<String>) -> Answer {
    Reply::refused(why)
}

impl Display {
    fn new(socket: Arc<DisplaySocket>, scanouts: usize, max_bytes: u64) -> Self {
        Display {
            socket,
            generation: 0,
            broken: 0,
            edid: None,
            modes: None,
            scanouts: vec![Scanout::default(); scanouts],
            surfaces: BTreeMap::new(),
            mapped_bytes: 0,
            max_bytes,
            buf: Vec::new(),
        }
    }

    /// The display socket, if there is a working one. A new socket starts
    /// with no scanouts and an unasked protocol-feature handshake.
    fn output(&mut self) -> Option<GpuBackend> {
        let (generation, backend) = self.socket.get()?;
        if generation != self.generation {
            self.generation = generation;
            self.edid = None;
            self.modes = None;
            for s in &mut self.scanouts {
                s.told = None;
            }
        }
        (generation != self.broken).then_some(backend)
    }

    /// Marks the current socket failed after `what` went wrong on it.
    fn fail(&mut self, what: &str, e: std::io::Error) {
        // A front-end that closed the socket is ending the connection (QEMU
        // closes it as it quits, while the guest may still be flushing):
        // said, not warned of. The vhost crate's display channel hands its
        // errors over as text (gpu_backend_req.rs, io_err_convert_fn), so
        // the close is told by its message.
        let closed = e.to_string().contains("Broken pipe")
            || e.to_string().contains("Connection reset")
            || matches!(
                e.raw_os_error(),
                Some(nix::libc::EPIPE | nix::libc::ECONNRESET)
            );
        if closed {
            info!("display socket: {what}: the front-end closed it; no display output until it sends a new one");
        } else {
            warn!("display socket: {what}: {e}; no display output until the front-end sends a new one");
        }
        self.broken = self.generation;
    }

    fn handle(&mut self, request: DisplayRequest, fd: Option<OwnedFd>) -> Answer {
        match request {
            DisplayRequest::GetDisplayInfo => {
                Reply::Value(DisplayValue::Modes(self.display_info()))
            }
            DisplayRequest::GetEdid { scanout } => self.edid(scanout),
            DisplayRequest::ShareSurface(info) => match fd {
                Some(fd) => self.share(info, fd),
                None => refused("ShareSurface without its descriptor"),
            },
            DisplayRequest::ReleaseSurface { resource_id } => self.release(resource_id),
            DisplayRequest::SetScanout { scanout, source } => self.set_scanout(scanout, source),
            DisplayRequest::Flush { scanout, rect } => self.flush(scanout, rect),
            DisplayRequest::CursorUpdate {
                scanout,
                x,
                y,
                hot_x,
                hot_y,
                format,
                image,
            } => self.cursor_update(scanout, (x, y), (hot_x, hot_y), format, image),
            DisplayRequest::CursorMove { scanout, x, y } => self.cursor_pos(scanout, x, y, true),
            DisplayRequest::CursorHide { scanout } => self.cursor_pos(scanout, 0, 0, false),
        }
    }

    /// The protocol-feature handshake, once per socket: EDID is the only
    /// feature the broker uses.
    fn handshake(&mut self, out: &GpuBackend) -> bool {
        if let Some(edid) = self.edid {
            return edid;
        }
        let offered = match out.get_protocol_features() {
            Ok(f) => f.value,
            Err(e) => {
                self.fail("GET_PROTOCOL_FEATURES", e);
                return false;
            }
        };
        let wanted = offered & PROTOCOL_F_EDID;
        if let Err(e) = out.set_protocol_features(&VhostUserU64::new(wanted)) {
            self.fail("SET_PROTOCOL_FEATURES", e);
            return false;
        }
        let edid = wanted != 0;
        info!("display socket: protocol features {offered:#x} offered, EDID {edid}");
        self.edid = Some(edid);
        edid
    }

    fn display_info(&mut self) -> Option<Vec<DisplayMode>> {
        let out = self.output()?;
        self.handshake(&out);
        if self.broken == self.generation {
            return None;
        }
        let info = match out.get_display_info() {
            Ok(i) => i,
            Err(e) => {
                self.fail("GET_DISPLAY_INFO", e);
                return None;
            }
        };
        let modes: Vec<DisplayMode> = info
            .pmodes
            .iter()
            .take(self.scanouts.len())
            .map(|m| DisplayMode {
                enabled: m.enabled != 0,
                rect: PixelRect {
                    x: m.r.x,
                    y: m.r.y,
                    width: m.r.width,
                    height: m.r.height,
                },
            })
            .collect();
        self.modes = Some(modes.clone());
        Some(modes)
    }

    fn edid(&mut self, scanout: u32) -> Answer {
        let Some(index) = self.scanout_index(scanout) else {
            return refused(format!("EDID of scanout {scanout}, which does not exist"));
        };
        let Some(out) = self.output() else {
            return Reply::Value(DisplayValue::Edid(None));
        };
        if !self.handshake(&out) {
            return Reply::Value(DisplayValue::Edid(None));
        }
        // QEMU never answers GET_EDID for a scanout past its own count, and
        // that count is not told: ask only for scanouts it reports enabled.
        if self.modes.is_none() {
            self.display_info();
        }
        let enabled = self
            .modes
            .as_ref()
            .and_then(|m| m.get(index))
            .is_some_and(|m| m.enabled);
        if !enabled || self.broken == self.generation {
            return Reply::Value(DisplayValue::Edid(None));
        }
        match out.get_edid(&VhostUserGpuEdidRequest {
            scanout_id: scanout,
        }) {
            Ok(resp) => {
                let len = (resp.size as usize).min(resp.edid.len());
                Reply::Value(DisplayValue::Edid(
                    (len > 0).then(|| resp.edid[..len].to_vec()),
                ))
            }
            Err(e) => {
                self.fail("GET_EDID", e);
                Reply::Value(DisplayValue::Edid(None))
            }
        }
    }

    fn scanout_index(&self, scanout: u32) -> Option<usize> {
        usize::try_from(scanout)
            .ok()
            .filter(|i| *i < self.scanouts.len())
    }

    /// Maps a resource's memory after checking that it is what gpu-worker
    /// says: a memfd sealed against shrinking, at least as large as the
    /// surface, within the broker's share of `--max-resource-memory`.
    fn share(&mut self, info: SharedSurface, fd: OwnedFd) -> Answer {
        let id = info.resource_id;
        if self.surfaces.contains_key(&id) {
            return refused(format!("resource {id} is already shared"));
        }
        if !(1..=wire::MAX_SCANOUT_DIMENSION).contains(&info.width)
            || !(1..=wire::MAX_SCANOUT_DIMENSION).contains(&info.height)
            || !wire::is_2d_format(info.format)
        {
            return refused(format!("surface {info:?} has no valid size or format"));
        }
        let size = info
            .width
            .checked_mul(wire::BYTES_PER_PIXEL)
            .filter(|row| *row <= info.stride)
            .and_then(|_| u64::from(info.stride).checked_mul(u64::from(info.height)));
        let Some(size) = size else {
            return refused(format!(
                "surface {info:?}: stride too small or size overflows"
            ));
        };
        if self.mapped_bytes.saturating_add(size) > self.max_bytes {
            return refused(format!(
                "sharing {size} more bytes would pass --max-resource-memory ({} mapped)",
                self.mapped_bytes
            ));
        }
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)
            .map(SealFlag::from_bits_truncate)
            .unwrap_or(SealFlag::empty());
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return refused(format!(
                "resource {id}'s descriptor is not a memfd sealed against shrinking"
            ));
        }
        // fstat, not File::metadata: std tries statx first, which the
        // broker's policy does not need otherwise.
        let actual = nix::sys::stat::fstat(&fd).map_or(0, |st| st.st_size.max(0) as u64);
        let file = File::from(fd);
        if actual < size {
            return refused(format!(
                "resource {id}'s memfd holds {actual} bytes, the surface needs {size}"
            ));
        }
        let Ok(len) = usize::try_from(size) else {
            return refused("surface larger than the address space");
        };
        let map = match MmapRegion::build(
            Some(FileOffset::new(file, 0)),
            len,
            nix::libc::PROT_READ,
            nix::libc::MAP_SHARED,
        ) {
            Ok(m) => m,
            Err(e) => return refused(format!("cannot map resource {id}: {e}")),
        };
        self.mapped_bytes += size;
        self.surfaces.insert(id, Surface { info, map });
        Reply::Done
    }

    fn release(&mut self, id: u32) -> Answer {
        let Some(surface) = self.surfaces.remove(&id) else {
            return refused(format!("resource {id} was never shared"));
        };
        self.mapped_bytes = self.mapped_bytes.saturating_sub(surface.map.size() as u64);
        // What showed it shows nothing now, as after SET_SCANOUT with
        // resource 0.
        for i in 0..self.scanouts.len() {
            if self.scanouts[i].source.is_some_and(|(r, _)| r == id) {
                self.disable(i);
            }
        }
        Reply::Done
    }

    fn disable(&mut self, index: usize) {
        self.scanouts[index].source = None;
        if self.scanouts[index].told.take().is_some() {
            if let Some(out) = self.output() {
                let off = VhostUserGpuScanout {
                    scanout_id: index as u32,
                    width: 0,
                    height: 0,
                };
                if let Err(e) = out.set_scanout(&off) {
                    self.fail("SCANOUT", e);
                }
            }
        }
    }

    fn set_scanout(&mut self, scanout: u32, source: Option<(u32, PixelRect)>) -> Answer {
        let Some(index) = self.scanout_index(scanout) else {
            return refused(format!("scanout {scanout} does not exist"));
        };
        let Some((id, rect)) = source else {
            self.disable(index);
            return Reply::Done;
        };
        let Some(surface) = self.surfaces.get(&id) else {
            return refused(format!("scanout {scanout}: resource {id} was never shared"));
        };
        if !rect.fits_in(surface.info.width, surface.info.height) {
            return refused(format!(
                "scanout {scanout}: {rect:?} is outside resource {id}"
            ));
        }
        self.scanouts[index].source = Some((id, rect));
        self.tell_size(index);
        Reply::Done
    }

    /// Sends SCANOUT if the display does not have this scanout's size yet
    /// (QEMU makes a new surface on each SCANOUT: not on every page flip).
    fn tell_size(&mut self, index: usize) -> bool {
        let Some(out) = self.output() else {
            return false;
        };
        let Some((_, rect)) = self.scanouts[index].source else {
            return false;
        };
        let size = (rect.width, rect.height);
        if self.scanouts[index].told == Some(size) {
            return true;
        }
        let msg = VhostUserGpuScanout {
            scanout_id: index as u32,
            width: size.0,
            height: size.1,
        };
        match out.set_scanout(&msg) {
            Ok(()) => {
                self.scanouts[index].told = Some(size);
                true
            }
            Err(e) => {
                self.fail("SCANOUT", e);
                false
            }
        }
    }

    fn flush(&mut self, scanout: u32, rect: PixelRect) -> Answer {
        let Some(index) = self.scanout_index(scanout) else {
            return refused(format!("flush of scanout {scanout}, which does not exist"));
        };
        let Some((id, source)) = self.scanouts[index].source else {
            return refused(format!("flush of scanout {scanout}, which shows nothing"));
        };
        if !rect.fits_in(source.width, source.height) {
            return refused(format!(
                "flush of {rect:?} on scanout {scanout}, which is {}x{}",
                source.width, source.height
            ));
        }
        let Some(out) = self.output() else {
            return Reply::Done;
        };
        if !self.tell_size(index) {
            return Reply::Done;
        }
        let Some(surface) = self.surfaces.get(&id) else {
            return refused(format!("scanout {scanout} shows unshared resource {id}"));
        };
        // Inside the scanout, which is inside the surface (both checked):
        // none of this overflows or leaves the mapping.
        let stride = surface.info.stride as usize;
        let bpp = wire::BYTES_PER_PIXEL as usize;
        let (x, y) = ((source.x + rect.x) as usize, (source.y + rect.y) as usize);
        let (w, h) = (rect.width as usize, rect.height as usize);
        let row = w * bpp;
        let buf = &mut self.buf;
        buf.resize(row * h, 0);
        let copied = if row == stride {
            surface
                .map
                .get_slice(y * stride, row * h)
                .map(|s| s.copy_to(&mut buf[..]))
                .is_ok()
        } else {
            buf.chunks_exact_mut(row).enumerate().all(|(i, dst)| {
                surface
                    .map
                    .get_slice((y + i) * stride + x * bpp, row)
                    .map(|s| s.copy_to(dst))
                    .is_ok()
            })
        };
        if !copied {
            return refused(format!("flush of {rect:?} reaches outside resource {id}"));
        }
        to_xrgb(surface.info.format, buf);
        let update = VhostUserGpuUpdate {
            scanout_id: scanout,
            x: rect.x,
            y: rect.y,
            width: rect.width,
            height: rect.height,
        };
        if let Err(e) = out.update_scanout(&update, buf) {
            self.fail("UPDATE", e);
        }
        Reply::Done
    }

    fn cursor_update(
        &mut self,
        scanout: u32,
        (x, y): (u32, u32),
        (hot_x, hot_y): (u32, u32),
        format: u32,
        mut image: Vec<u8>,
    ) -> Answer {
        if self.scanout_index(scanout).is_none() {
            return refused(format!("cursor on scanout {scanout}, which does not exist"));
        }
        if !wire::is_2d_format(format) || hot_x >= wire::CURSOR_SIZE || hot_y >= wire::CURSOR_SIZE {
            return refused(format!(
                "cursor of format {format}, hot spot ({hot_x}, {hot_y})"
            ));
        }
        let Ok(data) = <&mut [u8; wire::CURSOR_BYTES]>::try_from(image.as_mut_slice()) else {
            return refused(format!(
                "cursor image of {} bytes, not {}",
                image.len(),
                wire::CURSOR_BYTES
            ));
        };
        let Some(out) = self.output() else {
            return Reply::Done;
        };
        to_xrgb(format, data);
        let msg = VhostUserGpuCursorUpdate {
            pos: VhostUserGpuCursorPos {
                scanout_id: scanout,
                x,
                y,
            },
            hot_x,
            hot_y,
        };
        if let Err(e) = out.cursor_update(&msg, data) {
            self.fail("CURSOR_UPDATE", e);
        }
        Reply::Done
    }

    fn cursor_pos(&mut self, scanout: u32, x: u32, y: u32, visible: bool) -> Answer {
        if self.scanout_index(scanout).is_none() {
            return refused(format!("cursor on scanout {scanout}, which does not exist"));
        }
        let Some(out) = self.output() else {
            return Reply::Done;
        };
        let pos = VhostUserGpuCursorPos {
            scanout_id: scanout,
            x,
            y,
        };
        let sent = if visible {
            out.cursor_pos(&pos)
        } else {
            out.cursor_pos_hide(&pos)
        };
        if let Err(e) = sent {
            self.fail("CURSOR_POS", e);
        }
        Reply::Done
    }
}

/// Rewrites pixels of a 2D `format` in place as the display's x8r8g8b8
/// (bytes B, G, R, X/A in memory), which is what QEMU's UPDATE and
/// CURSOR_UPDATE carry. B8G8R8 formats (what Linux uses) are left as they
/// are.
fn to_xrgb(format: u32, pixels: &mut [u8]) {
    let convert: fn(u32) -> u32 = match format {
        // Bytes A R G B: the little-endian word is B<<24|G<<16|R<<8|A.
        wire::FORMAT_A8R8G8B8_UNORM | wire::FORMAT_X8R8G8B8_UNORM => u32::swap_bytes,
        // Bytes R G B A: swap R and B.
        wire::FORMAT_R8G8B8A8_UNORM | wire::FORMAT_R8G8B8X8_UNORM => {
            |v| (v & 0xff00_ff00) | (v >> 16 & 0xff) | (v & 0xff) << 16
        }
        // Bytes A B G R: the word R<<24|G<<16|B<<8|A rotated right by 8.
        wire::FORMAT_X8B8G8R8_UNORM | wire::FORMAT_A8B8G8R8_UNORM => |v| v.rotate_right(8),
        _ => return,
    };
    for px in pixels.chunks_exact_mut(4) {
        let v = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
        px.copy_from_slice(&convert(v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
