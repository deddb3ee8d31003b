//! Garbage under each of eisodos' shared-data keys while Envoy serves (issue 14 item 3), with
//! the shared-data tool (`tests/shared-data-tool`) writing into the running Envoy.

use eisodos_tests::client;
use eisodos_tests::envoy::Envoy;
use eisodos_tests::shared_data_tool;
use eisodos_tests::upstream::Upstream;

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
}
