//! Live reconfiguration through ECDS against real Envoy (`--concurrency 2`): the plugin
//! configuration changes while Envoy serves, the way Istio pushes a `WasmPlugin` change.
//!
//! Envoy applies an ECDS update to the Wasm filter without a restart: with the same
//! `vm_config` the worker VMs stay (a throw-away VM checks the new configuration first), each
//! worker gets a new root context that is configured, and the old root context is deleted; a
//! configuration eisodos refuses leaves the old one serving. So what must carry over lives in
//! shared data: the round-robin ticket (keyed by plugin name), and the health record and
//! in-flight table (keyed by the backend list's fingerprint).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use eisodos_tests::envoy::Envoy;
use eisodos_tests::timed_load::{Latency, Timed, TimedLoad};
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, wait};

const STATUS_PATH: &str = "/.eisodos/status";

/// A round-robin config over `clusters`; `filter_state` is the field the tests change when
/// the backends must stay the same (it changes nothing about where requests go).
fn round_robin(clusters: &[&str], filter_state: bool) -> String {
    let backends: Vec<String> = clusters
        .iter()
        .map(|c| format!(r#"{{"cluster": "{c}"}}"#))
        .collect();
    format!(
        r#"{{"policy": "round_robin", "filter_state": {filter_state},
            "status_path": "{STATUS_PATH}", "backends": [{}]}}"#,
        backends.join(", ")
    )
}

/// Who answered one request sent on a new connection (so the kernel spreads them over the
/// workers).
fn upstream_of_one(envoy: &Envoy, path: &str) -> String {
    let response = client::get_with(&envoy.url(path), &[("connection", "close")]);
    assert_eq!(response.status, 200, "{response:?}");
    response
        .header("x-upstream")
        .expect("x-upstream")
        .to_owned()
}

/// The status page (one worker's view).
fn status(envoy: &Envoy) -> Value {
    let response = client::get_with(&envoy.url(STATUS_PATH), &[("connection", "close")]);
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).expect("status JSON")
}

/// `field` of every backend on the status page, in config order.
fn per_backend(status: &Value, field: &str) -> Vec<Value> {
    status["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b[field].clone())
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One step of [`backends_come_and_go_under_steady_load_and_no_request_fails`]: the backend
/// set pushed, or a configuration eisodos refuses with the start of its reason. (Each refused
/// one differs: Envoy remembers a plugin configuration that failed and refuses it again
/// without asking the filter, so a repeat would log no reason.)
type Step = Result<&'static [&'static str], (&'static str, &'static str)>;

/// What happened at one push.
struct Push {
    /// The backend set in force after it (the old one when it was rejected).
    set: BTreeSet<String>,
    before: BTreeSet<String>,
    rejected: bool,
    written: Instant,
    applied: Instant,
    took: Duration,
}

#[test]
fn backends_come_and_go_under_steady_load_and_no_request_fails() {
    let _machine = exclusive::machine();
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let first: &[&str] = &["backend_a", "backend_b"];
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&round_robin(first, true))
        .ecds()
        .concurrency(2)
        .start();
    const EMPTY: &str = r#"{"policy": "round_robin", "backends": []}"#;
    const BAD_POLICY: &str = r#"{"policy": "fastest", "backends": [{"cluster": "backend_a"}]}"#;
    let steps: [Step; 10] = [
        Ok(&["backend_a", "backend_b", "backend_c"]), // c added
        Ok(&["backend_a", "backend_c"]),              // b removed
        Err((EMPTY, "backends: is empty")),           // refused: a and c keep serving
        Ok(&["backend_b", "backend_c"]),              // a removed, b added
        Ok(&["backend_a", "backend_b", "backend_c"]), // a added
        Ok(&["backend_a"]),                           // b and c removed
        Err((BAD_POLICY, "policy: ")),                // refused: a keeps serving
        Ok(&["backend_a", "backend_b"]),              // b added
        Ok(&["backend_c"]),                           // a and b replaced by c
        Ok(&["backend_a", "backend_b", "backend_c"]), // a and b added
    ];
    const SPACING: Duration = Duration::from_millis(2500);

    let load = TimedLoad::start(envoy.listener_port(), "/load", 4, Duration::from_millis(2));
    std::thread::sleep(SPACING);
    let mut current: BTreeSet<String> = first.iter().map(|s| s.to_string()).collect();
    let mut pushes = Vec::new();
    for step in steps {
        let written = Instant::now();
        let (rejected, took) = match step {
            Ok(set) => {
                let applied = envoy
                    .reconfigure(&round_robin(set, true))
                    .unwrap_or_else(|e| panic!("{set:?}: {e}"));
                (false, applied.took)
            }
            Err((config, reason)) => {
                let err = envoy.reconfigure(config).expect_err("refused");
                assert!(
                    err.contains(&format!("invalid configuration: {reason}")),
                    "{err}"
                );
                (true, written.elapsed())
            }
        };
        let applied = Instant::now();
        let before = current.clone();
        if let Ok(set) = step {
            current = set.iter().map(|s| s.to_string()).collect();
        }
        pushes.push(Push {
            set: current.clone(),
            before,
            rejected,
            written,
            applied,
            took,
        });
        std::thread::sleep(SPACING.saturating_sub(written.elapsed()));
    }
    let stopped = Instant::now();
    let samples = load.stop();

    // Every request answered 200, across ten pushes.
    let failed: Vec<&Timed> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, the first: {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
    let upstream = |s: &Timed| s.upstream.clone().expect("x-upstream");

    for (k, push) in pushes.iter().enumerate() {
        let until = pushes.get(k + 1).map_or(stopped, |next| next.written);
        // Sent once Envoy had it on every worker, until the next push: only the set in force.
        let after: Vec<&Timed> = samples
            .iter()
            .filter(|s| s.sent >= push.applied && s.sent < until)
            .collect();
        assert!(after.len() >= 50, "push {k}: only {} requests", after.len());
        for s in &after {
            assert!(
                push.set.contains(&upstream(s)),
                "push {k} ({:?}): a request sent {:.1} ms after it was applied went to {} \
                 (rejected: {})",
                push.set,
                ms(s.sent - push.applied),
                upstream(s),
                push.rejected
            );
        }
        // Each backend of the set, added or kept, takes its share of the rotation (at least
        // half of it).
        for backend in &push.set {
            let hits = after.iter().filter(|s| &upstream(s) == backend).count();
            let fair = after.len() / push.set.len();
            assert!(
                hits * 2 >= fair,
                "push {k}: {backend} got {hits} of {} requests ({:?})",
                after.len(),
                push.set
            );
        }
        // While Envoy was applying it: the old set or the new one, nothing else.
        let either: BTreeSet<String> = push.set.union(&push.before).cloned().collect();
        for s in samples
            .iter()
            .filter(|s| s.sent >= push.written && s.sent < push.applied)
        {
            assert!(either.contains(&upstream(s)), "push {k}: {s:?}");
        }
    }

    // Latency around the pushes: before (from 1 s to 0.5 s before the write), during (the
    // second around the write, which takes in the apply) and after (0.5 s to 1.5 s after).
    let window = |from: Instant, offset_ms: i64, len_ms: u64| {
        let start = if offset_ms < 0 {
            from - Duration::from_millis(offset_ms.unsigned_abs())
        } else {
            from + Duration::from_millis(offset_ms.unsigned_abs())
        };
        let end = start + Duration::from_millis(len_ms);
        samples
            .iter()
            .filter(move |s| s.sent >= start && s.sent < end)
    };
    let accepted: Vec<&Push> = pushes.iter().filter(|p| !p.rejected).collect();
    let figures = |pushes: &[&Push]| {
        let before =
            Latency::of(pushes.iter().flat_map(|p| window(p.written, -1000, 500))).expect("before");
        let during =
            Latency::of(pushes.iter().flat_map(|p| window(p.written, -500, 1000))).expect("during");
        let after =
            Latency::of(pushes.iter().flat_map(|p| window(p.written, 500, 1000))).expect("after");
        (before, during, after)
    };
    let (before, during, after) = figures(&accepted);
    let rejected: Vec<&Push> = pushes.iter().filter(|p| p.rejected).collect();
    let (r_before, r_during, r_after) = figures(&rejected);
    let mut took: Vec<Duration> = accepted.iter().map(|p| p.took).collect();
    took.sort();
    let served: Vec<(String, usize)> = upstreams
        .iter()
        .map(|u| {
            let n = samples
                .iter()
                .filter(|s| s.upstream.as_deref() == Some(u.name()))
                .count();
            (u.name().to_owned(), n)
        })
        .collect();
    eprintln!(
        "{} requests from 4 keep-alive clients, none failed, over {} pushes ({} accepted, {} \
         refused); served {served:?}; per worker {:?}",
        samples.len(),
        pushes.len(),
        accepted.len(),
        rejected.len(),
        envoy.connections_per_worker(2)
    );
    eprintln!(
        "write to applied on every worker: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(took[0]),
        ms(took[took.len() / 2]),
        ms(took[took.len() - 1])
    );
    eprintln!("accepted pushes ({}):", accepted.len());
    eprintln!("  before {before}\n  during {during}\n  after  {after}");
    eprintln!("refused pushes ({}):", rejected.len());
    eprintln!("  before {r_before}\n  during {r_during}\n  after  {r_after}");
    // Loose, within this run: a reload must not stall the typical request.
    assert!(
        during.p50 <= before.p50 * 5 + Duration::from_millis(1),
        "median latency around a reload {during} against before {before}"
    );
}

/// Serial requests across two reloads that keep the backends: the rotation goes on where it
/// was (the ticket is keyed by plugin name, not by configuration).
#[test]
fn the_round_robin_order_continues_across_a_reload() {
    let names = ["backend_a", "backend_b", "backend_c"];
    let upstreams = Upstream::start_all(&names);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&round_robin(&names, true))
        .ecds()
        .concurrency(2)
        .start();
    let mut order = Vec::new();
    // 10 and 20 are not multiples of 3: a rotation that restarted would show.
    for (i, filter_state) in [(10, false), (20, true), (20, false)] {
        for n in 0..i {
            order.push(upstream_of_one(&envoy, &format!("/serial/{n}")));
        }
        envoy
            .reconfigure(&round_robin(&names, filter_state))
            .expect("accepted");
    }
    for n in 0..20 {
        order.push(upstream_of_one(&envoy, &format!("/serial/{n}")));
    }
    for (i, name) in order.iter().enumerate() {
        assert_eq!(
            name,
            names[i % 3],
            "request {i} broke the rotation: {order:?}"
        );
    }
    let per_worker = envoy.connections_per_worker(2);
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    eprintln!(
        "{} serial requests in one rotation across three reloads, per worker {per_worker:?}",
        order.len()
    );
}
