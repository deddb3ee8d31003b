//! The hash key of a request: the first configured source present in it.
//!
//! Defined behaviour for awkward input: a source whose value is empty counts as absent; so
//! does one longer than [`MAX_KEY_LEN`] bytes (hashing it would cost more than the request is
//! worth, and a client could send one to slow every worker); bytes are hashed as they are,
//! UTF-8 or not; query values are hashed raw, not percent-decoded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{HashSource, IpHashConfig};
use crate::ip;

/// Longest key hashed; longer ones count as absent.
pub const MAX_KEY_LEN: usize = 4096;

/// What the key extraction reads from a request. The filter implements it with host calls,
/// made only for the sources configured.
pub trait RequestView {
    /// The value of header `name` (lower-case), if present.
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// The request's `:path`, query string included.
    fn path(&self) -> Option<Vec<u8>>;
    /// The client address as Envoy reports it (`source.address`: `ip:port` or `[ip]:port`).
    fn source_address(&self) -> Option<String>;
    /// The host's clock now, in ms since the Unix epoch (the same clock for every worker); 0
    /// when the host cannot tell. Asked only by stages that need the time (rate limiting).
    fn now_ms(&self) -> u64;
    /// The request's `:method`.
    fn method(&self) -> Option<Vec<u8>> {
        self.header(":method")
    }
    /// The size of all request headers together: each name's and value's bytes, pseudo-headers
    /// included; `None` if it cannot be told. Costs the filter a read of the whole header map.
    fn headers_size(&self) -> Option<usize>;
}

/// The key of `request` from the first source present, or `None`.
pub fn extract(sources: &[HashSource], request: &dyn RequestView) -> Option<Vec<u8>> {
    sources.iter().find_map(|source| {
        let key = match source {
            HashSource::Header(name) => request.header(name),
            HashSource::Cookie(name) => request
                .header("cookie")
                .and_then(|cookies| cookie(&cookies, name.as_bytes()).map(<[u8]>::to_vec)),
            HashSource::Query(name) => request
                .path()
                .and_then(|path| query_param(&path, name.as_bytes()).map(<[u8]>::to_vec)),
            HashSource::Path(_) => request.path().map(|mut path| {
                let end = path.iter().position(|&c| c == b'?').unwrap_or(path.len());
                path.truncate(end);
                path
            }),
            HashSource::SourceIp(_) => request
                .source_address()
                .and_then(|address| client_ip(&address))
                .map(|ip| ip.to_string().into_bytes()),
        }?;
        (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(key)
    })
}

/// The ip_hash key: the client address masked to the configured prefix, as text
/// (`10.1.2.0` for 10.1.2.3 with prefix 24). An IPv4-mapped IPv6 address counts as IPv4.
pub fn ip_key(source_address: &str, config: IpHashConfig) -> Option<Vec<u8>> {
    let masked = match client_ip(source_address)? {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(
            u32::from(ip) & ip::mask_v4(config.ipv4_prefix),
        )),
        IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(
            u128::from(ip) & ip::mask_v6(config.ipv6_prefix),
        )),
    };
    Some(masked.to_string().into_bytes())
}

/// A [`RequestView`] over fixed values: a test double, like
/// [`crate::memory_store::MemoryStore`].
#[derive(Debug, Default, Clone)]
pub struct StaticRequest {
    headers: Vec<(String, Vec<u8>)>,
    source: Option<String>,
    now_ms: u64,
}

impl StaticRequest {
    /// Adds a header (lower-case name; `:path` for the path).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the client address (`ip:port`).
    pub fn with_source(mut self, address: &str) -> Self {
        self.source = Some(address.to_owned());
        self
    }

    /// Sets the time the request is handled at (ms since the epoch; 0, the default, is a
    /// host that cannot tell).
    pub fn with_now_ms(mut self, now_ms: u64) -> Self {
        self.now_ms = now_ms;
        self
    }
}

impl RequestView for StaticRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    fn path(&self) -> Option<Vec<u8>> {
        self.header(":path")
    }

    fn source_address(&self) -> Option<String> {
        self.source.clone()
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn headers_size(&self) -> Option<usize> {
        Some(
            self.headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum(),
        )
    }
}

/// The IP of a client address as Envoy reports it (`ip:port`, `[ip]:port` or a bare IP); an
/// IPv4-mapped IPv6 address becomes IPv4.
pub fn client_ip(address: &str) -> Option<IpAddr> {
    let ip = address
        .parse::<SocketAddr>()
        .map(|socket| socket.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()?;
    Some(ip::canonical(ip))
}

/// The value of cookie `name` in a `cookie` header (`a=1; b=2`): the first pair with that
/// name, its value trimmed; `None` when no pair has it.
pub fn cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&c| c == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&c| c == b'=')?;
        let (key, value) = (pair.get(..eq)?, pair.get(eq + 1..)?);
        (key.trim_ascii() == name).then(|| value.trim_ascii())
    })
}

/// The raw value of query parameter `name` in a path (`/p?a=1&b=2`).
fn query_param<'a>(path: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let start = path.iter().position(|&c| c == b'?')? + 1;
    let query = path.get(start..)?;
    let query = query
        .iter()
        .position(|&c| c == b'#')
        .and_then(|end| query.get(..end))
        .unwrap_or(query);
    query.split(|&c| c == b'&').find_map(|pair| {
        let eq = pair.iter().position(|&c| c == b'=').unwrap_or(pair.len());
        (pair.get(..eq)? == name).then(|| pair.get(eq + 1..).unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Empty;

    fn request(headers: &[(&str, &[u8])]) -> StaticRequest {
        headers
            .iter()
            .fold(StaticRequest::default(), |request, (name, value)| {
                request.with_header(name, value)
            })
            .with_source("10.1.2.3:5555")
    }

    fn sources() -> Vec<HashSource> {
        vec![
            HashSource::Header("x-user-id".into()),
            HashSource::Cookie("session".into()),
            HashSource::Query("user".into()),
            HashSource::Path(Empty {}),
        ]
    }

    #[test]
    fn first_present_source_wins() {
        let all = request(&[
            ("x-user-id", b"u1"),
            ("cookie", b"session=s1"),
            (":path", b"/p?user=q1"),
        ]);
        assert_eq!(extract(&sources(), &all).unwrap(), b"u1");
        let no_header = request(&[("cookie", b"a=b; session=s1"), (":path", b"/p?user=q1")]);
        assert_eq!(extract(&sources(), &no_header).unwrap(), b"s1");
        let query_only = request(&[(":path", b"/p?x=1&user=q1&y")]);
        assert_eq!(extract(&sources(), &query_only).unwrap(), b"q1");
        let path_only = request(&[(":path", b"/items/7?x=1")]);
        assert_eq!(extract(&sources(), &path_only).unwrap(), b"/items/7");
    }

    #[test]
    fn nothing_present_is_none() {
        let sources = vec![HashSource::Header("x-user-id".into())];
        assert_eq!(extract(&sources, &request(&[(":path", b"/")])), None);
    }

    #[test]
    fn empty_and_oversized_values_count_as_absent() {
        let sources = vec![
            HashSource::Header("x-user-id".into()),
            HashSource::Header("x-fallback".into()),
        ];
        let empty = request(&[("x-user-id", b""), ("x-fallback", b"f")]);
        assert_eq!(extract(&sources, &empty).unwrap(), b"f");
        let huge = vec![b'a'; MAX_KEY_LEN + 1];
        let oversized = request(&[("x-user-id", &huge), ("x-fallback", b"f")]);
        assert_eq!(extract(&sources, &oversized).unwrap(), b"f");
        let at_limit = vec![b'a'; MAX_KEY_LEN];
        let fits = request(&[("x-user-id", &at_limit)]);
        assert_eq!(extract(&sources, &fits).unwrap().len(), MAX_KEY_LEN);
    }

    #[test]
    fn non_utf8_bytes_are_hashed_as_they_are() {
        let sources = vec![HashSource::Header("x-user-id".into())];
        let binary = request(&[("x-user-id", &[0xff, 0xfe, b'a'])]);
        assert_eq!(extract(&sources, &binary).unwrap(), [0xff, 0xfe, b'a']);
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie(b"session=abc", b"session"), Some(&b"abc"[..]));
        assert_eq!(
            cookie(b"a=1;session = abc ; b=2", b"session"),
            Some(&b"abc"[..])
        );
        assert_eq!(cookie(b"xsession=abc", b"session"), None);
        assert_eq!(cookie(b"session", b"session"), None);
        assert_eq!(cookie(b"", b"session"), None);
    }

    #[test]
    fn query_parsing() {
        assert_eq!(query_param(b"/?user=1", b"user"), Some(&b"1"[..]));
        assert_eq!(
            query_param(b"/?a=1&user=2&user=3", b"user"),
            Some(&b"2"[..])
        );
        assert_eq!(query_param(b"/?user", b"user"), Some(&b""[..]));
        assert_eq!(query_param(b"/?users=1", b"user"), None);
        assert_eq!(query_param(b"/user=1", b"user"), None);
        assert_eq!(query_param(b"/?user=%41", b"user"), Some(&b"%41"[..]));
    }

    /// What `tests/tests/hostile_input.rs` sends through Envoy, at the parser: every malformed
    /// cookie header and query string has one defined answer.
    #[test]
    fn malformed_cookies_and_queries_have_a_defined_value() {
        let session = |header: &[u8]| cookie(header, b"session").map(<[u8]>::to_vec);
        assert_eq!(session(b"session"), None, "no =");
        assert_eq!(session(b"=abc"), None, "an empty name");
        // The empty name is a name, but no configuration asks for it (names are 1+ bytes).
        assert_eq!(cookie(b"=abc", b""), Some(&b"abc"[..]));
        assert_eq!(session(b"=abc; session=s1").unwrap(), b"s1");
        assert_eq!(session(b"session=s1; session=s2").unwrap(), b"s1");
        assert_eq!(session(b";;session=s1;;").unwrap(), b"s1");
        assert_eq!(session(b";;; ;"), None);
        assert_eq!(
            session(b"session=\"s1\"").unwrap(),
            b"\"s1\"",
            "quotes kept"
        );
        assert_eq!(session(b"session=a=b").unwrap(), b"a=b");
        assert_eq!(session(b"SESSION=s1"), None, "case-sensitive");
        assert_eq!(
            session(b"session=").unwrap(),
            b"",
            "empty: extract counts it absent"
        );
        assert_eq!(session(b"session=\xff\xfe").unwrap(), b"\xff\xfe");
        let many: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("k{i}=v; ").into_bytes())
            .chain(*b"session=last")
            .collect();
        assert_eq!(session(&many).unwrap(), b"last");

        let user = |path: &[u8]| query_param(path, b"user").map(<[u8]>::to_vec);
        assert_eq!(user(b"/?"), None);
        assert_eq!(user(b"/?&&&"), None);
        assert_eq!(user(b"/?&&&user=q1&&").unwrap(), b"q1");
        assert_eq!(
            query_param(b"/?=q1", b""),
            Some(&b"q1"[..]),
            "as for cookies"
        );
        assert_eq!(user(b"/?=q1"), None);
        assert_eq!(user(b"/?user=%zz").unwrap(), b"%zz");
        assert_eq!(user(b"/?user=%").unwrap(), b"%");
        assert_eq!(user(b"/?user=a+b").unwrap(), b"a+b");
        assert_eq!(
            user(b"/?x=1?user=q1"),
            None,
            "only the first ? starts the query"
        );
        assert_eq!(user(b"/?user=q?1").unwrap(), b"q?1");
        assert_eq!(user(b"/?x=1;user=q1"), None, "; is no separator");
        let many: Vec<u8> = b"/?"
            .iter()
            .copied()
            .chain((0..10_000).flat_map(|i| format!("q{i}=1&").into_bytes()))
            .chain(*b"user=last")
            .collect();
        assert_eq!(user(&many).unwrap(), b"last");
    }

    #[test]
    fn source_ip_drops_the_port() {
        let sources = vec![HashSource::SourceIp(Empty {})];
        assert_eq!(extract(&sources, &request(&[])).unwrap(), b"10.1.2.3");
        let v6 = StaticRequest::default().with_source("[2001:db8::1]:443");
        assert_eq!(extract(&sources, &v6).unwrap(), b"2001:db8::1");
        let unix = StaticRequest::default().with_source("/var/run/socket");
        assert_eq!(extract(&sources, &unix), None);
    }

    #[test]
    fn ip_keys_are_masked_to_the_prefix() {
        let config = IpHashConfig {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        };
        assert_eq!(ip_key("10.1.2.3:80", config).unwrap(), b"10.1.2.0");
        assert_eq!(ip_key("10.1.2.250:1", config).unwrap(), b"10.1.2.0");
        assert_eq!(ip_key("10.1.3.3:80", config).unwrap(), b"10.1.3.0");
        assert_eq!(
            ip_key("[2001:db8:1:2:3:4:5:6]:80", config).unwrap(),
            b"2001:db8:1:2::"
        );
        assert_eq!(ip_key("[::ffff:10.1.2.3]:80", config).unwrap(), b"10.1.2.0");
        let full = IpHashConfig::default();
        assert_eq!(ip_key("10.1.2.3:80", full).unwrap(), b"10.1.2.3");
        let one_bit = IpHashConfig {
            ipv4_prefix: 1,
            ipv6_prefix: 1,
        };
        assert_eq!(ip_key("200.1.2.3:80", one_bit).unwrap(), b"128.0.0.0");
        assert_eq!(ip_key("unix:/x", config), None);
    }
}
