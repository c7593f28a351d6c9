//! One front-end connection, seen from the broker: a vhost-user firewall.
//!
//! The broker terminates the VMM's connection with the `vhost` crate's
//! `BackendReqHandler`, answers what is its own (protocol features, the
//! device configuration, the back-end request channel, QEMU's display
//! socket), and relays the rest (features, memory table, vrings) to
//! gpu-worker through the `vhost` crate's `Frontend`, as if the broker were
//! gpu-worker's VMM. Descriptors pass through once and are closed here; the
//! broker never maps guest memory.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;

use log::{info, warn};
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags,
    VhostUserHeaderFlag, VhostUserInflight, VhostUserLog, VhostUserMemoryRegion,
    VhostUserProtocolFeatures, VhostUserShMemConfig, VhostUserSharedMsg,
    VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, Error, Frontend, GpuBackend, Result, VhostUserBackendReqHandlerMut, VhostUserFrontend,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::ByteValued;
use vmm_sys_util::eventfd::EventFd;

use crate::config::DeviceConfig;
use crate::display::DisplaySocket;
use crate::mapper::{HostVisible, SHMID_HOST_VISIBLE};

/// Protocol features the broker offers the VMM (REPLY_ACK is added by the
/// `vhost` crate, which implements it): SHMEM only with a host-visible
/// region (`--shm-size` not 0).
pub fn offered_protocol_features(shm_size: u64) -> VhostUserProtocolFeatures {
    let features = VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::BACKEND_SEND_FD
        | VhostUserProtocolFeatures::RESET_DEVICE;
    match shm_size {
        0 => features,
        _ => features | VhostUserProtocolFeatures::SHMEM,
    }
}

/// controlq and cursorq.
pub const NUM_QUEUES: u64 = 2;

pub struct Session {
    worker: Frontend,
    /// The virtio features gpu-worker offers.
    device_features: u64,
    config: DeviceConfig,
    acked_protocol_features: u64,
    /// The host-visible region: its size, and the VMM's channel for
    /// back-end requests once it arrives (the mapper thread uses it).
    region: Arc<HostVisible>,
    /// QEMU's display socket, shared with the display thread.
    display: Arc<DisplaySocket>,
    /// The features last relayed, to set again after an inferred reset.
    features: Option<u64>,
    /// Where each ring stopped (GET_VRING_BASE), until it starts again.
    stopped_at: [Option<u16>; NUM_QUEUES as usize],
}

/// Converts an error from the relay to gpu-worker into one for the VMM.
fn relay<T>(r: vhost::Result<T>) -> Result<T> {
    r.map_err(|e| match e {
        vhost::Error::VhostUserProtocol(e) => e,
        other => Error::ReqHandlerError(io::Error::other(other.to_string())),
    })
}

/// gpu-worker's virtio features, less any bit outside what the device
/// offers (`offered`), with one line if there was one.
fn held_to_the_device(worker: u64, offered: u64) -> u64 {
    if worker & !offered != 0 {
        log::warn!(
            "gpu-worker offered virtio features {:#x} beyond the device's {offered:#x}; not \
             offered to the front-end",
            worker & !offered
        );
    }
    worker & offered
}

impl Session {
    /// Opens the relay: negotiates the internal link's own protocol features
    /// (REPLY_ACK, so a request gpu-worker refuses reaches the VMM as an
    /// error, not as silence).
    pub fn new(
        mut worker: Frontend,
        config: DeviceConfig,
        display: Arc<DisplaySocket>,
        region: Arc<HostVisible>,
    ) -> vhost::Result<Self> {
        // gpu-worker reads guest bytes and is less trusted than the broker:
        // its word on the device's features is held to what this device
        // offers (the same list gpu-worker is built with), as every other
        // answer of a worker is re-checked.
        let device_features = held_to_the_device(
            worker.get_features()?,
            wire::device_features(config.num_capsets > 0),
        );
        let offered = worker.get_protocol_features()?;
        let wanted = VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::RESET_DEVICE;
        worker.set_protocol_features(offered & wanted)?;
        if offered.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            worker.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        Ok(Session {
            worker,
            device_features,
            config,
            acked_protocol_features: 0,
            region,
            display,
            features: None,
            stopped_at: [None; NUM_QUEUES as usize],
        })
    }

    /// A ring restarted somewhere other than where it stopped: the driver
    /// reset the device (the device offers no VIRTIO_F_RING_RESET, so a
    /// ring is only ever re-made by a device reset), and the front-end did
    /// not say so. QEMU 11's generic vhost-user device does this: at a
    /// guest reboot it drops every shared-memory mapping itself, stops the
    /// rings, and later starts them afresh at 0, with no RESET_DEVICE. The
    /// device resets now, before the new driver's first command; its
    /// mappings are already gone from the front-end. A ring stopped and
    /// started at the same index (a VM pause) is no reset.
    fn reset_inferred(&mut self, index: u32, stopped: u16, base: u16) -> Result<()> {
        info!(
            "front-end restarted ring {index} at {base}, not where it stopped ({stopped}): \
             the driver reset the device; resetting (no RESET_DEVICE came)"
        );
        self.stopped_at = [None; NUM_QUEUES as usize];
        self.region.frontend_dropped_all();
        relay(self.worker.reset_device())?;
        // vhost-user-backend forgets the acked features at a reset; these
        // came before the rings started.
        if let Some(features) = self.features {
            relay(self.worker.set_features(features))?;
        }
        Ok(())
    }

    fn config_space(&self) -> Vec<u8> {
        self.config.virtio_gpu_config().as_slice().to_vec()
    }
}

/// The `size` bytes at `offset` of the config space, if all are inside it.
fn config_read(space: &[u8], offset: u32, size: u32) -> Option<Vec<u8>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    space.get(start..end).map(<[u8]>::to_vec)
}

impl VhostUserBackendReqHandlerMut for Session {
    fn set_owner(&mut self) -> Result<()> {
        relay(self.worker.set_owner())
    }

    fn reset_owner(&mut self) -> Result<()> {
        log::debug!("front-end resets its ownership (RESET_OWNER)");
        relay(self.worker.reset_owner())
    }

    /// QEMU sends RESET_DEVICE on every virtio reset of the device (a guest
    /// reboot, a driver unload), never on a VM pause: the only sign that the
    /// guest's resources, contexts and mappings are gone. gpu-worker drops
    /// its device state and has render-worker drop its own.
    fn reset_device(&mut self) -> Result<()> {
        info!("front-end reset the device");
        self.stopped_at = [None; NUM_QUEUES as usize];
        relay(self.worker.reset_device())
    }

    fn get_features(&mut self) -> Result<u64> {
        // gpu-worker's word, as held at the start of the session.
        Ok(self.device_features)
    }

    fn set_features(&mut self, features: u64) -> Result<()> {
        log::debug!("front-end sets features {features:#x}");
        // QEMU 10 passes on transport features it negotiated with the guest
        // itself (VIRTIO_F_RING_RESET, bit 40) though the device never
        // offered them; vhost-user-backend refuses any such bit. Relay only
        // what the device offered.
        let unoffered = features & !self.device_features;
        if unoffered != 0 {
            let bits: Vec<u32> = (0..64).filter(|b| unoffered >> b & 1 == 1).collect();
            info!("front-end acked feature bits {bits:?} the device never offered; ignoring them");
        }
        self.features = Some(features & self.device_features);
        relay(self.worker.set_features(features & self.device_features))
    }

    fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> Result<Option<Vec<u64>>> {
        if regions.len() != files.len() {
            return Err(Error::IncorrectFds);
        }
        let infos: Vec<VhostUserMemoryRegionInfo> = regions
            .iter()
            .zip(&files)
            .map(|(r, f)| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.guest_phys_addr,
                memory_size: r.memory_size,
                userspace_addr: r.user_addr,
                mmap_offset: r.mmap_offset,
                mmap_handle: f.as_raw_fd(),
            })
            .collect();
        relay(self.worker.set_mem_table(&infos))?;
        // `files` drops here: the broker keeps no guest memory.
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        let num = u16::try_from(num).map_err(|_| Error::InvalidParam)?;
        relay(self.worker.set_vring_num(index as usize, num))
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        log: u64,
    ) -> Result<()> {
        let config = VringConfigData {
            queue_max_size: 0,
            queue_size: 0,
            flags: flags.bits(),
            desc_table_addr: descriptor,
            used_ring_addr: used,
            avail_ring_addr: available,
            log_addr: flags
                .contains(VhostUserVringAddrFlags::VHOST_VRING_F_LOG)
                .then_some(log),
        };
        relay(self.worker.set_vring_addr(index as usize, &config))
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        log::debug!("front-end sets ring {index}'s base to {base}");
        let base = u16::try_from(base).map_err(|_| Error::InvalidParam)?;
        let stopped = self
            .stopped_at
            .get_mut(index as usize)
            .and_then(Option::take);
        if let Some(stopped) = stopped.filter(|s| *s != base) {
            self.reset_inferred(index, stopped, base)?;
        }
        relay(self.worker.set_vring_base(index as usize, base))
    }

    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        log::debug!("front-end stops ring {index} (GET_VRING_BASE)");
        let base = relay(self.worker.get_vring_base(index as usize))?;
        if let (Some(slot), Ok(b)) = (self.stopped_at.get_mut(index as usize), u16::try_from(base))
        {
            *slot = Some(b);
        }
        Ok(VhostUserVringState::new(index, base))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let fd = fd.ok_or(Error::InvalidOperation(
            "vring polling (no kick fd) is not supported",
        ))?;
        // SAFETY: ownership of the descriptor moves from the File into the
        // EventFd; it is a descriptor the VMM sent for this purpose.
        let event = unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) };
        relay(self.worker.set_vring_kick(usize::from(index), &event))
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let fd = fd.ok_or(Error::InvalidOperation(
            "vring polling (no call fd) is not supported",
        ))?;
        // SAFETY: as in set_vring_kick.
        let event = unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) };
        relay(self.worker.set_vring_call(usize::from(index), &event))
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        match fd {
            // SAFETY: as in set_vring_kick.
            Some(fd) => {
                let event = unsafe { EventFd::from_raw_fd(fd.into_raw_fd()) };
                relay(self.worker.set_vring_err(usize::from(index), &event))
            }
            None => Ok(()),
        }
    }

    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        Ok(offered_protocol_features(self.region.size))
    }

    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        let offered =
            offered_protocol_features(self.region.size) | VhostUserProtocolFeatures::REPLY_ACK;
        if features & !offered.bits() != 0 {
            warn!("front-end acked protocol features {features:#x} beyond the offered {offered:?}");
            return Err(Error::FeatureMismatch);
        }
        self.acked_protocol_features = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(NUM_QUEUES)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        log::debug!("front-end enables ring {index}: {enable}");
        relay(self.worker.set_vring_enable(index as usize, enable))
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> Result<Vec<u8>> {
        let space = self.config_space();
        config_read(&space, offset, size).ok_or_else(|| {
            warn!(
                "front-end asked for config bytes {offset}..+{size}; the device's \
                 virtio_gpu_config has {}",
                space.len()
            );
            Error::InvalidParam
        })
    }

    fn set_config(&mut self, offset: u32, buf: &[u8], _flags: VhostUserConfigFlags) -> Result<()> {
        // Only `events_clear` (offset 4) is writable. No event is ever
        // raised yet, so clearing is accepted and changes nothing.
        if offset == 4 && buf.len() == 4 {
            Ok(())
        } else {
            Err(Error::InvalidParam)
        }
    }

    fn set_backend_req_fd(&mut self, backend: Backend) {
        let acked = VhostUserProtocolFeatures::from_bits_truncate(self.acked_protocol_features);
        let shmem = acked.contains(VhostUserProtocolFeatures::SHMEM);
        info!("front-end opened its back-end request channel (SHMEM {shmem})");
        // With REPLY_ACK, SHMEM_MAP waits for the front-end's answer, so a
        // refused map reaches the guest as an error.
        backend.set_reply_ack_flag(acked.contains(VhostUserProtocolFeatures::REPLY_ACK));
        backend.set_shmem_flag(shmem);
        self.region.set_channel(backend, shmem);
    }

    fn set_gpu_socket(&mut self, display: GpuBackend) -> Result<()> {
        info!("front-end sent its display socket (VHOST_USER_GPU_SET_SOCKET)");
        // No I/O here: QEMU is not reading the socket until this request
        // and the ones after it are answered. The display thread uses it.
        self.display.set(display);
        Ok(())
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        Err(Error::InvalidOperation("shared objects are not offered"))
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> Result<(VhostUserInflight, File)> {
        Err(Error::InvalidOperation("inflight tracking is not offered"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> Result<()> {
        Err(Error::InvalidOperation("inflight tracking is not offered"))
    }

    /// Memory slots (CONFIGURE_MEM_SLOTS) are not offered. QEMU 11 makes
    /// each blob mapping in the host-visible BAR guest memory of the
    /// back-end too; with whole tables only it cannot send one past eight
    /// regions ("Failed preparing vhost-user memory table msg", seen with
    /// a real guest mapping 24 blobs), and the back-end's view misses the
    /// later blobs, which only matters to a guest that puts virtqueue
    /// buffers in them. With memory slots offered (tried: relayed to
    /// gpu-worker's vhost-user-backend, which supports them) QEMU 11.1.3
    /// took every mapping, but crashed (SIGSEGV in a TCG vCPU thread) at
    /// the first guest reboot with blobs mapped. The lesser failure wins.
    fn get_max_mem_slots(&mut self) -> Result<u64> {
        Err(Error::InvalidOperation("memory slots are not offered"))
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy: Option<bool>,
    ) -> Result<Option<u64>> {
        Err(Error::InvalidOperation("memory slots are not offered"))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> Result<()> {
        Err(Error::InvalidOperation("memory slots are not offered"))
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> Result<Option<File>> {
        Err(Error::InvalidOperation("migration is not supported"))
    }

    fn check_device_state(&mut self) -> Result<()> {
        Err(Error::InvalidOperation("migration is not supported"))
    }

    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        // Indexed by shmid: only shmid 1, the host-visible region.
        let mut sizes = [0u64; 2];
        sizes[usize::from(SHMID_HOST_VISIBLE)] = self.region.size;
        Ok(VhostUserShMemConfig::new(sizes.len() as u32, &sizes))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> Result<()> {
        Err(Error::InvalidOperation("dirty logging is not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shmem_is_offered_only_with_a_host_visible_region() {
        assert!(offered_protocol_features(8 << 30).contains(VhostUserProtocolFeatures::SHMEM));
        assert!(!offered_protocol_features(0).contains(VhostUserProtocolFeatures::SHMEM));
    }

    #[test]
    fn a_worker_offering_more_than_the_device_is_held_to_the_device() {
        let device = wire::device_features(false);
        let virgl = 1u64 << wire::F_VIRGL;
        assert_eq!(held_to_the_device(device | virgl | 1 << 60, device), device);
        // What it leaves out stays out: the broker adds nothing.
        assert_eq!(
            held_to_the_device(device & !virgl, device | virgl),
            device & !virgl
        );
    }

    #[test]
    fn config_reads_stay_inside_the_space() {
        let space: Vec<u8> = (0..16).collect();
        assert_eq!(config_read(&space, 0, 16), Some(space.clone()));
        assert_eq!(config_read(&space, 8, 4), Some(vec![8, 9, 10, 11]));
        assert_eq!(config_read(&space, 8, 16), None);
        assert_eq!(config_read(&space, 16, 1), None);
        assert_eq!(config_read(&space, u32::MAX, u32::MAX), None);
    }
}
