//! IP hash against real Envoy: clients are told apart by the address Envoy reports (sent here
//! from many loopback addresses), grouped by prefix, never by a forged X-Forwarded-For.

use std::net::Ipv4Addr;

use eisodos_core::policy::Ketama;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::raw;
use eisodos_tests::upstream::Upstream;

const NAMES: [&str; 3] = ["backend_a", "backend_b", "backend_c"];

fn start(ip_hash: &str) -> (Vec<Upstream>, Envoy) {
    let upstreams = Upstream::start_all(&NAMES);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(&format!(
            r#"{{"policy": "ip_hash"{ip_hash}, "backends": [
                {{"cluster": "backend_a"}}, {{"cluster": "backend_b"}}, {{"cluster": "backend_c"}}]}}"#
        ))
        .start();
    (upstreams, envoy)
}

fn ketama_says(key: &str) -> &'static str {
    let ring = Ketama::new(NAMES.map(|name| (name, 1)));
    NAMES[ring.backend_for(Ketama::hash_key(key.as_bytes())).unwrap()]
}

fn answered_by(envoy: &Envoy, from: Ipv4Addr, headers: &[(&str, &str)]) -> String {
    let response = raw::get_from(from, envoy.listener_port(), "/", headers).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    response.header("x-upstream").unwrap().to_owned()
}

#[test]
fn each_client_address_has_its_backend() {
    let (_upstreams, envoy) = start("");
    let mut used = std::collections::BTreeSet::new();
    for host in 1..=40 {
        let ip = Ipv4Addr::new(127, 0, 7, host);
        let expected = ketama_says(&ip.to_string());
        // A forged X-Forwarded-For does not change who the client is.
        let forged = answered_by(&envoy, ip, &[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(forged, expected, "{ip}");
        assert_eq!(answered_by(&envoy, ip, &[]), expected, "{ip}");
        used.insert(expected);
    }
    assert!(
        used.len() >= 2,
        "40 addresses should not all hash to one backend"
    );
}

#[test]
fn a_prefix_keeps_a_subnet_together() {
    let (upstreams, envoy) = start(r#", "ip_hash": {"ipv4_prefix": 24}"#);
    for subnet in [5, 6, 9] {
        let expected = ketama_says(&format!("127.0.{subnet}.0"));
        for host in [1, 2, 77, 254] {
            let ip = Ipv4Addr::new(127, 0, subnet, host);
            assert_eq!(answered_by(&envoy, ip, &[]), expected, "{ip}");
        }
    }
    assert_eq!(upstreams.iter().map(Upstream::hits).sum::<u64>(), 12);
}
