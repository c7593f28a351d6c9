//! `--max-resource-memory`: the host memory a guest's resources take,
//! 2D resources (their pixels, here) and host blobs (in render-worker)
//! together.

use wire::{refuse, Refusal, RESP_ERR_OUT_OF_MEMORY};

#[derive(Debug)]
pub struct MemoryBudget {
    used: u64,
    max: u64,
}

impl MemoryBudget {
    pub fn new(max: u64) -> Self {
        MemoryBudget { used: 0, max }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    /// Whether `bytes` more would fit; ERR_OUT_OF_MEMORY if not.
    pub fn check(&self, bytes: u64) -> Result<(), Refusal> {
        if self.used.saturating_add(bytes) > self.max {
            return refuse(
                RESP_ERR_OUT_OF_MEMORY,
                format!(
                    "{bytes} more bytes; {} of {} are in use (--max-resource-memory)",
                    self.used, self.max
                ),
            );
        }
        Ok(())
    }

    /// Counts `bytes` more, if they fit.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), Refusal> {
        self.check(bytes)?;
        self.used += bytes;
        Ok(())
    }

    pub fn release(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Nothing is held any more (a device reset).
    pub fn clear(&mut self) {
        self.used = 0;
    }
}
