//! Hostile input against real Envoy (two workers): every input a client controls, at its
//! extremes, has a defined outcome (Envoy's own answer, or eisodos' status, reason and
//! backend), and a normal request afterwards is routed: the VM lives, no VM was replaced, and
//! Envoy's log has no panic or VM failure.
//!
//! Requests are written byte by byte (`raw`), so they carry what a client library would
//! refuse to send. Run with `--nocapture` to see Envoy's answers to what it refuses itself.

use eisodos_core::balancer::{affinity_token, affinity_token_text, key_bucket};
use eisodos_core::policy::Ketama;
use eisodos_tests::client::Response;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::raw;
use eisodos_tests::upstream::Upstream;
use serde_json::json;

const NAMES: [&str; 3] = ["backend_a", "backend_b", "backend_c"];
const BACKENDS: &str =
    r#""backends": [{"cluster": "backend_a"}, {"cluster": "backend_b"}, {"cluster": "backend_c"}]"#;
/// 64 KiB: over Envoy's default header limit (60 KiB), under its highest (96 KiB).
const BIG: usize = 64 * 1024;

/// A running Envoy with its upstreams, and the VM count it started with.
struct Rig {
    upstreams: Vec<Upstream>,
    envoy: Envoy,
    vms: Option<u64>,
}

/// Envoy's own limits for a rig: its defaults, or raised so that eisodos sees the input.
#[derive(Clone, Copy, PartialEq)]
enum Limits {
    /// The shipped connection manager: 60 KiB of headers, at most 100 of them.
    Default,
    /// `max_request_headers_kb` at its maximum, 96, and `max_headers_count` 10,100.
    Raised,
    /// The defaults, and the client address taken from one trusted `x-forwarded-for` hop.
    TrustedXff,
}

fn start(plugin: &str, limits: Limits) -> Rig {
    let upstreams = Upstream::start_all(&NAMES);
    let mut builder = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(plugin)
        .concurrency(2);
    match limits {
        Limits::Default => {}
        Limits::Raised => {
            builder = builder
                .hcm_field("max_request_headers_kb", json!(96))
                .hcm_field(
                    "common_http_protocol_options",
                    json!({"max_headers_count": 10_100}),
                );
        }
        Limits::TrustedXff => builder = builder.hcm_field("xff_num_trusted_hops", json!(1)),
    }
    let envoy = builder.start();
    let vms = envoy.stat("wasm.envoy.wasm.runtime.v8.created");
    assert!(
        vms.is_some_and(|n| n > 0),
        "Envoy counts the VMs it creates"
    );
    Rig {
        upstreams,
        envoy,
        vms,
    }
}

/// A GET of `path` with `headers`, as bytes, on a connection of its own.
fn request(path: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut bytes = b"GET ".to_vec();
    bytes.extend_from_slice(path);
    bytes.extend_from_slice(b" HTTP/1.1\r\nhost: eisodos.test\r\nconnection: close\r\n");
    for (name, value) in headers {
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}

impl Rig {
    fn send(&self, path: &[u8], headers: &[(&[u8], &[u8])]) -> Response {
        self.send_bytes(&request(path, headers))
    }

    fn send_bytes(&self, bytes: &[u8]) -> Response {
        raw::exchange(self.envoy.listener_port(), bytes)
            .unwrap_or_else(|err| panic!("no answer: {err}"))
    }

    fn hits(&self) -> u64 {
        self.upstreams.iter().map(Upstream::hits).sum()
    }

    /// A normal request is routed, no VM was replaced, and the log holds no VM failure.
    fn assert_alive(&self) {
        let response = self.send(
            b"/after",
            &[(b"x-user-id", b"after"), (b"x-client", b"after")],
        );
        assert_eq!(response.status, 200, "the request after: {response:?}");
        assert!(response.header("x-upstream").is_some(), "{response:?}");
        assert_eq!(
            self.envoy.stat("wasm.envoy.wasm.runtime.v8.created"),
            self.vms,
            "no VM was replaced"
        );
        let log = self.envoy.log();
        let failures: Vec<&str> = log
            .lines()
            .filter(|line| {
                let lower = line.to_ascii_lowercase();
                lower.contains("panic")
                    || lower.contains("[critical]")
                    || lower.contains("vm failed")
                    || (lower.contains("function: proxy_on") && lower.contains("failed"))
                    || lower.contains("runtimeerror")
            })
            .collect();
        assert!(
            failures.is_empty(),
            "VM failures in Envoy's log: {failures:#?}"
        );
    }
}

/// What a request came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Routed to this backend.
    Backend(&'static str),
    /// Routed to one of these (the policy's turn decides which).
    OneOf(&'static [&'static str]),
    /// eisodos answered this status with this `x-eisodos-reason`.
    Local(u16, &'static str),
    /// Envoy answered this status itself, before any filter.
    Envoy(u16),
}

fn outcome_of(response: &Response) -> String {
    format!(
        "{} reason {:?} upstream {:?} body {:?}",
        response.status,
        response.header("x-eisodos-reason"),
        response.header("x-upstream"),
        response.body.chars().take(80).collect::<String>()
    )
}

impl Rig {
    /// Sends the request and checks its outcome; returns the response.
    fn expect(
        &self,
        what: &str,
        path: &[u8],
        headers: &[(&[u8], &[u8])],
        outcome: Outcome,
    ) -> Response {
        let hits = self.hits();
        let response = self.send(path, headers);
        let got = outcome_of(&response);
        eprintln!("{what}: {got}");
        let upstream = response.header("x-upstream");
        match outcome {
            Outcome::Backend(name) => {
                assert_eq!(response.status, 200, "{what}: {got}");
                assert_eq!(upstream, Some(name), "{what}: {got}");
            }
            Outcome::OneOf(names) => {
                assert_eq!(response.status, 200, "{what}: {got}");
                assert!(
                    upstream.is_some_and(|u| names.contains(&u)),
                    "{what}: {got}, expected one of {names:?}"
                );
            }
            Outcome::Local(status, reason) => {
                assert_eq!(response.status, status, "{what}: {got}");
                assert_eq!(
                    response.header("x-eisodos-reason"),
                    Some(reason),
                    "{what}: {got}"
                );
                assert_eq!(self.hits(), hits, "{what}: reached no upstream");
            }
            Outcome::Envoy(status) => {
                assert_eq!(response.status, status, "{what}: {got}");
                assert_eq!(response.header("x-eisodos-reason"), None, "{what}: {got}");
                assert_eq!(self.hits(), hits, "{what}: reached no upstream");
            }
        }
        response
    }
}

fn ketama_says(key: &[u8]) -> &'static str {
    let ring = Ketama::new(NAMES.map(|name| (name, 1)));
    let index = ring.backend_for(Ketama::hash_key(key)).expect("a ring");
    NAMES[index]
}

/// `n` header lines of 4-letter names (`aaaa`, `aaab`...) and the value `1`: 8 bytes a line
/// on the wire, so 10,000 of them fit in Envoy's highest limit, 96 KiB.
fn many_headers(n: usize) -> Vec<u8> {
    let mut lines = Vec::with_capacity(n * 8);
    for i in 0..n {
        let name: Vec<u8> = [17_576, 676, 26, 1]
            .iter()
            .map(|place| b'a' + u8::try_from(i / place % 26).expect("a letter"))
            .collect();
        lines.extend_from_slice(&name);
        lines.extend_from_slice(b":1\r\n");
    }
    lines
}

/// A request whose header section holds `many` before `headers`.
fn request_with_many(many: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut bytes = request(b"/", headers);
    let end = bytes.len() - 2;
    bytes.splice(end..end, many.iter().copied());
    bytes
}

fn hashed(extra: &str) -> String {
    format!(
        r#"{{"policy": "consistent_hash", "on_missing_key": "reject",
            "hash_key": [{{"header": "x-user-id"}}, {{"cookie": "session"}}, {{"query": "user"}}]{extra},
            {BACKENDS}}}"#
    )
}

/// Request headers owned by a table of cases.
type Headers = Vec<(&'static [u8], Vec<u8>)>;

const MISSING: Outcome = Outcome::Local(400, "missing_key");

// ---- Envoy's own limits, at its defaults ---------------------------------------------------

/// What Envoy answers itself, with the shipped connection manager: eisodos never sees these.
#[test]
fn envoy_refuses_oversized_and_malformed_requests_itself_at_its_defaults() {
    let rig = start(&hashed(""), Limits::Default);
    let big = vec![b'k'; BIG];
    rig.expect(
        "64 KiB hash key",
        b"/",
        &[(b"x-user-id", &big)],
        Outcome::Envoy(431),
    );
    let response = rig.send_bytes(&request_with_many(&many_headers(10_000), &[]));
    eprintln!("10,000 headers: {}", outcome_of(&response));
    assert_eq!(response.status, 431, "max_headers_count 100");
    let response = rig.send_bytes(&request_with_many(&many_headers(101), &[]));
    assert_eq!(
        response.status, 431,
        "101 headers, over max_headers_count 100"
    );
    // Bytes Envoy's HTTP/1 codec refuses: 0x80-0xff in a header name or in the request line
    // (path or query), controls and DEL in a value.
    for (what, path, name, value) in [
        (
            "0xff in a header name",
            &b"/"[..],
            &[b'x', 0xff][..],
            &b"1"[..],
        ),
        ("0x80 in a header name", b"/", &[0x80, b'x'], b"1"),
        ("0xff in the path", &[b'/', b'a', 0xff], b"x-user-id", b"u"),
        ("0xe9 in the query", b"/?user=\xe9", b"x-user-id", b"u"),
        ("a fragment in the path", b"/a#b", b"x-user-id", b"u"),
        ("0x01 in a value", b"/", b"x-user-id", &[b'u', 0x01]),
        ("0x7f in a value", b"/", b"x-user-id", &[b'u', 0x7f]),
        ("NUL in a value", b"/", b"x-user-id", &[b'u', 0x00]),
    ] {
        rig.expect(what, path, &[(name, value)], Outcome::Envoy(400));
    }
    // What it passes: 0x80-0xff in a value (hashed as bytes), and a bare CR inside a value,
    // which Envoy's codec drops: the filter sees `helloworld` (whose backend differs from that
    // of the bytes as sent, so the test tells the two apart).
    rig.expect(
        "0x80-0xff in a value",
        b"/",
        &[(b"x-user-id", b"\x80\xff")],
        Outcome::Backend(ketama_says(b"\x80\xff")),
    );
    assert_ne!(ketama_says(b"helloworld"), ketama_says(b"hello\rworld"));
    rig.expect(
        "a bare CR inside a value",
        b"/",
        &[(b"x-user-id", b"hello\rworld")],
        Outcome::Backend(ketama_says(b"helloworld")),
    );
    rig.assert_alive();
}

// ---- 0 bytes and 64 KiB --------------------------------------------------------------------

/// Hash keys of 0 bytes and 64 KiB count as absent (the next source is tried; with none,
/// `on_missing_key: reject` answers 400); 4 KiB is the longest key hashed.
#[test]
fn hash_keys_of_zero_bytes_and_64_kib_count_as_absent() {
    let rig = start(&hashed(""), Limits::Raised);
    let big = vec![b'k'; BIG];
    let at_limit = vec![b'k'; 4096];
    let big_cookie = [b"session=".as_slice(), &big].concat();
    let big_query = [b"/?user=".as_slice(), &big].concat();
    let cases: Vec<(&str, Vec<u8>, Headers, Outcome)> = vec![
        (
            "empty header",
            b"/".to_vec(),
            vec![(b"x-user-id", vec![])],
            MISSING,
        ),
        (
            "empty header, then a cookie",
            b"/".to_vec(),
            vec![(b"x-user-id", vec![]), (b"cookie", b"session=c1".to_vec())],
            Outcome::Backend(ketama_says(b"c1")),
        ),
        (
            "64 KiB header",
            b"/".to_vec(),
            vec![(b"x-user-id", big.clone())],
            MISSING,
        ),
        (
            "64 KiB header, then a query",
            b"/?user=q1".to_vec(),
            vec![(b"x-user-id", big.clone())],
            Outcome::Backend(ketama_says(b"q1")),
        ),
        (
            "4 KiB header",
            b"/".to_vec(),
            vec![(b"x-user-id", at_limit.clone())],
            Outcome::Backend(ketama_says(&at_limit)),
        ),
        (
            "empty cookie value",
            b"/".to_vec(),
            vec![(b"cookie", b"session=".to_vec())],
            MISSING,
        ),
        (
            "64 KiB cookie value",
            b"/".to_vec(),
            vec![(b"cookie", big_cookie)],
            MISSING,
        ),
        (
            "a small cookie after 64 KiB of others",
            b"/".to_vec(),
            vec![(
                b"cookie",
                [b"pad=".as_slice(), &big, b"; session=c2"].concat(),
            )],
            Outcome::Backend(ketama_says(b"c2")),
        ),
        ("empty query value", b"/?user=".to_vec(), vec![], MISSING),
        ("64 KiB query value", big_query, vec![], MISSING),
        (
            "empty header value of cookie",
            b"/".to_vec(),
            vec![(b"cookie", vec![])],
            MISSING,
        ),
    ];
    for (what, path, headers, outcome) in cases {
        let headers: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        rig.expect(what, &path, &headers, outcome);
    }
    rig.assert_alive();
}

/// Traffic splitting and sticky sessions on one rig: stable (a, b) and canary (c), a rule on
/// a header, one on a cookie, 50% by `x-user-id` (else `x-fallback`).
fn split_config() -> String {
    format!(
        r#"{{"policy": "round_robin", {BACKENDS},
            "subsets": {{"stable": ["backend_a", "backend_b"], "canary": ["backend_c"]}},
            "default_subset": "stable",
            "rules": [
              {{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}},
              {{"match": {{"header": {{"name": "x-canary", "prefix": "yes"}}}}, "subset": "canary"}},
              {{"match": {{"cookie": {{"name": "beta", "exact": "1"}}}}, "subset": "canary"}},
              {{"percent": 50, "subset": "canary"}}
            ],
            "split_key": [{{"header": "x-user-id"}}, {{"header": "x-fallback"}}],
            "session_affinity": {{}}}}"#
    )
}

const STABLE: Outcome = Outcome::OneOf(&["backend_a", "backend_b"]);
const CANARY: Outcome = Outcome::Backend("backend_c");

/// Whether a split key goes to the canary (`percent: 50`: the buckets below 2^31).
fn canary_by_key(key: &[u8]) -> bool {
    key_bucket(key) < 1 << 31
}

/// A key for `x-fallback` that the 50% rule sends to the canary, or not.
fn fallback_key(canary: bool) -> Vec<u8> {
    (0..)
        .map(|i| format!("fallback-{i}").into_bytes())
        .find(|key| canary_by_key(key) == canary)
        .expect("a key")
}

fn split_outcome(key: &[u8]) -> Outcome {
    if canary_by_key(key) {
        CANARY
    } else {
        STABLE
    }
}

/// Split keys, rule matches and session cookies of 0 bytes and 64 KiB: an empty header still
/// counts as present for a rule but matches no value; an empty or oversized split key counts
/// as absent (the next source decides); an empty or oversized session cookie is no token, so
/// the policy routes and the response sets a new cookie.
#[test]
fn split_keys_rule_matches_and_session_cookies_of_zero_bytes_and_64_kib() {
    let rig = start(&split_config(), Limits::Raised);
    let big = vec![b'k'; BIG];
    let stable_fallback = fallback_key(false);
    let canary_fallback = fallback_key(true);
    // The empty key and the 64 KiB one would go to the canary if they were hashed: a stable
    // outcome proves they were not.
    assert!(
        canary_by_key(b""),
        "md5 of nothing lands in the canary's half"
    );
    let big_user: Vec<u8> = (0..)
        .map(|i| [format!("{i}").into_bytes(), vec![b'k'; BIG - 8]].concat())
        .find(|key| canary_by_key(key))
        .expect("a key");
    let at_limit = vec![b'u'; 4096];
    let fb: (&[u8], &[u8]) = (b"x-fallback", &stable_fallback);
    let cases: Vec<(&str, Headers, Outcome)> = vec![
        ("x-beta: yes", vec![(b"x-beta", b"yes".to_vec())], CANARY),
        ("empty x-beta", vec![(b"x-beta", vec![])], STABLE),
        ("64 KiB x-beta", vec![(b"x-beta", big.clone())], STABLE),
        (
            "64 KiB x-canary starting yes",
            vec![(b"x-canary", [b"yes".as_slice(), &big].concat())],
            CANARY,
        ),
        (
            "cookie beta=1",
            vec![(b"cookie", b"beta=1".to_vec())],
            CANARY,
        ),
        (
            "empty cookie beta",
            vec![(b"cookie", b"beta=".to_vec())],
            STABLE,
        ),
        (
            "64 KiB cookie beta",
            vec![(b"cookie", [b"beta=".as_slice(), &big].concat())],
            STABLE,
        ),
        ("empty split key", vec![(b"x-user-id", vec![])], STABLE),
        (
            "64 KiB split key",
            vec![(b"x-user-id", big_user.clone())],
            STABLE,
        ),
        (
            "empty split key, canary fallback",
            vec![
                (b"x-user-id", vec![]),
                (b"x-fallback", canary_fallback.clone()),
            ],
            CANARY,
        ),
        (
            "4 KiB split key",
            vec![(b"x-user-id", at_limit.clone())],
            split_outcome(&at_limit),
        ),
    ];
    for (what, headers, outcome) in cases {
        let mut headers: Vec<(&[u8], &[u8])> =
            headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        headers.push(fb);
        let response = rig.expect(what, b"/", &headers, outcome);
        assert!(
            response.header("set-cookie").is_some(),
            "{what}: no session cookie, so the policy chose and sets one"
        );
    }

    // The session cookie: empty or 64 KiB is no token; a token of backend_a pins.
    let token_a = affinity_token_text(affinity_token("eisodos", "backend_a"));
    let pinned = format!("eisodos_backend={token_a}").into_bytes();
    let response = rig.expect(
        "a pinning cookie",
        b"/",
        &[(b"cookie", &pinned), fb],
        Outcome::Backend("backend_a"),
    );
    assert_eq!(response.header("set-cookie"), None, "pinned: no new cookie");
    for (what, cookie) in [
        ("empty session cookie", b"eisodos_backend=".to_vec()),
        (
            "64 KiB session cookie",
            [b"eisodos_backend=".as_slice(), &big].concat(),
        ),
        (
            "64 KiB session cookie starting with a valid token",
            [pinned.as_slice(), &big].concat(),
        ),
    ] {
        let response = rig.expect(what, b"/", &[(b"cookie", &cookie), fb], STABLE);
        assert!(
            response
                .header("set-cookie")
                .is_some_and(|c| c.starts_with("eisodos_backend=")),
            "{what}: a new cookie"
        );
    }
    rig.assert_alive();
}

// ---- non-UTF-8 bytes -----------------------------------------------------------------------

/// Bytes 0x80-0xff where eisodos reads a header: Envoy passes them in values (and refuses
/// them in names and in the request line, see the first test); eisodos hashes, matches and
/// compares them as bytes.
#[test]
fn non_utf8_bytes_in_hash_keys_deny_rules_and_the_status_path() {
    let rig = start(
        &hashed(
            r#", "status_path": "/.eisodos/status",
            "deny": [{"header": {"name": "x-agent", "prefix": "evil"}}, {"path_prefix": "/admin"}]"#,
        ),
        Limits::Default,
    );
    let binary: &[u8] = &[0xff, 0xfe, b'k', 0xe9, 0x80];
    let user: (&[u8], &[u8]) = (b"x-user-id", b"u1");
    let cookie = [b"session=".as_slice(), binary].concat();
    rig.expect(
        "non-UTF-8 hash header",
        b"/",
        &[(b"x-user-id", binary)],
        Outcome::Backend(ketama_says(binary)),
    );
    rig.expect(
        "non-UTF-8 session cookie",
        b"/",
        &[(b"cookie", &cookie)],
        Outcome::Backend(ketama_says(binary)),
    );
    rig.expect(
        "percent-escaped bytes in the query: hashed raw, not decoded",
        b"/?user=%ff%fe",
        &[],
        Outcome::Backend(ketama_says(b"%ff%fe")),
    );
    rig.expect(
        "a deny prefix followed by non-UTF-8",
        b"/",
        &[(b"x-agent", b"evil\xff\xfe"), user],
        Outcome::Local(403, "denied"),
    );
    rig.expect(
        "non-UTF-8 before a deny prefix",
        b"/",
        &[(b"x-agent", b"\xffevil"), user],
        Outcome::Backend(ketama_says(b"u1")),
    );
    rig.expect(
        "a denied path with escaped bytes",
        b"/admin%ff",
        &[user],
        Outcome::Local(403, "denied"),
    );
    rig.expect(
        "the status path with escaped bytes is another path",
        b"/.eisodos/status%ff",
        &[user],
        Outcome::Backend(ketama_says(b"u1")),
    );
    let status = rig.send(b"/.eisodos/status", &[]);
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(status.header("x-upstream"), None, "the status page itself");
    rig.assert_alive();
}

/// Non-UTF-8 bytes in rule matches, split keys and the session cookie.
#[test]
fn non_utf8_bytes_in_rule_matches_split_keys_and_session_cookies() {
    let rig = start(&split_config(), Limits::Default);
    let stable_fallback = fallback_key(false);
    let fb: (&[u8], &[u8]) = (b"x-fallback", &stable_fallback);
    let binary_user: Vec<u8> = (0x80_u8..=0xff)
        .map(|i| vec![0xff, i, 0xfe, 0x80])
        .find(|key| canary_by_key(key))
        .expect("a key");
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, Outcome)> = vec![
        (
            "x-beta: yes + 0xff",
            b"x-beta".to_vec(),
            b"yes\xff".to_vec(),
            STABLE,
        ),
        (
            "x-canary: yes + 0xff",
            b"x-canary".to_vec(),
            b"yes\xff".to_vec(),
            CANARY,
        ),
        (
            "cookie beta=1 + 0xff",
            b"cookie".to_vec(),
            b"beta=1\xff".to_vec(),
            STABLE,
        ),
        (
            "cookie beta=1 after a non-UTF-8 cookie",
            b"cookie".to_vec(),
            b"x=\xff\xfe; beta=1".to_vec(),
            CANARY,
        ),
        (
            "non-UTF-8 split key",
            b"x-user-id".to_vec(),
            binary_user,
            CANARY,
        ),
        (
            "a non-UTF-8 session cookie",
            b"cookie".to_vec(),
            b"eisodos_backend=\xff\xfe\xfd".to_vec(),
            STABLE,
        ),
    ];
    for (what, name, value, outcome) in cases {
        rig.expect(what, b"/", &[(&name, &value), fb], outcome);
    }
    rig.assert_alive();
}

/// A non-UTF-8 rate-limit key is a key like any other: its own bucket; an empty or 64 KiB
/// key is no key.
#[test]
fn rate_limit_keys_non_utf8_empty_and_64_kib() {
    let rig = start(
        &format!(
            r#"{{"policy": "random", {BACKENDS}, "rate_limit": {{"requests_per_second": 0.001,
                 "burst": 1, "key": [{{"header": "x-client"}}], "buckets": 65536}}}}"#
        ),
        Limits::Raised,
    );
    let any = Outcome::OneOf(&NAMES);
    rig.expect(
        "first of key ff fe",
        b"/",
        &[(b"x-client", b"\xff\xfe")],
        any.clone(),
    );
    rig.expect(
        "second of key ff fe",
        b"/",
        &[(b"x-client", b"\xff\xfe")],
        Outcome::Local(429, "rate_limited"),
    );
    // Another key: its own bucket (the hash is fixed, so this holds on every run).
    rig.expect(
        "first of key ff fd",
        b"/",
        &[(b"x-client", b"\xff\xfd")],
        any.clone(),
    );
    // An empty key and a 64 KiB one count as absent: the requests without a key share one
    // bucket, whose one token the first keyless request takes.
    rig.expect("no key", b"/", &[], any);
    let limited = Outcome::Local(429, "rate_limited");
    rig.expect("an empty key", b"/", &[(b"x-client", b"")], limited.clone());
    let big = vec![b'k'; BIG];
    rig.expect("a 64 KiB key", b"/", &[(b"x-client", &big)], limited);
    rig.assert_alive();
}

// ---- 10,000 headers ------------------------------------------------------------------------

/// With Envoy's limits raised, 10,000 headers reach eisodos: a `max_header_bytes` rule reads
/// the whole map and denies, and the hash key is found among them.
#[test]
fn ten_thousand_headers_reach_eisodos_with_the_limits_raised() {
    let rig = start(
        // 10,000 headers of 5 bytes each (name and value) are 50,000 bytes, over 40,000.
        &hashed(
            r#", "deny": [{"header": {"name": "x-size-check", "present": true}, "max_header_bytes": 40000}]"#,
        ),
        Limits::Raised,
    );
    let many = many_headers(10_000);
    let last_key: (&[u8], &[u8]) = (b"x-user-id", b"the-10001st");
    let response = rig.send_bytes(&request_with_many(&many, &[last_key]));
    eprintln!("10,000 headers, then the key: {}", outcome_of(&response));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("x-upstream"),
        Some(ketama_says(b"the-10001st"))
    );

    let hits = rig.hits();
    let response = rig.send_bytes(&request_with_many(
        &many,
        &[(b"x-size-check", b"1"), last_key],
    ));
    eprintln!(
        "10,000 headers against max_header_bytes: {}",
        outcome_of(&response)
    );
    assert_eq!(response.status, 431, "{response:?}");
    assert_eq!(response.header("x-eisodos-reason"), Some("denied"));
    assert_eq!(rig.hits(), hits);

    // A few headers pass the same rule.
    rig.expect(
        "the size rule on a small request",
        b"/",
        &[(b"x-size-check", b"1"), last_key],
        Outcome::Backend(ketama_says(b"the-10001st")),
    );
    rig.assert_alive();
}

// ---- malformed cookies and query strings ----------------------------------------------------

/// Cookie headers and query strings no browser sends: each has a defined key, or none.
#[test]
fn malformed_cookies_and_query_strings_have_a_defined_key() {
    let rig = start(&hashed(""), Limits::Raised);
    let key = |k: &'static [u8]| Outcome::Backend(ketama_says(k));
    let many_pairs: Vec<u8> = (0..8_000)
        .flat_map(|i| format!("k{i}=v; ").into_bytes())
        .chain(b"session=last".iter().copied())
        .collect();
    let cookies: Vec<(&str, Vec<u8>, Outcome)> = vec![
        ("no =", b"session".to_vec(), MISSING),
        ("an empty name", b"=abc".to_vec(), MISSING),
        (
            "an empty name, then the cookie",
            b"=abc; session=s1".to_vec(),
            key(b"s1"),
        ),
        (
            "a name twice: the first counts",
            b"session=s1; session=s2".to_vec(),
            key(b"s1"),
        ),
        (";; around it", b";;session=s1;;".to_vec(), key(b"s1")),
        ("only separators", b";;; ;".to_vec(), MISSING),
        (
            "spaces around = are trimmed",
            b" session = s1 ".to_vec(),
            key(b"s1"),
        ),
        (
            "quotes are part of the value",
            b"session=\"s1\"".to_vec(),
            key(b"\"s1\""),
        ),
        ("= in the value", b"session=a=b".to_vec(), key(b"a=b")),
        ("names are case-sensitive", b"SESSION=s1".to_vec(), MISSING),
        ("a longer name is another", b"xsession=s1".to_vec(), MISSING),
        ("8,000 pairs, the cookie last", many_pairs, key(b"last")),
    ];
    for (what, cookie, outcome) in cookies {
        rig.expect(what, b"/", &[(b"cookie", &cookie)], outcome);
    }
    // Two cookie header lines (HTTP/1; browsers send one): Envoy hands a filter the first
    // value of a repeated header, so a cookie in the second line is not seen.
    rig.expect(
        "two cookie lines, the cookie in the first",
        b"/",
        &[(b"cookie", b"session=s1"), (b"cookie", b"a=1")],
        key(b"s1"),
    );
    rig.expect(
        "two cookie lines, the cookie in the second",
        b"/",
        &[(b"cookie", b"a=1"), (b"cookie", b"session=s2")],
        MISSING,
    );

    let many_query: Vec<u8> = b"/?"
        .iter()
        .copied()
        .chain((0..8_000).flat_map(|i| format!("q{i}=1&").into_bytes()))
        .chain(b"user=last".iter().copied())
        .collect();
    let queries: Vec<(&str, Vec<u8>, Outcome)> = vec![
        ("a ? with nothing after", b"/?".to_vec(), MISSING),
        ("&&&", b"/?&&&".to_vec(), MISSING),
        ("the key among &&&", b"/?&&&user=q1&&".to_vec(), key(b"q1")),
        ("no =", b"/?user".to_vec(), MISSING),
        ("an empty name", b"/?=q1".to_vec(), MISSING),
        (
            "a name twice: the first counts",
            b"/?user=q1&user=q2".to_vec(),
            key(b"q1"),
        ),
        (
            "an invalid % escape, raw",
            b"/?user=%zz".to_vec(),
            key(b"%zz"),
        ),
        ("a lone %, raw", b"/?user=%".to_vec(), key(b"%")),
        (
            "a valid escape, not decoded",
            b"/?user=%41".to_vec(),
            key(b"%41"),
        ),
        ("+ is not a space", b"/?user=a+b".to_vec(), key(b"a+b")),
        ("a second ?", b"/?x=1?user=q1".to_vec(), MISSING),
        (
            "a second ? in the value",
            b"/?user=q?1".to_vec(),
            key(b"q?1"),
        ),
        ("; is not a separator", b"/?x=1;user=q1".to_vec(), MISSING),
        ("8,000 pairs, the key last", many_query, key(b"last")),
    ];
    for (what, path, outcome) in queries {
        rig.expect(what, &path, &[], outcome);
    }
    rig.assert_alive();
}

// ---- IPv6 and IPv4-mapped client addresses ---------------------------------------------------

/// The client address Envoy reports (`source.address`), taken from one trusted
/// `x-forwarded-for` hop: IPv6, IPv4-mapped IPv6 (hashed and allowed as the IPv4 address it
/// maps), and what Envoy does with an entry it cannot parse (keeps the peer's address).
#[test]
fn ipv6_and_ipv4_mapped_clients_in_ip_hash_and_the_status_allow_list() {
    let rig = start(
        &format!(
            r#"{{"policy": "ip_hash", "ip_hash": {{"ipv4_prefix": 24, "ipv6_prefix": 64}}, {BACKENDS},
                "status_path": "/.eisodos/status",
                "status_allowed_cidrs": ["2001:db8::/32", "10.0.0.0/8", "::ffff:192.0.2.0/120"]}}"#
        ),
        Limits::TrustedXff,
    );
    let cases: [(&str, &[u8]); 12] = [
        ("2001:db8::1", b"2001:db8::"),
        ("2001:db8::ffff:1:2", b"2001:db8::"),
        ("2001:db8:0:1::1", b"2001:db8:0:1::"),
        ("::1", b"::"),
        ("::ffff:10.0.0.1", b"10.0.0.0"),
        ("::ffff:a00:1", b"10.0.0.0"),
        ("10.0.0.77", b"10.0.0.0"),
        ("1.2.3.4, 2001:db8::1", b"2001:db8::"),
        ("2001:db8::1, 1.2.3.4", b"1.2.3.0"),
        ("garbage", b"127.0.0.0"),
        ("[2001:db8::1]", b"127.0.0.0"),
        ("", b"127.0.0.0"),
    ];
    for (xff, key) in cases {
        let what = format!("ip_hash, x-forwarded-for {xff:?}");
        rig.expect(
            &what,
            b"/",
            &[(b"x-forwarded-for", xff.as_bytes())],
            Outcome::Backend(ketama_says(key)),
        );
    }
    for (xff, allowed) in [
        ("2001:db8::1", true),
        ("2001:db9::1", false),
        ("::ffff:10.1.2.3", true),
        ("10.1.2.3", true),
        ("::1", false),
        ("192.0.2.7", true),
        ("::ffff:192.0.2.7", true),
        ("192.0.3.7", false),
        ("garbage", false),
    ] {
        status_page_for(&rig, xff, allowed);
    }
    rig.assert_alive();
}

/// The status page from a client at `xff` (`x-forwarded-for`): served when `allowed`, else the
/// request is routed like any other (a 200 from an upstream).
fn status_page_for(rig: &Rig, xff: &str, allowed: bool) {
    let response = rig.send(b"/.eisodos/status", &[(b"x-forwarded-for", xff.as_bytes())]);
    eprintln!(
        "status page, x-forwarded-for {xff:?}: {}",
        outcome_of(&response)
    );
    assert_eq!(response.status, 200, "{xff}: {response:?}");
    assert_eq!(
        response.header("x-upstream").is_none(),
        allowed,
        "{xff}: the status page when allowed, routed otherwise: {response:?}"
    );
}

/// `hash_key` `source_ip` and the default status allow-list (loopback, `::1`).
#[test]
fn ipv6_and_ipv4_mapped_clients_as_a_hash_key_and_the_default_allow_list() {
    let rig = start(
        &format!(
            r#"{{"policy": "consistent_hash", "hash_key": [{{"source_ip": {{}}}}], {BACKENDS},
                "status_path": "/.eisodos/status"}}"#
        ),
        Limits::TrustedXff,
    );
    for (xff, key) in [
        ("2001:db8::1", &b"2001:db8::1"[..]),
        ("2001:DB8:0:0:0:0:0:1", b"2001:db8::1"),
        ("::1", b"::1"),
        ("::ffff:10.0.0.1", b"10.0.0.1"),
        ("10.0.0.1", b"10.0.0.1"),
        ("garbage", b"127.0.0.1"),
    ] {
        let what = format!("source_ip, x-forwarded-for {xff:?}");
        rig.expect(
            &what,
            b"/",
            &[(b"x-forwarded-for", xff.as_bytes())],
            Outcome::Backend(ketama_says(key)),
        );
    }
    for (xff, allowed) in [
        ("::1", true),
        ("::ffff:127.0.0.1", true),
        ("127.1.2.3", true),
        ("2001:db8::1", false),
        ("::ffff:10.0.0.1", false),
    ] {
        status_page_for(&rig, xff, allowed);
    }
    rig.assert_alive();
}
