//! Weighted random against real Envoy: the split follows the weights.

use eisodos_tests::client;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::upstream::Upstream;

#[test]
fn the_split_follows_the_weights() {
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .plugin_config(
            r#"{"policy": "random", "backends": [{"cluster": "backend_a", "weight": 1},
                {"cluster": "backend_b", "weight": 2}, {"cluster": "backend_c", "weight": 3}]}"#,
        )
        .start();
    let n = 1800;
    for i in 0..n {
        let response = client::get(&envoy.url(&format!("/{i}")));
        assert_eq!(response.status, 200);
    }
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    eprintln!("random 1:2:3 over {n} requests: {hits:?}");
    // Expected 300/600/900 with standard deviations sqrt(n p (1 - p)) = 15.8/20.0/21.2: each
    // bound sits 6 of them away (a false failure about once in 10^8 runs). Equal weights
    // (600 each) fall outside the first and the last.
    assert!((205..=395).contains(&hits[0]), "{hits:?}");
    assert!((480..=720).contains(&hits[1]), "{hits:?}");
    assert!((773..=1027).contains(&hits[2]), "{hits:?}");
}
