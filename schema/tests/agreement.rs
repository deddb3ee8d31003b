//! The schema and the filter's parser agree on every configuration this repository ships or
//! documents, on probes of each pattern and cross-field rule, and on nothing else than the
//! listed exceptions, each shown by its example.
//!
//! The rest of the test suite's configurations are judged where they are used: the core crate's
//! unit tests by `core/src/config/schema_agreement.rs`, the integration tests' by the harness
//! (`tests/src/schema.rs`) each time it hands Envoy a plugin configuration.

// A test crate: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use eisodos_cli::find::{self, Options, What};
use eisodos_schema::{judge, Agreement, Tally, EXCEPTIONS};

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn parser(config: &[u8]) -> Result<(), String> {
    eisodos_cli::check::validate(config).map_err(|err| err.to_string())
}

fn add(tally: &mut Tally, what: &str, config: &[u8]) {
    let agreement = judge(eisodos_schema::shared().unwrap(), config, parser(config));
    tally.add(what, config, agreement);
}

fn assert_agree(corpus: &str, tally: &Tally) {
    println!("schema agreement, {corpus}: {tally}");
    assert!(
        tally.disagreements.is_empty(),
        "the schema and the parser disagree on {corpus} (fix the one that is wrong, or list a \
         rule the schema cannot express in eisodos_schema::EXCEPTIONS):\n{}",
        tally.disagreements.join("\n")
    );
}

/// Every file under `dir` (recursively) whose name ends with one of `extensions`, sorted.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path, extensions));
        } else if extensions
            .iter()
            .any(|ext| path.to_string_lossy().ends_with(ext))
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// A fenced code block of a Markdown file: its info string and text.
struct Block {
    line: usize,
    info: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(_), Some(block)) => blocks.push(block),
            (Some(info), None) => {
                open = Some(Block {
                    line: i + 1,
                    info: info.trim().to_owned(),
                    text: String::new(),
                })
            }
            (None, Some(mut block)) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    blocks
}

/// What a file holds, through `eisodos check`'s own search; other plugins' configs are
/// counted apart.
fn add_found(tally: &mut Tally, others: &mut usize, what: &str, name: &str, text: &str) {
    let found =
        find::in_file(name, text, Options::default()).unwrap_or_else(|err| panic!("{what}: {err}"));
    for found in found {
        let what = format!("{what}: {}", found.location);
        match found.what {
            What::Eisodos(config) => add(tally, &what, &config),
            What::Other(_) => *others += 1,
            What::Unreadable(why) => panic!("{what}: {why}"),
        }
    }
}

/// The shipped Envoy configs, everything under `deploy/`, and the READMEs' examples: a ```json
/// block is a whole plugin configuration unless its info string says `json fragment` or `json
/// output`; a ```yaml block is searched as `eisodos check` searches a file.
#[test]
fn shipped_and_documented_configurations() {
    let root = root();
    let mut tally = Tally::default();
    let mut others = 0;
    let mut sources = Vec::new();
    let mut manifests = files(&root.join("envoy"), &[".yaml", ".yml", ".json"]);
    manifests.extend(files(&root.join("deploy"), &[".yaml", ".yml", ".json"]));
    for path in &manifests {
        let before = tally.configs;
        let text = std::fs::read_to_string(path).unwrap();
        let name = relative(path);
        add_found(&mut tally, &mut others, &name, &name, &text);
        sources.push(format!("{name} ({})", tally.configs - before));
    }
    let mut markdown = vec![root.join("README.md")];
    markdown.extend(files(&root.join("deploy"), &[".md"]));
    for path in &markdown {
        let before = tally.configs;
        let name = relative(path);
        for block in blocks(&std::fs::read_to_string(path).unwrap()) {
            let what = format!("{name}:{}", block.line);
            let mut words = block.info.split_whitespace();
            match (words.next(), words.next()) {
                (Some("json"), Some("fragment" | "output")) => {}
                (Some("json"), _) => add(&mut tally, &what, block.text.as_bytes()),
                (Some("yaml" | "yml"), _) => {
                    add_found(&mut tally, &mut others, &what, "block.yaml", &block.text)
                }
                _ => {}
            }
        }
        sources.push(format!("{name} ({})", tally.configs - before));
    }
    if !root.join("deploy").is_dir() {
        sources.push("deploy/ (absent)".to_owned());
    }
    println!("read: {}", sources.join(", "));
    println!("other plugins' Wasm configs skipped: {others}");
    assert_agree("shipped and documented configurations", &tally);
    assert!(tally.configs >= 3, "{tally}");
}

/// Each listed exception happens: its example is rejected by the parser for that rule and
/// accepted by the schema.
#[test]
fn each_exception_is_shown_by_its_example() {
    let schema = eisodos_schema::shared().unwrap();
    for exception in EXCEPTIONS {
        let example = (exception.example)();
        let verdict = parser(example.as_bytes());
        let agreement = judge(schema, example.as_bytes(), verdict.clone());
        assert!(
            matches!(agreement, Agreement::Exception(e) if e.name == exception.name),
            "{}: {agreement:?} (parser: {verdict:?})",
            exception.name
        );
        println!(
            "exception {:?} ({}): {}",
            exception.name,
            exception.why,
            verdict.unwrap_err()
        );
    }
}

/// A configuration with `fields` beside one backend.
fn with(fields: &str) -> String {
    if fields.is_empty() {
        r#"{"backends": [{"cluster": "a"}]}"#.to_owned()
    } else {
        format!(r#"{{{fields}, "backends": [{{"cluster": "a"}}]}}"#)
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// A small deterministic random source (xorshift64*), so the probes are the same every run.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    /// A string of 0 to `max` characters drawn from `alphabet`.
    fn string(&mut self, alphabet: &[char], max: usize) -> String {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

/// Strings for each pattern the parser checks: hand-picked edges, then random ones.
fn string_probes() -> Vec<String> {
    let mut configs = Vec::new();
    let long = |n: usize| "a".repeat(n);
    let names = [
        "a",
        "outbound|80||svc-a.default.svc.cluster.local",
        "httproute/default/backends/rule/0",
        "has space",
        "tab\there",
        "caf\u{e9}",
        "!#$%&'*+-.^_`|~",
        "a:b",
        "a\"b",
        "",
        &long(256),
        &long(257),
    ];
    for name in names {
        let name = quoted(name);
        configs.push(format!(r#"{{"backends": [{{"cluster": {name}}}]}}"#));
        configs.push(with(&format!(r#""cluster_header": {name}"#)));
        configs.push(with(&format!(
            r#""policy": "consistent_hash", "hash_key": [{{"header": {name}}}, {{"cookie": {name}}}]"#
        )));
        configs.push(with(&format!(
            r#""policy": "consistent_hash", "hash_key": [{{"query": {name}}}]"#
        )));
        configs.push(with(&format!(
            r#""health_check": {{"path": "/h", "authority": {name}, "method": {name}}}"#
        )));
        configs.push(format!(
            r#"{{"health_check": {{"path": "/h"}}, "backends": [{{"cluster": "a", "authority": {name}}}]}}"#
        ));
    }
    for header in ["X-User", "x-user", "X", "x"] {
        configs.push(with(&format!(
            r#""policy": "consistent_hash", "hash_key": [{{"header": "{header}"}}]"#
        )));
    }
    for method in ["GET", "get", "HEAD", "G1", ""] {
        configs.push(with(&format!(
            r#""health_check": {{"path": "/h", "method": "{method}"}}"#
        )));
    }
    let paths = [
        "/",
        "/healthz",
        "healthz",
        "/a?b",
        "/a b",
        "/caf\u{e9}",
        "",
        &format!("/{}", long(255)),
        &format!("/{}", long(256)),
    ];
    for path in paths {
        let path = quoted(path);
        configs.push(with(&format!(r#""health_check": {{"path": {path}}}"#)));
        configs.push(with(&format!(r#""status_path": {path}"#)));
    }
    for name in names {
        configs.push(with(&format!(
            r#""session_affinity": {{"cookie": {}}}"#,
            quoted(name)
        )));
    }
    let attributes = [
        "",
        " ",
        "Path=/",
        "Path=/; HttpOnly; SameSite=Lax",
        "path=/a b;secure ;  samesite=none",
        "Path=/;",
        ";Path=/",
        "Path=/;;Secure",
        "Path =/",
        "Path= /",
        "Path=/a=b",
        "Path=/\r\nX: 1",
        "Path=/\t",
        "Path=/caf\u{e9}",
        "Secure; Path=/; Domain=example.com; Priority=high; Partitioned",
        "HttpOnly;HttpOnly",
        "Max-Age=1",
        "Expires=Wed, 21 Oct 2026 07:28:00 GMT",
        "Foo=bar",
        &format!("Path=/{}", long(505)),
        &format!("Path=/{}", long(506)),
    ];
    for attributes in attributes {
        configs.push(with(&format!(
            r#""session_affinity": {{"attributes": {}}}"#,
            quoted(attributes)
        )));
    }
    let mut random = Random(0x5eed_1e55);
    let name_chars: Vec<char> = "aZ09-_.|/:!~ \t\"\\\u{e9}\u{7f}".chars().collect();
    for _ in 0..300 {
        let name = quoted(&random.string(&name_chars, 6));
        configs.push(format!(r#"{{"backends": [{{"cluster": {name}}}]}}"#));
        configs.push(with(&format!(r#""cluster_header": {name}"#)));
        configs.push(with(&format!(
            r#""policy": "consistent_hash", "hash_key": [{{"header": {name}}}]"#
        )));
        configs.push(with(&format!(
            r#""session_affinity": {{"cookie": {name}}}"#
        )));
    }
    let attribute_chars: Vec<char> = "SecurePath=/; \t\r\u{e9}\u{7f}".chars().collect();
    for _ in 0..300 {
        let attributes = quoted(&random.string(&attribute_chars, 12));
        configs.push(with(&format!(
            r#""session_affinity": {{"attributes": {attributes}}}"#
        )));
    }
    configs
}

/// IPv4 and IPv6 addresses, with and without a prefix: edges, then random ones.
fn addresses() -> Vec<String> {
    let edges = [
        "1.2.3.4",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4\n",
        "1.2.3.4/33",
        "1.2.3.4/+8",
        "1.2.3.4/008",
        "1.2.3.4/",
        "1.2.3.4/-1",
        "1.2.3.4/8/9",
        "::",
        "::1",
        "1::",
        "::/0",
        "::1/128",
        "::1/129",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4::5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "::ffff:1.2.3.4",
        "::FFFF:1.2.3.4",
        "::1.2.3.4",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "1:2:3:4:5::1.2.3.4",
        "1:2:3:4:5:6::1.2.3.4",
        "::a:b:c:d:e:1.2.3.4",
        "::a:b:c:d:e:f:1.2.3.4",
        "::ffff:01.2.3.4",
        "::1.2.3.4:1",
        "00001::",
        "ABCD::",
        "abcd:EF01::/32",
        "fe80::1%eth0",
        "[::1]",
        ":1::",
        "1.2.3.4::",
        "",
    ];
    let mut addresses: Vec<String> = edges.iter().map(|s| (*s).to_owned()).collect();
    let mut random = Random(0xc1d2_0000_0001);
    let v4: Vec<char> = "0123456789./+".chars().collect();
    let v6: Vec<char> = "0123abcdefF:::./".chars().collect();
    for _ in 0..1500 {
        addresses.push(random.string(&v4, 18));
        addresses.push(random.string(&v6, 22));
    }
    // Random digits in the right shape, to reach the accepting side often.
    for _ in 0..500 {
        let octet = |random: &mut Random| match random.below(4) {
            0 => random.below(10).to_string(),
            1 => random.below(260).to_string(),
            2 => format!("0{}", random.below(100)),
            _ => random.below(256).to_string(),
        };
        let a: Vec<String> = (0..4).map(|_| octet(&mut random)).collect();
        let prefix = match random.below(3) {
            0 => String::new(),
            1 => format!("/{}", random.below(40)),
            _ => format!("/{}", random.below(140)),
        };
        addresses.push(format!("{}{prefix}", a.join(".")));
        let groups = random.below(9) + 1;
        let g: Vec<String> = (0..groups)
            .map(|_| format!("{:x}", random.below(0x10000)))
            .collect();
        let split = random.below(groups + 1);
        let mut six = g[..split].join(":");
        if random.below(2) == 0 {
            six.push_str("::");
        } else if split > 0 && split < groups {
            six.push(':');
        }
        six.push_str(&g[split..].join(":"));
        if random.below(4) == 0 {
            six.push_str(&format!(":{}", a.join(".")));
        }
        addresses.push(format!("{six}{prefix}"));
    }
    addresses
}

/// Addresses for `status_allowed_cidrs`: the standard library's parser against the schema's
/// patterns.
fn cidr_probes() -> Vec<String> {
    addresses()
        .iter()
        .map(|address| {
            with(&format!(
                r#""status_path": "/s", "status_allowed_cidrs": [{}]"#,
                quoted(address)
            ))
        })
        .collect()
}

/// The same addresses as a probe's Host: bare, bracketed, and bracketed with a port (a valid
/// one, and one out of range), for `health_check.authority` and `backends[].authority`.
fn host_probes() -> Vec<String> {
    let mut configs = Vec::new();
    for address in addresses() {
        for host in [
            address.clone(),
            format!("[{address}]"),
            format!("[{address}]:8080"),
            format!("[{address}]:65536"),
            format!("{address}:443"),
        ] {
            let host = quoted(&host);
            configs.push(with(&format!(
                r#""health_check": {{"path": "/h", "authority": {host}}}"#
            )));
            configs.push(format!(
                r#"{{"health_check": {{"path": "/h"}}, "backends": [{{"cluster": "a", "authority": {host}}}]}}"#
            ));
        }
    }
    for port in [
        "0", "1", "00080", "000080", "65535", "65536", "99999", "", "x", "+80",
    ] {
        configs.push(with(&format!(
            r#""health_check": {{"path": "/h", "authority": "svc.local:{port}"}}"#
        )));
    }
    configs
}

/// Every policy (and none) with every section that belongs to one, `null` where the parser
/// takes it as unset, numbers at and beyond their bounds, integral doubles.
fn rule_probes() -> Vec<String> {
    let mut configs = Vec::new();
    let sections = [
        r#""round_robin": {}"#,
        r#""round_robin": null"#,
        r#""least_request": {}"#,
        r#""least_request": null"#,
        r#""hash_key": [{"path": {}}]"#,
        r#""hash_key": null"#,
        r#""on_missing_key": "reject""#,
        r#""on_missing_key": null"#,
        r#""bounded_load_factor": 1.5"#,
        r#""bounded_load_factor": null"#,
        r#""ip_hash": {}"#,
        r#""ip_hash": null"#,
        r#""status_allowed_cidrs": ["::1"]"#,
        r#""status_allowed_cidrs": null"#,
        r#""status_path": null, "status_allowed_cidrs": []"#,
    ];
    let policies = [
        "",
        r#""policy": "round_robin", "#,
        r#""policy": "least_request", "#,
        r#""policy": "consistent_hash", "#,
        r#""policy": "consistent_hash", "hash_key": [{"source_ip": {}}], "#,
        r#""policy": "ip_hash", "#,
        r#""policy": "random", "#,
        r#""policy": null, "#,
        r#""policy": "fastest", "#,
    ];
    for policy in policies {
        configs.push(with(policy.trim_end_matches(", ")));
        for section in sections {
            configs.push(with(&format!("{policy}{section}")));
        }
    }
    let numbers = [
        "0",
        "1",
        "2",
        "5.0",
        "1e1",
        "1e3",
        "1.5",
        "-0",
        "-1",
        "-2.0",
        "100",
        "101",
        "128",
        "129",
        "1000",
        "1001",
        "1024",
        "1025",
        "1e309",
        "99999999999",
        "\"1\"",
        "null",
        "true",
    ];
    let fields = [
        ("", "weight"),
        (r#""policy": "round_robin", "round_robin""#, "ticket_batch"),
        (
            r#""policy": "least_request", "least_request""#,
            "choice_count",
        ),
        (
            r#""policy": "least_request", "least_request""#,
            "active_request_bias",
        ),
        (
            r#""policy": "least_request", "least_request""#,
            "latency_decay_ms",
        ),
        (r#""policy": "ip_hash", "ip_hash""#, "ipv4_prefix"),
        (r#""policy": "ip_hash", "ip_hash""#, "ipv6_prefix"),
        (r#""health_check""#, "interval_ms"),
        (r#""health_check""#, "timeout_ms"),
        (r#""health_check""#, "healthy_threshold"),
        (r#""health_check""#, "interval_jitter_percent"),
        (r#""outlier_detection""#, "consecutive_failures"),
        (r#""outlier_detection""#, "max_ejection_percent"),
        (r#""outlier_detection""#, "base_ejection_ms"),
    ];
    for number in numbers {
        for (section, field) in fields {
            configs.push(match (section, field) {
                ("", _) => format!(r#"{{"backends": [{{"cluster": "a", "{field}": {number}}}]}}"#),
                (r#""health_check""#, _) => with(&format!(
                    r#"{section}: {{"path": "/h", "{field}": {number}}}"#
                )),
                _ => with(&format!(r#"{section}: {{"{field}": {number}}}"#)),
            });
        }
        configs.push(with(&format!(r#""panic_threshold_percent": {number}"#)));
        for field in ["degraded_ratio", "degraded_trickle_ms"] {
            configs.push(with(&format!(
                r#""policy": "least_request", "least_request": {{"latency_decay_ms": 1000, "{field}": {number}}}"#
            )));
        }
        configs.push(with(&format!(
            r#""policy": "ip_hash", "bounded_load_factor": {number}"#
        )));
        configs.push(with(&format!(
            r#""health_check": {{"path": "/h", "expected_statuses": [200, {number}]}}"#
        )));
        configs.push(format!(
            r#"{{"backends": [{{"cluster": "a", "backup": {number}}}]}}"#
        ));
    }
    for statuses in ["[]", "[99]", "[599]", "[600]", "[200, 204]", "null", "200"] {
        configs.push(with(&format!(
            r#""health_check": {{"path": "/h", "expected_statuses": {statuses}}}"#
        )));
    }
    let many_statuses: Vec<String> = (200..233).map(|s| s.to_string()).collect();
    for n in [32, 33] {
        configs.push(with(&format!(
            r#""health_check": {{"path": "/h", "expected_statuses": [{}]}}"#,
            many_statuses[..n].join(", ")
        )));
    }
    for n in [8, 9] {
        let sources = vec![r#"{"path": {}}"#; n].join(", ");
        configs.push(with(&format!(
            r#""policy": "consistent_hash", "hash_key": [{sources}]"#
        )));
    }
    for source in [
        r#"{}"#,
        r#"{"path": {}, "source_ip": {}}"#,
        r#"{"path": null}"#,
        r#"{"path": {"x": 1}}"#,
        r#"{"source_ip": []}"#,
        r#"{"body": "x"}"#,
        r#""header""#,
    ] {
        configs.push(with(&format!(
            r#""policy": "consistent_hash", "hash_key": [{source}]"#
        )));
    }
    for backends in [
        r#"[]"#,
        r#"[{"cluster": "a", "backup": true}]"#,
        r#"[{"cluster": "a", "backup": true}, {"cluster": "b", "backup": false}]"#,
        r#"[{"cluster": "a", "backup": true}, {"cluster": "b"}]"#,
        r#"[{"cluster": "a"}, "b"]"#,
        r#"[{"weight": 2}]"#,
        r#"[{"cluster": "a", "wieght": 2}]"#,
        r#"null"#,
        r#"{"cluster": "a"}"#,
    ] {
        configs.push(format!(r#"{{"backends": {backends}}}"#));
    }
    let thousand: Vec<String> = (0..1001)
        .map(|i| format!(r#"{{"cluster": "c{i}"}}"#))
        .collect();
    configs.push(format!(
        r#"{{"backends": [{}]}}"#,
        thousand[..1000].join(",")
    ));
    configs.push(format!(r#"{{"backends": [{}]}}"#, thousand.join(",")));
    for section in [
        r#""health_check": {}"#,
        r#""health_check": null"#,
        r#""health_check": {"path": null}"#,
        r#""health_check": {"path": "/h", "authority": null, "method": null, "initial_state": null}"#,
        r#""health_check": {"path": "/h", "initial_state": "unhealthy"}"#,
        r#""health_check": {"path": "/h", "initial_state": "Healthy"}"#,
        r#""outlier_detection": {}"#,
        r#""outlier_detection": null"#,
        r#""outlier_detection": []"#,
        r#""cluster_header": null"#,
        r#""status_path": "/s", "status_allowed_cidrs": []"#,
        r#""status_path": "/s", "status_allowed_cidrs": "::1""#,
        r#""status_path": "/s", "status_allowed_cidrs": [null]"#,
        r#""zz": 1"#,
    ] {
        configs.push(with(section));
    }
    for document in ["", " ", "[]", "null", "5", "\"x\"", "{", "{}"] {
        configs.push(document.to_owned());
    }
    configs
}

/// The schema's patterns and cross-field rules against the parser, string by string.
#[test]
fn probes_of_every_pattern_and_rule() {
    for (corpus, configs) in [
        ("string pattern probes", string_probes()),
        ("address probes", cidr_probes()),
        ("host probes", host_probes()),
        ("cross-field and number probes", rule_probes()),
    ] {
        let mut tally = Tally::default();
        for (i, config) in configs.iter().enumerate() {
            add(&mut tally, &format!("probe #{i}"), config.as_bytes());
        }
        assert_agree(corpus, &tally);
        assert!(tally.accepted > 10 && tally.rejected > 10, "{tally}");
    }
}
