//! The packaged filter loaded the way a control plane hands it to Envoy: from a URL
//! (`vm_config.code.remote`, served on loopback) with its `sha256`. The module served is the
//! `plugin.wasm` the independent OCI reader extracts from the packaged image, and the digest
//! is the one `dist/eisodos.wasm.sha256` states. With a wrong digest Envoy 1.40 fetches the
//! module, refuses it, still starts, and the filter fails closed: every request gets a 503.

use eisodos_tests::envoy::Envoy;
use eisodos_tests::file_server::FileServer;
use eisodos_tests::remote_code::RemoteCode;
use eisodos_tests::upstream::Upstream;
use eisodos_tests::{client, oci, packager};

/// The packaged image's `plugin.wasm` and the digest `eisodos.wasm.sha256` gives for it.
fn packaged_module() -> (Vec<u8>, String) {
    let dir = tempfile::Builder::new()
        .prefix("eisodos-dist-")
        .tempdir()
        .expect("create a tempdir");
    let dist = dir.path().join("dist");
    packager::package_into(&dist).unwrap_or_else(|e| panic!("{e}"));
    let image = oci::read_image(&dist.join("oci")).unwrap_or_else(|e| panic!("dist/oci: {e}"));
    let module = image
        .entries
        .into_iter()
        .find(|e| e.path == "plugin.wasm")
        .expect("plugin.wasm in the image")
        .data;
    let line = std::fs::read_to_string(dist.join("eisodos.wasm.sha256")).unwrap();
    let sha256 = line.split_whitespace().next().unwrap().to_owned();
    (module, sha256)
}

#[test]
fn envoy_loads_the_packaged_module_from_a_url_with_its_sha256_and_spreads_requests() {
    let (module, sha256) = packaged_module();
    let server = FileServer::start("/eisodos.wasm", module);
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .remote_code(RemoteCode::new(&server, &sha256))
        .start();

    // Envoy is ready only once its listeners' init targets, the remote fetch among them, are done.
    assert_eq!(envoy.stat("wasm.remote_load_fetch_successes"), Some(1));
    assert_eq!(envoy.stat("wasm.remote_load_fetch_failures"), Some(0));
    assert!(server.served() >= 1, "{server:?}");

    for i in 0..30 {
        let response = client::get_with(&envoy.url(&format!("/r{i}")), &[("connection", "close")]);
        assert_eq!(response.status, 200, "request {i}: {response:?}");
    }
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(
        hits,
        [10, 10, 10],
        "round-robin through the remotely loaded filter"
    );
}

#[test]
fn envoy_refuses_the_module_when_the_sha256_is_wrong_and_the_filter_fails_closed() {
    let (module, _) = packaged_module();
    let wrong = oci::sha256_hex(b"not eisodos");
    let server = FileServer::start("/eisodos.wasm", module);
    let upstreams = Upstream::start_all(&["backend_a", "backend_b", "backend_c"]);
    let envoy = Envoy::builder()
        .upstreams(&upstreams)
        .remote_code(RemoteCode::new(&server, &wrong))
        .try_start()
        .unwrap_or_else(|e| panic!("Envoy starts even though the module is refused: {e}"));

    // Fetched (so the refusal is the digest's, not a failed download), and not loaded.
    assert!(server.served() >= 1, "{server:?}");
    assert_eq!(envoy.stat("wasm.remote_load_fetch_successes"), Some(0));
    assert_eq!(envoy.stat("wasm.remote_load_fetch_failures"), Some(1));
    let log = envoy.log();
    assert!(log.contains("Plugin eisodos failed to load"), "{log}");

    // The listener is up, and every request is refused by the filter before any route: an
    // empty 503, not the catch-all route's "no backend selected", and no upstream reached.
    for i in 0..5 {
        let response = client::get_with(&envoy.url(&format!("/r{i}")), &[("connection", "close")]);
        assert_eq!(response.status, 503, "request {i}: {response:?}");
        assert_eq!(response.body, "", "request {i}: {response:?}");
    }
    let hits: Vec<u64> = upstreams.iter().map(Upstream::hits).collect();
    assert_eq!(hits, [0, 0, 0]);
}
