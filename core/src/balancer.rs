//! The per-request decision: which backend's cluster goes into the cluster header.
//!
//! A [`Balancer`] is built once per configuration (the rotation is laid out there, never per
//! request) and asked once per request, with the shared store that keeps the global state.

use crate::config::{Config, ConfigError, Policy};
use crate::policy::round_robin::RotationError;
use crate::policy::Rotation;
use crate::store::{SetError, SharedStore};
use crate::ticket::{Ticket, TicketCounter};

/// The backend chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<'a> {
    /// Index of the backend in the configuration.
    pub index: usize,
    /// Its cluster name: the value for the cluster header.
    pub cluster: &'a str,
    /// The round-robin ticket that chose it.
    pub ticket: Ticket,
}

/// Everything needed to choose backends under one configuration.
#[derive(Debug)]
pub struct Balancer {
    config: Config,
    rotation: Rotation,
    tickets: TicketCounter,
}

impl Balancer {
    /// Prepares `config` for requests. `namespace` keeps this filter's shared-data keys apart
    /// from other eisodos filters in the same VM (the plugin name is a good one).
    pub fn new(config: Config, namespace: &str) -> Result<Self, ConfigError> {
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        let rotation = match config.policy {
            Policy::RoundRobin => Rotation::new(&weights).map_err(rotation_error)?,
        };
        Ok(Self {
            config,
            rotation,
            tickets: TicketCounter::new(format!("eisodos.{namespace}.rr_ticket")),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The header to write the chosen cluster into.
    pub fn cluster_header(&self) -> &str {
        &self.config.cluster_header
    }

    /// The shared-data keys this balancer uses (a fixed, small set per configuration).
    pub fn shared_keys(&self) -> Vec<&str> {
        vec![self.tickets.key()]
    }

    /// Creates the shared-data keys that do not exist yet (configure time), keeping existing
    /// state so a reconfiguration continues where the last configuration stopped.
    pub fn create_shared_keys(&self, store: &dyn SharedStore) -> Result<(), SetError> {
        self.tickets.ensure_created(store)
    }

    /// Chooses the backend for one request. Always returns one: shared-data trouble degrades
    /// the order (see [`crate::ticket::TicketSource`]), never the request.
    pub fn choose(&self, store: &dyn SharedStore) -> Choice<'_> {
        let ticket = self.tickets.take(store);
        let index = self.rotation.pick(ticket.value);
        let cluster = self
            .config
            .backends
            .get(index)
            .map_or("", |backend| backend.cluster.as_str());
        Choice {
            index,
            cluster,
            ticket,
        }
    }
}

fn rotation_error(err: RotationError) -> ConfigError {
    let reason = match err {
        RotationError::Empty => "is empty; at least one backend is required".to_owned(),
        RotationError::TooManyBackends(n) => format!("has {n} entries, too many"),
        RotationError::TooLarge { slots, backends } => format!(
            "weights make a round-robin cycle of {slots} slots over {backends} backends, \
             too large to lay out; use weights with a larger common divisor"
        ),
    };
    ConfigError {
        field: "backends".into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryStore;
    use crate::ticket::TicketSource;

    fn balancer(json: &str) -> Balancer {
        Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test").unwrap()
    }

    const THREE: &str = r#"{"backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]}"#;

    #[test]
    fn round_robin_over_three_equal_backends() {
        let store = MemoryStore::new();
        let balancer = balancer(THREE);
        balancer.create_shared_keys(&store).unwrap();
        let picks: Vec<&str> = (0..6).map(|_| balancer.choose(&store).cluster).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    /// Two workers' VMs each build their own balancer over the one process-wide store.
    #[test]
    fn two_workers_share_one_order() {
        let store = MemoryStore::new();
        let worker_1 = balancer(THREE);
        let worker_2 = balancer(THREE);
        worker_1.create_shared_keys(&store).unwrap();
        worker_2.create_shared_keys(&store).unwrap();
        let mut counts = [0; 3];
        for i in 0..300 {
            let worker = if i % 7 < 3 { &worker_1 } else { &worker_2 };
            let choice = worker.choose(&store);
            assert_eq!(choice.ticket.source, TicketSource::Shared);
            counts[choice.index] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn weights_are_honoured() {
        let store = MemoryStore::new();
        let balancer = balancer(
            r#"{"backends": [{"cluster": "a", "weight": 5}, {"cluster": "b"}, {"cluster": "c"}]}"#,
        );
        balancer.create_shared_keys(&store).unwrap();
        let picks: String = (0..7).map(|_| balancer.choose(&store).cluster).collect();
        assert_eq!(picks, "aabacaa");
    }

    #[test]
    fn namespaces_keep_filters_apart() {
        let store = MemoryStore::new();
        let config = Config::parse(THREE.as_bytes()).unwrap();
        let one = Balancer::new(config.clone(), "one").unwrap();
        let two = Balancer::new(config, "two").unwrap();
        assert_ne!(one.shared_keys(), two.shared_keys());
        one.choose(&store);
        assert_eq!(two.choose(&store).cluster, "a");
    }

    #[test]
    fn oversized_weighted_cycle_is_a_config_error_on_backends() {
        let backends: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"cluster": "c{i}", "weight": {}}}"#, 1000 - (i % 2)))
            .collect();
        let config =
            Config::parse(format!(r#"{{"backends": [{}]}}"#, backends.join(",")).as_bytes())
                .unwrap();
        let err = Balancer::new(config, "test").unwrap_err();
        assert_eq!(err.field, "backends");
    }
}
