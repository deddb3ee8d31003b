//! Probes in a mesh, against real Envoy: clusters named as Istio names them
//! (`outbound|80||svc-a.default.svc.cluster.local`), upstreams that answer 400 to any Host but
//! their own service's, as strict servers do. The probes' Host is the service's, derived from
//! the cluster name or set per backend; a negative control shows the same upstreams taking
//! every backend down when the Host is wrong.
//!
//! Envoy takes the `|` in these names both in `cluster_header` (the requests reach each
//! cluster) and in `dispatch_http_call` (the probes do).

use std::time::Duration;

use eisodos_core::balancer::ALL_DOWN_BODY;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, wait};
use serde_json::Value;

/// The services, each behind the Istio cluster `outbound|80||<host>`.
const HOSTS: [&str; 3] = [
    "svc-a.default.svc.cluster.local",
    "svc-b.default.svc.cluster.local",
    "svc-c.default.svc.cluster.local",
];
/// A Host none of the upstreams serves.
const WRONG: &str = "wrong.example";
/// Probes every upstream must have answered before its health counts: with
/// `unhealthy_threshold` 1, any one refused would have taken its backend out.
const PROBES: u64 = 3;
/// Fresh connections that ask for the status page before a state counts as every worker's
/// (as in `health.rs`: the chance that one of two workers got none is 2 x 2^-32).
const POLLS_FOR_EVERY_WORKER: usize = 32;

fn cluster(host: &str) -> String {
    format!("outbound|80||{host}")
}

/// One upstream per service, named (and so clustered) as Istio would, serving only its host.
fn strict_upstreams() -> Vec<Upstream> {
    HOSTS
        .iter()
        .map(|host| Upstream::builder(&cluster(host)).only_host(host).start())
        .collect()
}

/// Probes every 200 ms; one failure takes a backend out, one pass brings it back. The timeout
/// is far beyond what a loopback probe needs, so only a refused Host fails one.
/// `shared_authority` is `health_check.authority`; `own` gives each backend its service's
/// host as `authority`.
fn plugin_config(shared_authority: Option<&str>, own: bool) -> String {
    let mut check = serde_json::json!({
        "path": "/healthz", "interval_ms": 200, "timeout_ms": 5000,
        "unhealthy_threshold": 1, "healthy_threshold": 1,
    });
    if let Some(authority) = shared_authority {
        check["authority"] = authority.into();
    }
    let backends: Vec<Value> = HOSTS
        .iter()
        .map(|host| {
            let mut backend = serde_json::json!({"cluster": cluster(host)});
            if own {
                backend["authority"] = (*host).into();
            }
            backend
        })
        .collect();
    serde_json::json!({
        "policy": "round_robin",
        "backends": backends,
        "health_check": check,
        "status_path": "/.eisodos/status",
    })
    .to_string()
}

fn start(upstreams: &[Upstream], plugin_config: &str) -> Envoy {
    Envoy::builder()
        .upstreams(upstreams)
        .plugin_config(plugin_config)
        .start()
}

/// Waits until every upstream has answered [`PROBES`] probes.
fn wait_for_probes(upstreams: &[Upstream]) {
    wait::until(Duration::from_secs(20), || {
        let probes: Vec<u64> = upstreams.iter().map(Upstream::probes).collect();
        if probes.iter().all(|&n| n >= PROBES) {
            Ok(())
        } else {
            Err(format!("probes so far: {probes:?}"))
        }
    });
}

/// Whether every worker's status page passes `check` now.
fn on_every_worker(envoy: &Envoy, check: impl Fn(&Value) -> bool) -> Result<(), String> {
    for _ in 0..POLLS_FOR_EVERY_WORKER {
        let response = client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
        assert_eq!(response.status, 200, "{response:?}");
        let status: Value = serde_json::from_str(&response.body).unwrap();
        if !check(&status) {
            return Err(format!("{status:#}"));
        }
    }
    Ok(())
}

/// Every backend healthy, its last probe passed, on every worker.
fn all_healthy(status: &Value) -> bool {
    status["mode"] == "normal"
        && (0..HOSTS.len()).all(|i| {
            let backend = &status["backends"][i];
            backend["healthy"] == true && backend["last_probe_status"] == 200
        })
}

fn refused_hosts(upstreams: &[Upstream]) -> Vec<Vec<String>> {
    upstreams.iter().map(Upstream::wrong_hosts).collect()
}

#[test]
fn istio_cluster_names_are_probed_with_their_service_host() {
    let _machine = exclusive::machine();
    let upstreams = strict_upstreams();
    let envoy = start(&upstreams, &plugin_config(None, false));
    wait_for_probes(&upstreams);
    assert_eq!(
        refused_hosts(&upstreams),
        vec![Vec::<String>::new(); 3],
        "no probe may be refused"
    );
    if let Err(status) = on_every_worker(&envoy, all_healthy) {
        panic!("not every backend healthy on every worker: {status}");
    }

    // Requests reach each `outbound|80||…` cluster through `cluster_header`, in turn. The
    // client's own Host (127.0.0.1:<port>) is one these strict upstreams refuse: they answer
    // 400, not Envoy's 503 for a cluster it does not know.
    let n = 30;
    for _ in 0..n {
        let response = client::get(&envoy.url("/"));
        assert_eq!(
            (response.status, response.body.as_str()),
            (400, "unknown host\n"),
            "{response:?}"
        );
    }
    let hits: Vec<u64> = upstreams.iter().map(|u| u.hits_for("/")).collect();
    eprintln!("{n} requests over {HOSTS:?}: {hits:?}");
    assert_eq!(hits, [10, 10, 10]);
    // What the upstreams refused is the client's Host alone: not one probe, before or since.
    let client_host = format!("127.0.0.1:{}", envoy.listener_port());
    for (upstream, refused) in upstreams.iter().zip(refused_hosts(&upstreams)) {
        assert_eq!(
            refused,
            vec![client_host.clone(); 10],
            "{}",
            upstream.name()
        );
        assert!(upstream.errors().is_empty(), "{:?}", upstream.errors());
    }
}

#[test]
fn a_backend_authority_overrides_a_wrong_shared_one() {
    let _machine = exclusive::machine();
    let upstreams = strict_upstreams();
    let envoy = start(&upstreams, &plugin_config(Some(WRONG), true));
    wait_for_probes(&upstreams);
    assert_eq!(refused_hosts(&upstreams), vec![Vec::<String>::new(); 3]);
    if let Err(status) = on_every_worker(&envoy, all_healthy) {
        panic!("not every backend healthy on every worker: {status}");
    }
}

/// The negative control: the same upstreams and thresholds with a Host they do not serve
/// refuse every probe, and every backend goes down.
#[test]
fn with_a_wrong_authority_the_strict_upstreams_take_every_backend_down() {
    let _machine = exclusive::machine();
    let upstreams = strict_upstreams();
    let envoy = start(&upstreams, &plugin_config(Some(WRONG), false));
    wait::until(Duration::from_secs(20), || {
        on_every_worker(&envoy, |status| {
            status["mode"] == "all_down"
                && (0..HOSTS.len()).all(|i| status["backends"][i]["last_probe_status"] == 400)
        })
    });
    let response = client::get(&envoy.url("/"));
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, ALL_DOWN_BODY),
        "{response:?}"
    );
    for (upstream, refused) in upstreams.iter().zip(refused_hosts(&upstreams)) {
        assert!(!refused.is_empty(), "{} refused nothing", upstream.name());
        assert!(
            refused.iter().all(|host| host == WRONG),
            "{}: {refused:?}",
            upstream.name()
        );
        assert_eq!(upstream.hits_for("/"), 0, "{}", upstream.name());
    }
}
