//! The `vhost-user-backend` side of gpu-worker: one [`GpuBackend`] per
//! front-end connection, so nothing of one connection's device state
//! (memory map, vrings, scanouts) survives into the next.

use ipc::LockExt;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use ipc::{Channel, Nothing, RenderEvent};
use log::warn;
use vhost_user_backend::VringEpollHandler;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::device::GpuDevice;
use crate::device::{ContextFence, RenderLink};
use crate::display::DisplayLink;
use ipc::limited_warn as guest_warn;
use ipc::ratelimit::LogLimiter;
use wire::Queue;

/// controlq and cursorq.
pub const NUM_QUEUES: usize = 2;
/// The epoll event for render-worker's event channel (0..=NUM_QUEUES are
/// vhost-user-backend's).
pub const RENDER_EVENTS: u16 = NUM_QUEUES as u16 + 1;
/// Largest queue a front-end may set up.
pub const MAX_QUEUE_SIZE: usize = 1024;
const CONTROL_QUEUE: u16 = 0;
const CURSOR_QUEUE: u16 = 1;

/// Every virtio feature the device offers (one list, in `wire`, which the
/// broker holds gpu-worker's answer to).
pub use wire::device_features;

pub struct GpuBackend {
    device: GpuDevice,
    /// The virtio features offered (see [`device_features`]).
    features: u64,
    mem: RwLock<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: AtomicBool,
    exit_consumer: EventConsumer,
    exit_notifier: EventNotifier,
    /// Exit-event descriptors handed to `vhost-user-backend`, which takes
    /// them with `into_raw_fd()` and never closes them (0.24); closed when
    /// the backend is dropped (see `Drop`).
    handed_out: Mutex<Vec<RawFd>>,
    /// render-worker's events (fences that signalled later).
    events: Mutex<Option<Channel<Nothing, RenderEvent>>>,
    /// The vring thread's epoll handler, to stop listening to a closed
    /// event channel (weak: the handler holds this backend).
    epoll: Mutex<Weak<VringEpollHandler<Arc<GpuBackend>>>>,
    /// Control-queue chains whose used entries wait for a context fence, in
    /// the order the guest sent them.
    fenced: Mutex<VecDeque<FencedChain>>,
    log: LogLimiter,
    /// The jail, for the vring thread's own filter.
    jail: Option<ipc::JailConfig>,
}

thread_local! {
    /// Whether this thread has installed its thread kind's filter.
    static THREAD_FILTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[derive(Debug)]
struct FencedChain {
    fence: ContextFence,
    head: u16,
    len: u32,
}

impl GpuBackend {
    /// The device `config` describes, on one front-end connection's
    /// channels.
    pub fn new(
        config: &ipc::GpuConfig,
        display: DisplayLink,
        render: RenderLink,
        events: Option<Channel<Nothing, RenderEvent>>,
    ) -> io::Result<Self> {
        let (exit_consumer, exit_notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(GpuBackend {
            features: device_features(config.contexts),
            device: GpuDevice::new(
                config.scanouts.clone(),
                config.max_resource_memory,
                display,
                render,
            ),
            mem: RwLock::new(GuestMemoryAtomic::new(GuestMemoryMmap::new())),
            event_idx: AtomicBool::new(false),
            exit_consumer,
            exit_notifier,
            handed_out: Mutex::new(Vec::new()),
            events: Mutex::new(events),
            epoll: Mutex::new(Weak::new()),
            fenced: Mutex::new(VecDeque::new()),
            jail: Some(config.jail),
            log: LogLimiter::default(),
        })
    }

    /// The event channel's descriptor, to register with the vring thread's
    /// epoll (as [`RENDER_EVENTS`]).
    pub fn events_fd(&self) -> Option<RawFd> {
        self.events
            .lock_or_recover()
            .as_ref()
            .map(|c| c.as_fd().as_raw_fd())
    }

    pub fn set_epoll_handler(&self, handler: Weak<VringEpollHandler<Arc<GpuBackend>>>) {
        *self.epoll.lock_or_recover() = handler;
    }

    /// Returns to the used ring every fenced chain whose fence, and every
    /// earlier fence on its ring, has signalled. True if any was returned.
    fn complete_fenced(&self, vring: &VringRwLock) -> bool {
        let mut fenced = self.fenced.lock_or_recover();
        // Rings with an earlier fence still unsignalled, in one pass.
        let mut blocked: Vec<(u32, Option<u8>)> = Vec::new();
        let mut ready = Vec::new();
        fenced.retain(|c| {
            let ring = (c.fence.ctx_id, c.fence.ring);
            if c.fence.signalled && !blocked.contains(&ring) {
                ready.push((c.head, c.len));
                return false;
            }
            if !c.fence.signalled {
                blocked.push(ring);
            }
            true
        });
        drop(fenced);
        for (head, len) in &ready {
            if let Err(e) = vring.add_used(*head, *len) {
                guest_warn!(self.log, "cannot return descriptor {head}: {e}");
            }
        }
        !ready.is_empty()
    }

    /// One event from render-worker.
    fn render_event(&self, evset: EventSet, vrings: &[VringRwLock]) -> io::Result<()> {
        let event = {
            let mut events = self.events.lock_or_recover();
            let Some(channel) = events.as_ref() else {
                return Ok(());
            };
            match channel.recv() {
                Ok((event, _)) if evset.contains(EventSet::IN) => event,
                result => {
                    // Closed (render-worker is gone; the broker ends the
                    // device) or broken: stop listening.
                    if let Err(e) = result {
                        warn!("gpu-worker: render-worker's event channel: {e}");
                    }
                    if let (Some(handler), Some(c)) =
                        (self.epoll.lock_or_recover().upgrade(), events.as_ref())
                    {
                        let _ = handler.unregister_listener(
                            c.as_fd().as_raw_fd(),
                            EventSet::IN,
                            u64::from(RENDER_EVENTS),
                        );
                    }
                    *events = None;
                    return Ok(());
                }
            }
        };
        let RenderEvent::FenceSignalled {
            ctx_id,
            ring,
            fence_id,
        } = event;
        // A fence signalling means every earlier one on its ring did.
        for chain in self.fenced.lock_or_recover().iter_mut() {
            let f = &mut chain.fence;
            if f.ctx_id == ctx_id && f.ring == ring && f.fence_id <= fence_id {
                f.signalled = true;
            }
        }
        let control = &vrings[usize::from(CONTROL_QUEUE)];
        if self.complete_fenced(control) {
            control.signal_used_queue()?;
        }
        Ok(())
    }

    /// Ends the vring worker thread once the connection is gone.
    pub fn stop_worker_thread(&self) -> io::Result<()> {
        self.exit_notifier.notify()
    }

    fn process_queue(&self, vring: &VringRwLock, kind: Queue) -> io::Result<()> {
        // A queue the front-end has stopped (GET_VRING_BASE, as QEMU does
        // when the VM ends) has nothing to serve: a kick or a fence that
        // races its stop is not the guest's error.
        if !vring.get_ref().get_queue().ready() {
            return Ok(());
        }
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
            // A head held for a fence is the device's until it is used: a
            // guest making it available again breaks the virtqueue rules.
            // Ignoring it keeps the held list within one entry per head.
            let held = self.fenced.lock_or_recover().iter().any(|c| c.head == head);
            if kind == Queue::Control && held {
                guest_warn!(
                    self.log,
                    "{kind:?} queue: descriptor {head} is held for a fence, yet was made \
                     available again; ignoring it"
                );
                continue;
            }
            let done = self.device.process_chain_fenced(&mem, chain, kind);
            if let Some(fence) = done.fence {
                // Its used entry waits for the fence, and for every earlier
                // fence on the same ring.
                self.fenced.lock_or_recover().push_back(FencedChain {
                    fence,
                    head,
                    len: done.len,
                });
                self.complete_fenced(vring);
                continue;
            }
            if let Err(e) = vring.add_used(head, done.len) {
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
        self.features
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // REPLY_ACK is added by the vhost crate; the broker needs it so a
        // refused request reaches the real front-end as an error.
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::RESET_DEVICE
    }

    /// The guest reset the device: every resource, context, mapping and
    /// held command of the old driver goes.
    fn reset_device(&self) {
        self.fenced.lock_or_recover().clear();
        self.device.reset();
    }

    fn acked_features(&self, features: u64) {
        self.device.set_acked_features(features);
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
        self.handed_out.lock_or_recover().push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        // The vring thread parses every chain the guest posts: before the
        // first, it narrows its own syscalls to what serving them needs.
        if let Some(jail) = &self.jail {
            if !THREAD_FILTERED.get() {
                policies::apply_thread_seccomp(policies::ThreadKind::Vring, jail)
                    .map_err(|e| io::Error::other(format!("the vring thread's filter: {e}")))?;
                THREAD_FILTERED.set(true);
            }
        }
        if evset != EventSet::IN && device_event != RENDER_EVENTS {
            return Err(io::Error::other(format!(
                "unexpected event set {evset:?} on queue {device_event}"
            )));
        }
        if device_event == RENDER_EVENTS {
            return self.render_event(evset, vrings);
        }
        let kind = match device_event {
            CONTROL_QUEUE => Queue::Control,
            CURSOR_QUEUE => Queue::Cursor,
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
