//! What Envoy does with each `failure_policy` once the eisodos VM has died, against real Envoy
//! (two workers, so two VMs) running the crash-trigger build of the filter
//! ([`eisodos_tests::crash_wasm`]): a request carrying its header panics in
//! `on_request_headers`, exactly as a bug would.
//!
//! - `FAIL_CLOSED`: every later request gets Envoy's own 503 (empty body), for good.
//! - `FAIL_RELOAD` (what the shipped configs use): the VM is rebuilt after Envoy's reload
//!   backoff (1 s by default) and eisodos routes again; the test measures how long that takes.
//! - `FAIL_OPEN`: requests skip the filter, so the shipped fallback route answers its 503, as
//!   it does with no eisodos at all, and a client-sent cluster header still picks nothing (the
//!   shipped early header removal).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use eisodos_tests::client::Response;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{crash_wasm, exclusive, raw};

/// The shipped fallback route's answer when no filter chose a backend.
const FALLBACK_BODY: &str = "eisodos: no backend selected\n";
/// The path the tests send their ordinary requests to (health probes go elsewhere).
const PATH: &str = "/fail-strategy";
/// How long FAIL_RELOAD may take to bring the VM back: Envoy's default backoff is 1 s, so this
/// bound sits far above anything a loaded machine does.
const RELOAD_BOUND: Duration = Duration::from_secs(30);
/// Connections tried before giving up on reaching every worker with a crash request.
const MAX_CRASH_ATTEMPTS: usize = 200;

fn start(policy: &str, upstreams: &[Upstream]) -> Envoy {
    Envoy::builder()
        .upstreams(upstreams)
        .wasm_file(&crash_wasm::path())
        .failure_policy(policy)
        .concurrency(2)
        .start()
}

/// One GET on a connection of its own (so the kernel picks the worker), connection: close.
fn get(envoy: &Envoy, headers: &[(&str, &str)]) -> Response {
    raw::get_from(Ipv4Addr::LOCALHOST, envoy.listener_port(), PATH, headers)
        .unwrap_or_else(|e| panic!("GET {PATH}: {e}"))
}

/// Whether eisodos routed this answer: the upstream that answered is the cluster the filter
/// wrote into the header.
fn routed_by_eisodos(response: &Response) -> bool {
    response.status == 200
        && response.header("x-upstream").is_some()
        && response.header("x-seen-cluster-header") == response.header("x-upstream")
}

fn assert_routed(response: &Response, what: &str) {
    assert!(routed_by_eisodos(response), "{what}: {response:?}");
}

/// Sends crash requests on fresh connections until each of the two workers has taken at least
/// one, so neither worker's VM is left alive. Returns the answers to the crash requests.
fn crash_every_worker(envoy: &Envoy) -> Vec<Response> {
    let mut crashed = [false, false];
    let mut answers = Vec::new();
    for _ in 0..MAX_CRASH_ATTEMPTS {
        let before = envoy.connections_per_worker(2);
        answers.push(get(envoy, &[(crash_wasm::HEADER, "1")]));
        let after = envoy.connections_per_worker(2);
        for (worker, flag) in crashed.iter_mut().enumerate() {
            if after.get(worker) > before.get(worker) {
                *flag = true;
            }
        }
        if crashed.iter().all(|&c| c) {
            return answers;
        }
    }
    panic!("{MAX_CRASH_ATTEMPTS} crash requests did not reach both workers: {crashed:?}");
}

/// Waits (up to 5 s: Envoy writes the access log every 100 ms in tests) for `n` access-log
/// entries and returns them.
fn access_log(envoy: &Envoy, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = envoy.access_log();
        if log.len() >= n || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fail_closed_answers_envoys_503_for_every_request_after_the_crash() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let envoy = start("FAIL_CLOSED", &upstreams);
    assert_routed(&get(&envoy, &[]), "before the crash");

    for answer in crash_every_worker(&envoy) {
        assert_eq!(answer.status, 503, "the crash request: {answer:?}");
    }
    let hits_after_crash: u64 = upstreams.iter().map(Upstream::hits).sum();

    // Longer than the reload backoff: under FAIL_CLOSED nothing comes back.
    std::thread::sleep(Duration::from_secs(2));
    let mut sent = 0;
    for i in 0..40 {
        let response = get(&envoy, &[("x-eisodos-cluster", "backend_a")]);
        sent += 1;
        assert_eq!(
            response.status, 503,
            "request {i} after the crash: {response:?}"
        );
        assert_eq!(
            response.body, "",
            "Envoy's local reply, not the fallback route: {response:?}"
        );
        assert_eq!(response.header("x-eisodos-reason"), None, "{response:?}");
    }
    assert_eq!(
        upstreams.iter().map(Upstream::hits).sum::<u64>(),
        hits_after_crash,
        "no request reached an upstream once the VMs were dead"
    );
    assert_eq!(envoy.stat("wasm.eisodos.vm_reload_success"), Some(0));

    // Envoy names the reason in the access log: the filter failed the stream.
    let log = access_log(&envoy, sent + 3);
    let last = log.last().expect("access log entries");
    eprintln!("FAIL_CLOSED: access log of the last request: {last}");
    assert_eq!(last["response_code"], 503, "{last}");
    assert_eq!(last["response_code_details"], "wasm_fail_stream", "{last}");
    assert_eq!(last["eisodos_backend"], serde_json::Value::Null, "{last}");
}

#[test]
fn fail_reload_brings_the_vm_back_and_eisodos_routes_again() {
    let _machine = exclusive::machine();
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let envoy = start("FAIL_RELOAD", &upstreams);

    // One keep-alive connection stays on one worker: the crash and the polling meet the same
    // VM, so the other worker's live VM cannot answer for the dead one.
    let mut connection = raw::Connection::open(envoy.listener_port()).expect("connect");
    let before = connection.get(PATH, &[]).expect("GET before the crash");
    assert_routed(&before, "before the crash");

    let crash = connection
        .get(PATH, &[(crash_wasm::HEADER, "1")])
        .expect("the crash request is answered");
    let crashed_at = Instant::now();
    assert_eq!(crash.status, 503, "the crash request: {crash:?}");

    let mut refused = 0_u32;
    let back = loop {
        let response = connection
            .get(PATH, &[("x-eisodos-cluster", "backend_b")])
            .expect("the connection survives the crash");
        if routed_by_eisodos(&response) {
            break response;
        }
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, ""),
            "while the VM is down, only Envoy's 503: {response:?}"
        );
        refused += 1;
        assert!(
            crashed_at.elapsed() < RELOAD_BOUND,
            "the VM did not come back within {RELOAD_BOUND:?} ({refused} requests refused)"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let reload_time = crashed_at.elapsed();
    eprintln!(
        "FAIL_RELOAD: eisodos routed again {:.0} ms after the crash ({refused} requests got \
         Envoy's 503 meanwhile); first answer from {}",
        reload_time.as_secs_f64() * 1000.0,
        back.header("x-upstream").unwrap_or("?")
    );

    // The round-robin ticket lives in shared data, which the crash leaves alone: the order
    // carries on from the request before the crash (the crash request never chose).
    assert_ne!(
        back.header("x-upstream"),
        before.header("x-upstream"),
        "the rotation continues across the reload"
    );

    // The rebuilt VM routes as before: round-robin over both, the forged header ignored.
    let names: Vec<String> = (0..4)
        .map(|i| {
            let response = connection.get(PATH, &[("x-eisodos-cluster", "backend_b")]);
            let response = response.unwrap_or_else(|e| panic!("request {i} after reload: {e}"));
            assert_routed(&response, &format!("request {i} after the reload"));
            response.header("x-upstream").unwrap_or_default().to_owned()
        })
        .collect();
    assert!(
        names.iter().any(|n| n == "backend_a") && names.iter().any(|n| n == "backend_b"),
        "round-robin over both backends after the reload: {names:?}"
    );
    assert!(
        envoy.stat("wasm.eisodos.vm_reload_success").unwrap_or(0) >= 1,
        "Envoy counts the reload"
    );
}

#[test]
fn fail_open_lets_the_fallback_route_answer_and_no_client_header_picks_a_cluster() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b"]);
    let envoy = start("FAIL_OPEN", &upstreams);
    assert_routed(&get(&envoy, &[]), "before the crash");

    crash_every_worker(&envoy);
    let hits_after_crash: u64 = upstreams.iter().map(Upstream::hits).sum();

    // The same shipped config with no Wasm filter at all: what "skip the filter" must equal.
    let bare = Envoy::builder()
        .upstreams(&upstreams)
        .without_filter()
        .start();
    let forged = [("x-eisodos-cluster", "backend_a")];
    let without_eisodos = get(&bare, &forged);
    assert_eq!(
        (without_eisodos.status, without_eisodos.body.as_str()),
        (503, FALLBACK_BODY),
        "{without_eisodos:?}"
    );

    for i in 0..40 {
        let headers: &[(&str, &str)] = if i % 2 == 0 { &forged } else { &[] };
        let response = get(&envoy, headers);
        assert_eq!(
            (response.status, response.body.as_str()),
            (without_eisodos.status, without_eisodos.body.as_str()),
            "request {i} after the crash (headers {headers:?}) must get the fallback route, \
             as without eisodos: {response:?}"
        );
    }
    assert_eq!(
        upstreams.iter().map(Upstream::hits).sum::<u64>(),
        hits_after_crash,
        "no request reached an upstream: a client header picked no cluster"
    );
}

/// The crash trigger lives only in the test build: the `.wasm` that `just build` ships does not
/// even hold the header's name, while the crash-trigger build does (so the search can find it).
#[test]
fn the_shipped_wasm_has_no_crash_trigger() {
    let contains = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        bytes
            .windows(crash_wasm::HEADER.len())
            .any(|w| w == crash_wasm::HEADER.as_bytes())
    };
    assert!(
        contains(&crash_wasm::path()),
        "the test build holds the trigger"
    );
    let shipped = eisodos_tests::paths::wasm_path();
    assert!(
        !contains(&shipped),
        "{} was built with the crash-trigger feature",
        shipped.display()
    );
}
