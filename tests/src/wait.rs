//! Waiting for a state instead of sleeping and hoping: poll until a condition holds, with a
//! deadline far beyond what the condition needs, so a slow machine only makes the wait longer.

use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it returns `Ok`, and returns that value.
///
/// # Panics
/// When `within` passes first, with `check`'s last `Err` as the message.
pub fn until<T>(within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => {
                panic!("still not so after {within:?}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
