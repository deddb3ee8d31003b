//! Nanoseconds per pick of `Balancer::choose` (plus `release` when the choice is counted) on a
//! `MemoryStore`, per policy and backend count, with and without health checking.
//!
//! `cargo bench -p eisodos-core --bench selection` (append `-- --quick` for a faster pass).

// Benchmark code: failing loudly on a bad setup is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Backend counts for every policy (1000 is the configuration's maximum).
const SIZES: [usize; 4] = [3, 30, 300, 1000];
/// Backend counts for the health-checked variants.
const HEALTH_SIZES: [usize; 2] = [3, 1000];

fn bench_group(c: &mut Criterion, policy: &str, health: bool, sizes: &[usize]) {
    let name = if health {
        format!("choose/{policy}+health")
    } else {
        format!("choose/{policy}")
    };
    let mut group = c.benchmark_group(name);
    let pool = common::requests(policy);
    for &n in sizes {
        let (balancer, store) = common::balancer(policy, n, health);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut next = 0_usize;
            b.iter(|| {
                let request = &pool[next % common::POOL];
                next = next.wrapping_add(1);
                black_box(common::one_request(&balancer, &store, black_box(request)))
            });
        });
    }
    group.finish();
}

/// A 5xx storm: each failed request bumps the shared health record's version, and every other
/// worker follows it on its next tick. Measures one failed request (reported on one worker)
/// plus the tick of a second worker that follows it, at 1000 backends. No failure count
/// reaches the ejection threshold here, so the backends requests may go to never change.
fn failure_storm(c: &mut Criterion) {
    let mut group = c.benchmark_group("failed_request_then_tick");
    for policy in ["round_robin", "random", "least_request"] {
        let n = 1000;
        let json = common::config_json(policy, n, false).replacen(
            '{',
            r#"{"outlier_detection": {"consecutive_failures": 1000}, "#,
            1,
        );
        let (reporting, store) = common::balancer_from(&json);
        let following = common::balancer_on(&json, &store);
        let mut now = 1_000_u64;
        let mut index = 0_usize;
        group.bench_function(BenchmarkId::new(policy, n), |b| {
            b.iter(|| {
                now += 100;
                index = (index + 1) % n;
                black_box(reporting.report(&store, index, true, now));
                black_box(following.tick(&store, now));
            });
        });
    }
    group.finish();
}

fn selection(c: &mut Criterion) {
    for policy in common::POLICIES {
        bench_group(c, policy, false, &SIZES);
    }
    for policy in ["round_robin", "least_request"] {
        bench_group(c, policy, true, &HEALTH_SIZES);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = selection, failure_storm
}
criterion_main!(benches);
