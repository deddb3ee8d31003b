//! deploy/istio/ rendered as istiod would hand it to the ingress gateway (tools/render_istio.py),
//! run by real Envoy in front of three strict upstreams (each answers only
//! `Host: shop.default.svc.cluster.local`, anything else gets a 400): the spread, a client's
//! `x-eisodos-cluster` ignored, the fallback route, and probes that pass.

use std::collections::BTreeMap;
use std::time::Duration;

use eisodos_tests::istio::{self, cluster, strict_upstreams, Gateway, SUBSETS};
use eisodos_tests::upstream::assert_no_wrong_hosts;
use eisodos_tests::{exclusive, prometheus, wait};
use serde_json::Value;

/// Rounds of the three-way spread.
const ROUNDS: usize = 30;

/// `n` requests through the gateway, sequentially, each on a new connection (so both workers
/// take part); returns the count per upstream, as the `x-upstream` header tells.
fn spread(gateway: &Gateway, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let response = gateway.get("/", headers);
        assert_eq!(response.status, 200, "{response:?}");
        let upstream = response.header("x-upstream").unwrap_or_default().to_owned();
        // The route sent the request where the filter's header said.
        assert_eq!(
            response.header("x-seen-cluster-header"),
            Some(upstream.as_str()),
            "{response:?}"
        );
        *counts.entry(upstream).or_insert(0) += 1;
    }
    counts
}

fn even(rounds: usize) -> BTreeMap<String, usize> {
    SUBSETS.iter().map(|s| (cluster(s), rounds)).collect()
}

#[test]
fn the_rendered_gateway_spreads_requests_over_the_three_subsets() {
    // Exact counts need every backend healthy throughout: probes must not time out.
    let _machine = exclusive::machine();
    let upstreams = strict_upstreams();
    let gateway = istio::start(&upstreams, |_| {});
    // Round-robin: one order for both workers, so 3 x ROUNDS sequential requests give each
    // subset exactly ROUNDS, wherever the order stood.
    assert_eq!(spread(&gateway, 3 * ROUNDS, &[]), even(ROUNDS));
    assert_no_wrong_hosts(&upstreams);
    // The metrics carry Istio's names intact: the cluster as `backend`, the filter's name
    // (what Istio 1.30 calls the plugin) as `plugin`, through the render's extraStatTags.
    let total = (3 * ROUNDS) as f64;
    let scrape = prometheus::scrape_when_total(&gateway.envoy, "eisodos_requests_total", total);
    for subset in SUBSETS {
        let backend = cluster(subset);
        let labels = [
            ("plugin", "istio-system.eisodos~istio-translated-wasmplugin"),
            ("backend", backend.as_str()),
        ];
        assert_eq!(
            scrape.value("eisodos_requests_total", &labels),
            Some(ROUNDS as f64),
            "{}",
            scrape.lines("eisodos_")
        );
    }
}

#[test]
fn a_client_sent_cluster_header_is_ignored() {
    let _machine = exclusive::machine();
    let upstreams = strict_upstreams();
    let gateway = istio::start(&upstreams, |_| {});
    let chosen = cluster("blue");
    // Were the client's header honoured, every request would go to blue.
    let counts = spread(&gateway, 3 * ROUNDS, &[("x-eisodos-cluster", &chosen)]);
    assert_eq!(counts, even(ROUNDS));
    assert_no_wrong_hosts(&upstreams);
}

#[test]
fn a_request_the_filter_did_not_mark_takes_the_fallback_route() {
    let _machine = exclusive::machine();
    // The filter taken out, as failStrategy FAIL_OPEN skips a failed VM: the client's header
    // is removed before the route match, so the request falls to eisodos-fallback.
    let upstreams = strict_upstreams();
    let gateway = istio::start(&upstreams, |config| {
        let filters = istio::hcm(config)["http_filters"].as_array_mut().unwrap();
        filters.retain(|f| {
            !f["name"]
                .as_str()
                .unwrap()
                .starts_with("extensions.istio.io/")
        });
    });
    for headers in [vec![], vec![("x-eisodos-cluster", cluster("blue"))]] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = gateway.get("/", &headers);
        assert_eq!(response.status, 503, "{response:?}");
        assert_eq!(response.body, "eisodos: no backend selected\n");
    }
    assert!(upstreams.iter().all(|u| u.hits() == 0));
}

/// The status page of a fresh connection's worker.
fn status(gateway: &Gateway) -> Value {
    let response = gateway.get("/.eisodos/status", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).unwrap()
}

#[test]
fn probes_pass_at_upstreams_that_check_the_host() {
    // Waits on probe timers: not while the other tests load the machine.
    let _machine = exclusive::machine();
    let upstreams = strict_upstreams();
    let gateway = istio::start(&upstreams, |_| {});
    // Every backend answered two probes in a row with 200, as 32 fresh connections (so both
    // workers, see health.rs) see it. A probe with a Host the upstreams refuse gets 400.
    wait::until(Duration::from_secs(20), || {
        for _ in 0..32 {
            let status = status(&gateway);
            let backends = status["backends"].as_array().unwrap();
            let ready = backends.len() == 3
                && backends.iter().all(|b| {
                    b["healthy"] == true
                        && b["last_probe_status"] == 200
                        && b["consecutive_probe_successes"].as_u64().unwrap_or(0) >= 2
                });
            if !ready {
                return Err(format!("{status:#}"));
            }
        }
        Ok(())
    });
    for u in &upstreams {
        assert!(u.probes() >= 2, "{} got {} probes", u.name(), u.probes());
    }
    assert_no_wrong_hosts(&upstreams);
}

#[test]
fn the_render_is_istios_translation() {
    let upstreams = strict_upstreams();
    let mut config = istio::render(None, 1, 2, &upstreams).expect("render");
    let wasm = istio::wasm_config(&mut config).clone();
    // extensions.go: root_id is the pluginName, no vm_id, FAIL_RELOAD kept, the resource name.
    assert_eq!(wasm["root_id"], "eisodos");
    assert_eq!(wasm["vm_config"].get("vm_id"), None);
    assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
    assert_eq!(
        wasm["name"],
        "istio-system.eisodos~istio-translated-wasmplugin"
    );
    // jsonpb's compact Struct: keys sorted, numbers as Go prints a float64.
    let value = wasm["configuration"]["value"].as_str().unwrap();
    assert!(
        value.starts_with(r#"{"backends":[{"cluster":"outbound|80|blue|"#),
        "{value}"
    );
    assert!(
        value.contains(r#""health_check":{"interval_ms":1000,"path":"/healthz","timeout_ms":500}"#),
        "{value}"
    );
    // Istio's names: clusters per subset, the listener, the route configuration and vhost.
    let clusters: Vec<&str> = config["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for subset in SUBSETS {
        assert!(clusters.contains(&cluster(subset).as_str()), "{clusters:?}");
    }
    assert!(clusters.contains(&"outbound|80||shop.default.svc.cluster.local"));
    assert_eq!(
        config["static_resources"]["listeners"][0]["name"],
        "0.0.0.0_8080"
    );
    let hcm = istio::hcm(&mut config).clone();
    assert_eq!(hcm["route_config"]["name"], "http.8080");
    let vhost = &hcm["route_config"]["virtual_hosts"][0];
    assert_eq!(vhost["name"], "shop.example.com:80");
    // The patched routes come before the VirtualService's.
    let names: Vec<&str> = vhost["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["eisodos-fallback", "eisodos-cluster-header", "shop-default"]
    );
    assert_eq!(
        hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"][0]["remove"],
        "x-eisodos-cluster"
    );
}

#[test]
fn a_patch_that_matches_nothing_fails_the_render() {
    // Istio would skip such a patch silently; the render refuses it, so a manifest that drifts
    // from the gateway it patches fails here rather than running without its route.
    let dir = tempfile::tempdir().unwrap();
    let deploy = eisodos_tests::paths::repo_root().join("deploy/istio");
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("\"shop.example.com:80\"", "\"shop.example.org:80\"");
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let upstreams = strict_upstreams();
    let error = istio::render(Some(dir.path()), 1, 2, &upstreams).unwrap_err();
    assert!(error.contains("matches nothing"), "{error}");
}
