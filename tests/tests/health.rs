//! Health checking against real Envoy: probe counts per interval whatever the concurrency,
//! failover and recovery times with and without passive ejection, panic mode, backups, all
//! down, and the status page.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use eisodos_tests::envoy::Envoy;
use eisodos_tests::load::SteadyLoad;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, raw, wait};
use serde_json::Value;

const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 250;
const UNHEALTHY_THRESHOLD: u64 = 3;
const HEALTHY_THRESHOLD: u64 = 2;
/// The health tick at this interval: a quarter of it, at most 100 ms. A probe goes out on the
/// first tick after it is due, its answer is written on the next, and every worker follows the
/// record on its own next tick.
const TICK_MS: u64 = 100;
/// Fresh connections that ask for the status page before a state counts as every worker's:
/// the kernel spreads connections over the two workers, so the chance that one worker got
/// none of them is 2 x 2^-32.
const POLLS_FOR_EVERY_WORKER: usize = 32;

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

/// The status page, as the worker that took a fresh connection sees it.
fn status(envoy: &Envoy) -> Value {
    let response = client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).unwrap()
}

/// Whether every worker's status page passes `check` now (see [`POLLS_FOR_EVERY_WORKER`]).
fn on_every_worker(envoy: &Envoy, check: impl Fn(&Value) -> bool) -> Result<(), String> {
    for _ in 0..POLLS_FOR_EVERY_WORKER {
        let status = status(envoy);
        if !check(&status) {
            return Err(format!("{status:#}"));
        }
    }
    Ok(())
}

/// Waits until every worker's selection is in `mode` (generous deadline: the state, not the
/// time, is what is tested); returns how long that took.
fn wait_for_mode(envoy: &Envoy, mode: &str) -> Duration {
    let start = Instant::now();
    wait::until(Duration::from_secs(10), || {
        on_every_worker(envoy, |status| status["mode"] == mode)
    });
    start.elapsed()
}

/// Whether backend `index` is out of every worker's selection, probes having failed.
fn down_everywhere(envoy: &Envoy, index: usize) -> Result<(), String> {
    on_every_worker(envoy, |status| {
        let backend = &status["backends"][index];
        backend["healthy"] == false && backend["selected"] == false
    })
}

fn hits_of(upstreams: &[Upstream]) -> Vec<u64> {
    upstreams.iter().map(|u| u.hits_for("/")).collect()
}

fn send(envoy: &Envoy, n: usize) {
    for _ in 0..n {
        client::get(&envoy.url("/"));
    }
}

/// Probes each backend received in a window of about four seconds that starts once every
/// backend has had its first probe, and the window's measured length.
fn probes_in_a_window(concurrency: usize) -> (Vec<u64>, Duration) {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let config = format!(
        "{{{}, {}}}",
        health_check(),
        backends(&["backend_a", "backend_b", "backend_c"], &[])
    );
    let envoy = start(&upstreams, &config, concurrency);
    wait::until(Duration::from_secs(10), || {
        let first = upstreams.iter().all(|u| u.probes() > 0);
        first
            .then_some(())
            .ok_or_else(|| "no first probe yet".to_owned())
    });
    let before: Vec<u64> = upstreams.iter().map(Upstream::probes).collect();
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(4000));
    let probes = upstreams
        .iter()
        .zip(&before)
        .map(|(u, b)| u.probes() - b)
        .collect();
    let window = opened.elapsed();
    drop(envoy);
    (probes, window)
}

#[test]
fn one_probe_per_backend_per_interval_whatever_the_concurrency() {
    let _machine = exclusive::machine();
    for concurrency in [1, 3] {
        let (probes, window) = probes_in_a_window(concurrency);
        let intervals = window.as_millis() as u64 / INTERVAL_MS;
        eprintln!("concurrency {concurrency}: {probes:?} probes per backend in {window:?} at a {INTERVAL_MS} ms interval");
        // One prober: at most one probe per interval, plus one at each edge of the window (8
        // intervals: at most 10). A late tick only lengthens a period (at least 4 expected:
        // every period within interval + tick is 6.7). Without the lease every VM that ticks
        // probes on its own: with the lease always held, 13 per backend at concurrency 1 and
        // 30 at concurrency 3 were measured in this window (a VM per worker and one more).
        for &count in &probes {
            assert!(
                (intervals / 2..=intervals + 2).contains(&count),
                "concurrency {concurrency}: {probes:?} probes in {window:?}"
            );
        }
    }
}

struct Failover {
    /// Requests that failed after the kill.
    failed: usize,
    /// Requests answered 200 after the kill.
    served: usize,
    /// From the kill to the last failed request.
    detect: Duration,
    /// From the restart to the first request the restarted backend served.
    recover: Duration,
    /// Probes the restarted backend had answered by then.
    probes_before_traffic: u64,
}

/// How long after the kill the test watches: well past the detection bound below, so a
/// backend never taken out shows as failures until the end of it.
const WATCH_AFTER_KILL: Duration = Duration::from_millis(4000);

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
    wait::until(Duration::from_secs(10), || {
        let hits = hits_of(&upstreams);
        hits.iter()
            .all(|&n| n > 10)
            .then_some(())
            .ok_or_else(|| format!("load not on every backend yet: {hits:?}"))
    });

    let port = upstreams[2].port();
    let killed = Instant::now();
    drop(upstreams.pop());
    std::thread::sleep(WATCH_AFTER_KILL);
    let after_kill: Vec<_> = load
        .samples()
        .into_iter()
        .filter(|s| s.at > killed)
        .collect();
    let failures: Vec<_> = after_kill.iter().filter(|s| s.status != 200).collect();
    let detect = failures
        .last()
        .map_or(Duration::ZERO, |last| last.at.duration_since(killed));

    let restarted = Upstream::builder("backend_c").port(port).start();
    let back = Instant::now();
    let (recover, probes_before_traffic) = wait::until(Duration::from_secs(10), || {
        // Probes first: a request counted before its probes were read would not say whether
        // the probes came before it.
        let probes = restarted.probes();
        if restarted.hits_for("/") > 0 {
            Ok((back.elapsed(), probes))
        } else {
            Err("backend_c never came back".to_owned())
        }
    });
    let samples = load.stop();
    let unexpected: Vec<_> = samples
        .iter()
        .filter(|s| s.status != 200 && s.status != 503)
        .collect();
    assert!(
        unexpected.is_empty(),
        "a dead backend shows as 503, nothing else: {unexpected:?}"
    );
    if outlier_detection {
        assert!(
            envoy.log().contains("backend backend_c ejected for"),
            "the ejection is logged by the worker whose request caused it"
        );
    }
    Failover {
        failed: failures.len(),
        served: after_kill.len() - failures.len(),
        detect,
        recover,
        probes_before_traffic,
    }
}

#[test]
fn a_dead_backend_leaves_within_the_probe_bound_and_comes_back() {
    let _machine = exclusive::machine();
    let active = failover(false);
    let passive = failover(true);
    // The probe bound: the first probe after the kill goes out at most one interval and one
    // tick later, so does each of the threshold's probes; the last answer is written on the
    // next tick, and the other worker follows on its next: 3 x 600 + 2 x 100 = 2000 ms. A
    // refused connection fails the probe at once; the timeout is the slack for a slow answer.
    let bound = UNHEALTHY_THRESHOLD * (INTERVAL_MS + TICK_MS) + 2 * TICK_MS + TIMEOUT_MS;
    eprintln!(
        "kill 1 of 3 under load: probes only: out after {:?}, {} failed, {} served; \
         with passive ejection: out after {:?}, {} failed, {} served; bound {bound} ms; \
         back after {:?} / {:?}, {} / {} passing probes",
        active.detect,
        active.failed,
        active.served,
        passive.detect,
        passive.failed,
        passive.served,
        active.recover,
        passive.recover,
        active.probes_before_traffic,
        passive.probes_before_traffic,
    );
    for run in [&active, &passive] {
        assert!(
            run.served > run.failed.max(100),
            "the other backends kept serving: {} served, {} failed",
            run.served,
            run.failed
        );
        // Back only after `healthy_threshold` passing probes (one more may have raced the
        // first request), whatever the time that took.
        assert!(
            (HEALTHY_THRESHOLD..=HEALTHY_THRESHOLD + 1).contains(&run.probes_before_traffic),
            "back after {} probes",
            run.probes_before_traffic
        );
    }
    // Without detection, requests would fail until the end of the watch (4 s).
    assert!(
        active.detect <= Duration::from_millis(bound),
        "{:?}",
        active.detect
    );
    assert!(
        active.failed > 20,
        "requests failed until the probes noticed"
    );
    // Passive ejection: five failed requests, and the other worker follows on its next tick,
    // long before the first probe's verdict.
    assert!(
        passive.detect < Duration::from_millis(INTERVAL_MS),
        "{:?}",
        passive.detect
    );
    assert!(
        passive.failed < active.failed / 3,
        "{} vs {}",
        passive.failed,
        active.failed
    );
}

#[test]
fn panic_mode_spreads_over_all_primaries() {
    let _machine = exclusive::machine();
    let names = ["p1", "p2", "p3", "p4"];
    let upstreams = Upstream::start_all(&names);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", {}}}"#,
        health_check(),
        backends(&names, &[])
    );
    let envoy = start(&upstreams, &config, 2);
    wait_for_mode(&envoy, "normal");
    // Two of four down: 50%, not below the threshold.
    upstreams[0].set_status(503);
    upstreams[1].set_status(503);
    wait::until(Duration::from_secs(10), || {
        down_everywhere(&envoy, 0).and_then(|()| down_everywhere(&envoy, 1))
    });
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
    let took = wait_for_mode(&envoy, "panic");
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
    let _machine = exclusive::machine();
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
    let took = wait_for_mode(&envoy, "backup");
    send(&envoy, 10);
    assert_eq!(hits_of(&upstreams)[2], 10, "all to the backup");
    upstreams[0].set_status(200);
    upstreams[1].set_status(200);
    let back = wait_for_mode(&envoy, "normal");
    send(&envoy, 10);
    eprintln!("backup mode after {took:?}, primaries back after {back:?}");
    assert_eq!(hits_of(&upstreams)[2], 10, "the backup is idle again");
}

#[test]
fn nothing_healthy_is_a_clear_503_with_retry_after() {
    let _machine = exclusive::machine();
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
    wait_for_mode(&envoy, "all_down");
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
    let page = wait::until(Duration::from_secs(10), || {
        let page = status(&envoy);
        if page["backends"][1]["last_probe_status"].is_null() {
            Err(format!("no probe answer recorded yet: {page:#}"))
        } else {
            Ok(page)
        }
    });
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
    let _machine = exclusive::machine();
    let upstreams = Upstream::start_all(&["backend_a", "slow"]);
    let config = format!(
        r#"{{{}, "status_path": "/.eisodos/status", {}}}"#,
        health_check(),
        backends(&["backend_a", "slow"], &[])
    );
    let envoy = start(&upstreams, &config, 2);
    // Probes are answered after 400 ms, past the 250 ms timeout.
    upstreams[1].set_delay(Duration::from_millis(400));
    wait::until(Duration::from_secs(10), || down_everywhere(&envoy, 1));
    let slow = status(&envoy)["backends"][1].clone();
    eprintln!("timed-out probe recorded as: {slow}");
    // Envoy answers a timed-out call itself, with 504.
    assert_eq!(slow["last_probe_status"], 504);
    assert!(
        envoy
            .log()
            .contains("backend slow unhealthy: 3 consecutive probes failed"),
        "the change is logged with the backend and the reason"
    );
    let before = hits_of(&upstreams);
    send(&envoy, 6);
    let after = hits_of(&upstreams);
    assert_eq!((after[0] - before[0], after[1] - before[1]), (6, 0));
}
