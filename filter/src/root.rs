//! The root context: one per plugin configuration per worker VM. Parses the plugin
//! configuration into a [`Balancer`] that the worker's stream contexts share, and ticks.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use eisodos_core::balancer::Balancer;
use eisodos_core::metrics::FLUSH_PERIOD_MS;
use log::{debug, error, info, warn};

use crate::host::Host;
use crate::metrics::Metrics;
use crate::{health_log, probe};

/// Used when Envoy does not report the plugin's name.
const DEFAULT_NAMESPACE: &str = "eisodos";

/// The current configuration: its balancer and its metrics.
type Current = (Rc<Balancer>, Rc<Metrics>);

/// Holds the current configuration's balancer, replaced as a whole on reconfiguration. Its
/// cells are never borrowed across a host call.
#[derive(Default)]
pub struct EisodosRoot {
    current: RefCell<Option<Current>>,
    /// Ticks until the next flush of the metric counts and the in-flight gauges.
    ticks_to_flush: Cell<u64>,
}

impl EisodosRoot {
    /// The current balancer, for a new stream.
    pub fn balancer(&self) -> Option<Rc<Balancer>> {
        self.current
            .borrow()
            .as_ref()
            .map(|(balancer, _)| Rc::clone(balancer))
    }

    fn current(&self) -> Option<Current> {
        self.current.borrow().clone()
    }

    /// The plugin is going away: its balancer ticks no more, but requests it admitted may
    /// still end and must give their in-flight counts back; its counts go to Envoy now.
    pub fn retire(&self, host: &impl Host) {
        if let Some((balancer, metrics)) = self.current() {
            retire(host, &balancer, &metrics);
        }
    }

    /// A probe's answer (or failure) arrived.
    pub fn on_http_call_response(&self, host: &impl Host, token: u32) {
        if let Some(balancer) = self.balancer() {
            let result = probe::result(host);
            if let Some(index) = balancer.probe_answered(token, result, host.now_ms()) {
                debug!(
                    "probe {} answered: {result:?}",
                    health_log::cluster(&balancer, index)
                );
            }
        }
    }

    /// Parses and applies the plugin configuration; false (Envoy refuses it) with one log
    /// line naming the field when it is wrong.
    pub fn on_configure(&self, host: &impl Host, plugin_configuration_size: usize) -> bool {
        crate::logger::follow_host_level(host);
        let bytes = match host.plugin_configuration(plugin_configuration_size) {
            Ok(bytes) => bytes,
            Err(status) => {
                error!(
                    "configuration: cannot be read from Envoy ({})",
                    status.name()
                );
                return false;
            }
        };
        let namespace = plugin_name(host).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let balancer = match Balancer::configure(&bytes, &namespace, random_seed()) {
            Ok(balancer) => balancer,
            Err(err) => {
                error!("invalid configuration: {err}");
                return false;
            }
        };
        if let Err(err) = balancer.create_shared_keys(host) {
            // Requests create a missing key themselves; only the start of the order may repeat.
            warn!("could not create shared-data keys under {namespace}: {err:?}");
        }
        // A reload over the same backends starts from the health shared data holds, not from
        // `initial_state` until the first tick.
        balancer.catch_up(host, host.now_ms());
        let config = balancer.config();
        info!(
            "configured {} over {} backends, header {}",
            config.policy.name(),
            config.backends.len(),
            config.cluster_header
        );
        if config.session_affinity.is_some()
            && config.health_check.is_none()
            && config.outlier_detection.is_none()
        {
            warn!("session_affinity without health_check or outlier_detection: a client pinned to a backend that goes down stays pinned to it");
        }
        for cluster in balancer.unreachable_by_hash() {
            warn!("backend {cluster} has no point on the hash ring (weight too small next to the others): it gets no hashed requests");
        }
        // The tick flushes in-flight debt, follows the shared health record, sends probes and
        // hands the metric counts to Envoy.
        let period = balancer.tick_period_ms();
        let tick = u32::try_from(period).unwrap_or(u32::MAX);
        if let Err(status) = host.set_tick_period_ms(tick) {
            warn!("cannot set the tick period: {}", status.name());
        }
        let metrics = Rc::new(Metrics::define(host, &namespace, &balancer));
        self.ticks_to_flush.set(0);
        let replaced = self
            .current
            .borrow_mut()
            .replace((Rc::new(balancer), metrics));
        if let Some((balancer, metrics)) = replaced {
            retire(host, &balancer, &metrics);
        }
        true
    }

    /// The periodic work: in-flight debt, health, probes, metrics.
    pub fn on_tick(&self, host: &impl Host) {
        let Some((balancer, metrics)) = self.current() else {
            return;
        };
        let balancer = &balancer;
        let now = host.now_ms();
        let tick = balancer.tick(host, now);
        health_log::log(balancer, tick.changes, tick.mode_change, now);
        if let Some(age_ms) = tick.restarted_stale_ms {
            health_log::log_stale_restart(age_ms);
        }
        for probe in tick.probes {
            probe::send(host, balancer, probe, now);
        }
        metrics.follow_health(host, balancer, now);
        // Counted in ticks, not by the clock: a flush every FLUSH_PERIOD_MS of ticks, so a
        // tick of that very period flushes every time whatever its jitter.
        let left = self.ticks_to_flush.get();
        if left > 1 {
            self.ticks_to_flush.set(left - 1);
            return;
        }
        self.ticks_to_flush
            .set(ticks_per_flush(balancer.tick_period_ms()));
        metrics.flush_counts(host, balancer);
        if metrics.counts_in_flight() {
            // A shared-data read: once per flush, not per tick.
            metrics.record_in_flight(host, &balancer.in_flight(host));
        }
    }
}

/// Ticks of `tick_period_ms` between two flushes of the metrics: one flush per
/// [`FLUSH_PERIOD_MS`] (the counts in Envoy are at most that, plus one tick, behind).
fn ticks_per_flush(tick_period_ms: u64) -> u64 {
    (FLUSH_PERIOD_MS / tick_period_ms.max(1)).max(1)
}

/// A configuration is done: pending releases and counts are written now.
fn retire(host: &impl Host, balancer: &Balancer, metrics: &Metrics) {
    balancer.retire(host);
    metrics.flush_counts(host, balancer);
}

/// The `name` Envoy gives this plugin: keeps shared-data keys of two eisodos filters apart.
fn plugin_name(host: &impl Host) -> Option<String> {
    let bytes = host.property(&["plugin_name"]).ok()??;
    let name = String::from_utf8(bytes).ok()?;
    (!name.is_empty()).then_some(name)
}

/// A seed for this VM's random source: std's hash keys come from WASI `random_get`.
fn random_seed() -> u64 {
    RandomState::new().build_hasher().finish()
}
