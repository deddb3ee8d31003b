//! The root context: one per worker VM. Parses the plugin configuration into a
//! [`Balancer`] that the worker's HTTP contexts share.

use std::rc::Rc;

use eisodos_core::balancer::Balancer;
use eisodos_core::config::Config;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::http::EisodosHttp;
use crate::shared_data::HostStore;

/// Used when Envoy does not report the plugin's name.
const DEFAULT_NAMESPACE: &str = "eisodos";

/// Holds the current configuration's balancer, replaced as a whole on reconfiguration.
#[derive(Default)]
pub struct EisodosRoot {
    balancer: Option<Rc<Balancer>>,
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
        let balancer = match Config::parse(&bytes).and_then(|c| Balancer::new(c, &namespace)) {
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
        self.balancer = Some(Rc::new(balancer));
        true
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
