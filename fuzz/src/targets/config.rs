//! The config reader and validator, and what an accepted configuration then does with
//! requests and garbage in its shared data.
//!
//! Seeds: every configuration the core unit tests parse (recorded with
//! `EISODOS_RECORD_CONFIGS`) and the plugin configurations of `envoy/*.yaml`, one JSON object
//! a line in `seeds/configs.jsonl`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use eisodos_core::balancer::{Balancer, Decision};
use eisodos_core::config::Config;
use eisodos_core::memory_store::MemoryStore;
use eisodos_core::request_key::StaticRequest;
use eisodos_core::store::SharedStore;
use serde_json::{Map, Number, Value};

const SEEDS: &str = include_str!("../../seeds/configs.jsonl");

/// The seed configurations as bytes.
pub fn seeds() -> Vec<Vec<u8>> {
    SEEDS
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.as_bytes().to_vec())
        .collect()
}

/// Mutated bytes straight in (syntax errors, duplicate keys, odd escapes, deep nesting).
pub fn bytes(input: &[u8]) {
    // The request part reads its choices from the input's tail, reversed, so that the
    // configuration's first bytes are not spent twice.
    let tail: Vec<u8> = input.iter().rev().take(256).copied().collect();
    let mut u = Unstructured::new(&tail);
    let _ = check(input, &mut u);
}

/// A seed configuration parsed, mutated as a tree (so the mutations reach deep fields
/// with valid JSON around them), printed and checked.
pub fn tree(input: &[u8]) {
    let _ = tree_inner(&mut Unstructured::new(input));
}

fn tree_inner(u: &mut Unstructured<'_>) -> Result<()> {
    // Mostly the seeds the parser accepts: a mutation of a valid config is more often still
    // valid, and so reaches the request path.
    static VALID: OnceLock<Vec<&'static str>> = OnceLock::new();
    let valid = VALID.get_or_init(|| {
        SEEDS
            .lines()
            .filter(|line| Config::parse(line.as_bytes()).is_ok())
            .collect()
    });
    let all: Vec<&str> = SEEDS.lines().filter(|line| !line.is_empty()).collect();
    let seeds = if u.ratio(3, 4)? { valid } else { &all };
    let Some(seed) = seeds.get(u.choose_index(seeds.len())?) else {
        return Ok(());
    };
    let Ok(mut value) = serde_json::from_str::<Value>(seed) else {
        return Ok(());
    };
    for _ in 0..u.int_in_range(1..=3)? {
        mutate(u, &mut value, 0)?;
    }
    let Ok(text) = serde_json::to_vec(&value) else {
        return Ok(());
    };
    check(&text, u)
}

/// Field names from the seeds, so inserted keys are ones the reader knows.
const FIELDS: &[&str] = &[
    "policy",
    "backends",
    "cluster",
    "weight",
    "backup",
    "max_requests",
    "cluster_header",
    "hash_key",
    "header",
    "cookie",
    "query",
    "path",
    "source_ip",
    "health_check",
    "interval_ms",
    "timeout_ms",
    "healthy_threshold",
    "unhealthy_threshold",
    "expected_statuses",
    "host",
    "outlier_detection",
    "consecutive_failures",
    "base_ejection_ms",
    "max_ejection_percent",
    "rate_limit",
    "requests_per_second",
    "burst",
    "key",
    "buckets",
    "batch",
    "deny",
    "rules",
    "subsets",
    "subset",
    "session_affinity",
    "retry",
    "initial_state",
    "ip_hash",
    "ipv4_prefix",
    "ipv6_prefix",
    "status",
    "name",
    "ttl_s",
    "attempts",
    "retry_on",
    "match",
    "prefix",
    "exact",
    "choices",
    "sample",
    "authority",
    "ring_size",
    "ticket_batch",
];

fn interesting(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=17)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(0),
        3 => Value::from(-1),
        4 => Value::from(u64::MAX),
        5 => Value::from(i64::MIN),
        6 => Number::from_f64(0.5).map_or(Value::Null, Value::Number),
        7 => Number::from_f64(1e308).map_or(Value::Null, Value::Number),
        8 => Number::from_f64(-1e-308).map_or(Value::Null, Value::Number),
        9 => Value::from(9_007_199_254_740_993u64),
        10 => Value::from(u.arbitrary::<i64>()?),
        11 => Value::from(u.arbitrary::<u32>()?),
        12 => Value::from(""),
        13 => Value::from(u.arbitrary::<String>()?),
        14 => Value::from("x".repeat(u.int_in_range(1..=70_000)?)),
        15 => Value::Array(Vec::new()),
        16 => Value::Object(Map::new()),
        _ => Value::from(*u.choose(FIELDS)?),
    })
}

/// One mutation somewhere in `value`.
fn mutate(u: &mut Unstructured<'_>, value: &mut Value, depth: u32) -> Result<()> {
    match value {
        Value::Object(map) if !map.is_empty() && depth < 8 => match u.int_in_range(0..=5)? {
            0 => {
                let keys: Vec<String> = map.keys().cloned().collect();
                if let Some(key) = keys.get(u.choose_index(keys.len())?) {
                    map.remove(key);
                }
            }
            1 => {
                let key = if u.ratio(3, 4)? {
                    (*u.choose(FIELDS)?).to_owned()
                } else {
                    u.arbitrary()?
                };
                map.insert(key, interesting(u)?);
            }
            2 => *value = interesting(u)?,
            _ => {
                let index = u.choose_index(map.len())?;
                if let Some(child) = map.values_mut().nth(index) {
                    mutate(u, child, depth + 1)?;
                }
            }
        },
        Value::Array(items) if !items.is_empty() && depth < 8 => match u.int_in_range(0..=5)? {
            0 => {
                let index = u.choose_index(items.len())?;
                items.remove(index);
            }
            1 => {
                let index = u.choose_index(items.len())?;
                if let Some(copy) = items.get(index).cloned() {
                    let copies = u.int_in_range(1..=40)?;
                    items.extend(std::iter::repeat_n(copy, copies));
                }
            }
            2 => items.push(interesting(u)?),
            _ => {
                let index = u.choose_index(items.len())?;
                if let Some(child) = items.get_mut(index) {
                    mutate(u, child, depth + 1)?;
                }
            }
        },
        Value::Number(number) if u.ratio(1, 2)? => {
            // Next to the value: off by one, doubled, negated, fractional.
            let n = number.as_f64().unwrap_or(0.0);
            let next = match u.int_in_range(0..=4)? {
                0 => n + 1.0,
                1 => n - 1.0,
                2 => n * 2.0,
                3 => -n,
                _ => n + 0.5,
            };
            *value = Number::from_f64(next).map_or(Value::Null, Value::Number);
        }
        _ => *value = interesting(u)?,
    }
    Ok(())
}

/// Header names requests carry: the ones configs read, and junk.
const HEADERS: &[&str] = &[
    "x-user",
    "x-tenant",
    "x-key",
    "x-session",
    "cookie",
    ":path",
    ":authority",
    ":method",
    "x-eisodos-cluster",
    "x-forwarded-for",
    "user-agent",
    "x-canary",
];

/// Inputs refused by the parser as JSON, refused by `Balancer::new`, accepted (which then
/// serve requests), and refused by the parser for a field: how deep a run reached.
static OUTCOMES: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// `parse refused / configure refused / accepted` since the last call (which resets them).
pub fn outcomes() -> String {
    let [syntax, configure, accepted, field] = &OUTCOMES;
    format!(
        "not JSON {}, a field refused {}, refused by configure {}, accepted {}",
        syntax.swap(0, Ordering::Relaxed),
        field.swap(0, Ordering::Relaxed),
        configure.swap(0, Ordering::Relaxed),
        accepted.swap(0, Ordering::Relaxed)
    )
}

fn count(outcome: usize) {
    if let Some(counter) = OUTCOMES.get(outcome) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The properties, for one configuration.
fn check(bytes: &[u8], u: &mut Unstructured<'_>) -> Result<()> {
    let parsed = Config::parse(bytes);
    let configured = Balancer::configure(bytes, "fuzz", 7);
    let balancer = match (parsed, configured) {
        (Err(parse), Err(configure)) => {
            assert_eq!(parse, configure, "configure reports the parser's error");
            one_line(&parse.to_string());
            count(if parse.reason.starts_with("is not valid JSON") {
                0
            } else {
                3
            });
            return Ok(());
        }
        (Ok(_), Err(error)) => {
            one_line(&error.to_string());
            count(1);
            return Ok(());
        }
        (Err(error), Ok(_)) => panic!("configure accepted what parse refused: {error}"),
        (Ok(_), Ok(balancer)) => balancer,
    };
    count(2);
    let backends = balancer.config().backends.len();
    assert!(backends > 0, "an accepted configuration has a backend");

    let store = MemoryStore::new();
    assert!(balancer.create_shared_keys(&store).is_ok());
    // Garbage under some of its keys: foreign bytes, a value cut short, one grown.
    for key in balancer.shared_keys() {
        if u.ratio(1, 2)? {
            let current = store.value(key).unwrap_or_default();
            let garbage: Vec<u8> = match u.int_in_range(0..=3)? {
                0 => u.arbitrary()?,
                1 => current
                    .get(..current.len() / 2)
                    .unwrap_or_default()
                    .to_vec(),
                2 => [current.as_slice(), u.arbitrary::<&[u8]>()?].concat(),
                _ => current.iter().map(|b| b ^ 0xff).collect(),
            };
            assert!(store.set(key, &garbage, None).is_ok());
        }
    }
    let mut now = 1_700_000_000_000u64 + u.int_in_range(0..=1_000_000)?;
    let mut counted = Vec::new();
    for _ in 0..u.int_in_range(1..=6)? {
        let mut request = StaticRequest::default();
        for _ in 0..u.int_in_range(0..=4)? {
            let name = *u.choose(HEADERS)?;
            let value: &[u8] = u.arbitrary()?;
            request = request.with_header(name, value);
        }
        let address: String = if u.ratio(3, 4)? {
            let ip: std::net::IpAddr = if u.arbitrary()? {
                std::net::IpAddr::V4(u.arbitrary::<u32>()?.into())
            } else {
                std::net::IpAddr::V6(u.arbitrary::<u128>()?.into())
            };
            std::net::SocketAddr::new(ip, u.arbitrary()?).to_string()
        } else {
            u.arbitrary()?
        };
        now += u64::from(u.int_in_range(0..=5000u32)?);
        let clock = if u.ratio(1, 16)? { 0 } else { now };
        let request = request.with_source(&address).with_now_ms(clock);
        let _ = balancer.deny(&request);
        match balancer.choose(&store, &request) {
            Decision::Route(choice) => {
                assert!(
                    choice.index < backends,
                    "a route names a configured backend"
                );
                let backend = balancer.config().backends.get(choice.index);
                assert_eq!(Some(choice.cluster), backend.map(|b| b.cluster.as_str()));
                if choice.counted {
                    counted.push(choice.index);
                }
            }
            // A reply body is one line, with its newline.
            Decision::Reject { body, .. } => one_line(body.strip_suffix('\n').unwrap_or(body)),
        }
        let _ = balancer.tick(&store, now);
    }
    for index in counted {
        let _ = balancer.release(&store, index);
    }
    balancer.retire(&store);
    let status = balancer.status_json(&store, now);
    assert!(
        serde_json::from_str::<Value>(&status).is_ok(),
        "the status page is JSON"
    );
    Ok(())
}

fn one_line(text: &str) {
    assert!(
        !text.is_empty() && !text.contains('\n'),
        "one line: {text:?}"
    );
}
