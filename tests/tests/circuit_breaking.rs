//! `backends[].max_requests` against real Envoy with two workers: the caps bound what the
//! upstreams see in flight at once (counted by the upstreams themselves), the overflow is
//! answered 503 `circuit_open`, a full backend is skipped for one with room, and the counts go
//! back to zero however streams end, whatever the policy.

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use eisodos_tests::client::{self, Response};
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{exclusive, raw, wait};

const CLUSTERS: [&str; 3] = ["backend_a", "backend_b", "backend_c"];

/// The policies, each with the fields it needs (consistent hashing keyed by `x-user-id`).
const POLICIES: [&str; 4] = [
    r#""policy": "round_robin""#,
    r#""policy": "random""#,
    r#""policy": "consistent_hash", "hash_key": [{"header": "x-user-id"}]"#,
    r#""policy": "least_request""#,
];

/// The status page: the shared in-flight record as it is now (the gauges are a second behind).
const STATUS_PATH: &str = "/.eisodos/status";

/// How long a held request may wait for its answer: far beyond what any phase needs.
const PATIENCE: Duration = Duration::from_secs(60);

fn plugin_config(policy: &str, cap: u32) -> String {
    let backends: Vec<String> = CLUSTERS
        .iter()
        .map(|c| format!(r#"{{"cluster": "{c}", "max_requests": {cap}}}"#))
        .collect();
    format!(
        r#"{{{policy}, "status_path": "{STATUS_PATH}", "backends": [{}]}}"#,
        backends.join(", ")
    )
}

struct Setup {
    upstreams: Vec<Upstream>,
    envoy: Envoy,
}

fn start(plugin_config: &str, route_timeout: Option<Duration>) -> Setup {
    let upstreams = Upstream::start_all(&CLUSTERS);
    let mut builder = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(plugin_config)
        .concurrency(2);
    if let Some(timeout) = route_timeout {
        builder = builder.route_timeout(timeout);
    }
    Setup {
        envoy: builder.start(),
        upstreams,
    }
}

impl Setup {
    fn held(&self) -> Vec<u64> {
        self.upstreams.iter().map(Upstream::held).collect()
    }

    fn release_held(&self) {
        for upstream in &self.upstreams {
            upstream.release_held();
        }
    }

    /// The `eisodos_in_flight{backend}` gauges (refreshed every second), in cluster order.
    fn gauges(&self) -> Vec<u64> {
        let scrape = self.envoy.scrape();
        CLUSTERS
            .iter()
            .map(|cluster| {
                scrape
                    .value("eisodos_in_flight", &[("backend", cluster)])
                    .unwrap_or_else(|| {
                        panic!("no gauge for {cluster} in:\n{}", scrape.lines("eisodos_"))
                    }) as u64
            })
            .collect()
    }

    /// The in-flight counts in the shared record now, from the status page.
    fn counts(&self) -> Vec<u64> {
        let page = client::get(&self.envoy.url(STATUS_PATH));
        assert_eq!(page.status, 200, "{page:?}");
        let page: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        page["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|backend| backend["in_flight"].as_u64().unwrap())
            .collect()
    }

    /// Waits until the shared record holds `expected`.
    fn wait_for_counts(&self, expected: &[u64]) {
        wait::until(Duration::from_secs(10), || {
            let counts = self.counts();
            if counts == expected {
                Ok(())
            } else {
                Err(format!("in flight {counts:?}, expected {expected:?}"))
            }
        });
    }

    fn wait_for_gauges(&self, expected: &[u64]) {
        wait::until(Duration::from_secs(10), || {
            let gauges = self.gauges();
            if gauges == expected {
                Ok(())
            } else {
                Err(format!(
                    "in-flight gauges {gauges:?}, expected {expected:?}"
                ))
            }
        });
    }

    fn port(&self) -> u16 {
        self.envoy.listener_port()
    }
}

/// One GET to Envoy's `port` on a connection of its own, waiting as long as a held request may.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    raw::get_patiently(port, path, headers, PATIENCE).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Asserts `response` is eisodos' own `circuit_open` reply.
#[track_caller]
fn assert_circuit_open(response: &Response) {
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("x-eisodos-reason"), Some("circuit_open"));
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.body, "eisodos: every backend is at max_requests\n");
    assert_eq!(response.header("x-upstream"), None);
}

/// Ten requests at once, all held at the upstreams, over three backends of two slots each:
/// exactly six reach the upstreams, two each, while the other four are answered
/// `circuit_open`; once the six end, the counts are back to zero and requests flow again.
/// Then slow traffic from twelve clients never puts more than two on any upstream at once.
#[test]
fn caps_bound_what_the_upstreams_see_in_flight_whatever_the_policy() {
    let _machine = exclusive::machine();
    for policy in POLICIES {
        let setup = start(&plugin_config(policy, 2), None);
        let (sent, answers) = mpsc::channel::<Response>();
        let held = std::thread::scope(|scope| {
            for i in 0..10 {
                let (port, sent) = (setup.port(), sent.clone());
                scope.spawn(move || {
                    let user = format!("user-{i}");
                    let response = get(port, &format!("/hold/{i}"), &[("x-user-id", &user)]);
                    sent.send(response).unwrap();
                });
            }
            // The refused answer at once; the admitted wait at the upstreams.
            let mut refused = Vec::new();
            let held = wait::until(Duration::from_secs(20), || {
                refused.extend(answers.try_iter());
                let held = setup.held();
                if held.iter().sum::<u64>() == 6 && refused.len() == 4 {
                    Ok(held)
                } else {
                    Err(format!(
                        "held {held:?}, {} answered: {refused:?}",
                        refused.len()
                    ))
                }
            });
            for response in &refused {
                assert_circuit_open(response);
            }
            setup.wait_for_counts(&[2, 2, 2]);
            // The gauge exists for every policy with caps, and shows them too.
            setup.wait_for_gauges(&[2, 2, 2]);
            setup.release_held();
            held
        });
        let released: Vec<Response> = answers.try_iter().collect();
        assert_eq!(released.len(), 6, "{policy}");
        assert!(released.iter().all(|r| r.status == 200), "{released:?}");
        assert_eq!(held, [2, 2, 2], "{policy}: two in flight on each upstream");
        let peaks: Vec<u64> = setup
            .upstreams
            .iter()
            .map(Upstream::peak_in_flight)
            .collect();
        assert_eq!(peaks, [2, 2, 2], "{policy}");
        setup.wait_for_gauges(&[0, 0, 0]);
        setup.wait_for_counts(&[0, 0, 0]);

        // Slow traffic: twelve clients, five requests each, 300 ms at the upstream.
        let statuses: Vec<Response> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..12)
                .map(|t| {
                    let port = setup.port();
                    scope.spawn(move || {
                        (0..5)
                            .map(|i| {
                                let user = format!("user-{t}-{i}");
                                get(
                                    port,
                                    &format!("/slow/{t}/{i}"),
                                    &[("x-delay-ms", "300"), ("x-user-id", &user)],
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let ok = statuses.iter().filter(|r| r.status == 200).count();
        for response in statuses.iter().filter(|r| r.status != 200) {
            assert_circuit_open(response);
        }
        let peaks: Vec<u64> = setup
            .upstreams
            .iter()
            .map(Upstream::peak_in_flight)
            .collect();
        let hits: u64 = setup.upstreams.iter().map(Upstream::hits).sum();
        eprintln!(
            "{policy}: held {held:?}; slow traffic: {ok} of 60 answered 200, {} circuit_open, upstream peaks {peaks:?}",
            60 - ok
        );
        assert!(peaks.iter().all(|&p| p <= 2), "{policy}: {peaks:?}");
        assert!(ok > 0, "{policy}: requests flow again");
        assert_eq!(
            hits,
            6 + ok as u64,
            "{policy}: the refused never reached an upstream"
        );
        setup.wait_for_counts(&[0, 0, 0]);
        eisodos_tests::upstream::assert_no_wrong_hosts(&setup.upstreams);
    }
}

/// One slot per backend and one request held on one of them: every later request goes to
/// the other two, for round-robin (which would give it a third), random and hashing (whose
/// key would send every one of them there).
#[test]
fn a_full_backend_is_skipped_for_one_with_room() {
    let _machine = exclusive::machine();
    for policy in &POLICIES[..3] {
        let setup = start(&plugin_config(policy, 1), None);
        let key = [("x-user-id", "the-same-user")];
        std::thread::scope(|scope| {
            let port = setup.port();
            let holder = scope.spawn(move || get(port, "/hold/0", &key));
            let held = wait::until(Duration::from_secs(10), || {
                let held = setup.held();
                if held.iter().sum::<u64>() == 1 {
                    Ok(held)
                } else {
                    Err(format!("held {held:?}"))
                }
            });
            let full = held.iter().position(|&n| n == 1).unwrap();
            for i in 0..30 {
                let response = get(setup.port(), &format!("/r/{i}"), &key);
                assert_eq!(response.status, 200, "{policy}: {response:?}");
                assert_ne!(
                    response.header("x-upstream"),
                    Some(CLUSTERS[full]),
                    "{policy}: {} is full",
                    CLUSTERS[full]
                );
            }
            let hits: Vec<u64> = setup.upstreams.iter().map(Upstream::hits).collect();
            eprintln!("{policy}: {} held one; hits {hits:?}", CLUSTERS[full]);
            assert_eq!(hits[full], 1, "{policy}: only the held request: {hits:?}");
            setup.release_held();
            assert_eq!(holder.join().unwrap().status, 200);
        });
        setup.wait_for_counts(&[0, 0, 0]);
    }
}

/// Counts come back however a stream ends: upstream reset, route timeout, client abort. With
/// one slot per backend, three requests held at once afterwards all get in.
#[test]
fn counts_are_released_however_streams_end() {
    let _machine = exclusive::machine();
    let setup = start(
        &plugin_config(r#""policy": "round_robin""#, 1),
        Some(Duration::from_secs(4)),
    );
    for i in 0..3 {
        // The upstream closes the connection without answering: Envoy's own 503.
        let reset = get(setup.port(), &format!("/reset/{i}"), &[]);
        assert_eq!(reset.status, 503, "{reset:?}");
        assert_eq!(reset.header("x-eisodos-reason"), None, "not eisodos' reply");
    }
    // Slower than the route timeout: Envoy's 504.
    let timed_out = get(setup.port(), "/timeout", &[("x-delay-ms", "5000")]);
    assert_eq!(timed_out.status, 504, "{timed_out:?}");
    // Every slot free in the shared record (the releases written), so the three below all get
    // one.
    setup.wait_for_counts(&[0, 0, 0]);
    // Three clients give up while their upstreams are still thinking (well within the route
    // timeout): each connection is closed once the upstreams have all three requests.
    let hits = || -> u64 { setup.upstreams.iter().map(Upstream::hits).sum() };
    assert_eq!(hits(), 4);
    let clients: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut stream = raw::connect_from(Ipv4Addr::LOCALHOST, setup.port()).unwrap();
            let request = format!(
                "GET /abort/{i} HTTP/1.1\r\nhost: eisodos.test\r\nx-delay-ms: 10000\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    wait::until(Duration::from_secs(10), || match hits() {
        7 => Ok(()),
        n => Err(format!("{n} requests reached the upstreams")),
    });
    for client in clients {
        client.shutdown(Shutdown::Both).unwrap();
    }
    setup.wait_for_counts(&[0, 0, 0]);
    std::thread::scope(|scope| {
        let holders: Vec<_> = (0..3)
            .map(|i| {
                let port = setup.port();
                scope.spawn(move || get(port, &format!("/hold/{i}"), &[]))
            })
            .collect();
        wait::until(Duration::from_secs(10), || {
            let held = setup.held();
            if held == [1, 1, 1] {
                Ok(())
            } else {
                Err(format!("held {held:?}"))
            }
        });
        assert_eq!(
            client::get(&setup.envoy.url("/one-more")).header("x-eisodos-reason"),
            Some("circuit_open"),
            "all three slots taken again"
        );
        setup.release_held();
        for holder in holders {
            assert_eq!(holder.join().unwrap().status, 200);
        }
    });
    setup.wait_for_counts(&[0, 0, 0]);
}
