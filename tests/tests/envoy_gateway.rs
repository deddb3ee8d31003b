//! eisodos under Envoy Gateway: `deploy/envoy-gateway/` rendered as Envoy Gateway would
//! translate it (`tools/render_envoy_gateway.py`), run in real Envoy against three strict
//! upstreams, each answering 400 to any Host but its Service's. The spread over the rules'
//! clusters, the client's own `x-eisodos-cluster` removed before routing, and probes that
//! carry each backend's `authority`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use eisodos_tests::envoy_gateway::{self, Backend, Gateway};
use eisodos_tests::upstream::{assert_no_wrong_hosts, Upstream, CLUSTER_HEADER};
use eisodos_tests::{client, prometheus, raw, wait};
use serde_json::Value;

/// Fresh connections that ask for the status page before a state counts as every worker's
/// (the kernel spreads them over the two workers: a worker missed by all has odds 2 x 2^-32).
const POLLS_FOR_EVERY_WORKER: usize = 32;

/// The manifests' backends, and one strict upstream per Service, named after it.
fn strict_upstreams() -> (Vec<Backend>, Vec<Upstream>) {
    let backends = envoy_gateway::backends();
    assert_eq!(
        backends.len(),
        3,
        "three backends in the manifests: {backends:?}"
    );
    let upstreams = backends
        .iter()
        .map(|b| {
            let host = b
                .authority
                .as_deref()
                .unwrap_or_else(|| panic!("{} has no authority for its probes", b.cluster));
            // Requests and probes reach the Service with the same Host.
            assert_eq!(b.host_rewrite.as_deref(), Some(host), "{b:?}");
            Upstream::builder(&b.service).only_host(host).start()
        })
        .collect();
    (backends, upstreams)
}

fn status(gateway: &Gateway) -> Value {
    let response = get(gateway, "/.eisodos/status", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).expect("the status page is JSON")
}

/// Waits until every worker sees every backend healthy with a passing last probe.
fn wait_for_passing_probes(gateway: &Gateway) {
    wait::until(Duration::from_secs(20), || {
        for _ in 0..POLLS_FOR_EVERY_WORKER {
            let status = status(gateway);
            let backends = status["backends"].as_array().cloned().unwrap_or_default();
            let passing = backends.len() == 3
                && backends.iter().all(|b| {
                    b["healthy"] == true
                        && b["last_probe_status"] == 200
                        && b["consecutive_probe_successes"].as_u64() >= Some(1)
                });
            if !passing {
                return Err(format!("{status:#}"));
            }
        }
        Ok(())
    });
}

/// One request on a connection of its own. Not a pooled client's: one that retries a GET on a
/// connection Envoy was closing sends it twice, and eisodos counts both decisions, while the
/// tests compare its counts with what they sent.
fn get(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> client::Response {
    raw::get_from(Ipv4Addr::LOCALHOST, gateway.listener_port(), path, headers)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Sends `n` requests with `headers`; counts per (upstream, cluster header it saw).
fn send(gateway: &Gateway, n: usize, headers: &[(&str, &str)]) -> HashMap<(String, String), u64> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = get(gateway, "/", headers);
        assert_eq!(response.status, 200, "{response:?}");
        let upstream = response.header("x-upstream").unwrap_or_default().to_owned();
        let cluster = response
            .header("x-seen-cluster-header")
            .unwrap_or_default()
            .to_owned();
        *seen.entry((upstream, cluster)).or_insert(0) += 1;
    }
    seen
}

/// What round-robin must give: `each` requests per backend, each through its own rule.
fn exact_spread(backends: &[Backend], each: u64) -> HashMap<(String, String), u64> {
    backends
        .iter()
        .map(|b| ((b.service.clone(), b.cluster.clone()), each))
        .collect()
}

#[test]
fn probes_carry_each_backends_authority_and_pass() {
    let (_, upstreams) = strict_upstreams();
    let gateway = Gateway::builder().start(&upstreams);
    wait_for_passing_probes(&gateway);
    let summary: Vec<String> = status(&gateway)["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{} healthy={} last_probe_status={}",
                b["cluster"].as_str().unwrap_or_default(),
                b["healthy"],
                b["last_probe_status"]
            )
        })
        .collect();
    eprintln!("status page: {summary:?}");
    for upstream in &upstreams {
        assert!(
            upstream.probes() >= 1,
            "{} was never probed",
            upstream.name()
        );
        eprintln!(
            "{}: {} probes, wrong Hosts: {:?}",
            upstream.name(),
            upstream.probes(),
            upstream.wrong_hosts()
        );
    }
    assert_no_wrong_hosts(&upstreams);
}

#[test]
fn round_robin_spreads_exactly_over_the_rules_clusters() {
    let (backends, upstreams) = strict_upstreams();
    let gateway = Gateway::builder().start(&upstreams);
    // Probes first: a backend that changed state mid-burst would shift the spread.
    wait_for_passing_probes(&gateway);
    let seen = send(&gateway, 300, &[]);
    eprintln!("300 requests through the rendered Envoy Gateway config: {seen:?}");
    // Every request went through the rule eisodos chose (its upstream saw that rule's
    // cluster in the header), none through the fallback rule.
    assert_eq!(seen, exact_spread(&backends, 100));
    for upstream in &upstreams {
        assert_eq!(upstream.hits_for("/"), 100, "{}", upstream.name());
    }
    assert_no_wrong_hosts(&upstreams);
    // The metrics carry Envoy Gateway's names intact: the rule's cluster as `backend`, the
    // `wasm[].name` as `plugin`, through the EnvoyProxy's bootstrap merge of stats tags.
    let scrape = prometheus::scrape_when_total(&gateway, "eisodos_requests_total", 300.0);
    for backend in &backends {
        let labels = [("plugin", "eisodos"), ("backend", backend.cluster.as_str())];
        assert_eq!(
            scrape.value("eisodos_requests_total", &labels),
            Some(100.0),
            "{}",
            scrape.lines("eisodos_")
        );
    }
}

#[test]
fn a_client_sent_cluster_header_is_ignored() {
    let (backends, upstreams) = strict_upstreams();
    let wanted = backends[2].cluster.clone();
    let header = [(CLUSTER_HEADER, wanted.as_str())];
    {
        let gateway = Gateway::builder().start(&upstreams);
        wait_for_passing_probes(&gateway);
        // eisodos decides: the client's choice of the third backend changes nothing.
        assert_eq!(send(&gateway, 30, &header), exact_spread(&backends, 10));
    }
    // With the filter bypassed (failOpen), only the early removal stands between the
    // client's header and rule 2: the requests must take the fallback rule, whose upstreams
    // see no cluster header at all (rule 2's would see its own).
    let bypassed = Gateway::builder().bypass_wasm().start(&upstreams);
    let seen = send(&bypassed, 30, &header);
    eprintln!("30 requests asking for {wanted}, filter bypassed: {seen:?}");
    assert!(
        seen.keys().all(|(_, cluster)| cluster.is_empty()),
        "a request was routed on the client's header: {seen:?}"
    );
    assert_eq!(seen.values().sum::<u64>(), 30);
    assert_no_wrong_hosts(&upstreams);
}
