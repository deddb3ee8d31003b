//! Garbage under each of eisodos' shared-data keys while Envoy serves (issue 14 item 3): the
//! shared-data tool (`tests/shared-data-tool`, a Wasm filter with eisodos' `vm_id` ahead of
//! it) writes garbage of several kinds under every key eisodos keeps, while two keep-alive
//! clients send steady traffic, and the test checks what the README promises: no request
//! fails, the rotation still covers every healthy backend and only those (a garbage count does
//! not block a capped backend, a garbage health record neither takes a healthy backend out
//! nor brings a down one back), the rate limit is neither lifted beyond one burst nor locked,
//! the record is valid again within a bound (read back with the tool), and the VM lives.
//!
//! `--nocapture` prints, per key and garbage kind, the requests in the window, their spread
//! and how long the record took to be rebuilt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eisodos_core::balancer::Balancer;
use eisodos_core::config::Config;
use eisodos_core::health::record::{HealthRecord, HealthStore};
use eisodos_core::inflight::InflightTable;
use eisodos_core::token_bucket::{Bucket, MICRO};
use eisodos_tests::envoy::Envoy;
use eisodos_tests::shared_data_tool;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, exclusive, raw, wait};

/// The plugin's name in the shipped configuration: the keys' namespace.
const NAMESPACE: &str = "eisodos";
/// How long a record may take to be valid again. The slowest to come back are the health
/// record and its version (rewritten with the next probe answers, every `INTERVAL_MS`) and
/// the lease (taken again once the garbage's term, at most one ttl, is over): a few hundred
/// ms. The bound is ten times that, for a busy machine.
const REBUILD_BOUND: Duration = Duration::from_secs(5);
/// Requests counted after a record is valid again, for the spread.
const WINDOW: usize = 150;
const INTERVAL_MS: u64 = 400;

/// One answered (or failed) request of the steady traffic.
#[derive(Debug, Clone)]
struct Sample {
    status: u16,
    upstream: Option<String>,
    /// `x-eisodos-reason` of a local reply, or the transport error: why a request failed.
    why: Option<String>,
}

/// Two keep-alive connections sending back to back until stopped (a connection that fails is
/// recorded as status 0 and opened again).
struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                std::thread::spawn(move || {
                    let mut connection = None;
                    while !stop.load(Ordering::SeqCst) {
                        if connection.is_none() {
                            connection = raw::Connection::open(port).ok();
                        }
                        let answer = connection.as_mut().map(|c| c.get("/", &[]));
                        let sample = match answer {
                            Some(Ok(response)) => Sample {
                                status: response.status,
                                upstream: response.header("x-upstream").map(str::to_owned),
                                why: response.header("x-eisodos-reason").map(str::to_owned),
                            },
                            Some(Err(error)) => {
                                connection = None;
                                Sample {
                                    status: 0,
                                    upstream: None,
                                    why: Some(error),
                                }
                            }
                            None => Sample {
                                status: 0,
                                upstream: None,
                                why: Some("cannot connect".to_owned()),
                            },
                        };
                        samples.lock().unwrap().push(sample);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            stop,
            samples,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<Sample> {
        self.samples.lock().unwrap()[from..].to_vec()
    }

    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        self.samples.lock().unwrap().clone()
    }
}

/// A small xorshift generator: the garbage differs per run; the seed is printed.
struct Random(u64);

impl Random {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn keys_of(plugin: &str) -> Vec<String> {
    let balancer = Balancer::new(Config::parse(plugin.as_bytes()).unwrap(), NAMESPACE, 1).unwrap();
    balancer
        .shared_keys()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn key_ending(keys: &[String], what: &str) -> String {
    keys.iter()
        .find(|k| k.contains(what))
        .unwrap_or_else(|| panic!("no key with {what} in {keys:?}"))
        .clone()
}

/// The kinds of garbage written under a key whose valid records are `valid_len` bytes long,
/// with `foreign` a well-formed record of another configuration (or of another key).
fn garbage_kinds(
    random: &mut Random,
    valid_len: usize,
    foreign: Vec<u8>,
) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("random, wrong length", random.bytes(valid_len + 5)),
        ("random, right length", random.bytes(valid_len)),
        ("empty", Vec::new()),
        ("another configuration's record", foreign),
        ("huge (1 MiB)", random.bytes(1 << 20)),
    ]
}

/// Writes `garbage` under `key` (1 MiB and up through the tool's `repeat`).
fn write(envoy: &Envoy, key: &str, garbage: &[u8]) {
    if garbage.len() >= 1 << 20 {
        let chunk = &garbage[..1024];
        assert!(shared_data_tool::set_with(envoy, key, chunk, garbage.len() / 1024, None).unwrap());
    } else {
        shared_data_tool::set(envoy, key, garbage).unwrap();
    }
}

/// Polls `key` until `valid` accepts its value; how long that took.
fn rebuilt_within(
    envoy: &Envoy,
    key: &str,
    valid: impl Fn(&[u8]) -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    wait::until(REBUILD_BOUND, || {
        // Only the first 64 KiB: a valid record is far smaller, and a huge value takes long to
        // fetch.
        let value = shared_data_tool::get_prefix(envoy, key, 1 << 16)?.ok_or("absent")?;
        if value.size > value.bytes.len() {
            return Err(format!("still {} bytes", value.size));
        }
        valid(&value.bytes)
    });
    start.elapsed()
}

/// Round-robin over four backends, each capped, with active health checks (backend_d fails
/// them: down from the start), and the status page.
fn plugin() -> String {
    format!(
        r#"{{"policy": "round_robin",
            "backends": [{{"cluster": "backend_a", "max_requests": 8}}, {{"cluster": "backend_b", "max_requests": 8}},
                         {{"cluster": "backend_c", "max_requests": 8}}, {{"cluster": "backend_d", "max_requests": 8}}],
            "health_check": {{"path": "/healthz", "interval_ms": {INTERVAL_MS}, "timeout_ms": 300,
                              "healthy_threshold": 2, "unhealthy_threshold": 2, "initial_state": "unhealthy"}},
            "status_path": "/.eisodos/status"}}"#
    )
}

#[test]
fn garbage_under_every_record_is_rebuilt_and_never_misroutes() {
    let _machine = exclusive::machine();
    let seed = now_ms() | 1;
    eprintln!("garbage seed {seed}");
    let mut random = Random(seed);
    let upstreams = vec![
        Upstream::builder("backend_a").start(),
        Upstream::builder("backend_b").start(),
        Upstream::builder("backend_c").start(),
        Upstream::builder("backend_d").status(503).start(),
    ];
    let plugin = plugin();
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&plugin)
        .filter_before(shared_data_tool::filter())
        .concurrency(2)
        .start();
    // a, b, c healthy and d down on both workers before the traffic starts.
    wait::until(Duration::from_secs(10), || {
        for _ in 0..16 {
            let response =
                client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
            let status: serde_json::Value =
                serde_json::from_str(&response.body).map_err(|e| e.to_string())?;
            let healthy: Vec<bool> = (0..4)
                .map(|i| status["backends"][i]["healthy"] == true)
                .collect();
            if healthy != [true, true, true, false] {
                return Err(format!("{status:#}"));
            }
        }
        Ok(())
    });
    // The status polls may all have reached one worker (each takes a fresh connection, and the
    // kernel picks the worker): also wait until requests on fresh connections, which reach
    // both, are all routed (with `initial_state: unhealthy` a worker that has not yet
    // followed the record answers `no_healthy_backend`). Setup, not the property under test.
    wait::until(Duration::from_secs(10), || {
        for i in 0..32 {
            let response = client::get_with(
                &envoy.url(&format!("/warm/{i}")),
                &[("connection", "close")],
            );
            if response.status != 200 {
                return Err(format!("request {i} before the garbage: {response:?}"));
            }
        }
        Ok(())
    });

    let keys = keys_of(&plugin);
    let ticket = key_ending(&keys, ".rr_ticket");
    let inflight = key_ending(&keys, ".inflight.");
    let health = keys
        .iter()
        .find(|k| k.contains(".health.") && !k.ends_with(".version"))
        .unwrap()
        .clone();
    let version = format!("{health}.version");
    let lease = key_ending(&keys, ".probe_lease.");
    let table = InflightTable::new(inflight.clone(), 4);
    let other_table = InflightTable::new(format!("{inflight}x"), 4);
    let other_health = HealthStore::new(format!("{health}x"), 4, true);
    let health_len = shared_data_tool::get(&envoy, &health)
        .unwrap()
        .unwrap()
        .bytes
        .len();
    // Well-formed records, of another key, that would take every backend out or bring d back.
    let all_down_record = HealthRecord::initial(4, false);
    let all_up_record = HealthRecord::initial(4, true);

    type Check = Box<dyn Fn(&[u8]) -> Result<(), String>>;
    let valid_ticket: Check = Box::new(|v| {
        (v.len() == 8)
            .then_some(())
            .ok_or(format!("{} bytes", v.len()))
    });
    let valid_table: Check = {
        let table = InflightTable::new(inflight.clone(), 4);
        Box::new(move |v| {
            table
                .decode(v)
                .map(|_| ())
                .ok_or("fails its check".to_owned())
        })
    };
    let valid_health: Check = {
        let store = HealthStore::new(health.clone(), 4, false);
        Box::new(move |v| {
            let record = store.decode(v).ok_or("fails its check")?;
            let healthy: Vec<bool> = record.backends.iter().map(|b| b.healthy).collect();
            (healthy == [true, true, true, false])
                .then_some(())
                .ok_or(format!("rebuilt as {healthy:?}"))
        })
    };
    let valid_version: Check = Box::new(|v| {
        (v.len() == 8)
            .then_some(())
            .ok_or(format!("{} bytes", v.len()))
    });
    let ttl_bound = 4 * INTERVAL_MS;
    let valid_lease: Check = Box::new(move |v| {
        let v: [u8; 16] = v.try_into().map_err(|_| format!("{} bytes", v.len()))?;
        let expires = u64::from_le_bytes(v[8..].try_into().unwrap());
        (expires <= now_ms() + ttl_bound)
            .then_some(())
            .ok_or(format!("expires {expires}"))
    });

    let foreign_lease = [7u64.to_le_bytes(), (now_ms() + 200).to_le_bytes()].concat();
    let records: Vec<(&str, String, usize, Vec<u8>, &Check)> = vec![
        (
            "round-robin ticket",
            ticket.clone(),
            8,
            random.bytes(8),
            &valid_ticket,
        ),
        (
            "in-flight table",
            inflight.clone(),
            table.encode(&[0; 4]).len(),
            other_table.encode(&[u32::MAX; 4]),
            &valid_table,
        ),
        (
            "health record",
            health.clone(),
            health_len,
            other_health.encode(&all_down_record),
            &valid_health,
        ),
        (
            "health version",
            version.clone(),
            8,
            0u64.to_le_bytes().to_vec(),
            &valid_version,
        ),
        (
            "probe lease",
            lease.clone(),
            16,
            foreign_lease,
            &valid_lease,
        ),
    ];

    let traffic = Traffic::start(envoy.listener_port());
    let mut rows = Vec::new();
    for (record, key, valid_len, foreign, valid) in &records {
        let mut kinds = garbage_kinds(&mut random, *valid_len, foreign.clone());
        if *record == "health record" {
            // A well-formed record of another key that would bring d back.
            kinds.push((
                "another record, every backend up",
                other_health.encode(&all_up_record),
            ));
        }
        for (kind, garbage) in kinds {
            let from = traffic.count();
            write(&envoy, key, &garbage);
            if *record == "health record" {
                // A new version too, so that every worker reads the garbage at once.
                write(&envoy, &version, &random.bytes(8));
            }
            let took = rebuilt_within(&envoy, key, valid);
            // Then a window of traffic over the rebuilt record.
            let settled = traffic.count();
            wait::until(Duration::from_secs(30), || {
                (traffic.count() >= settled + WINDOW)
                    .then_some(())
                    .ok_or("waiting for traffic".to_owned())
            });
            let during = traffic.since(from);
            let window = &during[settled - from..];
            let failed = during.iter().filter(|s| s.status != 200).count();
            let spread: Vec<usize> = ["backend_a", "backend_b", "backend_c", "backend_d"]
                .iter()
                .map(|name| {
                    window
                        .iter()
                        .filter(|s| s.upstream.as_deref() == Some(*name))
                        .count()
                })
                .collect();
            let to_d = during
                .iter()
                .filter(|s| s.upstream.as_deref() == Some("backend_d"))
                .count();
            eprintln!(
                "{record:20} {kind:34} rebuilt in {took:>9.1?}; {} requests, {failed} failed, window spread {spread:?}",
                during.len()
            );
            let failures: Vec<(u16, &Option<String>)> = during
                .iter()
                .filter(|s| s.status != 200)
                .map(|s| (s.status, &s.why))
                .collect();
            assert_eq!(
                failed, 0,
                "{record}, {kind}: requests failed (status, reason or error): {failures:?}"
            );
            assert_eq!(
                to_d, 0,
                "{record}, {kind}: the down backend was believed up"
            );
            let total: usize = spread.iter().sum();
            for (name, &hits) in ["a", "b", "c"].iter().zip(&spread) {
                // Round-robin gives each a third; a quarter leaves room for contended tickets.
                assert!(
                    hits * 4 >= total,
                    "{record}, {kind}: backend_{name} got {hits} of {total}: {spread:?}"
                );
            }
            rows.push((record.to_string(), kind, took, during.len(), failed));
        }
    }
    let samples = traffic.stop();
    let failures: Vec<(usize, u16, &Option<String>)> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status != 200)
        .map(|(i, s)| (i, s.status, &s.why))
        .collect();
    assert!(
        failures.is_empty(),
        "every request answered 200; of {}, failed (index, status, reason or error): {failures:?}",
        samples.len()
    );
    // The VM lives: the status page still answers, and no Wasm failure was logged.
    let status = client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
    assert_eq!(status.status, 200);
    let log = envoy.log();
    assert!(!log.contains("panicked"), "a Wasm panic in the log");
    eprintln!(
        "{} requests in all, none failed; {} garbage writes",
        samples.len(),
        rows.len()
    );
}

/// The tool, in a VM of its own with eisodos' `vm_id`, reads and writes the keys eisodos
/// uses: the ticket it reads is the one eisodos counts, and a value it sets is the one
/// eisodos continues from.
#[test]
fn the_tool_reads_and_writes_eisodos_keys() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .filter_before(shared_data_tool::filter())
        .start();
    for i in 0..6 {
        assert_eq!(client::get(&envoy.url(&format!("/r{i}"))).status, 200);
    }
    let key = "eisodos.eisodos.rr_ticket";
    let ticket = shared_data_tool::get(&envoy, key)
        .unwrap()
        .expect("a ticket");
    assert_eq!(ticket.bytes, 6u64.to_le_bytes(), "six tickets taken");
    assert!(shared_data_tool::get(&envoy, "no.such.key")
        .unwrap()
        .is_none());

    // Ticket 7 goes to backend 7 % 3 = 1.
    shared_data_tool::set(&envoy, key, &7u64.to_le_bytes()).unwrap();
    let response = client::get(&envoy.url("/after"));
    assert_eq!(response.header("x-upstream"), Some("backend_b"));
    let after = shared_data_tool::get(&envoy, key)
        .unwrap()
        .expect("a ticket");
    assert_eq!(after.bytes, 8u64.to_le_bytes());

    // A compare-and-swap with a stale token loses; with the current one it wins.
    assert!(!shared_data_tool::set_with(&envoy, key, b"x", 1, Some(ticket.cas)).unwrap());
    assert!(shared_data_tool::set_with(&envoy, key, b"x", 1, Some(after.cas)).unwrap());
    // A value larger than a request header: 1 MiB.
    assert!(shared_data_tool::set_with(&envoy, "big", b"0123456789abcdef", 1 << 16, None).unwrap());
    let big = shared_data_tool::get(&envoy, "big").unwrap().expect("big");
    assert_eq!(big.bytes.len(), 1 << 20);
    let head = shared_data_tool::get_prefix(&envoy, "big", 16)
        .unwrap()
        .expect("big");
    assert_eq!(
        (head.bytes.as_slice(), head.size),
        (&b"0123456789abcdef"[..], 1 << 20)
    );
}

/// The rate limit's bucket under garbage: drained first (so that what passes after the write
/// is what the garbage gave), then garbage, then one second of back-to-back requests. Garbage
/// is taken as a full bucket, so at most one burst more than the rate passes (not lifted), and
/// the rate keeps passing (not locked).
#[test]
fn garbage_under_a_rate_limit_bucket_neither_lifts_nor_locks_it() {
    const RATE: u64 = 50;
    const BURST: u64 = 10;
    let _machine = exclusive::machine();
    let seed = now_ms() | 1;
    eprintln!("garbage seed {seed}");
    let mut random = Random(seed);
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let plugin = format!(
        r#"{{"policy": "round_robin", "rate_limit": {{"requests_per_second": {RATE}, "burst": {BURST}}},
            "backends": [{{"cluster": "backend_a"}}, {{"cluster": "backend_b"}}, {{"cluster": "backend_c"}}]}}"#
    );
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&plugin)
        .filter_before(shared_data_tool::filter())
        .concurrency(2)
        .start();
    let keys = keys_of(&plugin);
    let bucket_key = key_ending(&keys, ".rate_limit.");
    let mut connection = raw::Connection::open(envoy.listener_port()).unwrap();
    let send = |connection: &mut raw::Connection| -> u16 {
        let status = connection.get("/", &[]).unwrap().status;
        assert!(status == 200 || status == 429, "status {status}");
        status
    };
    // One request creates the bucket's current value; its layout is in it.
    send(&mut connection);
    let current = shared_data_tool::get(&envoy, &bucket_key)
        .unwrap()
        .unwrap()
        .bytes;
    let layout = u32::from_le_bytes(current[4..8].try_into().unwrap());
    assert!(Bucket::decode(&current, layout).is_some());
    let now = now_ms();
    let kinds = vec![
        ("random, wrong length", random.bytes(29)),
        ("random, right length", random.bytes(24)),
        ("empty", Vec::new()),
        (
            "another layout's bucket",
            Bucket {
                micro_tokens: 0,
                last_ms: now,
            }
            .encode(layout + 1)
            .to_vec(),
        ),
        ("huge (1 MiB)", random.bytes(1 << 20)),
        (
            "a bucket with u64::MAX tokens",
            Bucket {
                micro_tokens: u64::MAX,
                last_ms: now,
            }
            .encode(layout)
            .to_vec(),
        ),
        (
            "an empty bucket an hour ahead",
            Bucket {
                micro_tokens: 0,
                last_ms: now + 3_600_000,
            }
            .encode(layout)
            .to_vec(),
        ),
    ];
    for (kind, garbage) in kinds {
        // Drain: until refused.
        let mut drained = false;
        for _ in 0..10_000 {
            if send(&mut connection) == 429 {
                drained = true;
                break;
            }
        }
        assert!(drained, "the limit never refused");
        write(&envoy, &bucket_key, &garbage);
        let start = Instant::now();
        let (mut passed, mut refused) = (0_u64, 0_u64);
        while start.elapsed() < Duration::from_secs(1) {
            match send(&mut connection) {
                200 => passed += 1,
                _ => refused += 1,
            }
        }
        let elapsed = start.elapsed();
        let value = shared_data_tool::get(&envoy, &bucket_key)
            .unwrap()
            .unwrap()
            .bytes;
        let rebuilt = Bucket::decode(&value, layout);
        // The drain and the write took time: up to one burst refilled in between, on top of
        // the burst the garbage may give; and the rate over the second.
        let ceiling = BURST + BURST + RATE * elapsed.as_millis() as u64 / 1000 + 2;
        eprintln!(
            "rate-limit bucket {kind:34} {passed} passed, {refused} refused in {elapsed:.2?} \
             (ceiling {ceiling}); rebuilt: {}",
            rebuilt.is_some()
        );
        assert!(
            rebuilt.is_some_and(|b| b.micro_tokens <= BURST * MICRO),
            "{kind}: not rebuilt"
        );
        assert!(passed <= ceiling, "{kind}: lifted, {passed} passed");
        assert!(passed >= RATE / 2, "{kind}: locked, only {passed} passed");
        assert!(refused > 0, "{kind}: never refused: lifted");
    }
}
