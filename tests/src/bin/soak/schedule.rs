//! When things happen during a soak: backend flaps, configuration changes, samples. Worked
//! out in advance from the run's length, so the run and its report agree on it.

use std::time::Duration;

/// What a flap does to its upstream while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapKind {
    /// Answers every request (probes included) with 503.
    Fail,
    /// Stops listening: connections are refused, open ones closed.
    Close,
    /// Answers every request after this many milliseconds.
    Slow(u64),
}

impl FlapKind {
    /// A short name for tables.
    pub fn label(self) -> String {
        match self {
            FlapKind::Fail => "503".to_owned(),
            FlapKind::Close => "closed".to_owned(),
            FlapKind::Slow(ms) => format!("slow {ms} ms"),
        }
    }
}

/// One upstream misbehaving for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    /// Index of the upstream (0..4).
    pub upstream: usize,
    /// What it does.
    pub kind: FlapKind,
    /// From when (since the start of the load).
    pub start: Duration,
    /// Until when.
    pub end: Duration,
}

/// The whole run's timetable.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// How long the load runs.
    pub duration: Duration,
    /// The flaps, in order of start; never two at once.
    pub flaps: Vec<Flap>,
    /// When the configuration changes, in order; the `i`-th change applies configuration
    /// `(i + 1) % cycle_len`.
    pub changes: Vec<Duration>,
    /// Time between samples.
    pub sample_every: Duration,
}

/// The rotation of flaps: one upstream answers 503, another goes away, a third slows down.
const ROTATION: [(usize, FlapKind); 3] = [
    (0, FlapKind::Fail),
    (1, FlapKind::Close),
    (2, FlapKind::Slow(300)),
];

impl Schedule {
    /// The timetable of a run of `duration`: a configuration change every minute (every fifth
    /// of the run when that is shorter, so a short run still goes round the cycle of four), a
    /// flap starting every 25 s (a sixth of the run when shorter) and lasting half that, and a
    /// sample every 5 s (a thirtieth of the run when shorter). 25 s does not divide a minute,
    /// so flaps drift across the changes: some changes happen while an upstream is failing,
    /// gone or slow.
    pub fn new(duration: Duration) -> Self {
        let change_every = Duration::from_secs(60).min(duration / 5);
        let flap_every = Duration::from_secs(25).min(duration / 6);
        let sample_every = Duration::from_secs(5).min(duration / 30);
        let mut changes = Vec::new();
        let mut at = change_every;
        while !change_every.is_zero() && at + change_every / 4 < duration {
            changes.push(at);
            at += change_every;
        }
        let mut flaps = Vec::new();
        let mut at = flap_every / 2;
        let mut n = 0;
        while !flap_every.is_zero() && at + flap_every / 2 < duration {
            let (upstream, kind) = ROTATION[n % ROTATION.len()];
            flaps.push(Flap {
                upstream,
                kind,
                start: at,
                end: at + flap_every / 2,
            });
            at += flap_every;
            n += 1;
        }
        Self {
            duration,
            flaps,
            changes,
            sample_every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_minutes() {
        let s = Schedule::new(Duration::from_secs(600));
        assert_eq!(s.changes.len(), 9);
        assert_eq!(s.changes[0], Duration::from_secs(60));
        assert_eq!(s.flaps.len(), 23);
        assert!(s.flaps.windows(2).all(|w| w[0].end <= w[1].start));
        let spanning = s
            .changes
            .iter()
            .filter(|&&at| s.flaps.iter().any(|f| f.start < at && at < f.end))
            .count();
        assert!(spanning >= 3, "{spanning} changes during a flap");
        assert_eq!(s.sample_every, Duration::from_secs(5));
    }

    #[test]
    fn one_minute_still_goes_round_the_cycle() {
        let s = Schedule::new(Duration::from_secs(60));
        assert_eq!(s.changes.len(), 4);
        assert_eq!(s.sample_every, Duration::from_secs(2));
        assert!(s.flaps.len() >= 5);
    }
}
