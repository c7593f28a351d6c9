//! The broker's mapper thread: the only code that asks the VMM to map
//! anything into the guest (`VHOST_USER_BACKEND_SHMEM_MAP` / `_UNMAP` on
//! the back-end request channel).
//!
//! render-worker, which holds the blobs, asks over a per-connection map
//! channel ([`ipc::MapRequest`]). Before the VMM sees a request the broker
//! checks it against the host-visible region (`--shm-size`) and every live
//! mapping: page-aligned offset and length, no wrap, inside the region, no
//! overlap, one mapping per resource, and a descriptor that is a regular
//! file holding at least that many bytes. A compromised render-worker can
//! map its own memory into the guest's region, which is its job, and
//! nothing else: not outside the region, not over another mapping.

use ipc::LockExt;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipc::limited_warn;
use ipc::ratelimit::LogLimiter;
use ipc::{Channel, MapRequest, Nothing, Reply, Role};
use log::{info, warn};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

/// `VIRTIO_GPU_SHM_ID_HOST_VISIBLE`.
pub const SHMID_HOST_VISIBLE: u8 = 1;
/// Mappings are made in pages.
pub const PAGE: u64 = 4096;
/// Most blob mappings live at once. Each is a memory slot of the VM in
/// QEMU (KVM has a few hundred to a few thousand) and an entry of every
/// memory table it sends: a worker that mapped without end would exhaust
/// them; a desktop guest keeps far fewer (one per mapped buffer).
pub const MAX_MAPPINGS: usize = 256;

/// The host-visible region as one front-end connection set it up: its size
/// and, once the front-end sent it, the back-end request channel.
pub struct HostVisible {
    pub size: u64,
    channel: Mutex<Option<(Backend, bool, crate::watchdog::Cutoff)>>,
    /// The duplicate the front-end thread peeked from the
    /// SET_BACKEND_REQ_FD message being handled.
    peeked: Mutex<crate::watchdog::Cutoff>,
    /// Bumped each time the front-end dropped every mapping on its own
    /// (QEMU 11's generic device does at a device reset, and sends no
    /// RESET_DEVICE): the mapper then forgets its mappings, and answers
    /// render-worker's unmaps of them without asking the front-end.
    dropped: AtomicU64,
}

impl HostVisible {
    pub fn new(size: u64) -> Self {
        HostVisible {
            size,
            channel: Mutex::new(None),
            peeked: Mutex::new(None),
            dropped: AtomicU64::new(0),
        }
    }

    /// The front-end has dropped every mapping itself.
    pub fn frontend_dropped_all(&self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }

    /// The front-end's back-end request channel, and whether it negotiated
    /// SHMEM.
    pub fn set_channel(&self, backend: Backend, shmem: bool) {
        let dup = self.peeked.lock_or_recover().take();
        *self.channel.lock_or_recover() = Some((backend, shmem, dup));
    }

    /// The duplicate of the channel the next [`HostVisible::set_channel`]
    /// brings, for cutting it off when the VMM does not answer in time.
    pub fn expect(&self, dup: OwnedFd) {
        *self.peeked.lock_or_recover() = Some(Arc::new(dup));
    }

    fn channel(&self) -> Result<(Backend, crate::watchdog::Cutoff), MapRefusal> {
        match &*self.channel.lock_or_recover() {
            None => Err(MapRefusal::NoChannel),
            Some((_, false, _)) => Err(MapRefusal::NoShmem),
            Some((backend, true, dup)) => Ok((backend.clone(), dup.clone())),
        }
    }
}

/// The front-end's answer to a back-end request. A refusal (a nonzero
/// reply) leaves the channel in step. A front-end that closed the channel
/// is ending the connection, and its mappings end with it (QEMU closes it
/// in its vhost-user teardown, while a guest's last unmaps may still be
/// queued): the region is marked dropped and the channel failed, quietly.
/// Anything else (the VMM silent past [`ipc::deadline::VMM_REPLY`], so that
/// crate::watchdog cut the channel off; a malformed reply) does not leave
/// it in step, so the channel is marked failed, loudly, and the connection
/// maps no more.
fn answered(
    region: &HostVisible,
    backend: &Backend,
    what: &'static str,
    (result, cut_off): (std::io::Result<u64>, bool),
) -> Result<(), MapRefusal> {
    let Err(e) = result else {
        return Ok(());
    };
    use vhost::vhost_user::Error as E;
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<E>());
    match inner {
        Some(E::FrontendInternalError) => return Err(MapRefusal::FrontendRefused(what)),
        Some(E::SocketBroken(io))
            if !matches!(
                io.raw_os_error(),
                Some(nix::libc::EPIPE | nix::libc::ECONNRESET)
            ) =>
        {
            // Marked failed before (below), and said so then.
            return Err(MapRefusal::FailedEarlier(what));
        }
        Some(E::SocketBroken(_) | E::Disconnected) if !cut_off => {
            backend.set_failed(nix::libc::ESHUTDOWN);
            region.frontend_dropped_all();
            info!(
                "the front-end closed its back-end request channel ({what}): it is ending the \
                 connection, and its mappings with it; no more maps for this connection"
            );
            return Err(MapRefusal::Closed(what));
        }
        _ => {}
    }
    backend.set_failed(nix::libc::ETIMEDOUT);
    warn!("the back-end request channel failed on {what}: {e}; no more maps for this connection");
    Err(MapRefusal::Unanswered {
        what,
        error: e.to_string(),
    })
}

/// Why the broker refuses one of render-worker's map requests: the reason
/// goes back to render-worker (and its log) as the refusal's text.
#[derive(Debug, thiserror::Error)]
pub enum MapRefusal {
    #[error("a map request without its descriptor")]
    NoDescriptor,
    #[error("fstat: {0}")]
    Fstat(nix::errno::Errno),
    #[error("resource {resource_id}: its descriptor is not mappable memory")]
    NotMemory { resource_id: u32 },
    #[error("resource {resource_id}: its memory is not sealed against shrinking")]
    NotSealed { resource_id: u32 },
    #[error("resource {resource_id}: a mapping of 0 bytes")]
    Empty { resource_id: u32 },
    #[error(
        "resource {resource_id}: offset {offset:#x} or length {len:#x} is not a multiple of {PAGE}"
    )]
    Unaligned {
        resource_id: u32,
        offset: u64,
        len: u64,
    },
    #[error("resource {resource_id}: offset {offset:#x} + length {len:#x} wraps")]
    Wraps {
        resource_id: u32,
        offset: u64,
        len: u64,
    },
    #[error("resource {resource_id}: {offset:#x}..{end:#x} is past the {size:#x}-byte region")]
    PastRegion {
        resource_id: u32,
        offset: u64,
        end: u64,
        size: u64,
    },
    #[error("resource {resource_id} is already mapped")]
    AlreadyMapped { resource_id: u32 },
    #[error("resource {resource_id}: {MAX_MAPPINGS} mappings are live, the most the broker keeps")]
    TooMany { resource_id: u32 },
    #[error(
        "resource {resource_id}: {offset:#x}..{end:#x} overlaps resource {other}'s mapping at \
         {other_start:#x}..{other_end:#x}"
    )]
    Overlaps {
        resource_id: u32,
        offset: u64,
        end: u64,
        other: u32,
        other_start: u64,
        other_end: u64,
    },
    #[error("resource {resource_id}: its memory starts at {fd_offset:#x} of its descriptor, not a page boundary")]
    UnalignedInFile { resource_id: u32, fd_offset: u64 },
    #[error("resource {resource_id}: its memory holds {fd_len} bytes, not {len}")]
    TooShort {
        resource_id: u32,
        fd_len: u64,
        len: u64,
    },
    #[error("resource {resource_id} is not mapped")]
    NotMapped { resource_id: u32 },
    #[error("the front-end sent no back-end request channel")]
    NoChannel,
    #[error(
        "the front-end did not negotiate SHMEM (QEMU 10 does not): blobs cannot be mapped into \
         the guest"
    )]
    NoShmem,
    #[error("the front-end refused {0}")]
    FrontendRefused(&'static str),
    #[error("{0}: the channel failed earlier")]
    FailedEarlier(&'static str),
    #[error("{0}: the front-end closed its back-end request channel")]
    Closed(&'static str),
    #[error("the front-end did not answer {what}: {error}")]
    Unanswered { what: &'static str, error: String },
}

type MapChannel = Channel<Reply<Nothing>, MapRequest>;

/// Serves one connection's map channel until render-worker closes it or
/// the next connection's work arrives on `next` (returned).
pub fn serve<W>(
    channel: MapChannel,
    region: Arc<HostVisible>,
    next: &std::sync::mpsc::Receiver<W>,
) -> Option<W> {
    let mut mapper = Mapper::new(region.size);
    // A compromised render-worker may send refusable requests without end.
    let log = LogLimiter::default();
    crate::serve::requests(
        &channel,
        "render-worker's map",
        Role::RenderWorker,
        next,
        |request, fd| match mapper.handle(&region, request, fd) {
            Ok(()) => Reply::Done,
            Err(why) => {
                limited_warn!(log, "refused a map request from render-worker: {why}");
                Reply::refused(why.to_string())
            }
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    len: u64,
    resource_id: u32,
}

/// The live mappings of one connection's host-visible region.
#[derive(Debug)]
pub struct Mapper {
    size: u64,
    /// By offset in the region.
    mappings: BTreeMap<u64, Mapping>,
    /// Resource → its mapping's offset.
    by_resource: BTreeMap<u32, u64>,
    /// Resources whose mappings the front-end dropped on its own, until
    /// render-worker unmaps them.
    gone: BTreeMap<u32, (u64, u64)>,
    /// The region's `dropped` count this mapper last acted on.
    dropped_seen: u64,
}

impl Mapper {
    pub fn new(size: u64) -> Self {
        Mapper {
            size,
            mappings: BTreeMap::new(),
            by_resource: BTreeMap::new(),
            gone: BTreeMap::new(),
            dropped_seen: 0,
        }
    }

    /// Moves every mapping to `gone` if the front-end dropped them since
    /// the last request.
    fn catch_up(&mut self, region: &HostVisible) {
        let dropped = region.dropped.load(Ordering::SeqCst);
        if dropped == self.dropped_seen {
            return;
        }
        self.dropped_seen = dropped;
        let ids: Vec<u32> = self.by_resource.keys().copied().collect();
        for id in ids {
            if let Some(at) = self.forget(id) {
                self.gone.insert(id, at);
            }
        }
    }

    /// Whether `resource_id` may be mapped at `offset` for `len` bytes from
    /// a descriptor holding `fd_len` bytes.
    pub fn check(
        &self,
        resource_id: u32,
        offset: u64,
        len: u64,
        fd_len: u64,
    ) -> Result<(), MapRefusal> {
        if len == 0 {
            return Err(MapRefusal::Empty { resource_id });
        }
        if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(MapRefusal::Unaligned {
                resource_id,
                offset,
                len,
            });
        }
        let Some(end) = offset.checked_add(len) else {
            return Err(MapRefusal::Wraps {
                resource_id,
                offset,
                len,
            });
        };
        if end > self.size {
            return Err(MapRefusal::PastRegion {
                resource_id,
                offset,
                end,
                size: self.size,
            });
        }
        if self.by_resource.contains_key(&resource_id) {
            return Err(MapRefusal::AlreadyMapped { resource_id });
        }
        if self.by_resource.len() >= MAX_MAPPINGS {
            return Err(MapRefusal::TooMany { resource_id });
        }
        // The mapping that starts last before `end` is the only one that
        // can overlap (mappings never overlap each other).
        if let Some((&start, m)) = self.mappings.range(..end).next_back() {
            if start + m.len > offset {
                return Err(MapRefusal::Overlaps {
                    resource_id,
                    offset,
                    end,
                    other: m.resource_id,
                    other_start: start,
                    other_end: start + m.len,
                });
            }
        }
        if fd_len < len {
            return Err(MapRefusal::TooShort {
                resource_id,
                fd_len,
                len,
            });
        }
        Ok(())
    }

    fn record(&mut self, resource_id: u32, offset: u64, len: u64) {
        self.mappings.insert(offset, Mapping { len, resource_id });
        self.by_resource.insert(resource_id, offset);
    }

    /// Forgets `resource_id`'s mapping; returns where it was.
    fn forget(&mut self, resource_id: u32) -> Option<(u64, u64)> {
        let offset = self.by_resource.remove(&resource_id)?;
        let m = self.mappings.remove(&offset)?;
        Some((offset, m.len))
    }

    fn handle(
        &mut self,
        region: &HostVisible,
        request: MapRequest,
        fd: Option<OwnedFd>,
    ) -> Result<(), MapRefusal> {
        self.catch_up(region);
        match request {
            MapRequest::Map {
                resource_id,
                shm_offset,
                size,
                writable,
                fd_offset,
            } => {
                let fd = fd.ok_or(MapRefusal::NoDescriptor)?;
                let st = nix::sys::stat::fstat(&fd).map_err(MapRefusal::Fstat)?;
                if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
                    return Err(MapRefusal::NotMemory { resource_id });
                }
                // Memory that could shrink under a mapping would fault the
                // VM's access to it (the display path asks the same).
                let seals = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GET_SEALS)
                    .map(nix::fcntl::SealFlag::from_bits_truncate)
                    .unwrap_or(nix::fcntl::SealFlag::empty());
                if !seals.contains(nix::fcntl::SealFlag::F_SEAL_SHRINK) {
                    return Err(MapRefusal::NotSealed { resource_id });
                }
                // What follows `fd_offset` (page-aligned, as mmap takes it)
                // is what must hold `size` bytes.
                if !fd_offset.is_multiple_of(PAGE) {
                    return Err(MapRefusal::UnalignedInFile {
                        resource_id,
                        fd_offset,
                    });
                }
                let fd_len = (st.st_size.max(0) as u64).saturating_sub(fd_offset);
                self.check(resource_id, shm_offset, size, fd_len)?;
                let (backend, cutoff) = region.channel()?;
                let mut flags = VhostUserMMapFlags::empty();
                if writable {
                    flags |= VhostUserMMapFlags::WRITABLE;
                }
                let msg = VhostUserMMap {
                    shmid: SHMID_HOST_VISIBLE,
                    fd_offset,
                    shm_offset,
                    len: size,
                    flags: flags.bits(),
                    ..Default::default()
                };
                let result = crate::watchdog::within_told(
                    cutoff.as_ref(),
                    "the back-end request channel (SHMEM_MAP)",
                    ipc::deadline::VMM_REPLY,
                    || backend.shmem_map(&msg, &fd),
                );
                answered(region, &backend, "SHMEM_MAP", result)?;
                info!("mapped resource {resource_id} at {shm_offset:#x} ({size} bytes)");
                self.record(resource_id, shm_offset, size);
                Ok(())
            }
            MapRequest::Unmap { resource_id } => {
                if let Some((offset, len)) = self.gone.remove(&resource_id) {
                    info!(
                        "resource {resource_id} at {offset:#x} ({len} bytes): the front-end \
                         already dropped it"
                    );
                    return Ok(());
                }
                let (offset, len) = self
                    .forget(resource_id)
                    .ok_or(MapRefusal::NotMapped { resource_id })?;
                let (backend, cutoff) = region.channel()?;
                let msg = VhostUserMMap {
                    shmid: SHMID_HOST_VISIBLE,
                    shm_offset: offset,
                    len,
                    ..Default::default()
                };
                let result = crate::watchdog::within_told(
                    cutoff.as_ref(),
                    "the back-end request channel (SHMEM_UNMAP)",
                    ipc::deadline::VMM_REPLY,
                    || backend.shmem_unmap(&msg),
                );
                match answered(region, &backend, "SHMEM_UNMAP", result) {
                    // The mapping went with the front-end's end of it.
                    Err(MapRefusal::Closed(_)) => Ok(()),
                    other => other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn map_requests_are_checked_against_the_region_and_each_other() {
        let mut m = Mapper::new(16 * MIB);
        assert!(m
            .check(1, 0, 0, MIB)
            .unwrap_err()
            .to_string()
            .contains("0 bytes"));
        assert!(m
            .check(1, 100, PAGE, MIB)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
        assert!(m
            .check(1, 0, 100, MIB)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
        assert!(m
            .check(1, u64::MAX - PAGE + 1, 2 * PAGE, MIB)
            .unwrap_err()
            .to_string()
            .contains("wraps"));
        assert!(m
            .check(1, 16 * MIB, PAGE, MIB)
            .unwrap_err()
            .to_string()
            .contains("past"));
        assert!(m
            .check(1, 0, 2 * MIB, MIB)
            .unwrap_err()
            .to_string()
            .contains("holds"));
        m.check(1, MIB, MIB, MIB).unwrap();
        m.record(1, MIB, MIB);
        assert!(m
            .check(1, 4 * MIB, PAGE, MIB)
            .unwrap_err()
            .to_string()
            .contains("already"));
        for (offset, len) in [
            (MIB, PAGE),
            (0, MIB + PAGE),
            (2 * MIB - PAGE, PAGE),
            (0, 4 * MIB),
        ] {
            assert!(
                m.check(2, offset, len, 4 * MIB)
                    .unwrap_err()
                    .to_string()
                    .contains("overlaps"),
                "{offset:#x}+{len:#x}"
            );
        }
        // Touching is not overlapping.
        m.check(2, 0, MIB, MIB).unwrap();
        m.check(2, 2 * MIB, MIB, MIB).unwrap();
        assert_eq!(m.forget(1), Some((MIB, MIB)));
        assert_eq!(m.forget(1), None);
        m.check(2, MIB, MIB, MIB).unwrap();
    }

    /// A sealed memfd of `len` bytes, as render-worker sends.
    fn blob_memory(len: u64) -> OwnedFd {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"blob", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, len as i64).unwrap();
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
        fd
    }

    /// A front-end that acks `n` back-end requests, then closes its end.
    fn frontend_acking(vmm: std::os::unix::net::UnixStream, n: usize) {
        use std::io::{Read, Write};
        let mut vmm = vmm;
        for _ in 0..n {
            let mut header = [0u8; 12];
            vmm.read_exact(&mut header).unwrap();
            let size = u32::from_le_bytes(header[8..12].try_into().unwrap());
            vmm.read_exact(&mut vec![0u8; size as usize]).unwrap();
            let mut reply = header[..4].to_vec();
            reply.extend_from_slice(&(0x1u32 | 0x4).to_le_bytes());
            reply.extend_from_slice(&8u32.to_le_bytes());
            reply.extend_from_slice(&0u64.to_le_bytes());
            vmm.write_all(&reply).unwrap();
        }
    }

    #[test]
    fn memory_from_an_offset_of_its_descriptor_is_checked_there() {
        let (ours, _vmm) = std::os::unix::net::UnixStream::pair().unwrap();
        let backend = Backend::from_stream(ours);
        backend.set_shmem_flag(true);
        let region = HostVisible::new(16 * MIB);
        region.set_channel(backend, true);
        let mut m = Mapper::new(16 * MIB);
        let map = |fd_offset| MapRequest::Map {
            resource_id: 1,
            shm_offset: 0,
            size: 2 * PAGE,
            writable: true,
            fd_offset,
        };
        // Not a page boundary of the descriptor.
        let refused = m
            .handle(&region, map(100), Some(blob_memory(3 * PAGE)))
            .unwrap_err();
        assert!(
            matches!(refused, MapRefusal::UnalignedInFile { fd_offset: 100, .. }),
            "{refused}"
        );
        // Two pages from the second: the file holds one after it.
        let refused = m
            .handle(&region, map(2 * PAGE), Some(blob_memory(3 * PAGE)))
            .unwrap_err();
        assert!(
            matches!(refused, MapRefusal::TooShort { fd_len, .. } if fd_len == PAGE),
            "{refused}"
        );
        // Past the file's end does not wrap.
        let refused = m
            .handle(&region, map(!(PAGE - 1)), Some(blob_memory(3 * PAGE)))
            .unwrap_err();
        assert!(
            matches!(refused, MapRefusal::TooShort { fd_len: 0, .. }),
            "{refused}"
        );
        assert!(m.by_resource.is_empty());
    }

    #[test]
    fn a_frontend_that_closes_its_channel_takes_its_mappings_with_it() {
        let (ours, vmm) = std::os::unix::net::UnixStream::pair().unwrap();
        let backend = Backend::from_stream(ours);
        backend.set_reply_ack_flag(true);
        backend.set_shmem_flag(true);
        let region = HostVisible::new(16 * MIB);
        region.set_channel(backend, true);
        let vmm = std::thread::spawn(move || frontend_acking(vmm, 2));
        let mut m = Mapper::new(16 * MIB);
        let map = |resource_id, shm_offset| MapRequest::Map {
            resource_id,
            shm_offset,
            size: 2 * PAGE,
            writable: true,
            fd_offset: 0,
        };
        m.handle(&region, map(1, 0), Some(blob_memory(2 * PAGE)))
            .unwrap();
        m.handle(&region, map(2, MIB), Some(blob_memory(2 * PAGE)))
            .unwrap();
        vmm.join().unwrap();
        // The front-end is gone (QEMU's teardown) with both mapped: the
        // guest's last unmaps are answered, the first by learning of the
        // close, the next without asking.
        m.handle(&region, MapRequest::Unmap { resource_id: 1 }, None)
            .unwrap();
        m.handle(&region, MapRequest::Unmap { resource_id: 2 }, None)
            .unwrap();
        assert!(m.by_resource.is_empty() && m.gone.is_empty());
        assert_eq!(region.dropped.load(Ordering::SeqCst), 1);
        // Nothing maps on that connection again.
        let refused = m
            .handle(&region, map(3, 0), Some(blob_memory(2 * PAGE)))
            .unwrap_err();
        assert!(
            matches!(refused, MapRefusal::FailedEarlier("SHMEM_MAP")),
            "{refused}"
        );
        // And an unmap of what was never mapped is still refused.
        assert!(matches!(
            m.handle(&region, MapRequest::Unmap { resource_id: 9 }, None),
            Err(MapRefusal::NotMapped { resource_id: 9 })
        ));
    }
}
