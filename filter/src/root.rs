//! The root context: one per plugin configuration per worker VM. Parses the plugin
//! configuration into a [`Balancer`] that the worker's stream contexts share, and ticks.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use eisodos_core::balancer::Balancer;
use log::{debug, error, info, warn};

use crate::host::Host;
use crate::metrics::InFlightGauges;
use crate::{health_log, probe};

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
    pub fn retire(&self, host: &impl Host) {
        if let Some(balancer) = self.balancer() {
            balancer.retire(host);
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
        if let Err(status) = host.set_tick_period_ms(tick) {
            warn!("cannot set the tick period: {}", status.name());
        }
        let gauges = balancer.counts_in_flight().then(|| {
            Rc::new(InFlightGauges::define(
                host,
                &namespace,
                config.backends.iter().map(|b| b.cluster.as_str()),
            ))
        });
        *self.in_flight_gauges.borrow_mut() = gauges;
        let replaced = self.balancer.borrow_mut().replace(Rc::new(balancer));
        if let Some(replaced) = replaced {
            replaced.retire(host);
        }
        true
    }

    /// The periodic work: in-flight debt, health, probes, gauges.
    pub fn on_tick(&self, host: &impl Host) {
        let Some(balancer) = self.balancer() else {
            return;
        };
        let balancer = &balancer;
        let now = host.now_ms();
        let tick = balancer.tick(host, now);
        health_log::log(balancer, tick.changes, tick.mode_change, now);
        for probe in tick.probes {
            probe::send(host, balancer, probe, now);
        }
        let gauges = self.in_flight_gauges.borrow().clone();
        if let Some(gauges) = gauges {
            if now.saturating_sub(self.gauges_ms.get()) >= GAUGE_PERIOD_MS {
                self.gauges_ms.set(now);
                gauges.record(host, &balancer.in_flight(host));
            }
        }
    }
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
