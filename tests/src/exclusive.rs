//! One load-sensitive test at a time within a test binary.
//!
//! cargo runs the tests of one binary in parallel. On a 2-core machine, two tests that each
//! run an Envoy with two workers, upstreams and a load generator starve each other, and a test
//! whose outcome depends on latency or on timers (least-request's split, health-check
//! deadlines) then measures the other test instead of the feature. Such a test takes this lock
//! first; tests that only check routing decisions need not.

use std::sync::{Mutex, MutexGuard};

static MACHINE: Mutex<()> = Mutex::new(());

/// Holds the machine for one test until the guard is dropped. A test that failed while
/// holding it does not poison it for the others.
pub fn machine() -> MutexGuard<'static, ()> {
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
