//! The `vhost-user-backend` side of gpu-worker: one [`GpuBackend`] per
//! front-end connection, so nothing of one connection's device state
//! (memory map, vrings, scanouts) survives into the next.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use ipc::ScanoutSize;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueOwnedT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::device::RenderLink;
use crate::device::{GpuDevice, QueueKind};
use crate::display::DisplayLink;
use crate::guest_warn;
use crate::protocol::{F_CONTEXT_INIT, F_EDID, F_RESOURCE_BLOB, F_RESOURCE_UUID};
use crate::ratelimit::LogLimiter;

/// controlq and cursorq.
pub const NUM_QUEUES: usize = 2;
/// Largest queue a front-end may set up.
pub const MAX_QUEUE_SIZE: usize = 1024;
const CONTROL_QUEUE: u16 = 0;
const CURSOR_QUEUE: u16 = 1;

/// Every virtio feature the device offers. The broker relays the guest's
/// choice unchanged.
pub fn device_features() -> u64 {
    1 << VIRTIO_F_VERSION_1
        | 1 << VIRTIO_RING_F_INDIRECT_DESC
        | 1 << VIRTIO_RING_F_EVENT_IDX
        | 1 << F_EDID
        | 1 << F_RESOURCE_UUID
        | 1 << F_RESOURCE_BLOB
        | 1 << F_CONTEXT_INIT
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

pub struct GpuBackend {
    device: GpuDevice,
    mem: RwLock<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: AtomicBool,
    exit_consumer: EventConsumer,
    exit_notifier: EventNotifier,
    /// Exit-event descriptors handed to `vhost-user-backend`, which takes
    /// them with `into_raw_fd()` and never closes them (0.24); closed when
    /// the backend is dropped (see `Drop`).
    handed_out: Mutex<Vec<RawFd>>,
    log: LogLimiter,
}

impl GpuBackend {
    pub fn new(
        scanouts: Vec<ScanoutSize>,
        max_resource_memory: u64,
        display: DisplayLink,
        render: RenderLink,
    ) -> io::Result<Self> {
        let (exit_consumer, exit_notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(GpuBackend {
            device: GpuDevice::new(scanouts, max_resource_memory, display, render),
            mem: RwLock::new(GuestMemoryAtomic::new(GuestMemoryMmap::new())),
            event_idx: AtomicBool::new(false),
            exit_consumer,
            exit_notifier,
            handed_out: Mutex::new(Vec::new()),
            log: LogLimiter::default(),
        })
    }

    /// Ends the vring worker thread once the connection is gone.
    pub fn stop_worker_thread(&self) -> io::Result<()> {
        self.exit_notifier.notify()
    }

    fn process_queue(&self, vring: &VringRwLock, kind: QueueKind) -> io::Result<()> {
        let mem = self.mem.read().unwrap_or_else(|e| e.into_inner()).memory();
        let chains: Vec<_> = match vring.get_mut().get_queue_mut().iter(mem.clone()) {
            Ok(iter) => iter.collect(),
            Err(e) => {
                guest_warn!(self.log, "{kind:?} queue: available ring is invalid: {e}");
                return Ok(());
            }
        };
        for chain in chains {
            let head = chain.head_index();
            let len = self.device.process_chain(&mem, chain, kind);
            if let Err(e) = vring.add_used(head, len) {
                guest_warn!(
                    self.log,
                    "{kind:?} queue: cannot return descriptor {head} to the used ring: {e}"
                );
            }
        }
        match vring.needs_notification() {
            Ok(false) => Ok(()),
            Ok(true) | Err(_) => vring.signal_used_queue(),
        }
    }
}

/// vhost-user-backend 0.24's vring thread registers the exit descriptor it
/// was handed in its epoll and never closes it. Each vring handler holds a
/// reference to this backend, so when the last reference drops, every
/// handler (and its epoll) is gone, and nothing can use those descriptors
/// any more: close them here.
impl Drop for GpuBackend {
    fn drop(&mut self) {
        let fds = std::mem::take(self.handed_out.get_mut().unwrap_or_else(|e| e.into_inner()));
        for fd in fds {
            // SAFETY: `fd` is a descriptor this backend duplicated and
            // handed out; its taker dropped its last hold on us, so it no
            // longer uses the descriptor, which stayed open (and so was not
            // reused) until now. Nothing else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

impl VhostUserBackend for GpuBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        device_features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // REPLY_ACK is added by the vhost crate; the broker needs it so a
        // refused request reaches the real front-end as an error.
        VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.device.share_memory(&mem.memory());
        *self.mem.write().unwrap_or_else(|e| e.into_inner()) = mem;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit_consumer.try_clone().ok()?;
        let notifier = self.exit_notifier.try_clone().ok()?;
        self.handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!(
                "unexpected event set {evset:?} on queue {device_event}"
            )));
        }
        let kind = match device_event {
            CONTROL_QUEUE => QueueKind::Control,
            CURSOR_QUEUE => QueueKind::Cursor,
            _ => {
                return Err(io::Error::other(format!(
                    "event for unknown queue {device_event}"
                )))
            }
        };
        let vring = &vrings[usize::from(device_event)];
        if self.event_idx.load(Ordering::Relaxed) {
            // Keep draining until the driver has added nothing new while
            // notifications were off.
            loop {
                vring.disable_notification().map_err(io::Error::other)?;
                self.process_queue(vring, kind)?;
                if !vring.enable_notification().map_err(io::Error::other)? {
                    break;
                }
            }
            Ok(())
        } else {
            self.process_queue(vring, kind)
        }
    }
}
