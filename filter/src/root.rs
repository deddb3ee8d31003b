//! The root context: one per worker VM. Parses the plugin configuration into a
//! [`Balancer`] that the worker's HTTP contexts share.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::Duration;

use eisodos_core::balancer::Balancer;
use eisodos_core::config::Config;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::http::EisodosHttp;
use crate::metrics::InFlightGauges;
use crate::shared_data::HostStore;

/// Used when Envoy does not report the plugin's name.
const DEFAULT_NAMESPACE: &str = "eisodos";

/// How often a worker writes in-flight changes it could not write at the time.
const DEBT_FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// Holds the current configuration's balancer, replaced as a whole on reconfiguration.
#[derive(Default)]
pub struct EisodosRoot {
    balancer: Option<Rc<Balancer>>,
    in_flight_gauges: Option<InFlightGauges>,
}

impl Context for EisodosRoot {}

impl RootContext for EisodosRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        crate::logger::follow_host_level();
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                error!("configuration: cannot be read from Envoy ({status:?})");
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
        // Requests that lost every CAS left their in-flight change as debt: pay it on a timer
        // so counts return to zero even when traffic stops.
        let tick = if balancer.counts_in_flight() {
            DEBT_FLUSH_PERIOD
        } else {
            Duration::ZERO
        };
        if let Err(status) = hostcalls::set_tick_period(tick) {
            warn!("cannot set the tick period: {status:?}");
        }
        self.in_flight_gauges = balancer.counts_in_flight().then(|| {
            InFlightGauges::define(
                &namespace,
                config.backends.iter().map(|b| b.cluster.as_str()),
            )
        });
        self.balancer = Some(Rc::new(balancer));
        true
    }

    fn on_tick(&mut self) {
        if let Some(balancer) = &self.balancer {
            balancer.flush(&HostStore);
            if let Some(gauges) = &self.in_flight_gauges {
                gauges.record(&balancer.in_flight(&HostStore));
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None. Without a balancer the stream passes through
        // untouched and the route's catch-all answers.
        Some(Box::new(EisodosHttp::new(self.balancer.clone())))
    }
}

/// The `name` Envoy gives this plugin: keeps shared-data keys of two eisodos filters apart.
fn plugin_name() -> Option<String> {
    let bytes = hostcalls::get_property(vec!["plugin_name"]).ok()??;
    let name = String::from_utf8(bytes).ok()?;
    (!name.is_empty()).then_some(name)
}

/// A seed for this VM's random source: std's hash keys come from WASI `random_get`.
fn random_seed() -> u64 {
    RandomState::new().build_hasher().finish()
}
