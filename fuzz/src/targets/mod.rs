//! The targets: the config reader, request-key extraction, and every shared-data record.

mod config;

pub use config::outcomes as config_outcomes;
mod records;
mod request;

use crate::Target;

/// Every target.
pub static ALL: &[Target] = &[
    Target {
        name: "config_bytes",
        about: "Config::parse and Balancer::configure on mutated config bytes, then requests",
        seeds: config::seeds,
        run: config::bytes,
    },
    Target {
        name: "config_tree",
        about: "configs mutated as JSON trees (deep fields, edge values), then requests over garbage shared data",
        seeds: no_seeds,
        run: config::tree,
    },
    Target {
        name: "request_key",
        about: "request_key::extract, cookie, the query parser, client_ip, ip_key",
        seeds: no_seeds,
        run: request::run,
    },
    Target {
        name: "ticket",
        about: "the round-robin ticket under garbage",
        seeds: no_seeds,
        run: records::ticket,
    },
    Target {
        name: "inflight",
        about: "the in-flight table under garbage: counts neither wrap nor pass a cap",
        seeds: no_seeds,
        run: records::inflight,
    },
    Target {
        name: "health",
        about: "the health record and its version under garbage",
        seeds: no_seeds,
        run: records::health,
    },
    Target {
        name: "bucket",
        about: "the rate-limit bucket under garbage: full when foreign, never above burst",
        seeds: no_seeds,
        run: records::bucket,
    },
    Target {
        name: "lease",
        about: "the probe lease under garbage: some VM holds it within one ttl",
        seeds: no_seeds,
        run: records::lease,
    },
];

fn no_seeds() -> Vec<Vec<u8>> {
    Vec::new()
}
