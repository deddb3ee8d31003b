//! What eisodos counts for operators, and the stat names Envoy knows the counts by.
//!
//! Counting costs a request no host call: [`Counters`] are plain cells in the worker's VM,
//! added to Envoy's counters by the filter on its tick ([`Counters::drain`] hands over the
//! non-zero deltas). Envoy's stats are process-wide, so the counters of all workers add up.
//!
//! proxy-wasm metrics have no labels, so each label goes into the stat name as Istio encodes
//! its own, `key=.=value;.;`, and Envoy's `stats_config.stats_tags` (one regex per label,
//! `(key=\.=(.*?);\.;)`) turns it back into a label, leaving the family's name:
//! `eisodos.plugin=.=P;.;backend=.=B;.;requests_total` is `eisodos_requests_total{plugin="P",
//! backend="B"}` in `/stats/prometheus`. A value holding a separator cannot be encoded
//! ([`encodable`]).

use std::cell::Cell;

use crate::health::Mode;
use crate::local_reply::LocalReply;

/// How often the filter adds the counts to Envoy's counters and refreshes the in-flight
/// gauges, at most: a worker with nothing else to tick for ticks this often.
pub const FLUSH_PERIOD_MS: u64 = 1_000;

/// The separators of the encoding: a label value holding either would be cut or would be read
/// as another label.
pub const SEPARATORS: [&str; 2] = [";.;", "=.="];

/// `eisodos_requests_total{backend}`: requests routed to the backend.
pub const REQUESTS_TOTAL: &str = "requests_total";
/// `eisodos_in_flight{backend}`: requests in flight (policies that count them).
pub const IN_FLIGHT: &str = "in_flight";
/// `eisodos_backend_healthy{backend}`: 1 when the backend may take requests, else 0.
pub const BACKEND_HEALTHY: &str = "backend_healthy";
/// `eisodos_ejections_total{backend}`: passive ejections.
pub const EJECTIONS_TOTAL: &str = "ejections_total";
/// `eisodos_probes_total{backend,result}`: probe results.
pub const PROBES_TOTAL: &str = "probes_total";
/// `eisodos_local_replies_total{reason}`: requests eisodos answered itself.
pub const LOCAL_REPLIES_TOTAL: &str = "local_replies_total";
/// `eisodos_mode`: the selection mode, see [`mode_value`].
pub const MODE: &str = "mode";
/// `eisodos_cas_exhausted_total`: compare-and-swap loops that lost every attempt.
pub const CAS_EXHAUSTED_TOTAL: &str = "cas_exhausted_total";

/// Whether `value` can be a label value: it holds none of the [`SEPARATORS`].
pub fn encodable(value: &str) -> bool {
    !SEPARATORS.iter().any(|separator| value.contains(separator))
}

/// The stat name of `family` with the plugin label and `labels`, in this order (Envoy lists
/// the labels in the order of its `stats_tags`, whatever their order here).
pub fn stat_name(plugin: &str, labels: &[(&str, &str)], family: &str) -> String {
    let mut name = format!("eisodos.plugin=.={plugin};.;");
    for (key, value) in labels {
        name.push_str(key);
        name.push_str("=.=");
        name.push_str(value);
        name.push_str(";.;");
    }
    name.push_str(family);
    name
}

/// The value of the `eisodos_mode` gauge.
pub fn mode_value(mode: Mode) -> u64 {
    match mode {
        Mode::Normal => 0,
        Mode::Panic => 1,
        Mode::Backup => 2,
        Mode::AllDown => 3,
    }
}

/// How a probe ended: the `result` label, as Envoy names its own health-check stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// An answer with an expected status.
    Success,
    /// An answer with another status.
    Failure,
    /// No answer: refused, reset, timed out, or not sent at all.
    NetworkFailure,
}

impl ProbeOutcome {
    /// Every outcome, in slot order.
    pub const ALL: [Self; 3] = [Self::Success, Self::Failure, Self::NetworkFailure];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::NetworkFailure => "network_failure",
        }
    }

    /// Its position in [`Self::ALL`].
    pub fn slot(self) -> usize {
        self as usize
    }
}

/// One counter of one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// `requests_total` of a backend (its index).
    Requests(usize),
    /// `ejections_total` of a backend.
    Ejections(usize),
    /// `probes_total` of a backend, with a result.
    Probes(usize, ProbeOutcome),
    /// `local_replies_total` with a reason.
    LocalReplies(LocalReply),
    /// `cas_exhausted_total`.
    CasExhausted,
}

/// This worker's counts since the last [`Self::drain`].
#[derive(Debug)]
pub struct Counters {
    requests: Vec<Cell<u64>>,
    ejections: Vec<Cell<u64>>,
    probes: Vec<[Cell<u64>; 3]>,
    local_replies: [Cell<u64>; LocalReply::COUNT],
}

fn bump(cell: Option<&Cell<u64>>) {
    if let Some(cell) = cell {
        cell.set(cell.get().saturating_add(1));
    }
}

impl Counters {
    /// Zero counts for `backends` backends.
    pub fn new(backends: usize) -> Self {
        Self {
            requests: (0..backends).map(|_| Cell::new(0)).collect(),
            ejections: (0..backends).map(|_| Cell::new(0)).collect(),
            probes: (0..backends).map(|_| Default::default()).collect(),
            local_replies: Default::default(),
        }
    }

    /// A request was routed to `index`.
    pub fn routed(&self, index: usize) {
        bump(self.requests.get(index));
    }

    /// A request was answered locally.
    pub fn local_reply(&self, reason: LocalReply) {
        bump(self.local_replies.get(reason.slot()));
    }

    /// Backend `index` was ejected.
    pub fn ejected(&self, index: usize) {
        bump(self.ejections.get(index));
    }

    /// A probe of `index` ended so.
    pub fn probed(&self, index: usize, outcome: ProbeOutcome) {
        bump(
            self.probes
                .get(index)
                .and_then(|slots| slots.get(outcome.slot())),
        );
    }

    /// Hands every non-zero count to `add` and starts again from zero; with them the
    /// compare-and-swap loops this VM saw exhausted ([`crate::cas::take_exhausted`]). Zero
    /// counts are skipped: Envoy refuses to add 0 to a counter.
    pub fn drain(&self, mut add: impl FnMut(Counter, u64)) {
        let mut take = |counter: Counter, cell: &Cell<u64>| {
            let count = cell.take();
            if count > 0 {
                add(counter, count);
            }
        };
        for (index, cell) in self.requests.iter().enumerate() {
            take(Counter::Requests(index), cell);
        }
        for (index, cell) in self.ejections.iter().enumerate() {
            take(Counter::Ejections(index), cell);
        }
        for (index, slots) in self.probes.iter().enumerate() {
            for (outcome, cell) in ProbeOutcome::ALL.into_iter().zip(slots) {
                take(Counter::Probes(index, outcome), cell);
            }
        }
        for (reason, cell) in LocalReply::ALL.into_iter().zip(&self.local_replies) {
            take(Counter::LocalReplies(reason), cell);
        }
        take(
            Counter::CasExhausted,
            &Cell::new(crate::cas::take_exhausted()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(counters: &Counters) -> Vec<(Counter, u64)> {
        let mut out = Vec::new();
        counters.drain(|counter, count| out.push((counter, count)));
        out
    }

    #[test]
    fn names_follow_the_scheme_the_stats_tags_read() {
        assert_eq!(
            stat_name(
                "eisodos",
                &[("backend", "outbound|80||svc-a.default.svc.cluster.local")],
                REQUESTS_TOTAL
            ),
            "eisodos.plugin=.=eisodos;.;backend=.=outbound|80||svc-a.default.svc.cluster.local;.;requests_total"
        );
        assert_eq!(
            stat_name(
                "p",
                &[("backend", "b"), ("result", "success")],
                PROBES_TOTAL
            ),
            "eisodos.plugin=.=p;.;backend=.=b;.;result=.=success;.;probes_total"
        );
        assert_eq!(stat_name("p", &[], MODE), "eisodos.plugin=.=p;.;mode");
    }

    #[test]
    fn a_separator_cannot_be_encoded() {
        assert!(encodable("httproute/default/eisodos/rule/0"));
        assert!(encodable("a=b;c.d"));
        assert!(!encodable("a;.;b"));
        assert!(!encodable("reason=.=x"));
    }

    #[test]
    fn modes_are_numbered_in_order_of_trouble() {
        let values: Vec<u64> = [Mode::Normal, Mode::Panic, Mode::Backup, Mode::AllDown]
            .into_iter()
            .map(mode_value)
            .collect();
        assert_eq!(values, [0, 1, 2, 3]);
    }

    #[test]
    fn drain_hands_over_non_zero_counts_once() {
        // On wasm32 the tests share one thread: another test's exhausted loops are not ours.
        crate::cas::take_exhausted();
        let counters = Counters::new(2);
        assert_eq!(drained(&counters), []);
        counters.routed(1);
        counters.routed(1);
        counters.routed(7); // out of range: ignored, never a panic
        counters.local_reply(LocalReply::MissingKey);
        counters.ejected(0);
        counters.probed(1, ProbeOutcome::NetworkFailure);
        assert_eq!(
            drained(&counters),
            [
                (Counter::Requests(1), 2),
                (Counter::Ejections(0), 1),
                (Counter::Probes(1, ProbeOutcome::NetworkFailure), 1),
                (Counter::LocalReplies(LocalReply::MissingKey), 1),
            ]
        );
        assert_eq!(drained(&counters), [], "drained counts start from zero");
    }

    #[test]
    fn labels_are_the_documented_values() {
        let reasons: Vec<&str> = LocalReply::ALL.into_iter().map(LocalReply::name).collect();
        assert_eq!(
            reasons,
            [
                "no_healthy_backend",
                "missing_key",
                "circuit_open",
                "rate_limited",
                "denied"
            ]
        );
        let results: Vec<&str> = ProbeOutcome::ALL
            .into_iter()
            .map(ProbeOutcome::label)
            .collect();
        assert_eq!(results, ["success", "failure", "network_failure"]);
    }
}
