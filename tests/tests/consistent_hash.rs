//! Consistent hashing against real Envoy: every key lands where libketama's continuum puts it,
//! whichever worker or Envoy process takes the request.

use std::time::Duration;

use eisodos_core::policy::Ketama;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, raw, wait};

const NAMES: [&str; 3] = ["backend_a", "backend_b", "backend_c"];

fn upstreams() -> Vec<Upstream> {
    Upstream::start_all(&NAMES)
}

fn envoy_for(upstreams: &[Upstream], plugin_config: &str) -> Envoy {
    Envoy::builder()
        .upstreams(upstreams)
        .plugin_config(plugin_config)
        .concurrency(2)
        .start()
}

fn hashed(extra: &str) -> String {
    format!(
        r#"{{"policy": "consistent_hash",
            "hash_key": [{{"header": "x-user-id"}}, {{"cookie": "session"}}, {{"query": "user"}}]{extra},
            "backends": [{{"cluster": "backend_a"}}, {{"cluster": "backend_b", "weight": 2}}, {{"cluster": "backend_c"}}]}}"#
    )
}

/// Where a ketama client with the same names and weights puts `key`.
fn ketama_says(key: &str) -> &'static str {
    let ring = Ketama::new([("backend_a", 1), ("backend_b", 2), ("backend_c", 1)]);
    NAMES[ring.backend_for(Ketama::hash_key(key.as_bytes())).unwrap()]
}

/// Sends one request on a new connection and returns the upstream that answered.
fn answered_by(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> String {
    let mut headers = headers.to_vec();
    headers.push(("connection", "close"));
    let response = client::get_with(&envoy.url(path), &headers);
    assert_eq!(response.status, 200, "{response:?}");
    response.header("x-upstream").unwrap().to_owned()
}

#[test]
fn every_key_lands_where_ketama_puts_it_from_any_worker() {
    let upstreams = upstreams();
    let envoy = envoy_for(&upstreams, &hashed(""));
    let mut spread = [0; 3];
    for user in 0..90 {
        let key = format!("user-{user}");
        let expected = ketama_says(&key);
        for attempt in 0..2 {
            let got = answered_by(&envoy, "/", &[("x-user-id", &key)]);
            assert_eq!(got, expected, "{key}, attempt {attempt}");
        }
        spread[NAMES.iter().position(|n| *n == expected).unwrap()] += 1;
    }
    eprintln!("90 keys over backend_a/b(weight 2)/c: {spread:?}");
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
}

#[test]
fn the_first_source_present_is_the_key() {
    let upstreams = upstreams();
    let envoy = envoy_for(&upstreams, &hashed(""));
    for i in 0..20 {
        let (header, cookie, query) = (format!("h{i}"), format!("c{i}"), format!("q{i}"));
        let cookies = format!("theme=dark; session={cookie}");
        let all = answered_by(
            &envoy,
            &format!("/p?user={query}"),
            &[("x-user-id", &header), ("cookie", &cookies)],
        );
        assert_eq!(all, ketama_says(&header));
        let no_header = answered_by(&envoy, &format!("/p?user={query}"), &[("cookie", &cookies)]);
        assert_eq!(no_header, ketama_says(&cookie));
        let query_only = answered_by(&envoy, &format!("/p?a=1&user={query}"), &[]);
        assert_eq!(query_only, ketama_says(&query));
    }
}

#[test]
fn a_request_without_a_key_goes_round_robin_by_default() {
    let upstreams = upstreams();
    let envoy = envoy_for(&upstreams, &hashed(""));
    for _ in 0..12 {
        answered_by(&envoy, "/no-key", &[]);
    }
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    // The global order: backend_b has weight 2.
    assert_eq!(hits, [3, 6, 3]);
}

#[test]
fn a_request_without_a_key_can_be_rejected() {
    let upstreams = upstreams();
    let envoy = envoy_for(&upstreams, &hashed(r#", "on_missing_key": "reject""#));
    let response = client::get(&envoy.url("/no-key?other=1"));
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body,
        "eisodos: the request has no hash key (looked for header x-user-id, cookie session, query parameter user)\n"
    );
    assert_eq!(upstreams.iter().map(Upstream::hits).sum::<u64>(), 0);
    let keyed = client::get_with(&envoy.url("/"), &[("x-user-id", "u1")]);
    assert_eq!(keyed.status, 200);
}

#[test]
fn two_envoy_processes_agree_on_every_key() {
    let upstreams = upstreams();
    let first = envoy_for(&upstreams, &hashed(""));
    let second = envoy_for(&upstreams, &hashed(""));
    for user in 0..60 {
        let key = format!("customer-{user}");
        let a = answered_by(&first, "/", &[("x-user-id", &key)]);
        let b = answered_by(&second, "/", &[("x-user-id", &key)]);
        assert_eq!(a, b, "{key}");
    }
}

/// Twelve requests for one hot key, all held by the upstreams until every one has been
/// routed (so each pick saw the in-flight counts of all before it): the hits per backend.
fn hot_key_burst(extra: &str) -> Vec<u64> {
    let upstreams = upstreams();
    let envoy = envoy_for(&upstreams, &hashed(extra));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let url = envoy.url("/hold");
                scope.spawn(move || client::get_with(&url, &[("x-user-id", "hot")]))
            })
            .collect();
        wait::until(Duration::from_secs(10), || {
            let held: u64 = upstreams.iter().map(Upstream::held).sum();
            (held == 12)
                .then_some(())
                .ok_or_else(|| format!("{held} of 12 held"))
        });
        let hits = upstreams.iter().map(Upstream::hits).collect();
        for upstream in &upstreams {
            upstream.release_held();
        }
        for handle in handles {
            assert_eq!(handle.join().unwrap().status, 200);
        }
        hits
    })
}

#[test]
fn bounded_load_spills_a_hot_key_to_the_next_backends() {
    let home = ketama_says("hot");
    let home_index = NAMES.iter().position(|n| *n == home).unwrap();

    let unbounded = hot_key_burst("");
    assert_eq!(
        unbounded[home_index], 12,
        "without a bound the hot key stays home: {unbounded:?}"
    );

    let bounded = hot_key_burst(r#", "bounded_load_factor": 1.25"#);
    eprintln!("hot key burst of 12 with bounded_load_factor 1.25: {bounded:?} (home {home})");
    // The 12th pick sees 11 in flight: at most ceil(1.25 * 12 / 3) = 5 per backend.
    assert!(bounded.iter().all(|&n| n <= 5), "{bounded:?}");
    assert!(
        bounded[home_index] >= 4,
        "the home backend fills first: {bounded:?}"
    );
}

/// Keys a client library would not send: the VM must survive them and route them by a
/// defined rule (the SDK's string getter would have panicked on the first one).
#[test]
fn awkward_keys_are_routed_by_a_defined_rule() {
    let upstreams = upstreams();
    let envoy = envoy_for(&upstreams, &hashed(r#", "on_missing_key": "reject""#));
    let request = |key: &[u8]| {
        let mut bytes =
            b"GET / HTTP/1.1\r\nhost: eisodos.test\r\nconnection: close\r\nx-user-id: ".to_vec();
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(b"\r\n\r\n");
        raw::exchange(envoy.listener_port(), &bytes).unwrap()
    };
    // Not UTF-8: hashed as bytes, like any ketama client would.
    let binary: &[u8] = &[0xff, 0xfe, b'k', 0xe9];
    let response = request(binary);
    assert_eq!(response.status, 200, "{response:?}");
    let ring = Ketama::new([("backend_a", 1), ("backend_b", 2), ("backend_c", 1)]);
    let expected = NAMES[ring.backend_for(Ketama::hash_key(binary)).unwrap()];
    assert_eq!(response.header("x-upstream"), Some(expected));
    // Over 4 KiB: not a key; with on_missing_key reject, a 400.
    let huge = vec![b'k'; 5000];
    assert_eq!(request(&huge).status, 400);
    // The VM is alive and routing.
    assert_eq!(
        answered_by(&envoy, "/", &[("x-user-id", "after")]),
        ketama_says("after")
    );
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}
