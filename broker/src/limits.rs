//! The per-process limits a supervisor sets (systemd's default descriptor
//! limit is 1024 soft, 524288 hard), checked once at start, before the
//! workers are spawned, so that they inherit what is set here.
//!
//! Descriptors are what `--max-contexts` costs: each cross-domain context
//! holds six descriptors in render-worker (its compositor connection, the
//! epoll set and wake-up eventfd of its thread among them), and more while a
//! message carries some; render-worker also keeps
//! its channels, its blobs' memfds and the keymaps and pipes compositors
//! send. The broker raises its soft limit to the hard one, as systemd asks
//! programs that need many descriptors to do (the soft limit stays low by
//! default only for programs that still use select(2)), and when even the
//! hard limit is too low for `--max-contexts` it lowers the cap and says so
//! in one line, rather than letting the hundred-and-seventieth INIT fail
//! with "Too many open files" deep inside rutabaga.
//!
//! Threads are the other per-context cost (one per cross-domain context);
//! they count against RLIMIT_NPROC and a unit's TasksMax, which the broker
//! checks the same way. Nothing here locks memory (blobs are mapped by the
//! VMM, not locked), so RLIMIT_MEMLOCK does not bound the device.

use log::{info, warn};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Descriptors one cross-domain context may hold in render-worker: six
/// while its channel is idle (measured: render-worker held 1545 with 256
/// contexts on the test compositor, tests/tests/limits.rs), and two for a
/// keymap or pipe in flight.
pub const DESCRIPTORS_PER_CONTEXT: u64 = 8;

/// Descriptors render-worker needs besides its contexts: its standard
/// streams and channels (about 16), and room for blobs' memfds, keymaps
/// and clipboard pipes the guest and compositor hold at once.
pub const DESCRIPTORS_BESIDES_CONTEXTS: u64 = 128;

/// Threads render-worker needs besides one per cross-domain context.
pub const THREADS_BESIDES_CONTEXTS: u64 = 16;

/// What the limits allow, after raising the soft limits to the hard ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// `--max-contexts`, or less where a limit cannot be raised that far.
    pub max_contexts: u32,
}

/// The most contexts `descriptors` descriptors allow (at least one: a
/// device with no context at all is no cross-domain device).
pub fn contexts_for_descriptors(descriptors: u64) -> u64 {
    (descriptors.saturating_sub(DESCRIPTORS_BESIDES_CONTEXTS) / DESCRIPTORS_PER_CONTEXT).max(1)
}

/// The most contexts `threads` threads (of this user) allow.
pub fn contexts_for_threads(threads: u64) -> u64 {
    threads.saturating_sub(THREADS_BESIDES_CONTEXTS).max(1)
}

/// Raises a soft limit to its hard limit; the limit in force afterwards.
fn raise(resource: Resource, name: &str) -> u64 {
    let Ok((soft, hard)) = getrlimit(resource) else {
        return RLIM_INFINITY;
    };
    if soft < hard {
        match setrlimit(resource, hard, hard) {
            Ok(()) => {
                info!("{name}: soft limit raised from {soft} to the hard limit, {hard}");
                return hard;
            }
            Err(e) => warn!("{name}: cannot raise the soft limit {soft} to {hard}: {e}"),
        }
    }
    soft
}

/// Raises the descriptor and thread soft limits to the hard ones, then,
/// where contexts hold descriptors and threads (`cross_domain`: a
/// compositor is configured), lowers `max_contexts` to what the limits
/// allow, with one line naming the limit and how to raise it.
pub fn apply(max_contexts: u32, cross_domain: bool) -> Allowed {
    let descriptors = raise(Resource::RLIMIT_NOFILE, "descriptors (RLIMIT_NOFILE)");
    let threads = raise(Resource::RLIMIT_NPROC, "threads (RLIMIT_NPROC)");
    if !cross_domain {
        return Allowed { max_contexts };
    }
    let mut allowed = u64::from(max_contexts);
    let by_descriptors = contexts_for_descriptors(descriptors);
    if by_descriptors < allowed {
        warn!(
            "--max-contexts {max_contexts} needs {} descriptors in render-worker, but the \
             descriptor limit is {descriptors}: at most {by_descriptors} contexts; raise the \
             limit (LimitNOFILE= in the unit, ulimit -Hn) or give a lower --max-contexts",
            DESCRIPTORS_BESIDES_CONTEXTS + DESCRIPTORS_PER_CONTEXT * u64::from(max_contexts)
        );
        allowed = by_descriptors;
    }
    let by_threads = contexts_for_threads(threads);
    if by_threads < allowed {
        warn!(
            "--max-contexts {allowed} needs {} threads in render-worker, but the thread limit \
             is {threads}: at most {by_threads} contexts; raise the limit (LimitNPROC= in the \
             unit, ulimit -Hu) or give a lower --max-contexts",
            THREADS_BESIDES_CONTEXTS + allowed
        );
        allowed = by_threads;
    }
    Allowed {
        // Never more than asked, which is a u32.
        max_contexts: u32::try_from(allowed).unwrap_or(max_contexts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemds_soft_default_cannot_hold_the_default_contexts_but_its_hard_one_can() {
        assert!(contexts_for_descriptors(1024) < 256);
        assert!(contexts_for_descriptors(524_288) >= 256);
    }

    #[test]
    fn a_limit_below_what_render_worker_needs_alone_still_allows_one_context() {
        assert_eq!(contexts_for_descriptors(0), 1);
        assert_eq!(contexts_for_descriptors(DESCRIPTORS_BESIDES_CONTEXTS), 1);
        assert_eq!(contexts_for_threads(3), 1);
    }

    #[test]
    fn contexts_fill_what_is_left_after_render_workers_own() {
        let n = 100;
        assert_eq!(
            contexts_for_descriptors(DESCRIPTORS_BESIDES_CONTEXTS + DESCRIPTORS_PER_CONTEXT * n),
            n
        );
        assert_eq!(contexts_for_threads(THREADS_BESIDES_CONTEXTS + n), n);
        assert_eq!(contexts_for_threads(RLIM_INFINITY), RLIM_INFINITY - 16);
    }
}
