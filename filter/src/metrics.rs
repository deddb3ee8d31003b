//! The metrics operators graph, in Envoy's stats: defined at configure time, written on the
//! root context's tick, never per request (the counts are kept by the core's
//! [`eisodos_core::metrics::Counters`] in the VM's memory until the tick adds them).
//!
//! The names follow [`eisodos_core::metrics::stat_name`] (`wasmcustom.` in front in Envoy's
//! `/stats`); Envoy's `stats_config.stats_tags` turns the encoded labels into Prometheus
//! labels. Envoy's stats are process-wide, one per name whichever worker defines it: counters
//! add up across workers; gauges are set to a value every worker agrees on (the shared health
//! record, the process-wide in-flight table), so which worker writes last does not matter.

use std::cell::{Cell, RefCell};

use eisodos_core::balancer::Balancer;
use eisodos_core::local_reply::LocalReply;
use eisodos_core::metrics::{self as names, Counter, ProbeOutcome};
use log::warn;

use crate::abi::MetricKind;
use crate::host::Host;

/// The metric ids of one configuration on one worker (`None`: not defined).
pub struct Metrics {
    requests: Vec<Option<u32>>,
    ejections: Vec<Option<u32>>,
    probes: Vec<[Option<u32>; 3]>,
    healthy: Vec<Option<u32>>,
    /// Empty unless the policy counts requests in flight.
    in_flight: Vec<Option<u32>>,
    local_replies: [Option<u32>; LocalReply::COUNT],
    mode: Option<u32>,
    cas_exhausted: Option<u32>,
    /// The health gauges' values as this worker last set them: set again only on a change.
    healthy_set: RefCell<Vec<Option<bool>>>,
    mode_set: Cell<Option<u64>>,
}

/// Defines metrics under one plugin label.
struct Definer<'a, H> {
    host: &'a H,
    plugin: &'a str,
}

impl<H: Host> Definer<'_, H> {
    fn define(&self, kind: MetricKind, labels: &[(&str, &str)], family: &str) -> Option<u32> {
        let name = names::stat_name(self.plugin, labels, family);
        self.host
            .define_metric(kind, &name)
            .map_err(|status| warn!("cannot define metric {name}: {}", status.name()))
            .ok()
    }
}

impl Metrics {
    /// Defines the metrics of `balancer`'s configuration under the plugin name `plugin`: per
    /// backend `requests_total` and `backend_healthy`, `ejections_total` with passive ejection,
    /// `probes_total` with active checks, `in_flight` when the policy counts; once
    /// `local_replies_total` per reason, `mode`, `cas_exhausted_total`. A plugin or cluster
    /// name holding a separator of the encoding cannot be a label: its metrics are left out,
    /// with one warning.
    pub fn define(host: &impl Host, plugin: &str, balancer: &Balancer) -> Self {
        let config = balancer.config();
        let backends = config.backends.len();
        let mut metrics = Self {
            requests: vec![None; backends],
            ejections: vec![None; backends],
            probes: vec![[None; 3]; backends],
            healthy: vec![None; backends],
            in_flight: Vec::new(),
            local_replies: [None; LocalReply::COUNT],
            mode: None,
            cas_exhausted: None,
            healthy_set: RefCell::new(vec![None; backends]),
            mode_set: Cell::new(None),
        };
        if !names::encodable(plugin) {
            warn!(
                "no metrics: the plugin name {plugin:?} contains \";.;\" or \"=.=\", which the stat names use as separators"
            );
            return metrics;
        }
        let definer = Definer { host, plugin };
        let counter = MetricKind::Counter;
        let gauge = MetricKind::Gauge;
        let counts_in_flight = balancer.counts_in_flight();
        if counts_in_flight {
            metrics.in_flight = vec![None; backends];
        }
        for (index, backend) in config.backends.iter().enumerate() {
            let cluster = backend.cluster.as_str();
            if !names::encodable(cluster) {
                warn!(
                    "no metrics for backends[{index}]: its cluster {cluster:?} contains \";.;\" or \"=.=\", which the stat names use as separators"
                );
                continue;
            }
            let label = [("backend", cluster)];
            let define = |kind, family| definer.define(kind, &label, family);
            set(
                &mut metrics.requests,
                index,
                define(counter, names::REQUESTS_TOTAL),
            );
            set(
                &mut metrics.healthy,
                index,
                define(gauge, names::BACKEND_HEALTHY),
            );
            if counts_in_flight {
                set(
                    &mut metrics.in_flight,
                    index,
                    define(gauge, names::IN_FLIGHT),
                );
            }
            if config.outlier_detection.is_some() {
                set(
                    &mut metrics.ejections,
                    index,
                    define(counter, names::EJECTIONS_TOTAL),
                );
            }
            if config.health_check.is_some() {
                if let Some(slots) = metrics.probes.get_mut(index) {
                    for (slot, outcome) in slots.iter_mut().zip(ProbeOutcome::ALL) {
                        let labels = [("backend", cluster), ("result", outcome.label())];
                        *slot = definer.define(counter, &labels, names::PROBES_TOTAL);
                    }
                }
            }
        }
        for (slot, reason) in metrics.local_replies.iter_mut().zip(LocalReply::ALL) {
            *slot = definer.define(
                counter,
                &[("reason", reason.name())],
                names::LOCAL_REPLIES_TOTAL,
            );
        }
        metrics.mode = definer.define(gauge, &[], names::MODE);
        metrics.cas_exhausted = definer.define(counter, &[], names::CAS_EXHAUSTED_TOTAL);
        metrics
    }

    /// Adds this worker's counts since the last flush to Envoy's counters: one host call per
    /// counter that moved, none for one that did not.
    pub fn flush_counts(&self, host: &impl Host, balancer: &Balancer) {
        balancer.drain_counts(|counter, count| {
            let id = match counter {
                Counter::Requests(index) => self.requests.get(index).copied().flatten(),
                Counter::Ejections(index) => self.ejections.get(index).copied().flatten(),
                Counter::Probes(index, outcome) => self
                    .probes
                    .get(index)
                    .and_then(|slots| slots.get(outcome.slot()).copied().flatten()),
                Counter::LocalReplies(reason) => {
                    self.local_replies.get(reason.slot()).copied().flatten()
                }
                Counter::CasExhausted => self.cas_exhausted,
            };
            if let Some(id) = id {
                let _ = host.increment_metric(id, count);
            }
        });
    }

    /// Sets `backend_healthy` and `mode` where this worker's view of health changed since it
    /// last set them (the first time: all of them).
    pub fn follow_health(&self, host: &impl Host, balancer: &Balancer, now_ms: u64) {
        let healthy = balancer.backends_healthy(now_ms);
        let mut set_before = self.healthy_set.borrow_mut();
        for ((id, before), now) in self.healthy.iter().zip(set_before.iter_mut()).zip(healthy) {
            if *before != Some(now) {
                *before = Some(now);
                if let Some(id) = id {
                    let _ = host.record_metric(*id, u64::from(now));
                }
            }
        }
        let mode = names::mode_value(balancer.mode());
        if self.mode_set.get() != Some(mode) {
            self.mode_set.set(Some(mode));
            if let Some(id) = self.mode {
                let _ = host.record_metric(id, mode);
            }
        }
    }

    /// Whether there are in-flight gauges to refresh.
    pub fn counts_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Sets every in-flight gauge to its backend's process-wide count.
    pub fn record_in_flight(&self, host: &impl Host, counts: &[u32]) {
        for (id, &count) in self.in_flight.iter().zip(counts) {
            if let Some(id) = id {
                let _ = host.record_metric(*id, u64::from(count));
            }
        }
    }
}

fn set(slots: &mut [Option<u32>], index: usize, id: Option<u32>) {
    if let Some(slot) = slots.get_mut(index) {
        *slot = id;
    }
}
