//! Locks that a panicking holder does not poison for everyone else.
//!
//! Every process here is one jailed job whose threads share a little state
//! behind mutexes; a panic while one is held is already a bug (the release
//! profile aborts on panic), and the others must not fail with it in debug
//! builds either, or a test would see a second error that hides the first.
//! So the data is taken as the panicking thread left it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `lock_or_recover` on a `Mutex`.
pub trait LockExt<T> {
    /// Locks, taking the data as it is even if a holder panicked.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(7));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*m.lock_or_recover(), 7);
    }
}
