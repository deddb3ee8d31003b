//! Shared-data operations per request, measured on a `MemoryStore`: for each policy at 3
//! backends, 1000 requests through `Balancer::choose` (and `release` when counted) after
//! `create_shared_keys` and one tick, counted from `op_counts()` deltas. Printed, and written
//! to `bench/results/ops-per-request.json` at the workspace root.
//!
//! `cargo bench -p eisodos-core --bench ops` (no timing: runs in well under a second).

// Benchmark code: failing loudly on a bad setup is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use eisodos_core::balancer::Decision;
use serde_json::json;

const BACKENDS: usize = 3;
const REQUESTS: usize = 1000;

/// One row: gets and sets per request, split into the pick and the release.
struct Row {
    name: String,
    choose: (u64, u64),
    release: (u64, u64),
}

fn delta(after: (u64, u64), before: (u64, u64)) -> (u64, u64) {
    (after.0 - before.0, after.1 - before.1)
}

fn per_request(count: u64) -> f64 {
    count as f64 / REQUESTS as f64
}

fn measure(name: &str, json: &str, policy: &str) -> Row {
    let (balancer, store) = common::balancer_from(json);
    let pool = common::requests(policy);
    let mut choose = (0, 0);
    let mut release = (0, 0);
    for i in 0..REQUESTS {
        let before = store.op_counts();
        let decision = balancer.choose(&store, &pool[i % common::POOL]);
        let picked = store.op_counts();
        let choice = match decision {
            Decision::Route(choice) => choice,
            other => panic!("{name}: expected a route, got {other:?}"),
        };
        let step = delta(picked, before);
        choose = (choose.0 + step.0, choose.1 + step.1);
        if choice.counted {
            balancer.release(&store, choice.index);
            let step = delta(store.op_counts(), picked);
            release = (release.0 + step.0, release.1 + step.1);
        }
    }
    Row {
        name: name.to_owned(),
        choose,
        release,
    }
}

fn main() {
    let mut rows: Vec<Row> = common::POLICIES
        .iter()
        .map(|&policy| {
            measure(
                policy,
                &common::config_json(policy, BACKENDS, false),
                policy,
            )
        })
        .collect();
    // Variants whose per-request cost differs by design (module docs of `balancer`).
    for policy in ["round_robin", "least_request"] {
        rows.push(measure(
            &format!("{policy}+health"),
            &common::config_json(policy, BACKENDS, true),
            policy,
        ));
    }
    let bounded = common::config_json("consistent_hash", BACKENDS, false).replacen(
        '{',
        r#"{"bounded_load_factor": 1.25, "#,
        1,
    );
    rows.push(measure(
        "consistent_hash+bounded_load",
        &bounded,
        "consistent_hash",
    ));

    println!(
        "shared-data operations per request ({BACKENDS} backends, {REQUESTS} requests, MemoryStore)"
    );
    println!(
        "{:<30} {:>12} {:>12}   (choose gets/sets + release gets/sets)",
        "policy", "gets/request", "sets/request"
    );
    let mut entries = Vec::new();
    for row in &rows {
        let gets = per_request(row.choose.0 + row.release.0);
        let sets = per_request(row.choose.1 + row.release.1);
        println!(
            "{:<30} {gets:>12.3} {sets:>12.3}   ({:.3}/{:.3} + {:.3}/{:.3})",
            format!("{}:", row.name),
            per_request(row.choose.0),
            per_request(row.choose.1),
            per_request(row.release.0),
            per_request(row.release.1),
        );
        entries.push(json!({
            "policy": row.name,
            "gets_per_request": gets,
            "sets_per_request": sets,
            "choose": {
                "gets_per_request": per_request(row.choose.0),
                "sets_per_request": per_request(row.choose.1),
            },
            "release": {
                "gets_per_request": per_request(row.release.0),
                "sets_per_request": per_request(row.release.1),
            },
        }));
    }
    let document = json!({
        "description": "Shared-data operations per request, measured with MemoryStore::op_counts deltas \
                        after create_shared_keys and one tick; release counted only when the choice was counted.",
        "backends": BACKENDS,
        "requests": REQUESTS,
        "results": entries,
    });
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/results"));
    std::fs::create_dir_all(&dir).expect("create bench/results");
    let path = dir.join("ops-per-request.json");
    let text = serde_json::to_string_pretty(&document).expect("serialize") + "\n";
    std::fs::write(&path, text).expect("write ops-per-request.json");
    let shown = path.canonicalize().unwrap_or(path);
    println!("written to {}", shown.display());
}
