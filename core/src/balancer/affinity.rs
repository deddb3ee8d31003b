//! The affinity stage (sticky sessions): between the candidates and the pick. A request whose
//! `session_affinity` cookie names a backend that may take it goes there, whatever the policy;
//! any other request goes on to the policy, and its response sets the cookie for the backend
//! the policy chose.
//!
//! The cookie's value is a token, not the cluster name: the first 8 bytes of
//! `md5("eisodos-affinity\0" + namespace + "\0" + cluster)`, as 16 lower-case hex digits. It
//! depends on nothing else, so it is the same on every worker, after a VM restart and after a
//! reconfiguration that keeps the backend (adding or removing others, changing weights or the
//! policy); the namespace (the plugin's name) keeps two eisodos filters from taking each
//! other's cookies. It is opaque, not secret: anyone who knows a cluster name and the plugin's
//! name can compute its token, so a client can choose among the backends its request may go to
//! anyway, and no further.
//!
//! Everything is built at configure time: the token → backend table (checked free of
//! collisions) and each backend's whole `set-cookie` value, so a request costs one read of the
//! `cookie` header, a parse, and a binary search; no allocation beyond the header's bytes.

use std::fmt::Write as _;

use super::candidates::Candidates;
use super::counting::Counting;
use super::policy::{Picked, Reason};
use crate::config::{Config, ConfigError, SessionAffinityConfig};
use crate::request_key::{self, RequestView};
use crate::store::SharedStore;

/// Length of a token: 16 hex digits, 64 bits.
pub const TOKEN_LEN: usize = 16;

/// What a configuration's sticky sessions need per request.
#[derive(Debug)]
pub struct Affinity {
    /// The cookie's name.
    cookie: String,
    /// Tokens and their backends, sorted by token, distinct.
    tokens: Vec<(u64, usize)>,
    /// Each backend's `set-cookie` value, by index.
    set_cookie: Vec<String>,
}

impl Affinity {
    /// The affinity stage of `config` under `namespace`, or `None` when `session_affinity` is
    /// off.
    ///
    /// # Errors
    /// When two backends' tokens are equal (about 2^-64 per pair of names: an error rather
    /// than a cookie that could send a user to the wrong backend).
    pub fn new(config: &Config, namespace: &str) -> Result<Option<Self>, ConfigError> {
        let Some(settings) = &config.session_affinity else {
            return Ok(None);
        };
        let tokens: Vec<u64> = config
            .backends
            .iter()
            .map(|backend| token(namespace, &backend.cluster))
            .collect();
        let table = table(&tokens).map_err(|(first, second)| {
            let name = |index: usize| {
                config
                    .backends
                    .get(index)
                    .map_or("", |backend| backend.cluster.as_str())
            };
            ConfigError {
                field: "session_affinity".into(),
                reason: format!(
                    "backends {} and {} have the same cookie token; rename one",
                    name(first),
                    name(second)
                ),
            }
        })?;
        let set_cookie = tokens
            .iter()
            .map(|&token| set_cookie_value(settings, token))
            .collect();
        Ok(Some(Self {
            cookie: settings.cookie.clone(),
            tokens: table,
            set_cookie,
        }))
    }

    /// The backend `request`'s cookie pins it to, when that backend may take it now; `None`
    /// for no cookie, a value that is no token of this configuration (tampered, truncated,
    /// oversize, not UTF-8, another filter's), or a backend that may not take the request
    /// (unhealthy, ejected, not allowed by the selection): the policy decides, and the cookie
    /// is issued again.
    pub fn pinned(&self, request: &dyn RequestView, candidates: &Candidates) -> Option<usize> {
        let header = request.header("cookie")?;
        let value = request_key::cookie(&header, self.cookie.as_bytes())?;
        self.lookup(value).filter(|&index| candidates.allows(index))
    }

    /// The backend whose token `value` is, if any.
    fn lookup(&self, value: &[u8]) -> Option<usize> {
        let token = parse_token(value)?;
        self.tokens
            .binary_search_by_key(&token, |&(token, _)| token)
            .ok()
            .and_then(|position| self.tokens.get(position))
            .map(|&(_, index)| index)
    }

    /// The `set-cookie` value that pins a client to backend `index` (`None` out of range).
    pub fn set_cookie(&self, index: usize) -> Option<&str> {
        self.set_cookie.get(index).map(String::as_str)
    }
}

/// Takes pinned backend `index` for the request: the policy does not choose, but when requests
/// are counted in flight this one is too (its stream's end gives the count back), and only if
/// the backend has room under its `max_requests`. `None` when it is full: the policy then
/// chooses, and the cookie is issued again.
pub fn take(store: &dyn SharedStore, index: usize, counting: Option<&Counting>) -> Option<Picked> {
    let counted = match counting {
        Some(counting) => counting.acquire_if_room(store, index).is_some(),
        None => false,
    };
    if counting.is_some() && !counted {
        return None;
    }
    Some(Picked::Backend {
        index,
        counted,
        reason: Reason::Affinity,
    })
}

/// The token of `cluster` under `namespace`.
pub fn token(namespace: &str, cluster: &str) -> u64 {
    let mut context = md5::Context::new();
    context.consume(b"eisodos-affinity\0");
    context.consume(namespace.as_bytes());
    context.consume([0]);
    context.consume(cluster.as_bytes());
    let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = context.finalize().0;
    u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
}

/// A token as the cookie carries it.
pub fn token_text(token: u64) -> String {
    format!("{token:016x}")
}

/// The token a cookie value spells: exactly [`TOKEN_LEN`] lower-case hex digits.
fn parse_token(value: &[u8]) -> Option<u64> {
    if value.len() != TOKEN_LEN {
        return None;
    }
    value.iter().try_fold(0_u64, |token, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(token << 4 | u64::from(digit))
    })
}

/// `tokens` (by backend index) sorted with their indices; the indices of two equal tokens if
/// there are any.
fn table(tokens: &[u64]) -> Result<Vec<(u64, usize)>, (usize, usize)> {
    let mut table: Vec<(u64, usize)> = tokens
        .iter()
        .enumerate()
        .map(|(index, &token)| (token, index))
        .collect();
    table.sort_unstable();
    for pair in table.windows(2) {
        if let [(a, first), (b, second)] = pair {
            if a == b {
                return Err((*first, *second));
            }
        }
    }
    Ok(table)
}

/// `<cookie>=<token>[; Max-Age=<ttl_s>][; <attributes>]`.
fn set_cookie_value(settings: &SessionAffinityConfig, token: u64) -> String {
    let mut value = format!("{}={}", settings.cookie, token_text(token));
    if settings.ttl_s > 0 {
        let _ = write!(value, "; Max-Age={}", settings.ttl_s);
    }
    if !settings.attributes.is_empty() {
        let _ = write!(value, "; {}", settings.attributes);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_key::StaticRequest;

    fn config(fields: &str, backends: &[&str]) -> Config {
        let backends: Vec<String> = backends
            .iter()
            .map(|name| format!(r#"{{"cluster": "{name}"}}"#))
            .collect();
        Config::parse(
            format!(
                r#"{{"session_affinity": {{{fields}}}, "backends": [{}]}}"#,
                backends.join(", ")
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn affinity(backends: &[&str]) -> Affinity {
        Affinity::new(&config("", backends), "eisodos")
            .unwrap()
            .unwrap()
    }

    /// A change of algorithm, prefix or encoding changes these, and every user's backend.
    #[test]
    fn tokens_are_fixed_for_a_fixed_name() {
        assert_eq!(
            token_text(token("eisodos", "backend_a")),
            "f49428150b1a49d4"
        );
        assert_eq!(
            token_text(token("eisodos", "backend_b")),
            "2814cb28538a0af2"
        );
        assert_eq!(token_text(token("edge", "backend_a")), "33cb9109787ef73b");
    }

    #[test]
    fn tokens_never_show_the_cluster_name_and_are_cookie_safe() {
        for name in [
            "backend_a",
            "a",
            "outbound|80||svc.default.svc.cluster.local",
        ] {
            let text = token_text(token("eisodos", name));
            assert_eq!(text.len(), TOKEN_LEN);
            assert!(text
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(!text.contains(name), "{text} shows {name}");
        }
    }

    #[test]
    fn a_backend_keeps_its_token_when_others_come_and_go() {
        let before = affinity(&["backend_a", "backend_b"]);
        let after = affinity(&["backend_c", "backend_b", "backend_a"]);
        assert_eq!(before.set_cookie(0), after.set_cookie(2));
        assert_eq!(before.set_cookie(1), after.set_cookie(1));
    }

    #[test]
    fn the_set_cookie_value_carries_max_age_only_for_a_lifetime() {
        let with_ttl = Affinity::new(
            &config(
                r#""cookie": "lb", "ttl_s": 3600, "attributes": "Path=/; HttpOnly; SameSite=Lax""#,
                &["backend_a"],
            ),
            "eisodos",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            with_ttl.set_cookie(0),
            Some("lb=f49428150b1a49d4; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax")
        );
        assert_eq!(with_ttl.set_cookie(1), None);
        let session = Affinity::new(&config(r#""attributes": """#, &["backend_a"]), "eisodos")
            .unwrap()
            .unwrap();
        assert_eq!(
            session.set_cookie(0),
            Some("eisodos_backend=f49428150b1a49d4")
        );
        let defaults = affinity(&["backend_a"]);
        assert_eq!(
            defaults.set_cookie(0),
            Some("eisodos_backend=f49428150b1a49d4; Path=/; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn off_unless_configured() {
        let config = Config::parse(br#"{"backends": [{"cluster": "a"}]}"#).unwrap();
        assert!(Affinity::new(&config, "eisodos").unwrap().is_none());
    }

    #[test]
    fn equal_tokens_are_refused() {
        assert_eq!(table(&[5, 9, 1]), Ok(vec![(1, 2), (5, 0), (9, 1)]));
        assert_eq!(table(&[5, 9, 5]), Err((0, 2)));
    }

    #[test]
    fn only_an_exact_token_is_looked_up() {
        let affinity = affinity(&["backend_a", "backend_b"]);
        let a = token_text(token("eisodos", "backend_a"));
        assert_eq!(affinity.lookup(a.as_bytes()), Some(0));
        let b = token_text(token("eisodos", "backend_b"));
        assert_eq!(affinity.lookup(b.as_bytes()), Some(1));
        let mut flipped = a.clone().into_bytes();
        flipped[3] = if flipped[3] == b'0' { b'1' } else { b'0' };
        let oversize = format!("{a}0");
        let foreign = token_text(token("edge", "backend_a"));
        let upper = a.to_ascii_uppercase();
        let cases: [&[u8]; 9] = [
            &flipped,
            &a.as_bytes()[..TOKEN_LEN - 1],
            oversize.as_bytes(),
            upper.as_bytes(),
            foreign.as_bytes(),
            b"backend_a",
            b"",
            &[0xff; TOKEN_LEN],
            b"+f49428150b1a49d",
        ];
        for value in cases {
            assert_eq!(affinity.lookup(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_cookie_is_read_by_its_name_the_first_one_counting() {
        let affinity = affinity(&["backend_a", "backend_b"]);
        let a = token_text(token("eisodos", "backend_a"));
        let b = token_text(token("eisodos", "backend_b"));
        let config = config("", &["backend_a", "backend_b"]);
        let candidates = Candidates::new(
            std::rc::Rc::new(crate::health::Selection::build(&config, None, 0)),
            &config,
            super::super::candidates::Spread {
                rotation: false,
                random: false,
            },
        );
        let pinned = |cookie: &str| {
            let request = StaticRequest::default().with_header("cookie", cookie);
            affinity.pinned(&request, &candidates)
        };
        assert_eq!(pinned(&format!("eisodos_backend={b}")), Some(1));
        assert_eq!(pinned(&format!("x=1; eisodos_backend={a}; y=2")), Some(0));
        assert_eq!(
            pinned(&format!("eisodos_backend={a}; eisodos_backend={b}")),
            Some(0),
            "a duplicated cookie: the first counts (the browser sends the most specific first)"
        );
        assert_eq!(
            pinned(&format!("eisodos_backend=junk; eisodos_backend={b}")),
            None,
            "the first is not a token: the policy decides"
        );
        assert_eq!(pinned(&format!("other_backend={a}")), None);
        assert_eq!(pinned(""), None);
        let binary = StaticRequest::default().with_header("cookie", b"eisodos_backend=\xff\xfe");
        assert_eq!(affinity.pinned(&binary, &candidates), None);
        let huge = format!("eisodos_backend={}", "a".repeat(8192));
        assert_eq!(pinned(&huge), None);
        assert_eq!(
            affinity.pinned(&StaticRequest::default(), &candidates),
            None
        );
    }
}
