//! The front-end's host-visible shared memory region, as a VMM keeps it:
//! a reserved stretch of address space the size GET_SHMEM_CONFIG gave, into
//! which each VHOST_USER_BACKEND_SHMEM_MAP really maps the descriptor it
//! carries (`MAP_FIXED`), and each SHMEM_UNMAP puts the reservation back.
//! A test reads and writes the region as the guest would see it.
//!
//! The requests arrive on the back-end request channel, served with the
//! `vhost` crate's `FrontendReqHandler` on a thread of its own.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::VhostUserFrontend;
use vhost::vhost_user::{Frontend, FrontendReqHandler, HandlerResult, VhostUserFrontendReqHandler};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};

/// Where the harness puts the host-visible region in guest-physical
/// space, for the memory tables it sends (QEMU 11's x86 machines put the
/// BAR at 0xfc00000000).
pub const REGION_GUEST_ADDR: u64 = 0xfc_0000_0000;

/// What QEMU 11 does inside each SHMEM_MAP and SHMEM_UNMAP, before it
/// acknowledges it: its memory listener sees the mapping come or go and
/// tells the back-end, the mapping being guest memory too (a guest may put
/// virtqueue buffers there): ADD_MEM_REG / REM_MEM_REG where
/// CONFIGURE_MEM_SLOTS was negotiated, else a whole new SET_MEM_TABLE
/// (which QEMU cannot send past eight regions).
struct MemTables {
    frontend: Frontend,
    ram: Vec<VhostUserMemoryRegionInfo>,
    slots: bool,
}

/// The most regions a whole memory table carries from QEMU (its
/// VHOST_MEMORY_BASELINE_NREGIONS).
pub const TABLE_REGIONS: usize = 8;

/// A change of the guest memory the back-end is told of.
#[derive(Debug, Clone, Copy)]
enum Change {
    Added(u64),
    Removed { offset: u64, len: u64 },
}

/// One SHMEM_MAP or SHMEM_UNMAP as the front-end received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShmemEvent {
    Map {
        offset: u64,
        len: u64,
        writable: bool,
    },
    Unmap {
        offset: u64,
        len: u64,
    },
    Refused {
        offset: u64,
        len: u64,
    },
}

pub struct HostVisibleRegion {
    base: NonNull<std::ffi::c_void>,
    size: u64,
    state: Mutex<(BTreeMap<u64, u64>, Vec<ShmemEvent>)>,
    /// Each mapping's descriptor and offset in it, for the memory tables.
    files: Mutex<BTreeMap<u64, (OwnedFd, u64)>>,
    tables: Mutex<Option<MemTables>>,
    /// Changes held back while the front-end waits (see `hold_tables`).
    pending: Mutex<Vec<Change>>,
    /// While the front-end waits on a request of its own (RESET_DEVICE),
    /// it cannot send a table; it sends the latest when that returns.
    tables_held: Mutex<bool>,
    /// How long each map request waits before it is handled (a stalled
    /// VMM; see `stall_maps`).
    map_stall: Mutex<std::time::Duration>,
}

// SAFETY: the reservation is only ever changed under `state`'s lock, and
// reads and writes of it go through the checked methods below.
unsafe impl Send for HostVisibleRegion {}
// SAFETY: as above.
unsafe impl Sync for HostVisibleRegion {}

fn reserve_flags() -> MapFlags {
    MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS | MapFlags::MAP_NORESERVE
}

impl HostVisibleRegion {
    /// Reserves `size` bytes of address space, inaccessible until mapped.
    pub fn reserve(size: u64) -> Arc<HostVisibleRegion> {
        let len = NonZeroUsize::new(size as usize).expect("a non-empty region");
        // SAFETY: a fresh anonymous PROT_NONE mapping, placed by the kernel.
        let base = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_NONE, reserve_flags()) }
            .expect("reserve the host-visible region");
        Arc::new(HostVisibleRegion {
            base,
            size,
            state: Mutex::new((BTreeMap::new(), Vec::new())),
            files: Mutex::new(BTreeMap::new()),
            tables: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            tables_held: Mutex::new(false),
            map_stall: Mutex::new(std::time::Duration::ZERO),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// From now on, tell `frontend`'s back-end of each mapping inside the
    /// map and unmap requests, as QEMU 11 does: with memory slots when
    /// `slots` (CONFIGURE_MEM_SLOTS), else with a whole table of `ram` and
    /// every mapping.
    pub fn send_mem_tables(
        &self,
        frontend: Frontend,
        ram: Vec<VhostUserMemoryRegionInfo>,
        slots: bool,
    ) {
        *self.tables.lock().unwrap() = Some(MemTables {
            frontend,
            ram,
            slots,
        });
    }

    /// Lets go of the front-end (the connection is ending): the region
    /// holds no clone of it that would keep its socket open.
    pub fn stop_mem_tables(&self) {
        *self.tables.lock().unwrap() = None;
    }

    /// Holds changes back (true) while the test thread's front-end waits
    /// for an answer, or sends what was held (false).
    pub fn hold_tables(&self, hold: bool) {
        *self.tables_held.lock().unwrap() = hold;
        if !hold {
            let pending = std::mem::take(&mut *self.pending.lock().unwrap());
            for change in pending {
                self.apply(change).expect("memory change");
            }
        }
    }

    /// Makes every later map request wait `stall` before it is handled
    /// and answered: a VMM whose main loop is stuck, whose answers come
    /// late or not in time at all.
    pub fn stall_maps(&self, stall: std::time::Duration) {
        *self.map_stall.lock().unwrap() = stall;
    }

    /// The region info of the mapping at `offset`, if it is still mapped.
    fn region_info(&self, offset: u64) -> Option<VhostUserMemoryRegionInfo> {
        let len = *self.state.lock().unwrap().0.get(&offset)?;
        let files = self.files.lock().unwrap();
        let (fd, fd_offset) = files.get(&offset)?;
        Some(VhostUserMemoryRegionInfo {
            guest_phys_addr: REGION_GUEST_ADDR + offset,
            memory_size: len,
            userspace_addr: self.address(offset) as u64,
            mmap_offset: *fd_offset,
            mmap_handle: fd.as_raw_fd(),
        })
    }

    fn announce(&self, change: Change) -> Result<(), String> {
        if *self.tables_held.lock().unwrap() {
            self.pending.lock().unwrap().push(change);
            return Ok(());
        }
        self.apply(change)
    }

    fn apply(&self, change: Change) -> Result<(), String> {
        let mut tables = self.tables.lock().unwrap();
        let Some(t) = tables.as_mut() else {
            return Ok(());
        };
        if t.slots {
            return match change {
                Change::Added(offset) => match self.region_info(offset) {
                    Some(info) => t.frontend.add_mem_region(&info).map(|_| ()),
                    None => Ok(()),
                },
                Change::Removed { offset, len } => {
                    t.frontend.remove_mem_region(&VhostUserMemoryRegionInfo {
                        guest_phys_addr: REGION_GUEST_ADDR + offset,
                        memory_size: len,
                        userspace_addr: self.address(offset) as u64,
                        mmap_offset: 0,
                        mmap_handle: -1,
                    })
                }
            }
            .map_err(|e| format!("{change:?} inside the map request: {e}"));
        }
        let offsets: Vec<u64> = self.state.lock().unwrap().0.keys().copied().collect();
        let mut regions = t.ram.clone();
        regions.extend(offsets.into_iter().filter_map(|o| self.region_info(o)));
        if regions.len() > TABLE_REGIONS {
            // QEMU logs "Failed preparing vhost-user memory table msg"
            // and sends nothing; the map itself goes on.
            return Ok(());
        }
        t.frontend
            .set_mem_table(&regions)
            .map(|_| ())
            .map_err(|e| format!("SET_MEM_TABLE inside the map request: {e}"))
    }

    pub fn events(&self) -> Vec<ShmemEvent> {
        self.state.lock().unwrap().1.clone()
    }

    /// The address of `offset` in this process.
    pub fn address(&self, offset: u64) -> usize {
        self.base.as_ptr() as usize + offset as usize
    }

    /// Whether `offset..offset+len` lies inside one live mapping.
    fn mapped(&self, offset: u64, len: u64) -> bool {
        let state = self.state.lock().unwrap();
        state
            .0
            .range(..=offset)
            .next_back()
            .is_some_and(|(start, mlen)| offset + len <= start + mlen)
    }

    /// Reads what the guest would see at `offset`; None where nothing is
    /// mapped (reading there would fault).
    pub fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        if !self.mapped(offset, len as u64) {
            return None;
        }
        let mut out = vec![0u8; len];
        // SAFETY: the range lies inside a live mapping (checked above) of
        // this reservation, which lives as long as self.
        unsafe {
            std::ptr::copy_nonoverlapping(self.address(offset) as *const u8, out.as_mut_ptr(), len)
        };
        Some(out)
    }

    /// Writes as the guest would; false where nothing is mapped.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        if !self.mapped(offset, data.len() as u64) {
            return false;
        }
        // SAFETY: as in read; every map this harness makes of a writable
        // request is PROT_WRITE, and tests write only where they asked for it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.address(offset) as *mut u8,
                data.len(),
            )
        };
        true
    }

    /// What /proc/self/maps says is at `offset`: the mapped file's name, or
    /// "" for the anonymous reservation.
    pub fn backing_name(&self, offset: u64) -> String {
        let at = self.address(offset);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let range = fields.next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).unwrap_or(0),
                usize::from_str_radix(hi, 16).unwrap_or(0),
            );
            if (lo..hi).contains(&at) {
                return fields.nth(4).unwrap_or("").to_string();
            }
        }
        panic!("offset {offset:#x} is not in /proc/self/maps at all");
    }

    fn map(&self, req: &VhostUserMMap, fd: BorrowedFd<'_>) -> Result<(), String> {
        let (shmid, offset, len, fd_offset, flags) =
            (req.shmid, req.shm_offset, req.len, req.fd_offset, req.flags);
        if shmid != 1 {
            return Err(format!("shmid {shmid}: only 1 exists"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.size && len > 0)
            .ok_or(format!("{offset:#x}+{len:#x} is not inside the region"))?;
        let mut state = self.state.lock().unwrap();
        if state
            .0
            .range(..end)
            .next_back()
            .is_some_and(|(s, l)| s + l > offset)
        {
            return Err(format!("{offset:#x}..{end:#x} overlaps a mapping"));
        }
        let writable = flags & VhostUserMMapFlags::WRITABLE.bits() != 0;
        let mut prot = ProtFlags::PROT_READ;
        if writable {
            prot |= ProtFlags::PROT_WRITE;
        }
        let at = NonZeroUsize::new(self.address(offset)).unwrap();
        // SAFETY: MAP_FIXED over part of our own reservation (checked to be
        // inside it and over no other mapping), which nothing else uses.
        unsafe {
            mmap(
                Some(at),
                NonZeroUsize::new(len as usize).unwrap(),
                prot,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                fd,
                fd_offset as i64,
            )
        }
        .map_err(|e| format!("mmap: {e}"))?;
        state.0.insert(offset, len);
        state.1.push(ShmemEvent::Map {
            offset,
            len,
            writable,
        });
        drop(state);
        let owned = fd.try_clone_to_owned().map_err(|e| format!("dup: {e}"))?;
        self.files
            .lock()
            .unwrap()
            .insert(offset, (owned, fd_offset));
        self.announce(Change::Added(offset))
    }

    fn unmap(&self, req: &VhostUserMMap) -> Result<(), String> {
        let (offset, len) = (req.shm_offset, req.len);
        let mut state = self.state.lock().unwrap();
        if state.0.get(&offset) != Some(&len) {
            return Err(format!("{offset:#x}+{len:#x} is not one earlier mapping"));
        }
        self.reserve_again(offset, len)?;
        state.0.remove(&offset);
        state.1.push(ShmemEvent::Unmap { offset, len });
        drop(state);
        self.files.lock().unwrap().remove(&offset);
        self.announce(Change::Removed { offset, len })
    }

    /// Puts the reservation back over the mapping at `offset`.
    fn reserve_again(&self, offset: u64, len: u64) -> Result<(), String> {
        let at = NonZeroUsize::new(self.address(offset)).unwrap();
        // SAFETY: puts the reservation back over a mapping this region made.
        unsafe {
            mmap_anonymous(
                Some(at),
                NonZeroUsize::new(len as usize).unwrap(),
                ProtFlags::PROT_NONE,
                reserve_flags() | MapFlags::MAP_FIXED,
            )
        }
        .map(|_| ())
        .map_err(|e| format!("mmap: {e}"))
    }

    /// Drops every mapping on the front-end's own account, as QEMU 11
    /// does at a device reset; no event is recorded (no request came), but
    /// the back-end is told the memory went.
    pub fn drop_all(&self) {
        let mut state = self.state.lock().unwrap();
        for (&offset, &len) in &state.0 {
            self.reserve_again(offset, len)
                .expect("put the reservation back");
        }
        let dropped: Vec<(u64, u64)> = std::mem::take(&mut state.0).into_iter().collect();
        drop(state);
        self.files.lock().unwrap().clear();
        // Its memory listener sees them go, as with any unmap.
        for (offset, len) in dropped {
            self.announce(Change::Removed { offset, len })
                .expect("memory change");
        }
    }

    fn refuse(&self, req: &VhostUserMMap, why: String) -> std::io::Error {
        let (offset, len) = (req.shm_offset, req.len);
        self.state
            .lock()
            .unwrap()
            .1
            .push(ShmemEvent::Refused { offset, len });
        std::io::Error::other(why)
    }
}

impl Drop for HostVisibleRegion {
    fn drop(&mut self) {
        // SAFETY: the whole reservation, made in reserve(); nothing uses it
        // after the last reference.
        let _ = unsafe { munmap(self.base, self.size as usize) };
    }
}

/// The handler the back-end request thread runs; with no region (SHMEM
/// not negotiated, as with QEMU 10) it refuses every map request.
pub struct Shmem(pub Option<Arc<HostVisibleRegion>>);

impl VhostUserFrontendReqHandler for Shmem {
    fn shmem_map(&self, req: &VhostUserMMap, fd: &dyn AsRawFd) -> HandlerResult<u64> {
        let region = self
            .0
            .as_ref()
            .ok_or_else(|| std::io::Error::other("SHMEM was not negotiated"))?;
        let stall = *region.map_stall.lock().unwrap();
        std::thread::sleep(stall);
        // SAFETY: the descriptor came with the request and stays open for
        // the duration of this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
        region.map(req, fd).map_err(|why| region.refuse(req, why))?;
        Ok(0)
    }

    fn shmem_unmap(&self, req: &VhostUserMMap) -> HandlerResult<u64> {
        let region = self
            .0
            .as_ref()
            .ok_or_else(|| std::io::Error::other("SHMEM was not negotiated"))?;
        region.unmap(req).map_err(|why| region.refuse(req, why))?;
        Ok(0)
    }
}

/// Starts serving back-end requests; returns the handler, whose
/// `get_tx_raw_fd()` goes to the back-end with SET_BACKEND_REQ_FD.
pub fn serve(
    region: Option<Arc<HostVisibleRegion>>,
) -> (FrontendReqHandler<Shmem>, std::os::fd::RawFd) {
    let mut handler = FrontendReqHandler::new(Arc::new(Shmem(region))).expect("socket pair");
    handler.set_reply_ack_flag(true);
    let fd = handler.get_tx_raw_fd();
    (handler, fd)
}
