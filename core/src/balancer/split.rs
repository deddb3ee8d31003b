//! The split stage (traffic splitting and canaries): which subset's candidates a request uses.
//!
//! Everything a subset needs is laid out when health changes, never per request: for each
//! subset, health's rules applied to its members ([`Selection::within`]) and what the policy
//! lays out over them ([`Candidates`]), and which candidates a request for it actually uses:
//! its own while any member may take requests, else the default's (`default_subset`'s, or all
//! backends' when that is unset). A request only evaluates the rules and indexes that table.
//!
//! Rules are evaluated in order; the first whose conditions all hold and whose percentage
//! takes the request names the subset; none does: `default_subset`. A request has one
//! percentage bucket, used by every `percent` rule it reaches: the md5 of its `split_key`
//! (the same key, the same bucket, whatever the backends), or, without a key, a random draw
//! made once, at the first `percent` rule the request reaches.

use std::cell::RefCell;
use std::rc::Rc;

use fastrand::Rng;

use super::candidates::{Candidates, Spread};
use crate::config::{Condition, Config, Split};
use crate::health::Selection;
use crate::request_key::{self, RequestView};

/// The candidates of every subset on this worker, under one health selection.
#[derive(Debug)]
pub struct SubsetCandidates {
    /// Per subset (as in [`Split::subsets`]): the candidates its requests use.
    routes: Vec<Rc<Candidates>>,
    /// For requests no rule takes: `default_subset`'s, or all backends'.
    default: Rc<Candidates>,
}

impl SubsetCandidates {
    /// Lays every subset out over `selection`; `all` is the candidates over all backends
    /// (already laid out over the same selection).
    pub fn new(
        split: &Split,
        selection: &Selection,
        all: &Rc<Candidates>,
        config: &Config,
        spread: Spread,
    ) -> Self {
        let own: Vec<Rc<Candidates>> = split
            .subsets
            .iter()
            .map(|subset| {
                let selection = Rc::new(selection.within(config, &subset.members));
                Rc::new(Candidates::new(selection, config, spread))
            })
            .collect();
        let default = split
            .default_subset
            .and_then(|index| own.get(index))
            .map_or_else(|| Rc::clone(all), Rc::clone);
        let routes = own
            .into_iter()
            .map(|candidates| {
                if candidates.admit().is_ok() {
                    candidates
                } else {
                    // No member may take requests: the default's, itself when it is the
                    // default (then all down: a local 503).
                    Rc::clone(&default)
                }
            })
            .collect();
        Self { routes, default }
    }

    /// The candidates of a request that `subset` names (`None`: no rule and no default).
    pub fn of(&self, subset: Option<usize>) -> &Candidates {
        subset
            .and_then(|index| self.routes.get(index))
            .unwrap_or(&self.default)
    }

    /// The subset `split` gives `request`, and its candidates.
    pub fn route(&self, split: &Split, request: &dyn RequestView, rng: &mut Rng) -> &Candidates {
        self.of(subset_of(split, request, rng))
    }
}

/// The subset `split`'s rules give `request` (an index into [`Split::subsets`]), or `None`
/// when no rule takes it and there is no default subset (all backends).
pub fn subset_of(split: &Split, request: &dyn RequestView, rng: &mut Rng) -> Option<usize> {
    let mut bucket = None;
    for rule in &split.rules {
        if !rule
            .conditions
            .iter()
            .all(|condition| holds(condition, request))
        {
            continue;
        }
        if let Some(percent) = rule.percent {
            let bucket = *bucket.get_or_insert_with(|| self::bucket(split, request, rng));
            if !percent.takes(bucket) {
                continue;
            }
        }
        return Some(rule.subset);
    }
    split.default_subset
}

/// Whether `condition` holds for `request`.
fn holds(condition: &Condition, request: &dyn RequestView) -> bool {
    match condition {
        Condition::Header { name, test } => test.holds(request.header(name).as_deref()),
        Condition::Cookie { name, test } => {
            let header = request.header("cookie");
            let value = header
                .as_deref()
                .and_then(|cookies| request_key::cookie(cookies, name.as_bytes()));
            test.holds(value)
        }
        Condition::PathPrefix(prefix) => request
            .path()
            .is_some_and(|path| path.starts_with(prefix.as_bytes())),
    }
}

/// The request's percentage bucket: its `split_key`'s, or a random one when it has none.
fn bucket(split: &Split, request: &dyn RequestView, rng: &mut Rng) -> u32 {
    if split.split_key.is_empty() {
        return rng.u32(..);
    }
    match request_key::extract(&split.split_key, request) {
        Some(key) => key_bucket(&key),
        None => rng.u32(..),
    }
}

/// The bucket of a key: bytes 4 to 7 of its md5, little-endian. Not bytes 0 to 3, which are
/// the key's point on the consistent-hash ring: with the same key for both, the subset and the
/// backend within it stay independent.
pub fn key_bucket(key: &[u8]) -> u32 {
    let [_, _, _, _, a, b, c, d, ..] = md5::compute(key).0;
    u32::from_le_bytes([a, b, c, d])
}

/// A request whose every header (and path, and address) is read from the host at most once,
/// however many rules, the split key and the policy's key ask for it.
pub struct Memo<'a> {
    request: &'a dyn RequestView,
    headers: RefCell<Vec<(String, Option<Vec<u8>>)>>,
    source: RefCell<Option<Option<String>>>,
}

impl<'a> Memo<'a> {
    /// Reads from `request`, each value once.
    pub fn new(request: &'a dyn RequestView) -> Self {
        Self {
            request,
            headers: RefCell::new(Vec::new()),
            source: RefCell::new(None),
        }
    }

    fn cached(&self, name: &str, read: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
        if let Some((_, value)) = self.headers.borrow().iter().find(|(n, _)| n == name) {
            return value.clone();
        }
        let value = read();
        self.headers
            .borrow_mut()
            .push((name.to_owned(), value.clone()));
        value
    }
}

impl RequestView for Memo<'_> {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.cached(name, || self.request.header(name))
    }

    fn path(&self) -> Option<Vec<u8>> {
        // `:path` is no header name a configuration can give, so it cannot collide.
        self.cached(":path", || self.request.path())
    }

    fn source_address(&self) -> Option<String> {
        if let Some(source) = &*self.source.borrow() {
            return source.clone();
        }
        let source = self.request.source_address();
        *self.source.borrow_mut() = Some(source.clone());
        source
    }
    fn now_ms(&self) -> u64 {
        self.request.now_ms()
    }

    fn headers_size(&self) -> Option<usize> {
        self.request.headers_size()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::balancer::{Balancer, Choice, Decision, LocalReply, Reason, Why};
    use crate::config::Config;
    use crate::health::{Mode, ProbeResult};
    use crate::memory_store::MemoryStore;
    use crate::request_key::StaticRequest;

    const BACKENDS: &str = r#""backends": [{"cluster": "v1_a"}, {"cluster": "v1_b"},
        {"cluster": "v2"}, {"cluster": "other"}]"#;
    const SUBSETS: &str = r#""subsets": {"stable": ["v1_a", "v1_b"], "canary": ["v2"]}"#;

    fn balancer(fields: &str) -> Balancer {
        balancer_seeded(fields, 1)
    }

    fn balancer_seeded(fields: &str, seed: u64) -> Balancer {
        let json = format!("{{{fields}, {BACKENDS}}}");
        let config = Config::parse(json.as_bytes()).unwrap();
        Balancer::new(config, "test", seed).unwrap()
    }

    /// The issue's configuration, with `extra` fields.
    fn issue(extra: &str) -> String {
        format!(
            r#"{SUBSETS}, "default_subset": "stable",
            "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}},
                      {{"percent": 5, "subset": "canary"}}]{extra}"#
        )
    }

    fn route(decision: Decision<'_>) -> Choice<'_> {
        match decision {
            Decision::Route(choice) => choice,
            other => panic!("expected a route, got {other:?}"),
        }
    }

    fn cluster(balancer: &Balancer, store: &MemoryStore, request: &StaticRequest) -> String {
        route(balancer.choose(store, request)).cluster.to_owned()
    }

    fn header(name: &str, value: &str) -> StaticRequest {
        StaticRequest::default().with_header(name, value)
    }

    fn is_canary(cluster: &str) -> bool {
        cluster == "v2"
    }

    /// Takes backend `index` down through a failed probe (`unhealthy_threshold` 1) and lets
    /// the balancer follow the record.
    fn take_down(balancer: &Balancer, store: &MemoryStore, index: usize, now: u64) {
        let token = 1000 + u32::try_from(now).unwrap();
        balancer.probe_sent(index, token, now);
        balancer.probe_answered(token, ProbeResult::Status(503), now + 1);
        balancer.tick(store, now + 2);
    }

    /// A full subset is a full subset: its requests answer `circuit_open` rather than spill
    /// into the default subset (canary traffic on stable backends exactly when the canary is
    /// busy), and the other subset's requests are untouched.
    #[test]
    fn a_subset_at_its_max_requests_answers_circuit_open_and_does_not_spill() {
        let json = format!(
            r#"{{{SUBSETS}, "default_subset": "stable",
                "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}}],
                "backends": [{{"cluster": "v1_a"}}, {{"cluster": "v1_b"}},
                {{"cluster": "v2", "max_requests": 1}}, {{"cluster": "other"}}]}}"#
        );
        let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "test", 1).unwrap();
        let store = MemoryStore::new();
        balancer.create_shared_keys(&store).unwrap();
        let beta = header("x-beta", "yes");
        let held = route(balancer.choose(&store, &beta));
        assert_eq!((held.cluster, held.counted), ("v2", true));
        match balancer.choose(&store, &beta) {
            Decision::Reject { reply, .. } => assert_eq!(reply, LocalReply::CircuitOpen),
            other => panic!("expected circuit_open, got {other:?}"),
        }
        let stable = route(balancer.choose(&store, &header("x-beta", "no")));
        assert!(!is_canary(stable.cluster), "{}", stable.cluster);
        balancer.release(&store, held.index);
        assert_eq!(cluster(&balancer, &store, &beta), "v2", "room again");
    }

    const HEALTH: &str = r#""health_check": {"path": "/h", "unhealthy_threshold": 1}"#;

    #[test]
    fn the_issue_configuration_sends_beta_to_the_canary_and_the_rest_mostly_to_stable() {
        let store = MemoryStore::new();
        let balancer = balancer(&issue(""));
        balancer.create_shared_keys(&store).unwrap();
        for _ in 0..20 {
            assert_eq!(cluster(&balancer, &store, &header("x-beta", "yes")), "v2");
        }
        let plain = StaticRequest::default();
        let canary = (0..10_000)
            .filter(|_| is_canary(&cluster(&balancer, &store, &plain)))
            .count();
        // Per request, 5%: mean 500, sd sqrt(10000 × 0.05 × 0.95) = 21.8; 5 sd either way.
        assert!((391..=609).contains(&canary), "{canary}");
        assert!(
            (0..100).all(|_| cluster(&balancer, &store, &header("x-beta", "no")) != "other"),
            "never outside the subsets: the default subset is stable"
        );
    }

    #[test]
    fn rules_are_evaluated_in_order_and_the_first_that_takes_the_request_wins() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#"{SUBSETS}, "rules": [
                {{"match": {{"header": {{"name": "x-a", "present": true}}}}, "subset": "canary"}},
                {{"match": {{"header": {{"name": "x-b", "present": true}}}}, "subset": "stable"}}]"#
        ));
        balancer.create_shared_keys(&store).unwrap();
        let both = header("x-a", "1").with_header("x-b", "1");
        assert_eq!(cluster(&balancer, &store, &both), "v2", "the first rule");
        let b = header("x-b", "1");
        assert!(cluster(&balancer, &store, &b).starts_with("v1_"));
        // A percent rule that does not take the request passes it on to the next rule.
        let balancer = balancer_seeded(
            &format!(
                r#"{SUBSETS}, "rules": [{{"percent": 0, "subset": "canary"}},
                    {{"percent": 100, "subset": "stable"}}]"#
            ),
            2,
        );
        balancer.create_shared_keys(&store).unwrap();
        for _ in 0..50 {
            assert!(cluster(&balancer, &store, &StaticRequest::default()).starts_with("v1_"));
        }
    }

    /// Without `default_subset`, a request no rule takes may go to any backend, one in no
    /// subset included.
    #[test]
    fn all_backends_when_no_rule_takes_a_request_and_no_default_is_set() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#"{SUBSETS}, "rules": [{{"match": {{"path_prefix": "/canary"}}, "subset": "canary"}}]"#
        ));
        balancer.create_shared_keys(&store).unwrap();
        let plain = header(":path", "/");
        let picks: Vec<String> = (0..4).map(|_| cluster(&balancer, &store, &plain)).collect();
        assert_eq!(picks, ["v1_a", "v1_b", "v2", "other"]);
        let canary = header(":path", "/canary/x");
        assert_eq!(cluster(&balancer, &store, &canary), "v2");
    }

    /// A condition, a request's headers, and whether it holds.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

    /// Each kind of condition, against requests it holds and does not hold for.
    #[test]
    fn every_kind_of_condition() {
        let cases: &[Case] = &[
            (
                r#"{"header": {"name": "x-beta", "exact": "yes"}}"#,
                &[("x-beta", "yes")],
                true,
            ),
            (
                r#"{"header": {"name": "x-beta", "exact": "yes"}}"#,
                &[("x-beta", "yes!")],
                false,
            ),
            (
                r#"{"header": {"name": "x-beta", "exact": "yes"}}"#,
                &[],
                false,
            ),
            (
                r#"{"header": {"name": "x-beta", "exact": ""}}"#,
                &[("x-beta", "")],
                true,
            ),
            (
                r#"{"header": {"name": "x-ver", "prefix": "2."}}"#,
                &[("x-ver", "2.1")],
                true,
            ),
            (
                r#"{"header": {"name": "x-ver", "prefix": "2."}}"#,
                &[("x-ver", "12.1")],
                false,
            ),
            (
                r#"{"header": {"name": "x-ver", "present": true}}"#,
                &[("x-ver", "")],
                true,
            ),
            (
                r#"{"header": {"name": "x-ver", "present": true}}"#,
                &[],
                false,
            ),
            (
                r#"{"header": {"name": "x-ver", "present": false}}"#,
                &[],
                true,
            ),
            (
                r#"{"header": {"name": "x-ver", "present": false}}"#,
                &[("x-ver", "1")],
                false,
            ),
            (
                r#"{"cookie": {"name": "beta", "exact": "1"}}"#,
                &[("cookie", "a=2; beta=1")],
                true,
            ),
            (
                r#"{"cookie": {"name": "beta", "exact": "1"}}"#,
                &[("cookie", "beta=10")],
                false,
            ),
            (
                r#"{"cookie": {"name": "beta", "exact": "1"}}"#,
                &[("cookie", "xbeta=1")],
                false,
            ),
            (
                r#"{"cookie": {"name": "beta", "present": true}}"#,
                &[("cookie", "beta=")],
                true,
            ),
            (
                r#"{"cookie": {"name": "beta", "present": true}}"#,
                &[("cookie", "b=1")],
                false,
            ),
            (
                r#"{"cookie": {"name": "beta", "present": true}}"#,
                &[],
                false,
            ),
            (
                r#"{"cookie": {"name": "beta", "present": false}}"#,
                &[("cookie", "b=1")],
                true,
            ),
            (
                r#"{"path_prefix": "/api"}"#,
                &[(":path", "/api/v2?x=1")],
                true,
            ),
            (r#"{"path_prefix": "/api"}"#, &[(":path", "/apix")], true),
            (r#"{"path_prefix": "/api"}"#, &[(":path", "/ap")], false),
            (r#"{"path_prefix": "/api"}"#, &[(":path", "/x/api")], false),
            (r#"{"path_prefix": "/api"}"#, &[], false),
        ];
        let store = MemoryStore::new();
        for (condition, headers, holds) in cases {
            let balancer = balancer(&format!(
                r#"{SUBSETS}, "default_subset": "stable",
                   "rules": [{{"match": {condition}, "subset": "canary"}}]"#
            ));
            let request = headers
                .iter()
                .fold(StaticRequest::default(), |r, (name, value)| {
                    r.with_header(name, value)
                });
            let went = cluster(&balancer, &store, &request);
            assert_eq!(is_canary(&went), *holds, "{condition} {headers:?}: {went}");
        }
    }

    /// Several conditions in one `match`, and a `match` with a `percent`: all must hold.
    #[test]
    fn a_rule_takes_a_request_only_when_all_its_conditions_and_its_percent_hold() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#"{SUBSETS}, "default_subset": "stable", "rules": [{{"match": {{
                "header": {{"name": "x-beta", "exact": "yes"}},
                "cookie": {{"name": "team", "present": true}},
                "path_prefix": "/api"}}, "subset": "canary"}}]"#
        ));
        let full = [
            ("x-beta", "yes"),
            ("cookie", "team=qa"),
            (":path", "/api/1"),
        ];
        for missing in 0..=full.len() {
            let request = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .fold(StaticRequest::default(), |r, (_, (name, value))| {
                    r.with_header(name, value)
                });
            let went = cluster(&balancer, &store, &request);
            assert_eq!(is_canary(&went), missing == full.len(), "{missing}: {went}");
        }
        let half_of_beta = balancer_seeded(
            &format!(
                r#"{SUBSETS}, "default_subset": "stable", "rules": [{{"match": {{
                    "header": {{"name": "x-beta", "exact": "yes"}}}}, "percent": 50, "subset": "canary"}}]"#
            ),
            3,
        );
        let beta = (0..2000)
            .filter(|_| is_canary(&cluster(&half_of_beta, &store, &header("x-beta", "yes"))))
            .count();
        // mean 1000, sd sqrt(2000/4) = 22.4; 5 sd.
        assert!((888..=1112).contains(&beta), "{beta}");
        assert!((0..200).all(|_| !is_canary(&cluster(
            &half_of_beta,
            &store,
            &header("x-beta", "no")
        ))));
    }

    /// By `split_key`, a key always lands in the same subset, whatever the backend list, and
    /// the share of keys is the percent.
    #[test]
    fn percent_by_split_key_is_stable_per_key_and_the_share_is_the_percent() {
        let store = MemoryStore::new();
        let fields = issue(r#", "split_key": [{"header": "x-user"}]"#);
        let one = balancer_seeded(&fields, 1);
        let two = balancer_seeded(&fields, 2);
        let other_backends = Balancer::new(
            Config::parse(
                format!(
                    r#"{{{fields}, "backends": [{{"cluster": "v2"}}, {{"cluster": "v1_b"}},
                        {{"cluster": "v1_a"}}, {{"cluster": "v3", "weight": 7}}]}}"#
                )
                .as_bytes(),
            )
            .unwrap(),
            "other",
            3,
        )
        .unwrap();
        let mut canary = 0;
        for user in 0..10_000 {
            let request = header("x-user", &format!("user-{user}"));
            let first = is_canary(&cluster(&one, &store, &request));
            for balancer in [&one, &two, &other_backends] {
                for _ in 0..2 {
                    let again = is_canary(&cluster(balancer, &store, &request));
                    assert_eq!(again, first, "user-{user} changed subsets");
                }
            }
            canary += usize::from(first);
        }
        // 5% of 10,000 keys: mean 500, sd 21.8; 5 sd either way.
        assert!((391..=609).contains(&canary), "{canary}");
        // Without the key the request is bucketed per request: both subsets for one request.
        let plain = header("x-other", "1");
        let subsets: Vec<bool> = (0..400)
            .map(|_| is_canary(&cluster(&one, &store, &plain)))
            .collect();
        assert!(subsets.contains(&true) && subsets.contains(&false));
    }

    #[test]
    fn a_fractional_percent_takes_its_fraction() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#"{SUBSETS}, "default_subset": "stable",
               "rules": [{{"percent": 0.5, "subset": "canary"}}], "split_key": [{{"header": "x-user"}}]"#
        ));
        let canary = (0..40_000)
            .filter(|user| {
                is_canary(&cluster(
                    &balancer,
                    &store,
                    &header("x-user", &user.to_string()),
                ))
            })
            .count();
        // mean 200, sd sqrt(40000 × 0.005 × 0.995) = 14.1; 5 sd.
        assert!((130..=270).contains(&canary), "{canary}");
    }

    #[test]
    fn key_buckets_are_fixed_and_apart_from_the_ring() {
        // Pinned: a change of hash would move every user to another subset.
        assert_eq!(key_bucket(b"user-1"), key_bucket(b"user-1"));
        let digest = md5::compute(b"user-1").0;
        assert_eq!(
            key_bucket(b"user-1").to_le_bytes(),
            [digest[4], digest[5], digest[6], digest[7]]
        );
        assert_ne!(
            key_bucket(b"user-1"),
            crate::policy::Ketama::hash_key(b"user-1")
        );
    }

    /// A request view that counts the host reads.
    struct Counting {
        inner: StaticRequest,
        reads: RefCell<Vec<String>>,
    }

    impl RequestView for Counting {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push(name.to_owned());
            self.inner.header(name)
        }

        fn path(&self) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push(":path".to_owned());
            self.inner.path()
        }

        fn source_address(&self) -> Option<String> {
            self.reads.borrow_mut().push("source".to_owned());
            self.inner.source_address()
        }
        fn now_ms(&self) -> u64 {
            self.inner.now_ms()
        }

        fn headers_size(&self) -> Option<usize> {
            self.reads.borrow_mut().push("all headers".to_owned());
            self.inner.headers_size()
        }
    }

    /// Rules on the same header and cookie, a split key and a hash key from them: each is
    /// read once; a request the first rule takes reads only what that rule needs.
    #[test]
    fn each_header_is_read_at_most_once_and_only_when_a_rule_needs_it() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#""policy": "consistent_hash", "hash_key": [{{"cookie": "session"}}],
            {SUBSETS}, "default_subset": "stable", "rules": [
                {{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}},
                {{"match": {{"header": {{"name": "x-beta", "prefix": "y"}},
                            "cookie": {{"name": "team", "present": true}}}}, "subset": "canary"}},
                {{"match": {{"cookie": {{"name": "beta", "present": true}},
                            "path_prefix": "/"}}, "subset": "canary"}},
                {{"percent": 50, "subset": "canary"}}],
            "split_key": [{{"header": "x-beta"}}, {{"cookie": "session"}}]"#
        ));
        let reads = |request: StaticRequest| {
            let counting = Counting {
                inner: request,
                reads: RefCell::new(Vec::new()),
            };
            route(balancer.choose(&store, &counting));
            counting.reads.into_inner()
        };
        // The first rule takes it; the policy then reads its hash key.
        assert_eq!(reads(header("x-beta", "yes")), ["x-beta", "cookie"]);
        // Every rule reached, the split key and the hash key: still one read each, and no
        // `:path` (the third rule's cookie condition fails first).
        assert_eq!(
            reads(header("x-beta", "yo").with_header("cookie", "session=s")),
            ["x-beta", "cookie"]
        );
        assert_eq!(
            reads(header("cookie", "beta=1")),
            ["x-beta", "cookie", ":path"]
        );
        assert_eq!(reads(StaticRequest::default()), ["x-beta", "cookie"]);
    }

    /// A subset falls back within itself first (health's rules over its members), then to the
    /// default subset; with the default down too, a local 503.
    #[test]
    fn health_falls_back_within_the_subset_then_to_the_default_then_503() {
        let store = MemoryStore::new();
        let json = format!(
            r#"{HEALTH}, "subsets": {{"stable": ["v1_a", "v1_b"], "canary": ["v2", "other"]}},
            "default_subset": "stable",
            "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}}]"#
        );
        let balancer = balancer(&json);
        balancer.create_shared_keys(&store).unwrap();
        let beta = header("x-beta", "yes");
        let plain = StaticRequest::default();
        let picks = |request: &StaticRequest| -> Vec<String> {
            (0..4)
                .map(|_| cluster(&balancer, &store, request))
                .collect()
        };
        assert_eq!(picks(&beta), ["v2", "other", "v2", "other"]);
        // Part of the canary down: the rest of the canary.
        take_down(&balancer, &store, 3, 10);
        assert_eq!(picks(&beta), ["v2", "v2", "v2", "v2"]);
        assert_eq!(route(balancer.choose(&store, &beta)).why, Why::Ticket);
        // All of the canary down: the default subset, never `other`.
        take_down(&balancer, &store, 2, 20);
        let fallen: Vec<String> = picks(&beta);
        assert!(fallen.iter().all(|c| c.starts_with("v1_")), "{fallen:?}");
        // Part of the default down: the rest of it, for both.
        take_down(&balancer, &store, 0, 30);
        assert_eq!(picks(&beta), ["v1_b"; 4]);
        assert_eq!(picks(&plain), ["v1_b"; 4]);
        // The default down too: 503, though no backend outside the subsets is left either way.
        take_down(&balancer, &store, 1, 40);
        for request in [&beta, &plain] {
            match balancer.choose(&store, request) {
                Decision::Reject { reply, status, .. } => {
                    assert_eq!((reply, status), (LocalReply::NoHealthyBackend, 503));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// The default subset down while a backend outside it is healthy: still a 503, as
    /// documented (the default is the last fallback, not all backends).
    #[test]
    fn the_default_subset_down_is_a_503_even_with_other_backends_up() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#"{HEALTH}, {SUBSETS}, "default_subset": "stable",
               "rules": [{{"percent": 0, "subset": "canary"}}]"#
        ));
        balancer.create_shared_keys(&store).unwrap();
        take_down(&balancer, &store, 0, 10);
        take_down(&balancer, &store, 1, 20);
        assert_eq!(balancer.mode(), Mode::Normal, "v2 and other are up");
        assert!(matches!(
            balancer.choose(&store, &StaticRequest::default()),
            Decision::Reject {
                reply: LocalReply::NoHealthyBackend,
                ..
            }
        ));
    }

    /// Without `default_subset`, a subset with no member up falls back to all backends.
    #[test]
    fn without_a_default_a_subset_down_falls_back_to_all_backends() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(
            r#"{HEALTH}, {SUBSETS},
               "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}}]"#
        ));
        balancer.create_shared_keys(&store).unwrap();
        take_down(&balancer, &store, 2, 10);
        let picks: Vec<String> = (0..3)
            .map(|_| cluster(&balancer, &store, &header("x-beta", "yes")))
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, ["other", "v1_a", "v1_b"], "{picks:?}");
    }

    /// Panic and backup apply within a subset: its backup takes over when its primaries are
    /// down, before the default subset.
    #[test]
    fn a_subsets_backup_takes_over_before_the_default_subset() {
        let store = MemoryStore::new();
        let json = format!(
            r#"{{{HEALTH}, "subsets": {{"stable": ["v1_a", "v1_b"], "canary": ["v2", "spare"]}},
                "default_subset": "stable",
                "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}}],
                "backends": [{{"cluster": "v1_a"}}, {{"cluster": "v1_b"}}, {{"cluster": "v2"}},
                             {{"cluster": "spare", "backup": true}}]}}"#
        );
        let balancer = Balancer::new(Config::parse(json.as_bytes()).unwrap(), "t", 1).unwrap();
        balancer.create_shared_keys(&store).unwrap();
        let beta = header("x-beta", "yes");
        assert_eq!(cluster(&balancer, &store, &beta), "v2");
        take_down(&balancer, &store, 2, 10);
        let choice = route(balancer.choose(&store, &beta));
        assert_eq!((choice.cluster, choice.why), ("spare", Why::Backup));
        assert_eq!(
            balancer.mode(),
            Mode::Normal,
            "globally, v1_a and v1_b are up"
        );
        // The backup down too: a change the global selection does not see (backups are not in
        // it while primaries are up), but the canary's does.
        take_down(&balancer, &store, 3, 20);
        assert!(cluster(&balancer, &store, &beta).starts_with("v1_"));
    }

    /// Round-robin: one global ticket, each subset's rotation indexed by it. A subset's
    /// requests alone alternate exactly.
    #[test]
    fn round_robin_alternates_within_the_subset() {
        let store = MemoryStore::new();
        let balancer = balancer(&issue(""));
        balancer.create_shared_keys(&store).unwrap();
        let plain = header("x-beta", "no");
        let mut previous = String::new();
        let mut stable = 0;
        for _ in 0..200 {
            let went = cluster(&balancer, &store, &plain);
            if is_canary(&went) {
                // The percent rule's 5%: takes a ticket too.
                previous.clear();
                continue;
            }
            assert_ne!(went, previous, "alternates");
            stable += 1;
            previous = went;
        }
        assert!(stable > 150);
    }

    /// Least-request compares only the subset's members.
    #[test]
    fn least_request_compares_only_the_subsets_members() {
        let store = MemoryStore::new();
        let balancer = balancer(&format!(r#""policy": "least_request", {}"#, issue("")));
        balancer.create_shared_keys(&store).unwrap();
        let beta = header("x-beta", "no");
        let mut counts = [0_u32; 4];
        for _ in 0..400 {
            counts[route(balancer.choose(&store, &beta)).index] += 1;
        }
        assert_eq!(counts[3], 0, "{counts:?}");
        assert!(
            counts[2] < 50,
            "the canary only by the percent rule: {counts:?}"
        );
        assert!(counts[0].abs_diff(counts[1]) <= 1, "{counts:?}");
    }

    /// Hashing walks the ring to the first member of the subset, counting the others it
    /// passes; the reason stays `hash`.
    #[test]
    fn hashing_walks_the_ring_to_the_first_member_of_the_subset() {
        let store = MemoryStore::new();
        let all = balancer(r#""policy": "consistent_hash", "hash_key": [{"header": "x-user"}]"#);
        let split = balancer(&format!(
            r#""policy": "consistent_hash", "hash_key": [{{"header": "x-user"}}],
            {SUBSETS}, "default_subset": "stable",
            "rules": [{{"match": {{"header": {{"name": "x-beta", "exact": "yes"}}}}, "subset": "canary"}}]"#
        ));
        let mut passed = 0;
        for user in 0..500 {
            let request = header("x-user", &format!("u{user}"));
            let unsplit = route(all.choose(&store, &request));
            let choice = route(split.choose(&store, &request));
            assert!(choice.cluster.starts_with("v1_"), "{choice:?}");
            if unsplit.cluster.starts_with("v1_") {
                assert_eq!(choice.index, unsplit.index, "a member's own keys stay");
            }
            let Reason::Hash { skipped, .. } = choice.reason else {
                panic!("{choice:?}");
            };
            passed += usize::from(skipped > 0);
            assert_eq!(choice.why, Why::Hash);
            let beta = route(split.choose(&store, &request.clone().with_header("x-beta", "yes")));
            assert_eq!(beta.cluster, "v2");
        }
        assert!(passed > 100, "half the keys start on v2 or other: {passed}");
    }
}
