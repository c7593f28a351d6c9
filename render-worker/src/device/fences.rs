//! Fences and their timelines: what rutabaga signalled, and the fences
//! gpu-worker was told are pending.

use std::collections::BTreeMap;

use ipc::{Channel, Nothing, RenderEvent};
use log::warn;

/// Where rutabaga's fence signals go. Fences live on timelines: a
/// context's ring (VIRTIO_GPU_FLAG_INFO_RING_IDX), or the device's one
/// global timeline for a fence without a ring, whatever context its
/// command named (as crosvm and virglrenderer count them: virglrenderer
/// reports a global fence with context 0, and only the latest it retired).
/// A signal retires every fence of its timeline up to its id. A fence
/// gpu-worker was told is pending becomes an event on the event channel;
/// one created after its timeline passed it is answered as signalled.
#[derive(Default)]
pub struct Fences {
    /// Each timeline's highest fence id signalled.
    signalled: BTreeMap<Timeline, u64>,
    /// Fences answered as pending, as gpu-worker named them.
    pub(super) pending: Vec<(u32, Option<u8>, u64)>,
    pub(super) events: Option<Channel<RenderEvent, Nothing>>,
}

/// A context's ring, or (context 0, no ring) the global timeline.
pub(super) type Timeline = (u32, Option<u8>);

pub(super) fn timeline(ctx_id: u32, ring: Option<u8>) -> Timeline {
    match ring {
        Some(_) => (ctx_id, ring),
        None => (0, None),
    }
}

impl Fences {
    /// Retires `fence_id` and every earlier fence of `on`.
    pub(super) fn signal(&mut self, on: Timeline, fence_id: u64) {
        let upto = self.signalled.entry(on).or_insert(0);
        *upto = (*upto).max(fence_id);
        let mut retired = Vec::new();
        self.pending.retain(|&(ctx_id, ring, id)| {
            let done = timeline(ctx_id, ring) == on && id <= fence_id;
            if done {
                retired.push(RenderEvent::FenceSignalled {
                    ctx_id,
                    ring,
                    fence_id: id,
                });
            }
            !done
        });
        for event in retired {
            if let Some(events) = &self.events {
                if let Err(e) = events.send(&event, &[]) {
                    warn!("render-worker: event channel: {e}");
                }
            }
        }
    }

    /// Whether fence `fence_id` of `on` has been signalled already.
    pub(super) fn passed(&self, on: Timeline, fence_id: u64) -> bool {
        self.signalled
            .get(&on)
            .is_some_and(|&upto| upto >= fence_id)
    }

    /// Forgets the timelines of a destroyed context's rings.
    pub(super) fn forget_context(&mut self, ctx_id: u32) {
        self.signalled.retain(|&(c, _), _| c != ctx_id);
    }

    /// Forgets every fence (a new connection, a reset).
    pub(super) fn clear(&mut self) {
        self.signalled.clear();
        self.pending.clear();
    }
}
