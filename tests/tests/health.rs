//! Health checking against real Envoy: probe counts per interval whatever the concurrency,
//! failover and recovery times with and without passive ejection, panic mode, backups, all
//! down, and the status page.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use eisodos_tests::envoy::Envoy;
use eisodos_tests::load::SteadyLoad;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, raw};
use serde_json::Value;

const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 250;
const UNHEALTHY_THRESHOLD: u64 = 3;
const HEALTHY_THRESHOLD: u64 = 2;

fn health_check() -> String {
    format!(
        r#""health_check": {{"path": "/healthz", "interval_ms": {INTERVAL_MS}, "timeout_ms": {TIMEOUT_MS},
            "unhealthy_threshold": {UNHEALTHY_THRESHOLD}, "healthy_threshold": {HEALTHY_THRESHOLD}}}"#
    )
}

fn backends(names: &[&str], backups: &[&str]) -> String {
    let list: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"cluster": "{n}"}}"#))
        .chain(
            backups
                .iter()
                .map(|n| format!(r#"{{"cluster": "{n}", "backup": true}}"#)),
        )
        .collect();
    format!(r#""backends": [{}]"#, list.join(", "))
}

fn start(upstreams: &[Upstream], plugin_config: &str, concurrency: usize) -> Envoy {
    Envoy::builder()
        .upstreams(upstreams)
        .plugin_config(plugin_config)
        .concurrency(concurrency)
        .start()
}

fn status(envoy: &Envoy) -> Value {
    let response = client::get(&envoy.url("/.eisodos/status"));
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).unwrap()
}

/// Polls the status page until its mode is `mode`; returns how long that took.
fn wait_for_mode(envoy: &Envoy, mode: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = status(envoy);
        if status["mode"] == mode {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "mode stayed {}: {status:#}",
            status["mode"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hits_of(upstreams: &[Upstream]) -> Vec<u64> {
    upstreams.iter().map(|u| u.hits_for("/")).collect()
}

fn send(envoy: &Envoy, n: usize) {
    for _ in 0..n {
        client::get(&envoy.url("/"));
    }
}

fn probes_in_three_seconds(concurrency: usize) -> Vec<u64> {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let config = format!(
        "{{{}, {}}}",
        health_check(),
        backends(&["backend_a", "backend_b", "backend_c"], &[])
    );
    let envoy = start(&upstreams, &config, concurrency);
    std::thread::sleep(Duration::from_millis(3000));
    let probes = upstreams.iter().map(Upstream::probes).collect();
    drop(envoy);
    probes
}

#[test]
fn one_probe_per_backend_per_interval_whatever_the_concurrency() {
    let one = probes_in_three_seconds(1);
    let three = probes_in_three_seconds(3);
    eprintln!("probes per backend in 3 s at a 500 ms interval: concurrency 1 {one:?}, 3 {three:?}");
    for probes in one.iter().chain(&three) {
        assert!(
            (5..=7).contains(probes),
            "expected about 6: {one:?} {three:?}"
        );
    }
}

struct Failover {
    failed: usize,
    detect: Duration,
    recover: Duration,
}

/// Kills one of three upstreams under steady load and brings it back.
fn failover(outlier_detection: bool) -> Failover {
    let mut upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let outlier = if outlier_detection {
        r#", "outlier_detection": {"consecutive_failures": 5, "base_ejection_ms": 30000}"#
    } else {
        ""
    };
    let config = format!(
        "{{{}{outlier}, {}}}",
        health_check(),
        backends(&["backend_a", "backend_b", "backend_c"], &[])
    );
    let envoy = start(&upstreams, &config, 2);
    let load = SteadyLoad::start(&envoy.url("/"), 4, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(1000));

    let port = upstreams[2].port();
    let killed = Instant::now();
    drop(upstreams.pop());
    std::thread::sleep(Duration::from_millis(3000));
    let after_kill: Vec<_> = load
        .samples()
        .into_iter()
        .filter(|s| s.at > killed)
        .collect();
    let failures: Vec<_> = after_kill.iter().filter(|s| s.status != 200).collect();
    let detect = failures
        .last()
        .map_or(Duration::ZERO, |last| last.at.duration_since(killed));
    assert!(
        after_kill.len() > failures.len() + 1000,
        "the other backends kept serving: {} of {}",
        failures.len(),
        after_kill.len()
    );

    let restarted = Upstream::builder("backend_c").port(port).start();
    let back = Instant::now();
    while restarted.hits_for("/") == 0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "backend_c never came back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let recover = back.elapsed();
    let samples = load.stop();
    assert!(samples
        .iter()
        .all(|s| s.at < killed || s.at > killed + detect || s.status == 200 || s.status == 503));
    Failover {
        failed: failures.len(),
        detect,
        recover,
    }
}

#[test]
fn a_dead_backend_leaves_within_the_probe_bound_and_comes_back() {
    let active = failover(false);
    let passive = failover(true);
    let bound = INTERVAL_MS * UNHEALTHY_THRESHOLD + TIMEOUT_MS;
    eprintln!(
        "kill 1 of 3 under load: probes only: out after {:?}, {} failed requests; \
         with passive ejection: out after {:?}, {} failed; bound interval x threshold + timeout = {bound} ms; \
         back after {:?} / {:?} (bound interval x healthy threshold = {} ms)",
        active.detect,
        active.failed,
        passive.detect,
        passive.failed,
        active.recover,
        passive.recover,
        INTERVAL_MS * HEALTHY_THRESHOLD
    );
    // Probes: a failing probe at most one interval after the kill, then the threshold, plus
    // one tick for every worker to see it.
    assert!(
        active.detect <= Duration::from_millis(bound + 200),
        "{:?}",
        active.detect
    );
    assert!(
        active.failed > 20,
        "requests failed until the probes noticed"
    );
    // Passive ejection notices within a handful of failed requests.
    assert!(
        passive.detect < Duration::from_millis(500),
        "{:?}",
        passive.detect
    );
    assert!(
        passive.failed < active.failed / 3,
        "{} vs {}",
        passive.failed,
        active.failed
    );
    for recover in [active.recover, passive.recover] {
        assert!(
            recover <= Duration::from_millis(INTERVAL_MS * (HEALTHY_THRESHOLD + 1) + 300),
            "{recover:?}"
        );
    }
}

#[test]
fn panic_mode_spreads_over_all_primaries() {
    let names = ["p1", "p2", "p3", "p4"];
    let upstreams = Upstream::start_all(&names);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", {}}}"#,
        health_check(),
        backends(&names, &[])
    );
    let envoy = start(&upstreams, &config, 2);
    wait_for_mode(&envoy, "normal", Duration::from_secs(2));
    // Two of four down: 50%, not below the threshold.
    upstreams[0].set_status(503);
    upstreams[1].set_status(503);
    std::thread::sleep(Duration::from_millis(
        INTERVAL_MS * (UNHEALTHY_THRESHOLD + 1) + 300,
    ));
    assert_eq!(status(&envoy)["mode"], "normal");
    let before = hits_of(&upstreams);
    send(&envoy, 20);
    let normal: Vec<u64> = hits_of(&upstreams)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(normal, [0, 0, 10, 10]);
    // Three of four down: panic, all primaries take traffic again.
    upstreams[2].set_status(503);
    let took = wait_for_mode(&envoy, "panic", Duration::from_secs(3));
    let before = hits_of(&upstreams);
    send(&envoy, 40);
    let panic: Vec<u64> = hits_of(&upstreams)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    eprintln!("panic mode after {took:?}; 40 requests: {panic:?}");
    assert_eq!(panic, [10, 10, 10, 10]);
}

#[test]
fn backups_take_over_only_when_no_primary_is_healthy() {
    let upstreams = Upstream::start_all(&["primary_a", "primary_b", "spare"]);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", {}}}"#,
        health_check(),
        backends(&["primary_a", "primary_b"], &["spare"])
    );
    let envoy = start(&upstreams, &config, 2);
    send(&envoy, 10);
    assert_eq!(hits_of(&upstreams), [5, 5, 0]);
    upstreams[0].set_status(503);
    upstreams[1].set_status(503);
    let took = wait_for_mode(&envoy, "backup", Duration::from_secs(3));
    send(&envoy, 10);
    assert_eq!(hits_of(&upstreams)[2], 10, "all to the backup");
    upstreams[0].set_status(200);
    upstreams[1].set_status(200);
    let back = wait_for_mode(&envoy, "normal", Duration::from_secs(3));
    send(&envoy, 10);
    eprintln!("backup mode after {took:?}, primaries back after {back:?}");
    assert_eq!(hits_of(&upstreams)[2], 10, "the backup is idle again");
}

#[test]
fn nothing_healthy_is_a_clear_503_with_retry_after() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", {}}}"#,
        health_check(),
        backends(&["backend_a", "backend_b"], &[])
    );
    let envoy = start(&upstreams, &config, 2);
    for upstream in &upstreams {
        upstream.set_status(503);
    }
    wait_for_mode(&envoy, "all_down", Duration::from_secs(3));
    let before = hits_of(&upstreams);
    let response = client::get(&envoy.url("/"));
    assert_eq!(response.status, 503);
    assert_eq!(response.body, "eisodos: no healthy backend\n");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(hits_of(&upstreams), before, "no upstream saw it");
    let status = status(&envoy);
    assert_eq!(status["backends"][0]["healthy"], false);
    assert_eq!(status["backends"][0]["last_probe_status"], 503);
}

#[test]
fn the_status_page_answers_only_allowed_clients() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", "status_allowed_cidrs": ["127.0.0.1/32"], {}}}"#,
        health_check(),
        backends(&["backend_a", "backend_b"], &[])
    );
    let envoy = start(&upstreams, &config, 2);
    std::thread::sleep(Duration::from_millis(300));
    let page = status(&envoy);
    assert_eq!(page["policy"], "round_robin");
    assert_eq!(page["backends"][1]["cluster"], "backend_b");
    assert_eq!(page["backends"][1]["last_probe_status"], 200);
    let elsewhere = raw::get_from(
        Ipv4Addr::new(127, 0, 0, 2),
        envoy.listener_port(),
        "/.eisodos/status",
        &[],
    )
    .unwrap();
    assert!(
        elsewhere.header("x-upstream").is_some(),
        "routed like any request: {elsewhere:?}"
    );
}

#[test]
fn a_probe_slower_than_its_timeout_fails() {
    let upstreams = Upstream::start_all(&["backend_a", "slow"]);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", {}}}"#,
        health_check(),
        backends(&["backend_a", "slow"], &[])
    );
    let envoy = start(&upstreams, &config, 2);
    // Probes are answered after 400 ms, past the 250 ms timeout.
    upstreams[1].set_delay(Duration::from_millis(400));
    let deadline = Instant::now() + Duration::from_secs(4);
    let slow = loop {
        let slow = status(&envoy)["backends"][1].clone();
        if slow["healthy"] == false && slow["selected"] == false {
            break slow;
        }
        assert!(Instant::now() < deadline, "still healthy: {slow:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("timed-out probe recorded as: {slow}");
    // Envoy answers a timed-out call itself, with 504.
    assert_eq!(slow["last_probe_status"], 504);
    assert!(
        envoy
            .log()
            .contains("backend slow unhealthy: 3 consecutive probes failed"),
        "the change is logged with the backend and the reason"
    );
    // Every worker follows within one tick.
    std::thread::sleep(Duration::from_millis(150));
    let before = hits_of(&upstreams);
    send(&envoy, 6);
    let after = hits_of(&upstreams);
    assert_eq!((after[0] - before[0], after[1] - before[1]), (6, 0));
}
