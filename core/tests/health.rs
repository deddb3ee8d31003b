//! Health through the balancer's public API, with a fake clock (plain numbers), the in-memory
//! store that copies Envoy's shared-data rules, and probes answered by hand (the fake
//! dispatcher): several balancers on one store are several workers of one Envoy.

// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use eisodos_core::balancer::{Balancer, Decision, LocalReply, Why, ALL_DOWN_BODY};
use eisodos_core::config::Config;
use eisodos_core::health::{Change, Mode, ProbeResult};
use eisodos_core::memory_store::MemoryStore;
use eisodos_core::request_key::StaticRequest;

const BACKENDS: &str = r#""backends": [{"cluster": "a"}, {"cluster": "b"}, {"cluster": "c"}]"#;
const CHECK: &str = r#""health_check": {"path": "/healthz", "interval_ms": 1000, "timeout_ms": 500,
    "healthy_threshold": 2, "unhealthy_threshold": 3}"#;

fn worker(json: &str, seed: u64, store: &MemoryStore) -> Balancer {
    let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "t", seed).unwrap();
    balancer.create_shared_keys(store).unwrap();
    balancer
}

fn picks(balancer: &Balancer, store: &MemoryStore, n: usize) -> Vec<String> {
    picks_why(balancer, store, n)
        .into_iter()
        .map(|(cluster, _)| cluster)
        .collect()
}

/// [`picks`] with each pick's [`Why`].
fn picks_why(balancer: &Balancer, store: &MemoryStore, n: usize) -> Vec<(String, Why)> {
    (0..n)
        .map(
            |_| match balancer.choose(store, &StaticRequest::default()) {
                Decision::Route(choice) => (choice.cluster.to_owned(), choice.why),
                other => panic!("{other:?}"),
            },
        )
        .collect()
}

/// Ticks `balancer` at `now` and answers every probe it sends with `answer(cluster)`.
fn tick_and_answer(
    balancer: &Balancer,
    store: &MemoryStore,
    now: u64,
    token: &mut u32,
    answer: impl Fn(&str) -> ProbeResult,
) -> (usize, Vec<(usize, Change)>) {
    let tick = balancer.tick(store, now);
    let sent = tick.probes.len();
    let changes = tick.changes;
    let probes: Vec<(usize, String)> = tick
        .probes
        .iter()
        .map(|p| (p.index, p.cluster.to_owned()))
        .collect();
    for (index, cluster) in probes {
        *token += 1;
        balancer.probe_sent(index, *token, now);
        assert_eq!(
            balancer.probe_answered(*token, answer(&cluster), now + 5),
            Some(index)
        );
    }
    (sent, changes)
}

/// Ticks `balancer` every 100 ms from `from` for `duration_ms`, answering probes with
/// `answer`; returns the changes written.
fn run_for(
    balancer: &Balancer,
    store: &MemoryStore,
    from: u64,
    duration_ms: u64,
    token: &mut u32,
    answer: impl Fn(&str) -> ProbeResult,
) -> Vec<(usize, Change)> {
    let mut changes = Vec::new();
    let mut now = from;
    while now <= from + duration_ms {
        changes.extend(tick_and_answer(balancer, store, now, token, &answer).1);
        now += 100;
    }
    changes
}

#[test]
fn failing_probes_take_a_backend_out_and_passing_ones_bring_it_back() {
    let store = MemoryStore::new();
    let w = worker(&format!("{{{CHECK}, {BACKENDS}}}"), 1, &store);
    let mut token = 0;
    let b_down = |cluster: &str| {
        if cluster == "b" {
            ProbeResult::Failed
        } else {
            ProbeResult::Status(200)
        }
    };
    let mut changes = Vec::new();
    let mut now = 1_000_000;
    // Ticks every 100 ms for 3.5 s: probes at 0, 1, 2, 3 s.
    while now <= 1_003_500 {
        changes.extend(tick_and_answer(&w, &store, now, &mut token, b_down).1);
        now += 100;
    }
    assert_eq!(changes, [(1, Change::BecameUnhealthy)]);
    assert_eq!(
        token, 12,
        "one probe per backend per interval: 4 rounds of 3"
    );
    assert!(picks(&w, &store, 30).iter().all(|c| c != "b"));
    while now <= 1_006_000 {
        changes
            .extend(tick_and_answer(&w, &store, now, &mut token, |_| ProbeResult::Status(200)).1);
        now += 100;
    }
    assert_eq!(changes.last(), Some(&(1, Change::BecameHealthy)));
    assert!(picks(&w, &store, 30).iter().any(|c| c == "b"));
}

#[test]
fn unexpected_statuses_fail_probes() {
    let store = MemoryStore::new();
    let w = worker(&format!("{{{CHECK}, {BACKENDS}}}"), 1, &store);
    let mut token = 0;
    let changes = run_for(&w, &store, 10_000, 3_500, &mut token, |c| {
        ProbeResult::Status(if c == "c" { 503 } else { 200 })
    });
    assert_eq!(changes, [(2, Change::BecameUnhealthy)]);
}

#[test]
fn three_workers_send_one_probe_per_backend_per_interval() {
    let store = MemoryStore::new();
    let workers: Vec<Balancer> = (1..=3)
        .map(|seed| worker(&format!("{{{CHECK}, {BACKENDS}}}"), seed, &store))
        .collect();
    let mut token = 0;
    let mut sent_by = [0; 3];
    // 10 s of ticks every 100 ms on each worker, interleaved.
    for step in 0..100 {
        let now = 50_000 + step * 100;
        for (i, w) in workers.iter().enumerate() {
            sent_by[i] += tick_and_answer(w, &store, now + i as u64, &mut token, |_| {
                ProbeResult::Status(200)
            })
            .0;
        }
    }
    let total: usize = sent_by.iter().sum();
    assert_eq!(
        total, 30,
        "3 backends x 10 intervals, whatever the number of workers: {sent_by:?}"
    );
    assert_eq!(
        sent_by.iter().filter(|&&n| n > 0).count(),
        1,
        "one prober: {sent_by:?}"
    );
}

#[test]
fn another_worker_takes_over_probing_within_an_interval() {
    let store = MemoryStore::new();
    let first = worker(&format!("{{{CHECK}, {BACKENDS}}}"), 1, &store);
    let second = worker(&format!("{{{CHECK}, {BACKENDS}}}"), 2, &store);
    let mut token = 0;
    let ok = |_: &str| ProbeResult::Status(200);
    assert_eq!(tick_and_answer(&first, &store, 0, &mut token, ok).0, 3);
    assert_eq!(tick_and_answer(&second, &store, 50, &mut token, ok).0, 0);
    // `first` writes its answers on its next tick, then stops ticking. `second` keeps
    // ticking every 100 ms; the probes are next due at 1005 ms.
    assert_eq!(tick_and_answer(&first, &store, 100, &mut token, ok).0, 0);
    let mut now = 150;
    let taken_at = loop {
        if tick_and_answer(&second, &store, now, &mut token, ok).0 > 0 {
            break now;
        }
        now += 100;
        assert!(now < 5000);
    };
    assert!(
        (1005..=1150).contains(&taken_at),
        "probes resumed at {taken_at} ms: on schedule, by the new holder"
    );
}

#[test]
fn consecutive_failed_requests_eject_until_the_timer_runs_out() {
    let store = MemoryStore::new();
    let json = format!(
        r#"{{"outlier_detection": {{"consecutive_failures": 3, "base_ejection_ms": 2000}}, {BACKENDS}}}"#
    );
    let worker_1 = worker(&json, 1, &store);
    let worker_2 = worker(&json, 2, &store);
    worker_1.tick(&store, 0);
    worker_2.tick(&store, 0);
    assert_eq!(
        worker_1.report(&store, 0, false, 10).change,
        None,
        "nothing to reset: no write"
    );
    let (_, sets_before) = store.op_counts();
    worker_1.report(&store, 0, false, 10);
    assert_eq!(store.op_counts().1, sets_before);
    worker_1.report(&store, 2, true, 10);
    worker_2.report(&store, 2, true, 20);
    assert_eq!(
        worker_1.report(&store, 2, true, 30).change,
        Some(Change::Ejected {
            until_ms: 2030,
            count: 1
        }),
        "failures from both workers count together"
    );
    worker_2.tick(&store, 100);
    assert!(picks(&worker_2, &store, 20).iter().all(|c| c != "c"));
    worker_2.tick(&store, 2030);
    assert!(picks(&worker_2, &store, 20).iter().any(|c| c == "c"));
}

/// The report says what changed, so the filter can log it: the ejection, and the mode change
/// it caused on this worker (the last primary out: backups take over).
#[test]
fn an_ejection_reports_the_mode_change_it_causes() {
    let store = MemoryStore::new();
    let json = r#"{"outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100},
        "backends": [{"cluster": "a"}, {"cluster": "spare", "backup": true}]}"#;
    let w = worker(json, 1, &store);
    w.tick(&store, 0);
    let reported = w.report(&store, 0, true, 1);
    assert!(
        matches!(reported.change, Some(Change::Ejected { count: 1, .. })),
        "{reported:?}"
    );
    assert_eq!(reported.mode_change, Some((Mode::Normal, Mode::Backup)));
    assert_eq!(
        w.tick(&store, 2).mode_change,
        None,
        "reported once, not again by the tick"
    );
    assert_eq!(picks(&w, &store, 3), ["spare", "spare", "spare"]);
}

#[test]
fn ejection_stops_at_max_ejection_percent() {
    let store = MemoryStore::new();
    let json = format!(
        r#"{{"outlier_detection": {{"consecutive_failures": 1, "max_ejection_percent": 50}}, {BACKENDS}}}"#
    );
    let w = worker(&json, 1, &store);
    assert!(matches!(
        w.report(&store, 0, true, 1).change,
        Some(Change::Ejected { .. })
    ));
    assert_eq!(
        w.report(&store, 1, true, 2).change,
        None,
        "50% of 3 primaries is one"
    );
    w.tick(&store, 3);
    assert_eq!(picks(&w, &store, 4).iter().filter(|c| *c == "a").count(), 0);
}

#[test]
fn backups_panic_and_all_down_against_probes() {
    let store = MemoryStore::new();
    let json = format!(
        r#"{{{CHECK}, "backends": [{{"cluster": "a"}}, {{"cluster": "b"}}, {{"cluster": "c"}},
            {{"cluster": "d"}}, {{"cluster": "spare", "backup": true}}]}}"#
    );
    let w = worker(&json, 1, &store);
    let mut token = 0;
    let mut run = |down: &'static [&'static str], from: u64| {
        run_for(&w, &store, from, 4_000, &mut token, |c| {
            if down.contains(&c) {
                ProbeResult::Failed
            } else {
                ProbeResult::Status(200)
            }
        });
        [w.mode()]
    };
    assert_eq!(run(&["a"], 0), [Mode::Normal]);
    assert!(picks_why(&w, &store, 6)
        .iter()
        .all(|(_, why)| *why == Why::Ticket));
    assert_eq!(run(&["a", "b", "c"], 10_000), [Mode::Panic]);
    assert!(picks_why(&w, &store, 6)
        .iter()
        .all(|(_, why)| *why == Why::Panic));
    let spread = picks(&w, &store, 40);
    for primary in ["a", "b", "c", "d"] {
        assert!(
            spread.iter().any(|c| c == primary),
            "panic spreads over all primaries"
        );
    }
    assert!(!spread.iter().any(|c| c == "spare"));
    assert_eq!(run(&["a", "b", "c", "d"], 20_000), [Mode::Backup]);
    assert!(picks_why(&w, &store, 10)
        .iter()
        .all(|(c, why)| c == "spare" && *why == Why::Backup));
    assert_eq!(run(&["a", "b", "c", "d", "spare"], 30_000), [Mode::AllDown]);
    assert_eq!(
        w.choose(&store, &StaticRequest::default()),
        Decision::Reject {
            reply: LocalReply::NoHealthyBackend,
            status: 503,
            body: ALL_DOWN_BODY,
            retry_after: Some(1),
            rate: None,
        }
    );
}

#[test]
fn initial_state_unhealthy_waits_for_probes() {
    let store = MemoryStore::new();
    let json = format!(
        r#"{{"health_check": {{"path": "/h", "initial_state": "unhealthy", "healthy_threshold": 1}}, {BACKENDS}}}"#
    );
    let w = worker(&json, 1, &store);
    let mut token = 0;
    run_for(&w, &store, 0, 500, &mut token, |_| ProbeResult::Failed);
    assert_eq!(w.mode(), Mode::AllDown);
    let changes = run_for(&w, &store, 1_000, 500, &mut token, |c| {
        if c == "a" {
            ProbeResult::Status(200)
        } else {
            ProbeResult::Failed
        }
    });
    assert_eq!(changes, [(0, Change::BecameHealthy)]);
    // One of three up is below the 50% panic threshold: spread over all primaries.
    assert_eq!(w.mode(), Mode::Panic);
    assert_eq!(picks(&w, &store, 3), ["a", "b", "c"]);
}

#[test]
fn status_page_shows_each_backend() {
    let store = MemoryStore::new();
    let w = worker(
        &format!(r#"{{{CHECK}, "policy": "least_request", "status_path": "/s", {BACKENDS}}}"#),
        1,
        &store,
    );
    let mut token = 0;
    tick_and_answer(&w, &store, 1_000, &mut token, |c| {
        if c == "b" {
            ProbeResult::Status(503)
        } else {
            ProbeResult::Status(200)
        }
    });
    w.tick(&store, 1_100);
    let status: serde_json::Value = serde_json::from_str(&w.status_json(&store, 1_200)).unwrap();
    assert_eq!(status["policy"], "least_request");
    assert_eq!(status["mode"], "normal");
    let b = &status["backends"][1];
    assert_eq!(b["cluster"], "b");
    assert_eq!(b["last_probe_status"], 503);
    assert_eq!(b["last_probe_ms"], 1_005);
    assert_eq!(b["consecutive_probe_failures"], 1);
    assert_eq!(b["healthy"], true);
    assert_eq!(b["in_flight"], 0);
    assert_eq!(status["backends"][0]["consecutive_probe_successes"], 1);
}

#[test]
fn probes_carry_the_authority_resolved_at_configure_time() {
    let store = MemoryStore::new();
    let w = worker(
        r#"{"health_check": {"path": "/h", "authority": "shared.example"},
            "backends": [{"cluster": "outbound|80||a.ns.svc.cluster.local", "authority": "own.example"},
                         {"cluster": "outbound|80||b.ns.svc.cluster.local"}]}"#,
        1,
        &store,
    );
    let derived = worker(
        r#"{"health_check": {"path": "/h"},
            "backends": [{"cluster": "outbound|8080|v1|a.ns.svc.cluster.local"}, {"cluster": "b"}]}"#,
        2,
        &store,
    );
    for (balancer, expected) in [
        (&w, ["own.example", "shared.example"]),
        (&derived, ["a.ns.svc.cluster.local:8080", "b"]),
    ] {
        let tick = balancer.tick(&store, 0);
        let sent: Vec<(&str, &str)> = tick
            .probes
            .iter()
            .map(|p| (p.cluster, p.authority))
            .collect();
        let clusters: Vec<&str> = balancer
            .config()
            .backends
            .iter()
            .map(|b| b.cluster.as_str())
            .collect();
        assert_eq!(
            sent,
            [(clusters[0], expected[0]), (clusters[1], expected[1])]
        );
    }
}

/// Garbage under the health record (of the right length: it passed as a record before the
/// record had a check) and its version, while one backend is down: no worker follows it (b
/// stays out, a and c stay in), and the prober's next write rebuilds the record from what it
/// knew, b still down.
#[test]
fn garbage_under_the_health_record_is_not_followed_and_is_rebuilt_from_what_was_known() {
    use eisodos_core::health::record::HealthStore;
    use eisodos_core::store::SharedStore;
    let store = MemoryStore::new();
    let json = format!("{{{CHECK}, {BACKENDS}}}");
    let prober = worker(&json, 1, &store);
    let other = worker(&json, 2, &store);
    let mut token = 0;
    let b_down = |cluster: &str| {
        if cluster == "b" {
            ProbeResult::Failed
        } else {
            ProbeResult::Status(200)
        }
    };
    let changes = run_for(&prober, &store, 1_000_000, 3500, &mut token, b_down);
    assert_eq!(changes, [(1, Change::BecameUnhealthy)]);
    other.tick(&store, 1_003_600);
    assert!(picks(&other, &store, 30).iter().all(|c| c != "b"));

    let keys = prober.shared_keys();
    let record_key = keys
        .iter()
        .find(|k| k.contains(".health.") && !k.ends_with(".version"))
        .unwrap()
        .to_string();
    let health = HealthStore::new(record_key.to_owned(), 3, true);
    let length = store.value(&record_key).unwrap().len();
    for (round, garbage) in [vec![0; length], vec![1; length], b"junk".to_vec()]
        .into_iter()
        .enumerate()
    {
        let now = 1_004_000 + 2000 * round as u64;
        store.set(&record_key, &garbage, None).unwrap();
        store
            .set(&format!("{record_key}.version"), b"bad", None)
            .unwrap();
        // The other worker sees the version change and does not follow the garbage.
        other.tick(&store, now);
        let seen = picks(&other, &store, 30);
        assert!(seen.iter().all(|c| c != "b"), "{seen:?}");
        assert!(seen.iter().any(|c| c == "a") && seen.iter().any(|c| c == "c"));
        // The prober's next probe answers rebuild it, b still down.
        run_for(&prober, &store, now + 100, 1500, &mut token, b_down);
        let rebuilt = health.decode(&store.value(&record_key).unwrap()).unwrap();
        assert!(!rebuilt.backends[1].healthy);
        assert!(rebuilt.backends[0].healthy && rebuilt.backends[2].healthy);
    }
}

/// Fails probes of `b`, passes the others.
fn b_down(cluster: &str) -> ProbeResult {
    if cluster == "b" {
        ProbeResult::Failed
    } else {
        ProbeResult::Status(200)
    }
}

/// A backend list served earlier and configured again (A, then B, then A) finds A's record as
/// A's prober left it. Two minutes old, it is restarted in the initial state rather than
/// trusted: `b`, down back then, takes requests at once (the soak found this: a stale mark
/// beside one real failure put the selection in panic mode).
#[test]
fn a_record_nobody_kept_for_minutes_restarts_in_the_initial_state() {
    let store = MemoryStore::new();
    let json = format!("{{{CHECK}, {BACKENDS}}}");
    let first = worker(&json, 1, &store);
    let mut token = 0;
    let changes = run_for(&first, &store, 1_000_000, 3_500, &mut token, b_down);
    assert_eq!(changes, [(1, Change::BecameUnhealthy)]);
    drop(first);

    let again = worker(&json, 2, &store);
    let later = 1_003_500 + 120_000;
    let tick = again.tick(&store, later);
    assert!(
        tick.restarted_stale_ms.is_some_and(|age| age >= 120_000),
        "{:?}",
        tick.restarted_stale_ms
    );
    // Every worker follows the restarted record on its next tick.
    let tick = again.tick(&store, later + 100);
    assert_eq!(tick.restarted_stale_ms, None, "restarted once");
    assert!(picks(&again, &store, 30).iter().any(|c| c == "b"));
}

/// The same list configured again while its record is kept (a change that leaves the backend
/// list alone, or a quick A, B, A): the record is trusted, `b` stays out.
#[test]
fn a_record_kept_until_recently_survives_a_reconfiguration() {
    let store = MemoryStore::new();
    let json = format!("{{{CHECK}, {BACKENDS}}}");
    let first = worker(&json, 1, &store);
    let mut token = 0;
    run_for(&first, &store, 1_000_000, 3_500, &mut token, b_down);
    drop(first);

    let again = worker(&json, 2, &store);
    // The last answers came at 1_003_305 (probes go out on the first 100 ms tick an interval
    // after the last answer, answered 5 ms later); the second tick below is five rounds of
    // interval and timeout (7.5 s) after them: the last moment the record counts as kept.
    let later = 1_003_305 + 7_400;
    assert_eq!(again.tick(&store, later).restarted_stale_ms, None);
    assert_eq!(again.tick(&store, later + 100).restarted_stale_ms, None);
    assert!(picks(&again, &store, 30).iter().all(|c| c != "b"));
}
