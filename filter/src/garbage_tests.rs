//! Garbage under the in-flight table, wired through the callbacks against [`FakeHost`]: a
//! capped request over a record that fails its check makes the same host calls as over a good
//! one (one get, one CAS set), is routed (the garbage count is not believed), and its write
//! rebuilds the record.

use eisodos_core::inflight::InflightTable;
use eisodos_core::store::SharedStore;

use crate::abi;
use crate::fake_host::FakeHost;
use crate::root::EisodosRoot;
use crate::wiring_tests::{configured, request, routed_to};

/// Round-robin over three backends of one slot each.
fn one_slot_each() -> (FakeHost, EisodosRoot) {
    configured(
        r#"{"policy": "round_robin", "backends": [{"cluster": "backend_a", "max_requests": 1},
            {"cluster": "backend_b", "max_requests": 1}, {"cluster": "backend_c", "max_requests": 1}]}"#,
    )
}

fn inflight_key(root: &EisodosRoot) -> String {
    let balancer = root.balancer().unwrap();
    balancer
        .shared_keys()
        .into_iter()
        .find(|key| key.contains(".inflight."))
        .unwrap()
        .to_owned()
}

#[test]
fn a_capped_request_over_garbage_is_routed_with_the_same_host_calls_and_rebuilds_the_record() {
    // The host calls of a first request over a good record.
    let (clean_host, clean_root) = one_slot_each();
    clean_host.take_calls();
    let (action, _stream) = request(&clean_host, &clean_root, &[(":path", "/")]);
    assert_eq!(action, abi::CONTINUE);
    let clean_calls = clean_host.take_calls();

    let (host, root) = one_slot_each();
    let key = inflight_key(&root);
    let table = InflightTable::new(key.clone(), 3);
    // Every count u32::MAX, in a record of the right length (tag and check garbage too), and a
    // well-formed record of another key: either, believed, would refuse every backend.
    let other = InflightTable::new(format!("{key}.other"), 3);
    for garbage in [vec![0xff; 20], other.encode(&[u32::MAX; 3])] {
        host.set(&key, &garbage, None).unwrap();
        host.take_calls();
        let (action, stream) = request(&host, &root, &[(":path", "/")]);
        assert_eq!(action, abi::CONTINUE, "routed, not refused");
        assert!(routed_to(&host).is_some());
        assert_eq!(host.take_calls(), clean_calls, "the same host calls");
        let (record, _) = host.get(&key).unwrap().unwrap();
        let counts = table.decode(&record).expect("rebuilt as a checked record");
        assert_eq!(counts.iter().sum::<u32>(), 1, "{counts:?}");
        stream.on_log(&host);
    }
}
