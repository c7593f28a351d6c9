//! Rate-limited logging for events a less trusted peer can trigger: a guest
//! that sends a malformed chain a million times, or a compromised worker
//! that sends the broker forged requests, gets a few log lines and a count,
//! not a full disk. It lives here, beside the vocabulary, because every
//! receiver of that vocabulary needs it.

use crate::LockExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines allowed per window before further lines are counted, not printed.
const LINES_PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    window_start: Instant,
    printed: u32,
    suppressed: u64,
}

#[derive(Debug)]
pub struct LogLimiter {
    state: Mutex<State>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter {
            state: Mutex::new(State {
                window_start: Instant::now(),
                printed: 0,
                suppressed: 0,
            }),
        }
    }
}

impl LogLimiter {
    /// Returns whether a line may be printed now, and how many lines were
    /// suppressed since the last one that was (to be said in that line).
    pub fn admit(&self) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting;
        // the counters are still usable.
        let mut s = self.state.lock_or_recover();
        let now = Instant::now();
        if now.duration_since(s.window_start) >= WINDOW {
            s.window_start = now;
            s.printed = 0;
        }
        if s.printed < LINES_PER_WINDOW {
            s.printed += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

/// Logs at `warn` through a [`LogLimiter`].
#[macro_export]
macro_rules! limited_warn {
    ($limiter:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limiter.admit() {
            if suppressed > 0 {
                $crate::__log::warn!("{} ({} similar lines suppressed)", format_args!($($arg)+), suppressed);
            } else {
                $crate::__log::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_burst_then_counts() {
        let l = LogLimiter::default();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(l.admit(), Some(0));
        }
        assert_eq!(l.admit(), None);
        assert_eq!(l.admit(), None);
        l.state.lock().unwrap().window_start -= WINDOW;
        assert_eq!(l.admit(), Some(2));
    }
}
