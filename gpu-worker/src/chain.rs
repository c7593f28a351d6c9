//! The shape of a descriptor chain, checked as a whole before any command
//! in it is read: no zero-length descriptor, no readable descriptor after
//! a writable one, no loop and nothing past the descriptor table. Ranges
//! against guest memory are checked by `virtio-queue`'s `Reader` and
//! `Writer` when they are made.

use std::ops::Deref;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryMmap;

/// Why a chain was refused before its command was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The chain has no descriptors: its head lies past the queue.
    #[error("its head index lies past the queue")]
    Empty,
    /// A descriptor still points onward after the queue size was walked
    /// (a loop) or points past the descriptor table.
    #[error("it loops or points past the descriptor table")]
    Broken,
    #[error("it has a zero-length descriptor")]
    ZeroLength,
    #[error("a readable descriptor follows a writable one")]
    ReadableAfterWritable,
    /// A descriptor's range is not inside guest memory.
    #[error("a descriptor points outside guest memory")]
    OutsideMemory,
}

/// Checks the shape of a whole chain before any of it is trusted.
pub fn validate<T>(chain: DescriptorChain<T>) -> Result<(), ChainError>
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

/// Whether the writable descriptors a refused chain yields are distinct
/// ranges of memory (a chain that loops yields the same ones again), so
/// that an answer written there is sound.
pub fn writable_ranges_disjoint<T>(chain: DescriptorChain<T>) -> bool
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
