//! Rate limiting against real Envoy: the admitted rate across workers is the configured one,
//! a flood of distinct keys leaves memory flat, and a refused request gets a well-formed 429.
//!
//! Run with `--nocapture` to see the figures.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eisodos_tests::envoy::Envoy;
use eisodos_tests::prometheus::scrape_when_total;
use eisodos_tests::raw::{self, Connection};
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive};
use serde_json::Value;

const BACKENDS: &str = r#""backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}]"#;

fn upstreams() -> Vec<Upstream> {
    Upstream::start_all(&["backend_a", "backend_b"])
}

/// What a load run counted at the client.
#[derive(Debug, Default)]
struct Counts {
    ok: u64,
    limited: u64,
    other: u64,
}

/// Requests a load client sends on one connection before it opens the next: enough
/// connections that the kernel spreads them over every worker, few enough to leave the
/// machine's ports alone (a connection per request would leave thousands in TIME_WAIT).
const REQUESTS_PER_CONNECTION: u64 = 500;

/// `threads` clients send requests back to back for `duration`, all with the same key, each
/// on a new keep-alive connection every [`REQUESTS_PER_CONNECTION`]. Returns the counts and
/// the time from the first request sent to the last answer read.
fn drive(envoy: &Envoy, threads: usize, duration: Duration) -> (Counts, Duration) {
    let port = envoy.listener_port();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut counts = Counts::default();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut connection) = Connection::open(port) else {
                        counts.other += 1;
                        continue;
                    };
                    for _ in 0..REQUESTS_PER_CONNECTION {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match connection.get("/", &[("x-client", "load")]) {
                            Ok(response) if response.status == 200 => counts.ok += 1,
                            Ok(response) if response.status == 429 => counts.limited += 1,
                            _ => {
                                counts.other += 1;
                                break;
                            }
                        }
                    }
                }
                counts
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = Counts::default();
    for handle in handles {
        let counts = handle.join().unwrap();
        total.ok += counts.ok;
        total.limited += counts.limited;
        total.other += counts.other;
    }
    (total, start.elapsed())
}

/// Over 10 s of load far above the limit from many connections spread over `workers`
/// workers, the requests admitted are `rate × elapsed + burst` within 5%.
fn admitted_rate_is_accurate(workers: usize, batch: u32) {
    let _machine = exclusive::machine();
    let (rate, burst) = (200.0, 20.0);
    let upstreams = upstreams();
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&format!(
            r#"{{"policy": "random", "rate_limit": {{"requests_per_second": {rate}, "burst": {burst},
                 "key": [{{"header": "x-client"}}], "batch": {batch}}}, {BACKENDS}}}"#
        ))
        .concurrency(workers)
        .start();

    let (counts, elapsed) = drive(&envoy, 8, Duration::from_secs(10));

    let hits: u64 = upstreams.iter().map(Upstream::hits).sum();
    let per_worker = envoy.connections_per_worker(workers);
    let expected = rate * elapsed.as_secs_f64() + burst;
    let error = (counts.ok as f64 - expected) / expected;
    println!(
        "rate_limit {rate}/s burst {burst} batch {batch}, {workers} workers, {:.3} s: \
         admitted {} (upstream hits {hits}), refused {}, other {}, expected {expected:.1}, \
         error {:+.2}%, connections per worker {per_worker:?}",
        elapsed.as_secs_f64(),
        counts.ok,
        counts.limited,
        counts.other,
        error * 100.0
    );
    assert_eq!(counts.other, 0, "every request answered 200 or 429");
    assert_eq!(
        hits, counts.ok,
        "every admitted request reached an upstream"
    );
    assert!(
        counts.limited > counts.ok,
        "the load must be well above the limit to measure it: {counts:?}"
    );
    let total: u64 = per_worker.iter().sum();
    assert!(
        per_worker.iter().all(|&n| n * 4 * workers as u64 > total),
        "every worker must serve a fair part: {per_worker:?}"
    );
    assert!(
        error.abs() < 0.05,
        "admitted {} vs {expected:.1}",
        counts.ok
    );
}

#[test]
fn the_admitted_rate_across_two_workers_is_the_configured_one() {
    admitted_rate_is_accurate(2, 1);
}

#[test]
fn the_admitted_rate_across_three_workers_is_the_configured_one() {
    admitted_rate_is_accurate(3, 1);
}

#[test]
fn with_batches_of_16_the_admitted_rate_across_two_workers_holds() {
    admitted_rate_is_accurate(2, 16);
}

/// Bytes Envoy's allocator has handed out and not taken back (admin `/memory`).
fn allocated(envoy: &Envoy) -> u64 {
    let memory: Value = serde_json::from_str(&envoy.admin_get("/memory")).unwrap();
    memory["allocated"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .or_else(|| memory["allocated"].as_u64())
        .unwrap_or_else(|| panic!("no allocated in {memory}"))
}

/// Envoy's resident set size, from `/proc/<pid>/status` (`VmRSS`), in bytes.
fn rss(envoy: &Envoy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", envoy.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib * 1024
}

/// Sends `n` requests with keys `<prefix>-<i>`, all distinct, over `connections` keep-alive
/// connections at once. Returns the 200s and the 429s.
fn flood(envoy: &Envoy, prefix: &str, n: usize, connections: usize) -> (u64, u64) {
    let port = envoy.listener_port();
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let prefix = prefix.to_owned();
            std::thread::spawn(move || {
                let mut connection = Connection::open(port).unwrap();
                let (mut ok, mut limited) = (0, 0);
                for i in (c..n).step_by(connections) {
                    let key = format!("{prefix}-{i}");
                    let response = connection
                        .get("/", &[("x-client", &key)])
                        .unwrap_or_else(|err| panic!("request {i}: {err}"));
                    match response.status {
                        200 => ok += 1,
                        429 => limited += 1,
                        status => panic!("request {i}: {status}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(a, b), (ok, limited)| (a + ok, b + limited))
}

/// 100,000 distinct keys leave Envoy's memory where it was: the buckets are a fixed set of
/// shared-data keys, so a key costs nothing to remember. Stored one shared-data entry each,
/// they would take at least their names and values: 100,000 × (27 + 24) bytes = 5.1 MB, before
/// any map overhead.
#[test]
fn a_flood_of_distinct_keys_leaves_memory_flat() {
    let _machine = exclusive::machine();
    let upstreams = upstreams();
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&format!(
            r#"{{"policy": "random", "rate_limit": {{"requests_per_second": 1, "burst": 5,
                 "key": [{{"header": "x-client"}}]}}, {BACKENDS}}}"#
        ))
        .concurrency(2)
        .start();
    let vms_before = envoy.stat("wasm.envoy.wasm.runtime.v8.created");
    assert!(
        vms_before.is_some_and(|n| n > 0),
        "Envoy counts the VMs it creates"
    );

    // Warm up connection buffers, the VMs' heaps and Envoy's stats with the same traffic.
    flood(&envoy, "warm", 20_000, 4);
    let (before, rss_before) = (allocated(&envoy), rss(&envoy));
    let started = Instant::now();
    let (ok, limited) = flood(&envoy, "flood", 100_000, 4);
    let elapsed = started.elapsed();
    let (after, rss_after) = (allocated(&envoy), rss(&envoy));

    let growth = after as i64 - before as i64;
    let rss_growth = rss_after as i64 - rss_before as i64;
    // The smallest an entry per key could be: "eisodos.eisodos.rate_limit." is 27 bytes.
    let per_key_floor = 100_000 * (27 + 24);
    println!(
        "flood of 100,000 distinct keys in {:.1} s: {ok} admitted, {limited} refused; Envoy \
         allocated {before} bytes before, {after} after ({growth:+} bytes); RSS {rss_before} \
         before, {rss_after} after ({rss_growth:+} bytes); one entry per key would be at \
         least {per_key_floor} bytes",
        elapsed.as_secs_f64()
    );
    assert!(
        growth < per_key_floor / 10,
        "memory grew by {growth} bytes over the flood"
    );
    assert!(
        rss_growth < per_key_floor / 10,
        "RSS grew by {rss_growth} bytes over the flood"
    );
    assert!(ok > 4096 && limited > 0, "both outcomes exercised");
    // The VMs live on: none was replaced, and the next request is routed.
    assert_eq!(envoy.stat("wasm.envoy.wasm.runtime.v8.created"), vms_before);
    let response = client::get_with(&envoy.url("/"), &[("x-client", "after-the-flood")]);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(!envoy.log().contains("panicked"), "a VM panicked");
}

/// A refused request gets a 429 with every header; requests without the key share one bucket
/// of their own; the refusals are counted by reason.
#[test]
fn a_429_has_every_header_and_requests_without_a_key_share_one_bucket() {
    let upstreams = upstreams();
    // One token per 100 s: nothing refills during the test.
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&format!(
            r#"{{"policy": "random", "rate_limit": {{"requests_per_second": 0.01, "burst": 3,
                 "key": [{{"header": "x-client"}}]}}, {BACKENDS}}}"#
        ))
        .concurrency(2)
        .start();
    let port = envoy.listener_port();
    let get = |path: &str, headers: &[(&str, &str)]| {
        raw::get_from(Ipv4Addr::LOCALHOST, port, path, headers).unwrap()
    };

    let alice: Vec<u16> = (0..4)
        .map(|i| get(&format!("/a{i}"), &[("x-client", "alice")]).status)
        .collect();
    assert_eq!(alice, [200, 200, 200, 429], "burst 3, then refused");
    let refused = get("/a", &[("x-client", "alice")]);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("content-type"), Some("text/plain"));
    assert_eq!(refused.header("x-eisodos-reason"), Some("rate_limited"));
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (90..=100).contains(&retry_after),
        "a token every 100 s: {retry_after}"
    );
    assert_eq!(refused.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.body, "eisodos: rate limited\n");

    // Other keys have buckets of their own (one in 4096 may share alice's).
    let others = (0..5)
        .filter(|i| get("/", &[("x-client", &format!("other-{i}"))]).status == 200)
        .count();
    assert!(others >= 4, "{others} of 5 other keys admitted");

    // Without the header, whatever else differs (path, address), requests share one bucket.
    let keyless: Vec<u16> = [("/x", 1), ("/y", 2), ("/z", 3), ("/w", 4), ("/v", 5)]
        .iter()
        .map(|(path, host)| {
            raw::get_from(Ipv4Addr::new(127, 0, 0, *host), port, path, &[])
                .unwrap()
                .status
        })
        .collect();
    assert_eq!(keyless, [200, 200, 200, 429, 429]);

    // Counted by reason (flushed every second).
    let limited = 1 + 1 + 2 + (5 - others as u64);
    let scrape = scrape_when_total(&envoy, "eisodos_local_replies_total", limited as f64);
    assert_eq!(
        scrape.value("eisodos_local_replies_total", &[("reason", "rate_limited")]),
        Some(limited as f64)
    );
    let hits: u64 = upstreams.iter().map(Upstream::hits).sum();
    assert_eq!(hits, 3 + others as u64 + 3);
}
