//! The admission stage of `deny` rules: the first rule whose conditions all hold refuses the
//! request, before anything else looks at it (no shared data, no status page).
//!
//! Reads only what a rule it gets to needs, each at most once per request: `:method`, `:path`,
//! each distinct header some rule names, and the whole header map for a total-size rule. A rule
//! stops at its first condition that fails, so a later condition's read is saved.

use crate::config::{DenyRule, HeaderTest, PathMatch};
use crate::request_key::RequestView;

/// Body of the 403 for a request a rule denies.
pub const DENIED_BODY: &str = "eisodos: denied\n";
/// Body of the 431 for a request a size rule denies.
pub const TOO_LARGE_BODY: &str = "eisodos: denied, request header fields too large\n";

/// The rules, with each header name they test given a slot in the per-request cache.
#[derive(Debug)]
pub struct DenyList {
    rules: Vec<Rule>,
    /// The distinct header names the rules test; a rule names a header by its index here.
    names: Vec<String>,
}

/// A rule as [`DenyList::check`] runs it.
#[derive(Debug)]
struct Rule {
    methods: Vec<String>,
    path: Option<PathMatch>,
    max_uri_bytes: Option<usize>,
    headers: Vec<(usize, HeaderTest)>,
    max_header_bytes: Option<usize>,
    denial: Denial,
}

/// A rule matched: how to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The rule's place in `deny`.
    pub rule: usize,
    /// 403, or 431 for a rule with a size condition.
    pub status: u32,
    /// The one-line body.
    pub body: &'static str,
}

impl DenyList {
    /// The list for `rules`; `None` when there are none (the feature is off).
    pub fn new(rules: &[DenyRule]) -> Option<Self> {
        if rules.is_empty() {
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let headers = rule
                    .headers
                    .iter()
                    .map(|header| {
                        let slot = match names.iter().position(|name| *name == header.name) {
                            Some(slot) => slot,
                            None => {
                                names.push(header.name.clone());
                                names.len() - 1
                            }
                        };
                        (slot, header.test.clone())
                    })
                    .collect();
                let (status, body) = if rule.is_size_rule() {
                    (431, TOO_LARGE_BODY)
                } else {
                    (403, DENIED_BODY)
                };
                Rule {
                    methods: rule.methods.clone(),
                    path: rule.path.clone(),
                    max_uri_bytes: rule.max_uri_bytes.map(bytes),
                    headers,
                    max_header_bytes: rule.max_header_bytes.map(bytes),
                    denial: Denial {
                        rule: index,
                        status,
                        body,
                    },
                }
            })
            .collect();
        Some(Self { rules, names })
    }

    /// The first rule `request` matches, if any.
    pub fn check(&self, request: &dyn RequestView) -> Option<Denial> {
        let mut seen = Seen {
            request,
            method: None,
            path: None,
            headers: vec![None; self.names.len()],
            size: None,
        };
        self.rules
            .iter()
            .find(|rule| rule.matches(&mut seen, &self.names))
            .map(|rule| rule.denial)
    }
}

fn bytes(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

impl Rule {
    /// Whether every condition holds, tested in order of cost and stopping at the first that
    /// does not.
    fn matches(&self, seen: &mut Seen<'_>, names: &[String]) -> bool {
        if !self.methods.is_empty() {
            let method = seen.method();
            if !self
                .methods
                .iter()
                .any(|allowed| method.is_some_and(|m| m == allowed.as_bytes()))
            {
                return false;
            }
        }
        if let Some(path_match) = &self.path {
            let Some(path) = seen.path() else {
                return false;
            };
            let end = path.iter().position(|&c| c == b'?').unwrap_or(path.len());
            let path = path.get(..end).unwrap_or(path);
            let holds = match path_match {
                PathMatch::Exact(exact) => path == exact.as_bytes(),
                PathMatch::Prefix(prefix) => path.starts_with(prefix.as_bytes()),
            };
            if !holds {
                return false;
            }
        }
        if let Some(max) = self.max_uri_bytes {
            if seen.path().is_none_or(|path| path.len() <= max) {
                return false;
            }
        }
        for (slot, test) in &self.headers {
            let value = seen.header(*slot, names);
            let holds = match test {
                HeaderTest::Present(present) => value.is_some() == *present,
                HeaderTest::Exact(exact) => value.is_some_and(|v| v == exact.as_bytes()),
                HeaderTest::Prefix(prefix) => {
                    value.is_some_and(|v| v.starts_with(prefix.as_bytes()))
                }
                HeaderTest::MaxBytes(max) => value.is_some_and(|v| v.len() > bytes(*max)),
            };
            if !holds {
                return false;
            }
        }
        if let Some(max) = self.max_header_bytes {
            if seen.size().is_none_or(|size| size <= max) {
                return false;
            }
        }
        true
    }
}

/// What one request's check has read so far: each piece read on first use, then kept.
struct Seen<'r> {
    request: &'r dyn RequestView,
    method: Option<Option<Vec<u8>>>,
    path: Option<Option<Vec<u8>>>,
    headers: Vec<Option<Option<Vec<u8>>>>,
    size: Option<Option<usize>>,
}

impl Seen<'_> {
    fn method(&mut self) -> Option<&[u8]> {
        let request = self.request;
        self.method
            .get_or_insert_with(|| request.method())
            .as_deref()
    }

    fn path(&mut self) -> Option<&[u8]> {
        let request = self.request;
        self.path.get_or_insert_with(|| request.path()).as_deref()
    }

    fn header(&mut self, slot: usize, names: &[String]) -> Option<&[u8]> {
        let request = self.request;
        let cached = self.headers.get_mut(slot)?;
        cached
            .get_or_insert_with(|| names.get(slot).and_then(|name| request.header(name)))
            .as_deref()
    }

    fn size(&mut self) -> Option<usize> {
        let request = self.request;
        *self.size.get_or_insert_with(|| request.headers_size())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::config::Config;
    use crate::request_key::StaticRequest;

    fn list(deny: &str) -> DenyList {
        let json = format!(r#"{{"deny": {deny}, "backends": [{{"cluster": "a"}}]}}"#);
        DenyList::new(&Config::parse(json.as_bytes()).unwrap().deny).unwrap()
    }

    fn get(path: &str) -> StaticRequest {
        StaticRequest::default()
            .with_header(":method", "GET")
            .with_header(":path", path)
    }

    /// The rule that denies, if any.
    fn denied_by(list: &DenyList, request: &StaticRequest) -> Option<usize> {
        list.check(request).map(|denial| denial.rule)
    }

    /// A request that counts what is read from it.
    struct Counting<'a> {
        inner: &'a StaticRequest,
        reads: RefCell<Vec<String>>,
    }

    impl<'a> Counting<'a> {
        fn new(inner: &'a StaticRequest) -> Self {
            Self {
                inner,
                reads: RefCell::new(Vec::new()),
            }
        }

        fn reads(&self) -> Vec<String> {
            self.reads.borrow().clone()
        }
    }

    impl RequestView for Counting<'_> {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push(name.to_owned());
            self.inner.header(name)
        }

        fn path(&self) -> Option<Vec<u8>> {
            self.header(":path")
        }

        fn source_address(&self) -> Option<String> {
            self.reads.borrow_mut().push("source".to_owned());
            self.inner.source_address()
        }

        fn headers_size(&self) -> Option<usize> {
            self.reads.borrow_mut().push("all headers".to_owned());
            self.inner.headers_size()
        }

        fn now_ms(&self) -> u64 {
            self.inner.now_ms()
        }
    }

    #[test]
    fn off_without_rules() {
        assert!(DenyList::new(&[]).is_none());
    }

    #[test]
    fn methods_match_exactly() {
        let list = list(r#"[{"method": "TRACE"}, {"method": ["PUT", "DELETE"]}]"#);
        let with = |method: &str| StaticRequest::default().with_header(":method", method);
        assert_eq!(denied_by(&list, &with("TRACE")), Some(0));
        assert_eq!(denied_by(&list, &with("DELETE")), Some(1));
        assert_eq!(denied_by(&list, &with("PUT")), Some(1));
        for allowed in ["GET", "trace", "TRACEX", "TRAC", "", "PUT "] {
            assert_eq!(denied_by(&list, &with(allowed)), None, "{allowed:?}");
        }
        assert_eq!(
            denied_by(&list, &StaticRequest::default()),
            None,
            "no :method"
        );
    }

    #[test]
    fn paths_match_raw_without_the_query() {
        let list = list(r#"[{"path": "/.env"}, {"path_prefix": "/admin"}]"#);
        for (path, rule) in [
            ("/.env", Some(0)),
            ("/.env?x=1", Some(0)),
            ("/.env/", None),
            ("/.envx", None),
            ("/x/.env", None),
            ("/admin", Some(1)),
            ("/admin/users?id=1", Some(1)),
            ("/administrator", Some(1)),
            ("/Admin", None),
            ("//admin", None),
            ("/%61dmin", None),
            ("/?/admin", None),
            ("/", None),
            ("", None),
        ] {
            assert_eq!(denied_by(&list, &get(path)), rule, "{path}");
        }
        assert_eq!(
            denied_by(&list, &StaticRequest::default()),
            None,
            "no :path"
        );
    }

    #[test]
    fn header_presence_value_and_prefix() {
        let list = list(
            r#"[{"header": {"name": "x-debug", "present": true}},
                {"header": {"name": "user-agent", "exact": "BadBot/1.0"}},
                {"header": {"name": "user-agent", "prefix": "sqlmap"}},
                {"path_prefix": "/api", "header": {"name": "authorization", "present": false}}]"#,
        );
        let with = |name: &str, value: &[u8]| get("/").with_header(name, value);
        assert_eq!(denied_by(&list, &with("x-debug", b"1")), Some(0));
        assert_eq!(
            denied_by(&list, &with("x-debug", b"")),
            Some(0),
            "empty is present"
        );
        assert_eq!(denied_by(&list, &with("x-debugger", b"1")), None);
        assert_eq!(
            denied_by(&list, &with("user-agent", b"BadBot/1.0")),
            Some(1)
        );
        assert_eq!(denied_by(&list, &with("user-agent", b"BadBot/1.01")), None);
        assert_eq!(denied_by(&list, &with("user-agent", b"badbot/1.0")), None);
        assert_eq!(
            denied_by(&list, &with("user-agent", b"sqlmap/1.7")),
            Some(2)
        );
        assert_eq!(denied_by(&list, &with("user-agent", b"sqlma")), None);
        assert_eq!(denied_by(&list, &with("user-agent", b"")), None);
        assert_eq!(denied_by(&list, &get("/api/x")), Some(3), "absent");
        let authorized = get("/api/x").with_header("authorization", "Bearer t");
        assert_eq!(denied_by(&list, &authorized), None);
        assert_eq!(denied_by(&list, &get("/other")), None);
    }

    #[test]
    fn non_utf8_values_are_compared_as_bytes() {
        let list = list(
            r#"[{"header": {"name": "x-a", "prefix": "é"}},
                {"header": {"name": "x-b", "present": true}},
                {"header": {"name": "x-c", "max_bytes": 2}}]"#,
        );
        let with = |name: &str, value: &[u8]| get("/").with_header(name, value);
        assert_eq!(denied_by(&list, &with("x-a", "é!".as_bytes())), Some(0));
        assert_eq!(denied_by(&list, &with("x-a", &[0xc3, 0xff])), None);
        assert_eq!(denied_by(&list, &with("x-a", &[0xff, 0xfe])), None);
        assert_eq!(denied_by(&list, &with("x-b", &[0xff])), Some(1));
        assert_eq!(denied_by(&list, &with("x-c", &[0xff, 0xfe, 0xfd])), Some(2));
        assert_eq!(denied_by(&list, &with("x-c", &[0xff, 0xfe])), None);
        let path = StaticRequest::default().with_header(":path", [b'/', 0xff]);
        assert_eq!(denied_by(&list, &path), None);
    }

    #[test]
    fn sizes_answer_431_above_the_limit_only() {
        let list = list(
            r#"[{"max_uri_bytes": 10},
                {"header": {"name": "cookie", "max_bytes": 4}},
                {"max_header_bytes": 40}]"#,
        );
        let check = |request: &StaticRequest| list.check(request).map(|d| (d.rule, d.status));
        assert_eq!(check(&get("/123456789")), None, "10 bytes: at the limit");
        assert_eq!(check(&get("/1234567890")), Some((0, 431)));
        assert_eq!(
            check(&get("/?q=1234567")),
            Some((0, 431)),
            "the query counts"
        );
        assert_eq!(check(&get("/").with_header("cookie", "a=12")), None);
        assert_eq!(
            check(&get("/").with_header("cookie", "a=123")),
            Some((1, 431))
        );
        assert_eq!(check(&get("/").with_header("cookie", "")), None);
        // ":method" + "GET" + ":path" + "/" = 16 bytes; "x-pad" + 19 bytes makes 40.
        let pad = |n| get("/").with_header("x-pad", vec![b'p'; n]);
        assert_eq!(check(&pad(19)), None);
        assert_eq!(check(&pad(20)), Some((2, 431)));
        let denial = list.check(&pad(20)).unwrap();
        assert_eq!(denial.body, TOO_LARGE_BODY);
    }

    #[test]
    fn huge_and_empty_values() {
        let list = list(
            r#"[{"header": {"name": "x-a", "exact": ""}},
                {"header": {"name": "x-b", "prefix": ""}},
                {"header": {"name": "x-c", "max_bytes": 0}},
                {"max_uri_bytes": 8388608}]"#,
        );
        let with = |name: &str, value: &[u8]| get("/").with_header(name, value);
        assert_eq!(denied_by(&list, &with("x-a", b"")), Some(0));
        assert_eq!(denied_by(&list, &with("x-a", b" ")), None);
        assert_eq!(
            denied_by(&list, &with("x-b", b"anything")),
            Some(1),
            "every value"
        );
        assert_eq!(
            denied_by(&list, &with("x-c", b"")),
            None,
            "0 bytes: not above 0"
        );
        assert_eq!(denied_by(&list, &with("x-c", b"1")), Some(2));
        let huge = vec![b'x'; 1 << 20];
        assert_eq!(denied_by(&list, &with("x-a", &huge)), None);
        let mut long_path = b"/".to_vec();
        long_path.extend(vec![b'a'; 8 << 20]);
        let request = StaticRequest::default().with_header(":path", &long_path);
        assert_eq!(denied_by(&list, &request), Some(3));
    }

    #[test]
    fn every_condition_of_a_rule_must_hold() {
        let list = list(
            r#"[{"method": ["POST", "PUT"], "path_prefix": "/admin",
                 "header": [{"name": "x-a", "present": true}, {"name": "x-b", "exact": "1"}]}]"#,
        );
        let full = || {
            StaticRequest::default()
                .with_header(":method", "POST")
                .with_header(":path", "/admin/x")
        };
        let all = full().with_header("x-a", "").with_header("x-b", "1");
        assert_eq!(denied_by(&list, &all), Some(0));
        let wrong_method = get("/admin/x")
            .with_header("x-a", "")
            .with_header("x-b", "1");
        assert_eq!(denied_by(&list, &wrong_method), None);
        let wrong_path = StaticRequest::default()
            .with_header(":method", "PUT")
            .with_header(":path", "/public")
            .with_header("x-a", "")
            .with_header("x-b", "1");
        assert_eq!(denied_by(&list, &wrong_path), None);
        assert_eq!(denied_by(&list, &full().with_header("x-b", "1")), None);
        assert_eq!(denied_by(&list, &full().with_header("x-a", "")), None);
        let wrong_b = full().with_header("x-a", "").with_header("x-b", "2");
        assert_eq!(denied_by(&list, &wrong_b), None);
    }

    #[test]
    fn the_first_matching_rule_answers() {
        let list = list(
            r#"[{"path_prefix": "/a", "max_uri_bytes": 5},
                {"path_prefix": "/a"},
                {"max_uri_bytes": 5}]"#,
        );
        let check = |path: &str| list.check(&get(path)).map(|d| (d.rule, d.status, d.body));
        assert_eq!(check("/a/long"), Some((0, 431, TOO_LARGE_BODY)));
        assert_eq!(check("/a"), Some((1, 403, DENIED_BODY)));
        assert_eq!(check("/b/long"), Some((2, 431, TOO_LARGE_BODY)));
        assert_eq!(check("/b"), None);
    }

    #[test]
    fn each_piece_is_read_once_and_only_when_a_rule_gets_to_it() {
        let list = list(
            r#"[{"method": "TRACE", "header": {"name": "x-a", "present": true}},
                {"path_prefix": "/admin", "header": {"name": "x-a", "exact": "1"}},
                {"header": [{"name": "x-b", "present": true}, {"name": "x-a", "prefix": "z"}]},
                {"path": "/x", "max_header_bytes": 100},
                {"max_uri_bytes": 1000}]"#,
        );
        // GET: rule 0 stops at the method; rule 1 at the path; rule 2 at x-b; rule 3 at the
        // path already read; rule 4 reads nothing new.
        let request = get("/").with_header("x-a", "1");
        let counting = Counting::new(&request);
        assert_eq!(list.check(&counting), None);
        assert_eq!(counting.reads(), [":method", ":path", "x-b"]);
        // Every rule reaches its last condition: each header once, the map once.
        let request = StaticRequest::default()
            .with_header(":method", "TRACE")
            .with_header(":path", "/x")
            .with_header("x-b", "");
        let counting = Counting::new(&request);
        assert_eq!(list.check(&counting), None);
        assert_eq!(
            counting.reads(),
            [":method", "x-a", ":path", "x-b", "all headers"]
        );
    }

    #[test]
    fn the_balancer_answers_denied_and_counts_it() {
        use crate::balancer::{Balancer, Decision, LocalReply};
        use crate::metrics::Counter;
        let json = r#"{"deny": [{"method": "TRACE"}, {"max_uri_bytes": 4}],
                       "backends": [{"cluster": "a"}]}"#;
        let balancer = Balancer::configure(json.as_bytes(), "test", 1).unwrap();
        let trace = StaticRequest::default()
            .with_header(":method", "TRACE")
            .with_header(":path", "/");
        assert_eq!(
            balancer.deny(&trace),
            Some(Decision::Reject {
                reply: LocalReply::Denied,
                status: 403,
                body: DENIED_BODY,
                retry_after: None,
                rate: None,
            })
        );
        let long = get("/long");
        assert!(matches!(
            balancer.deny(&long),
            Some(Decision::Reject { status: 431, .. })
        ));
        assert_eq!(balancer.deny(&get("/")), None);
        let mut counted = Vec::new();
        balancer.drain_counts(|counter, n| counted.push((counter, n)));
        assert_eq!(counted, [(Counter::LocalReplies(LocalReply::Denied), 2)]);
        let off = Balancer::configure(br#"{"backends": [{"cluster": "a"}]}"#, "test", 1).unwrap();
        let counting = Counting::new(&trace);
        assert_eq!(off.deny(&counting), None);
        assert!(counting.reads().is_empty(), "off: nothing read");
    }
}
