//! The root context: one per plugin configuration per worker VM. Parses the plugin
//! configuration into a [`Balancer`] that the worker's stream contexts share, and ticks.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use eisodos_core::balancer::Balancer;
use eisodos_core::config::Config;
use eisodos_core::health::{Change, Mode};
use log::{debug, error, info, warn};

use crate::abi;
use crate::metrics::InFlightGauges;
use crate::shared_data::HostStore;
use crate::{host, probe};

/// Used when Envoy does not report the plugin's name.
const DEFAULT_NAMESPACE: &str = "eisodos";

/// Holds the current configuration's balancer, replaced as a whole on reconfiguration. Its
/// cells are never borrowed across a host call.
#[derive(Default)]
pub struct EisodosRoot {
    balancer: RefCell<Option<Rc<Balancer>>>,
    in_flight_gauges: RefCell<Option<Rc<InFlightGauges>>>,
    /// When the gauges were last refreshed.
    gauges_ms: Cell<u64>,
}

/// How often the in-flight gauges are refreshed: each refresh is a shared-data read, and the
/// tick that writes releases runs every 20 ms.
const GAUGE_PERIOD_MS: u64 = 1_000;

impl EisodosRoot {
    /// The current balancer, for a new stream.
    pub fn balancer(&self) -> Option<Rc<Balancer>> {
        self.balancer.borrow().clone()
    }

    /// The plugin is going away: its balancer ticks no more, but requests it admitted may
    /// still end and must give their in-flight counts back.
    pub fn retire(&self) {
        if let Some(balancer) = self.balancer() {
            balancer.retire(&HostStore);
        }
    }

    /// A probe's answer (or failure) arrived.
    pub fn on_http_call_response(&self, token: u32) {
        if let Some(balancer) = self.balancer() {
            let result = probe::result();
            if let Some(index) = balancer.probe_answered(token, result, host::now_ms()) {
                debug!("probe {} answered: {result:?}", cluster(&balancer, index));
            }
        }
    }

    /// Parses and applies the plugin configuration; false (Envoy refuses it) with one log
    /// line naming the field when it is wrong.
    pub fn on_configure(&self, plugin_configuration_size: usize) -> bool {
        crate::logger::follow_host_level();
        let bytes = match abi::plugin_configuration(plugin_configuration_size) {
            Ok(bytes) => bytes,
            Err(status) => {
                error!(
                    "configuration: cannot be read from Envoy ({})",
                    status.name()
                );
                return false;
            }
        };
        let namespace = plugin_name().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let balancer = match Config::parse(&bytes)
            .and_then(|config| Balancer::new(config, &namespace, random_seed()))
        {
            Ok(balancer) => balancer,
            Err(err) => {
                error!("invalid configuration: {err}");
                return false;
            }
        };
        if let Err(err) = balancer.create_shared_keys(&HostStore) {
            // Requests create a missing key themselves; only the start of the order may repeat.
            warn!("could not create shared-data keys under {namespace}: {err:?}");
        }
        let config = balancer.config();
        info!(
            "configured {} over {} backends, header {}",
            config.policy.name(),
            config.backends.len(),
            config.cluster_header
        );
        for cluster in balancer.unreachable_by_hash() {
            warn!("backend {cluster} has no point on the hash ring (weight too small next to the others): it gets no hashed requests");
        }
        // The tick flushes in-flight debt, follows the shared health record and sends probes.
        let tick = u32::try_from(balancer.tick_period_ms()).unwrap_or(u32::MAX);
        if let Err(status) = abi::set_tick_period_ms(tick) {
            warn!("cannot set the tick period: {}", status.name());
        }
        let gauges = balancer.counts_in_flight().then(|| {
            Rc::new(InFlightGauges::define(
                &namespace,
                config.backends.iter().map(|b| b.cluster.as_str()),
            ))
        });
        *self.in_flight_gauges.borrow_mut() = gauges;
        let replaced = self.balancer.borrow_mut().replace(Rc::new(balancer));
        if let Some(replaced) = replaced {
            replaced.retire(&HostStore);
        }
        true
    }

    /// The periodic work: in-flight debt, health, probes, gauges.
    pub fn on_tick(&self) {
        let Some(balancer) = self.balancer() else {
            return;
        };
        let balancer = &balancer;
        let now = host::now_ms();
        let tick = balancer.tick(&HostStore, now);
        for (index, change) in &tick.changes {
            log_change(balancer, *index, *change);
        }
        if let Some((before, after)) = tick.mode_change {
            match after {
                Mode::Normal => info!("selection back to normal (was {})", before.name()),
                Mode::Panic => warn!(
                    "panic mode: fewer than {}% of primaries healthy, spreading over all primaries",
                    balancer.config().panic_threshold_percent
                ),
                Mode::Backup => warn!("no primary healthy: sending to backups"),
                Mode::AllDown => error!("no backend healthy: answering 503"),
            }
        }
        for probe in tick.probes {
            probe::send(balancer, probe, now);
        }
        let gauges = self.in_flight_gauges.borrow().clone();
        if let Some(gauges) = gauges {
            if now.saturating_sub(self.gauges_ms.get()) >= GAUGE_PERIOD_MS {
                self.gauges_ms.set(now);
                gauges.record(&balancer.in_flight(&HostStore));
            }
        }
    }
}

/// The `name` Envoy gives this plugin: keeps shared-data keys of two eisodos filters apart.
fn plugin_name() -> Option<String> {
    let bytes = abi::property(&["plugin_name"]).ok()??;
    let name = String::from_utf8(bytes).ok()?;
    (!name.is_empty()).then_some(name)
}

/// A seed for this VM's random source: std's hash keys come from WASI `random_get`.
fn random_seed() -> u64 {
    RandomState::new().build_hasher().finish()
}

fn cluster(balancer: &Balancer, index: usize) -> &str {
    balancer
        .config()
        .backends
        .get(index)
        .map_or("?", |backend| backend.cluster.as_str())
}

/// State changes at info, with the backend and the reason (mode changes, which an operator
/// may have to act on, are logged louder in `on_tick`).
fn log_change(balancer: &Balancer, index: usize, change: Change) {
    let cluster = cluster(balancer, index);
    let check = balancer.config().health_check.as_ref();
    match change {
        Change::BecameHealthy => info!(
            "backend {cluster} healthy: {} consecutive probes passed",
            check.map_or(0, |c| c.healthy_threshold)
        ),
        Change::BecameUnhealthy => info!(
            "backend {cluster} unhealthy: {} consecutive probes failed",
            check.map_or(0, |c| c.unhealthy_threshold)
        ),
        Change::Ejected { until_ms, count } => info!(
            "backend {cluster} ejected for {} ms (ejection {count}): consecutive failed requests",
            until_ms.saturating_sub(host::now_ms())
        ),
        Change::EjectionLifted => {
            info!("backend {cluster} back from ejection: probes passed")
        }
    }
}
