//! Host values: what a probe's `:authority` may be. RFC 9110 §7.2 defines `Host` as
//! `uri-host [ ":" port ]`, `uri-host` being RFC 3986's `host` (§3.2.2): a reg-name, an IPv4
//! address (which a reg-name's characters already cover) or a bracketed IP literal.

use std::net::IpAddr;

use super::MAX_NAME_LEN;

/// What the error says a Host may be.
const HOST_SYNTAX: &str = "a Host is a name of letters, digits and -._~!$&'()*+,;= or %XX, \
    or an IPv4 address, or a [bracketed IPv6] address, with an optional :port";

/// Why `value` is not a Host value (`host[:port]`), if it is not, with what a Host may be:
/// the reason for a field that must be one.
pub(crate) fn host_problem(value: &str) -> Option<String> {
    problem(value).map(|problem| format!("{problem}; {HOST_SYNTAX}"))
}

/// Why `value` is not a Host value, briefly ("has '|', which a host cannot contain").
pub(crate) fn problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".to_owned());
    }
    if value.len() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    if is_ipv6(value) {
        return Some("is an IPv6 address without the [ ] a Host puts around one".to_owned());
    }
    let (host, port) = split_port(value);
    let problem = match host.strip_prefix('[') {
        Some(literal) => ip_literal_problem(literal),
        None => reg_name_problem(host),
    };
    problem.or_else(|| port.and_then(port_problem))
}

/// `(host, port)`: the port after the `:` that follows a bracketed literal's `]`, or after the
/// first `:` otherwise (a reg-name has none, so a second one is the port's problem).
fn split_port(value: &str) -> (&str, Option<&str>) {
    if value.starts_with('[') {
        let split = value
            .find(']')
            .and_then(|end| value.split_at_checked(end + 1));
        return match split {
            Some((literal, rest)) => match rest.strip_prefix(':') {
                Some(port) => (literal, Some(port)),
                None if rest.is_empty() => (literal, None),
                // Anything else after `]` is not a port: the literal reports it.
                None => (value, None),
            },
            None => (value, None),
        };
    }
    match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    }
}

/// `literal` is what follows `[`: an IPv6 address and `]`. (RFC 3986's IPvFuture is left out:
/// no server to probe answers to one.)
fn ip_literal_problem(literal: &str) -> Option<String> {
    match literal.strip_suffix(']') {
        Some(address) if is_ipv6(address) => None,
        Some(_) => Some("has no IPv6 address between [ and ]".to_owned()),
        None => Some("has a [ without its ] at the end of the host".to_owned()),
    }
}

/// RFC 3986 `reg-name = *( unreserved / pct-encoded / sub-delims )`, not empty.
fn reg_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("has an empty host".to_owned());
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Some("has a % not followed by two hex digits".to_owned());
            }
            i += 3;
            continue;
        }
        if !is_reg_name_char(c) {
            let shown = match (c, name.get(i..=i)) {
                (b' ', _) => "a space".to_owned(),
                (c, Some(text)) if c.is_ascii_graphic() => format!("'{text}'"),
                (c, _) => format!("byte 0x{c:02x}"),
            };
            return Some(format!("has {shown}, which a host cannot contain"));
        }
        i += 1;
    }
    None
}

/// RFC 3986 `unreserved` and `sub-delims`.
fn is_reg_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c)
}

/// A port: 1 to 65535, in digits.
fn port_problem(port: &str) -> Option<String> {
    if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
        return Some(format!(
            "has \"{}\" after the :, not a port (1 to 65535)",
            port.escape_default()
        ));
    }
    match port_number(port) {
        Some(_) => None,
        None => Some(format!("has port {port}, not between 1 and 65535")),
    }
}

/// `text` as a port, 1 to 65535 in decimal digits. (By hand: `str::parse::<u16>` would be one
/// more integer parser in the `.wasm`.)
pub(crate) fn port_number(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 {
        return None;
    }
    let number = text.bytes().try_fold(0_u32, |number, c| {
        c.is_ascii_digit()
            .then(|| number * 10 + u32::from(c - b'0'))
    })?;
    u16::try_from(number).ok().filter(|&port| port > 0)
}

/// Whether `text` is an IPv6 address (parsed as an `IpAddr`, whose parser the status page's
/// CIDRs already bring into the `.wasm`).
pub(crate) fn is_ipv6(text: &str) -> bool {
    matches!(text.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_accepted() {
        for value in [
            "backend_a",
            "svc-a.default.svc.cluster.local",
            "svc.local:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::7]:443",
            "Example.COM",
            "a~b!$&'()*+,;=c",
            "caf%C3%A9.example",
            "x:1",
            "x:65535",
        ] {
            assert_eq!(host_problem(value), None, "{value}");
        }
    }

    #[test]
    fn what_is_not_a_host_value_says_why() {
        for (value, why) in [
            ("", "is empty"),
            (
                "outbound|80||svc-a.default.svc.cluster.local",
                "has '|', which a host cannot contain",
            ),
            (
                "httproute/default/backend/rule/0",
                "has '/', which a host cannot contain",
            ),
            ("has space", "has a space, which a host cannot contain"),
            ("caf\u{e9}", "has byte 0xc3, which a host cannot contain"),
            ("user@host", "has '@', which a host cannot contain"),
            ("bad%zz", "has a % not followed by two hex digits"),
            ("bad%4", "has a % not followed by two hex digits"),
            (":80", "has an empty host"),
            ("[::1", "has a [ without its ] at the end of the host"),
            ("[::1]x", "has a [ without its ] at the end of the host"),
            ("[not-v6]", "has no IPv6 address between [ and ]"),
            ("[127.0.0.1]", "has no IPv6 address between [ and ]"),
            ("::1", "is an IPv6 address without the [ ]"),
            ("x::1", "has \":1\" after the :, not a port"),
            ("x:", "has \"\" after the :, not a port"),
            ("x:0", "has port 0, not between 1 and 65535"),
            ("x:65536", "has port 65536, not between 1 and 65535"),
            ("x:99999", "has port 99999, not between 1 and 65535"),
            ("x:000000", "has port 000000, not between 1 and 65535"),
            ("x:+80", "has \"+80\" after the :, not a port"),
            ("x:1:2", "has \"1:2\" after the :, not a port"),
        ] {
            let problem = host_problem(value).unwrap_or_else(|| panic!("{value:?} accepted"));
            assert!(problem.contains(why), "{value:?}: {problem}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(problem(&long).as_deref(), Some("is longer than 256 bytes"));
        assert_eq!(
            host_problem("a/b").as_deref(),
            Some(&*format!(
                "has '/', which a host cannot contain; {HOST_SYNTAX}"
            ))
        );
    }
}
