//! Sticky sessions against real Envoy with two workers: the first response sets a cookie that
//! is not the cluster name; replaying it on fresh connections (so both workers serve them)
//! lands every request on that backend whatever the policy, with no new cookie; a backend that
//! fails its health checks loses its pinned users to the others, each with a new cookie; a
//! tampered or made-up cookie is routed by the policy and re-issued; the VM lives on.

use std::net::Ipv4Addr;
use std::time::Duration;

use eisodos_tests::client::Response;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, raw, wait};
use serde_json::Value;

const NAMES: [&str; 3] = ["backend_a", "backend_b", "backend_c"];
const STICKY: &str = r#""session_affinity": {"cookie": "eisodos_backend", "ttl_s": 3600, "attributes": "Path=/; HttpOnly; SameSite=Lax"}"#;
const BACKENDS: &str =
    r#""backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}, {"cluster": "backend_c"}]"#;
/// Pinned requests replayed per check.
const REPLAYS: usize = 50;

fn start(upstreams: &[Upstream], fields: &str) -> Envoy {
    Envoy::builder()
        .upstreams(upstreams)
        .plugin_config(&format!("{{{fields}, {STICKY}, {BACKENDS}}}"))
        .concurrency(2)
        .start()
}

/// One GET on a connection of its own (the kernel spreads those over the workers).
fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Response {
    let response = raw::get_from(Ipv4Addr::LOCALHOST, envoy.listener_port(), path, headers)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    response
}

fn upstream_of(response: &Response) -> String {
    response
        .header("x-upstream")
        .expect("x-upstream")
        .to_owned()
}

/// Every `set-cookie` of a response.
fn set_cookies(response: &Response) -> Vec<&str> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name == "set-cookie")
        .map(|(_, value)| value.as_str())
        .collect()
}

/// The `name=token` pair of the one affinity cookie the response sets, checked whole.
fn issued(response: &Response) -> String {
    let cookies = set_cookies(response);
    assert_eq!(cookies.len(), 1, "{response:?}");
    let cookie = cookies[0];
    let (pair, attributes) = cookie.split_once("; ").expect("attributes");
    assert_eq!(attributes, "Max-Age=3600; Path=/; HttpOnly; SameSite=Lax");
    let token = pair
        .strip_prefix("eisodos_backend=")
        .expect("the cookie's name");
    assert_eq!(token.len(), 16, "{cookie}");
    assert!(token.bytes().all(|c| c.is_ascii_hexdigit()), "{cookie}");
    for name in NAMES {
        assert!(!cookie.contains(name), "{cookie} shows {name}");
    }
    pair.to_owned()
}

/// Replays `cookie` [`REPLAYS`] times: each must reach `backend` and set no cookie.
fn replay(envoy: &Envoy, cookie: &str, backend: &str) {
    for i in 0..REPLAYS {
        let response = get(
            envoy,
            "/pinned",
            &[("cookie", &format!("theme=dark; {cookie}"))],
        );
        assert_eq!(upstream_of(&response), backend, "replay {i}");
        assert_eq!(set_cookies(&response), Vec::<&str>::new(), "replay {i}");
    }
}

fn a_cookie_pins_every_request(policy: &str) {
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(&upstreams, &format!(r#""policy": "{policy}""#));
    let before = envoy.connections_per_worker(2);

    let first = get(&envoy, "/", &[]);
    let backend = upstream_of(&first);
    let cookie = issued(&first);
    replay(&envoy, &cookie, &backend);

    let per_worker: Vec<u64> = envoy
        .connections_per_worker(2)
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers must serve the replays: {per_worker:?}"
    );
    let pinned: Vec<u64> = upstreams.iter().map(|u| u.hits_for("/pinned")).collect();
    let expected: Vec<u64> = upstreams
        .iter()
        .map(|u| {
            if u.name() == backend {
                REPLAYS as u64
            } else {
                0
            }
        })
        .collect();
    assert_eq!(pinned, expected);
    // Access logs say why: `affinity` for every replay.
    wait::until(Duration::from_secs(30), || {
        let reasons: Vec<Value> = envoy
            .access_log()
            .iter()
            .filter(|entry| entry["path"] == "/pinned")
            .map(|entry| entry["eisodos_reason"].clone())
            .collect();
        if reasons.len() < REPLAYS {
            return Err(format!("{} of {REPLAYS} logged", reasons.len()));
        }
        assert!(reasons.iter().all(|r| r == "affinity"), "{reasons:?}");
        Ok(())
    });
    eprintln!("{policy}: pinned to {backend} by {cookie}, connections per worker {per_worker:?}");
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}

#[test]
fn a_cookie_pins_every_request_with_round_robin() {
    a_cookie_pins_every_request("round_robin");
}

#[test]
fn a_cookie_pins_every_request_with_random() {
    a_cookie_pins_every_request("random");
}

#[test]
fn a_cookie_pins_every_request_with_least_request() {
    a_cookie_pins_every_request("least_request");
}

/// The status page, as the worker that took a fresh connection sees it.
fn status(envoy: &Envoy) -> Value {
    let response = client::get_with(&envoy.url("/.eisodos/status"), &[("connection", "close")]);
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_str(&response.body).unwrap()
}

#[test]
fn when_its_backend_fails_health_checks_the_request_goes_elsewhere_with_a_new_cookie() {
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(
        &upstreams,
        r#""policy": "round_robin", "status_path": "/.eisodos/status",
           "health_check": {"path": "/healthz", "interval_ms": 200, "unhealthy_threshold": 1}"#,
    );
    let first = get(&envoy, "/", &[]);
    let home = upstream_of(&first);
    let cookie = issued(&first);
    let index = NAMES.iter().position(|n| *n == home).unwrap();

    upstreams[index].set_status(503);
    // Until every worker has it out: 32 fresh connections in a row all see it down (the
    // chance that one worker got none of them is 2 x 2^-32).
    wait::until(Duration::from_secs(15), || {
        for _ in 0..32 {
            let status = status(&envoy);
            if status["backends"][index]["selected"] != false {
                return Err(format!("{status:#}"));
            }
        }
        Ok(())
    });

    let mut moved_to = Vec::new();
    for i in 0..20 {
        let response = get(&envoy, "/moved", &[("cookie", &cookie)]);
        let backend = upstream_of(&response);
        assert_ne!(backend, home, "request {i} went to the unhealthy backend");
        let new_cookie = issued(&response);
        assert_ne!(new_cookie, cookie, "request {i}");
        moved_to.push((backend, new_cookie));
    }
    // The new cookie names the backend that answered: it pins there.
    let (backend, new_cookie) = moved_to.pop().unwrap();
    replay(&envoy, &new_cookie, &backend);
    // And the same backend always gets the same cookie.
    for (other, other_cookie) in &moved_to {
        assert_eq!(
            other == &backend,
            other_cookie == &new_cookie,
            "{moved_to:?}"
        );
    }
    assert_eq!(upstreams[index].hits_for("/moved"), 0);
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}

#[test]
fn a_tampered_or_made_up_cookie_is_routed_by_the_policy_and_reissued() {
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = start(&upstreams, r#""policy": "round_robin""#);
    let first = get(&envoy, "/", &[]);
    let home = upstream_of(&first);
    let cookie = issued(&first);

    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let truncated = cookie[..cookie.len() - 1].to_owned();
    let uppercase = cookie
        .to_ascii_uppercase()
        .replace("EISODOS_BACKEND", "eisodos_backend");
    let in_clear = format!("eisodos_backend={home}");
    let oversize = format!("{cookie}{}", "0".repeat(4000));
    let mut bad = vec![tampered, truncated, in_clear, oversize];
    if uppercase != cookie {
        bad.push(uppercase);
    }
    // Round-robin goes on in its one order: three requests in a row with the same bad cookie
    // reach the three backends, so none of them pinned anything.
    for value in &bad {
        let mut reached = Vec::new();
        for _ in 0..3 {
            let response = get(&envoy, "/bad", &[("cookie", value)]);
            let backend = upstream_of(&response);
            let reissued = issued(&response);
            // The re-issued cookie is the one that backend's first response set.
            if backend == home {
                assert_eq!(reissued, cookie);
            }
            reached.push(backend);
        }
        reached.sort();
        assert_eq!(reached, NAMES, "{value}");
    }
    // A cookie header that is not UTF-8 falls back too, and the VM lives on.
    let mut bytes =
        b"GET /binary HTTP/1.1\r\nhost: eisodos.test\r\nconnection: close\r\ncookie: eisodos_backend="
            .to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xe9]);
    bytes.extend_from_slice(b"\r\n\r\n");
    let response = raw::exchange(envoy.listener_port(), &bytes).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    issued(&response);
    replay(&envoy, &cookie, &home);
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}
