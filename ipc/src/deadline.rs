//! How long each blocking wait in the device may last. Every wait that
//! can be stalled by another party (the VMM, a worker) has a deadline, and
//! the deadlines nest: a wait that happens while an outer one is pending
//! is always the shorter, so the inner party's silence is noticed, answered
//! with an error and logged by the process that waited, before the outer
//! waiter gives up on a peer that is in fact healthy.
//!
//! From the inside out:
//! 1. the broker waits for the VMM (a display socket reply, the answer to
//!    SHMEM_MAP/UNMAP on the back-end request channel): [`VMM_REPLY`];
//! 2. a worker waits for the broker's answer on its per-connection display
//!    or map channel, which may wait on 1: [`BROKER_ANSWER`];
//! 3. gpu-worker waits for render-worker's answer on the render link,
//!    which may wait on 2 (RESOURCE_MAP_BLOB maps through the broker):
//!    [`RENDER_ANSWER`];
//! 4. the broker waits for gpu-worker's answer to a relayed vhost-user
//!    message, which may wait on 3 (the vring thread holds the device
//!    while it waits for render-worker): [`RELAY_ANSWER`].
//!
//! A waiter that times out treats its peer as gone for the connection (the
//! answer that comes late is never read as the next request's answer).
//! The workers wait on ipc channels with a receive timeout; the broker's
//! waits 1 and 4 go through the `vhost` crate and are bounded by the
//! broker's watchdog, which shuts the socket down at the deadline.

use std::time::Duration;

/// 1: the VMM's reply to a display message or a SHMEM_MAP/UNMAP request.
pub const VMM_REPLY: Duration = Duration::from_secs(4);
/// 2: the broker's answer on a per-connection display or map channel.
pub const BROKER_ANSWER: Duration = Duration::from_secs(6);
/// 3: render-worker's answer on the render link.
pub const RENDER_ANSWER: Duration = Duration::from_secs(9);
/// 4: gpu-worker's answer to a vhost-user message the broker relays.
pub const RELAY_ANSWER: Duration = Duration::from_secs(15);

/// The same deadline as a `timeval`, for SO_RCVTIMEO on ipc channels
/// (the `vhost` crate's endpoints retry EAGAIN, so the broker's waits
/// through it are bounded by its watchdog instead).
pub fn timeval(d: Duration) -> nix::sys::time::TimeVal {
    nix::sys::time::TimeVal::new(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        i64::from(d.subsec_micros()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_nest_with_room_for_the_inner_waiter_to_answer() {
        let chain = [VMM_REPLY, BROKER_ANSWER, RENDER_ANSWER, RELAY_ANSWER];
        for pair in chain.windows(2) {
            // The inner waiter times out, logs and answers its own peer
            // well before the outer one gives up.
            assert!(
                pair[1] >= pair[0] + Duration::from_secs(2),
                "{:?} does not nest inside {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}
