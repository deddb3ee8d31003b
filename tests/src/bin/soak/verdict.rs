//! Whether a soak passed: pure functions of what was measured, so they can be tested
//! without a soak.
//!
//! - **Memory flat** (RSS and the allocator's `allocated`): the first quarter of the run is
//!   warm-up. The last quarter's mean may exceed the second quarter's by at most
//!   [`Flat::percent`] of it or [`Flat::bytes`], whichever is larger; and the least-squares
//!   slope over the second half, times the second half's length, by no more than the same.
//!   At 400 requests a second a leak of 40 bytes a request (4.6 MiB over the second half of
//!   ten minutes) fails the `allocated` check.
//! - **Keys flat**: once every configuration of the cycle has been applied (and had
//!   [`KEYS_SETTLE`] to create its keys), every later sample counts the same keys with the same
//!   total size: exactly the keys the configurations create (`Balancer::shared_keys`), so the
//!   filter names its keys as the core lists them.
//! - **Requests**: every failure is explained by a flap: a 5xx from the upstream that answers
//!   503 while it does, or Envoy's own 5xx (no upstream answered) while an upstream is gone,
//!   each until [`GRACE`] after the flap ends. Anything else (a transport error, eisodos'
//!   `no_healthy_backend` or `circuit_open`, a failure outside a flap) fails the soak. 429s
//!   `rate_limited` are the limit working, not failures.
//! - **In-flight counts** zero at the end, and **no Wasm panic or VM failure** in the log.

use std::time::Duration;

use crate::sample::Sample;
use crate::schedule::{FlapKind, Schedule};
use crate::traffic::{Done, Outcome};

/// How long after a flap's end its failures are still its own (answers already on their way,
/// connections Envoy had to the upstream before it came back).
pub const GRACE: Duration = Duration::from_secs(2);

/// How long after a configuration change its keys may take to appear (the probe lease is
/// created by the first tick).
pub const KEYS_SETTLE: Duration = Duration::from_secs(5);

/// The tolerance of a "flat" series.
#[derive(Debug, Clone, Copy)]
pub struct Flat {
    /// Growth allowed, as a percentage of the second quarter's mean.
    pub percent: f64,
    /// Growth allowed in bytes, when larger than the percentage.
    pub bytes: f64,
}

/// RSS: 5% or 8 MiB.
pub const RSS_FLAT: Flat = Flat {
    percent: 5.0,
    bytes: 8.0 * 1024.0 * 1024.0,
};

/// `allocated`: 5% or 4 MiB.
pub const ALLOCATED_FLAT: Flat = Flat {
    percent: 5.0,
    bytes: 4.0 * 1024.0 * 1024.0,
};

/// One check and its outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub pass: bool,
    /// The figures behind it.
    pub detail: String,
}

/// What a memory series did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Mean of the second quarter.
    pub q2_mean: f64,
    /// Mean of the last quarter.
    pub q4_mean: f64,
    /// Least-squares slope over the second half, per second.
    pub slope: f64,
    /// The second half's length, seconds.
    pub half: f64,
    /// Growth allowed.
    pub allowed: f64,
}

impl Trend {
    /// Whether both the quarters and the slope stay within the allowance.
    pub fn flat(&self) -> bool {
        self.q4_mean - self.q2_mean <= self.allowed && self.slope * self.half <= self.allowed
    }
}

/// The trend of `series` (time in seconds, value) over a run of `duration` seconds; `None`
/// with fewer than two points in a quarter or the second half.
pub fn trend(series: &[(f64, f64)], duration: f64, tolerance: Flat) -> Option<Trend> {
    let within = |from: f64, to: f64| -> Vec<(f64, f64)> {
        series
            .iter()
            .copied()
            .filter(|&(t, _)| t >= from && t <= to)
            .collect()
    };
    let q = duration / 4.0;
    let q2 = within(q, 2.0 * q);
    let q4 = within(3.0 * q, duration);
    let half = within(2.0 * q, duration);
    if q2.len() < 2 || q4.len() < 2 || half.len() < 2 {
        return None;
    }
    let mean =
        |points: &[(f64, f64)]| points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let q2_mean = mean(&q2);
    Some(Trend {
        q2_mean,
        q4_mean: mean(&q4),
        slope: slope(&half),
        half: duration / 2.0,
        allowed: (q2_mean * tolerance.percent / 100.0).max(tolerance.bytes),
    })
}

/// Least-squares slope of `points` (0 when they all share one time).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mt, mv) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut num, mut den) = (0.0, 0.0);
    for &(t, v) in points {
        num += (t - mt) * (v - mv);
        den += (t - mt) * (t - mt);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The memory check of one series.
pub fn memory_check(name: &str, series: &[(f64, f64)], duration: f64, tol: Flat) -> Check {
    match trend(series, duration, tol) {
        Some(t) => Check {
            name: format!("{name} flat"),
            pass: t.flat(),
            detail: format!(
                "second quarter {:.1} MiB, last quarter {:.1} MiB ({:+.2} MiB), slope over the \
                 second half {:+.3} MiB/min ({:+.2} MiB over it); allowed {:.1} MiB",
                mib(t.q2_mean),
                mib(t.q4_mean),
                mib(t.q4_mean - t.q2_mean),
                mib(t.slope * 60.0),
                mib(t.slope * t.half),
                mib(t.allowed)
            ),
        },
        None => Check {
            name: format!("{name} flat"),
            pass: false,
            detail: "too few samples".to_owned(),
        },
    }
}

/// Bytes in MiB.
pub fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// When every configuration of a cycle of `cycle_len` has been applied: the time of the
/// change that applies the last one not yet seen (configuration 0 serves from the start).
pub fn all_applied(schedule: &Schedule, cycle_len: usize) -> Option<Duration> {
    schedule
        .changes
        .get(cycle_len.checked_sub(2)?)
        .copied()
        .or(if cycle_len == 1 {
            Some(Duration::ZERO)
        } else {
            None
        })
}

/// The keys check: every sample from `from` on has the same count and size, within `limit`.
pub fn keys_check(samples: &[Sample], from: Duration, limit: usize) -> Check {
    let later: Vec<(u64, u64)> = samples
        .iter()
        .filter(|s| s.t >= from.as_secs_f64())
        .filter_map(|s| Some((s.keys?, s.key_bytes?)))
        .collect();
    let name = "shared-data keys flat".to_owned();
    let Some(&first) = later.first() else {
        return Check {
            name,
            pass: false,
            detail: "no key samples after the cycle's configurations were all applied".into(),
        };
    };
    let (min_k, max_k) = minmax(later.iter().map(|k| k.0));
    let (min_b, max_b) = minmax(later.iter().map(|k| k.1));
    Check {
        name,
        pass: min_k == max_k && min_b == max_b && max_k == limit as u64,
        detail: format!(
            "{} samples from {:.0} s on: {}..={} keys, {}..={} bytes (first {} keys, {} bytes); \
             the configurations create {limit}",
            later.len(),
            from.as_secs_f64(),
            min_k,
            max_k,
            min_b,
            max_b,
            first.0,
            first.1
        ),
    }
}

fn minmax(values: impl Iterator<Item = u64>) -> (u64, u64) {
    values.fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Whether `outcome` is a failure (a 5xx or no answer).
pub fn is_failure(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Upstream { status, .. }
        | Outcome::Local { status, .. }
        | Outcome::Envoy { status } => *status >= 500,
        Outcome::Transport => true,
    }
}

/// The flap (its index) that explains a failed request, if any; `names` are the upstreams'.
pub fn explained_by(done: &Done, schedule: &Schedule, names: &[&str]) -> Option<usize> {
    schedule.flaps.iter().position(|flap| {
        let active = done.at >= flap.start && done.at <= flap.end + GRACE;
        active
            && match (&done.outcome, flap.kind) {
                (Outcome::Upstream { status, backend }, FlapKind::Fail) => {
                    *status >= 500 && names.get(flap.upstream) == Some(&backend.as_str())
                }
                (Outcome::Envoy { status }, FlapKind::Close) => *status >= 500,
                _ => false,
            }
    })
}

/// The requests check: failures by flap, and those no flap explains.
pub fn requests_check(done: &[Done], schedule: &Schedule, names: &[&str]) -> (Check, Vec<u64>) {
    let mut per_flap = vec![0_u64; schedule.flaps.len()];
    let mut unexplained: Vec<&Done> = Vec::new();
    for d in done.iter().filter(|d| is_failure(&d.outcome)) {
        match explained_by(d, schedule, names) {
            Some(i) => {
                if let Some(n) = per_flap.get_mut(i) {
                    *n += 1;
                }
            }
            None => unexplained.push(d),
        }
    }
    let explained: u64 = per_flap.iter().sum();
    let examples: Vec<String> = unexplained
        .iter()
        .take(5)
        .map(|d| format!("{} at {:.2} s", d.outcome.label(), d.at.as_secs_f64()))
        .collect();
    (
        Check {
            name: "no failure beyond the flaps".to_owned(),
            pass: unexplained.is_empty(),
            detail: format!(
                "{explained} failures explained by flaps (at most {} in one), {} unexplained{}",
                per_flap.iter().max().copied().unwrap_or(0),
                unexplained.len(),
                if examples.is_empty() {
                    String::new()
                } else {
                    format!(": {}", examples.join(", "))
                }
            ),
        },
        per_flap,
    )
}

/// Lines of an Envoy log that say a Wasm VM panicked or failed.
pub fn vm_failures(log: &str) -> Vec<String> {
    const SIGNS: [&str; 6] = [
        "panicked at",
        "wasm vm failed",
        "vm crashed",
        "failed to create wasm vm",
        "plugin configured to fail",
        "[critical]",
    ];
    log.lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            SIGNS.iter().any(|sign| lower.contains(sign))
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..=120)
            .map(|i| f64::from(i) * 5.0)
            .map(|t| (t, f(t)))
            .collect()
    }

    #[test]
    fn a_flat_noisy_series_is_flat() {
        let s = series(|t| {
            80.0 * MIB
                + if (t as u64 / 5).is_multiple_of(2) {
                    MIB
                } else {
                    -MIB
                }
        });
        let c = memory_check("rss", &s, 600.0, RSS_FLAT);
        assert!(c.pass, "{c:?}");
    }

    #[test]
    fn warm_up_growth_is_forgiven() {
        let s = series(|t| {
            if t < 100.0 {
                40.0 * MIB + t * MIB / 5.0
            } else {
                60.0 * MIB
            }
        });
        assert!(memory_check("rss", &s, 600.0, RSS_FLAT).pass);
    }

    #[test]
    fn a_steady_leak_fails() {
        // 20 MiB over ten minutes: 4096 bytes a second.
        let s = series(|t| 80.0 * MIB + t * 4096.0 * 8.5);
        let c = memory_check("rss", &s, 600.0, RSS_FLAT);
        assert!(!c.pass, "{c:?}");
        let s = series(|t| 30.0 * MIB + t * 40.0 * 400.0);
        let c = memory_check("allocated", &s, 600.0, ALLOCATED_FLAT);
        assert!(!c.pass, "a 40-byte-a-request leak at 400/s: {c:?}");
    }

    #[test]
    fn a_step_late_in_the_run_fails() {
        let s = series(|t| if t > 500.0 { 90.0 * MIB } else { 60.0 * MIB });
        assert!(!memory_check("rss", &s, 600.0, RSS_FLAT).pass);
    }

    fn sample(t: f64, keys: u64, bytes: u64) -> Sample {
        Sample {
            t,
            keys: Some(keys),
            key_bytes: Some(bytes),
            ..Sample::default()
        }
    }

    #[test]
    fn keys_must_stay_equal_after_the_cycle() {
        let from = Duration::from_secs(120);
        let ok = [
            sample(10.0, 50, 100),
            sample(130.0, 74, 200),
            sample(300.0, 74, 200),
        ];
        assert!(keys_check(&ok, from, 74).pass);
        let grew = [sample(130.0, 74, 200), sample(300.0, 75, 210)];
        assert!(!keys_check(&grew, from, 75).pass);
        let resized = [sample(130.0, 74, 200), sample(300.0, 74, 210)];
        assert!(!keys_check(&resized, from, 74).pass);
        assert!(!keys_check(&ok, from, 60).pass, "more keys than configured");
        assert!(
            !keys_check(&ok, from, 80).pass,
            "fewer keys than configured"
        );
        assert!(!keys_check(&ok[..1], from, 74).pass, "no samples after");
    }

    fn done(at: f64, outcome: Outcome) -> Done {
        Done {
            due: Duration::from_secs_f64(at),
            at: Duration::from_secs_f64(at),
            outcome,
            moved: false,
        }
    }

    #[test]
    fn failures_are_explained_only_by_their_flap() {
        let schedule = Schedule::new(Duration::from_secs(600));
        // Flap 0: upstream 0 answers 503 from 12.5 s to 25 s; flap 1: upstream 1 gone
        // 37.5-50 s.
        let names = ["a", "b", "c", "d"];
        let up = |status, backend: &str| Outcome::Upstream {
            status,
            backend: backend.to_owned(),
        };
        let all = [
            done(15.0, up(503, "a")),
            done(26.5, up(503, "a")),
            done(40.0, Outcome::Envoy { status: 503 }),
            done(41.0, up(200, "c")),
            done(
                42.0,
                Outcome::Local {
                    status: 429,
                    reason: "rate_limited".into(),
                },
            ),
        ];
        let (check, per_flap) = requests_check(&all, &schedule, &names);
        assert!(check.pass, "{check:?}");
        assert_eq!(&per_flap[..2], &[2, 1]);
        for stray in [
            done(15.0, up(503, "b")),
            done(30.0, up(503, "a")),
            done(15.0, Outcome::Envoy { status: 503 }),
            done(40.0, Outcome::Transport),
            done(
                40.0,
                Outcome::Local {
                    status: 503,
                    reason: "no_healthy_backend".into(),
                },
            ),
        ] {
            let (check, _) = requests_check(std::slice::from_ref(&stray), &schedule, &names);
            assert!(!check.pass, "{stray:?}");
        }
    }

    #[test]
    fn vm_failures_are_found() {
        let log = "[info] wasm log eisodos: ok\n[critical] wasm log: panicked at core/src/x.rs:1\n";
        assert_eq!(vm_failures(log).len(), 1);
        assert!(vm_failures("[info] all good\n").is_empty());
    }

    #[test]
    fn the_cycle_is_complete_after_its_last_new_configuration() {
        let schedule = Schedule::new(Duration::from_secs(600));
        assert_eq!(all_applied(&schedule, 4), Some(Duration::from_secs(180)));
    }
}
