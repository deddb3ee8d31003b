//! Request-key extraction: the header, cookie, query, path and client-address readers.

use std::net::{IpAddr, SocketAddr};

use arbitrary::{Result, Unstructured};
use eisodos_core::config::{Empty, HashSource, IpHashConfig};
use eisodos_core::ip;
use eisodos_core::request_key::{self, StaticRequest, MAX_KEY_LEN};

/// Names sources look for, so that they meet the headers, cookies and parameters sent.
const NAMES: &[&str] = &["x-user", "session", "id", "a", "", "k", "user id", "x"];

fn name(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(if u.ratio(3, 4)? {
        (*u.choose(NAMES)?).to_owned()
    } else {
        u.arbitrary()?
    })
}

/// A `cookie` header or a query string: pairs of known names and arbitrary values with
/// arbitrary separators and padding, or arbitrary bytes.
fn pairs(u: &mut Unstructured<'_>, separators: &[&[u8]]) -> Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return u.arbitrary();
    }
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(0..=5)? {
        if !out.is_empty() {
            out.extend_from_slice(u.choose(separators)?);
        }
        out.extend_from_slice(name(u)?.as_bytes());
        if u.ratio(7, 8)? {
            out.extend_from_slice(u.choose(&[&b"="[..], b" = ", b"=="])?);
        }
        let value: &[u8] = u.arbitrary()?;
        out.extend_from_slice(value);
    }
    Ok(out)
}

fn address(u: &mut Unstructured<'_>) -> Result<(String, Option<IpAddr>)> {
    let ip = match u.int_in_range(0..=3)? {
        0 => IpAddr::V4(u.arbitrary::<u32>()?.into()),
        1 => IpAddr::V6(u.arbitrary::<u128>()?.into()),
        // IPv4-mapped IPv6.
        2 => IpAddr::V6(std::net::Ipv4Addr::from(u.arbitrary::<u32>()?).to_ipv6_mapped()),
        _ => return Ok((u.arbitrary()?, None)),
    };
    let text = if u.arbitrary()? {
        SocketAddr::new(ip, u.arbitrary()?).to_string()
    } else {
        ip.to_string()
    };
    Ok((text, Some(ip)))
}

/// One input.
pub fn run(input: &[u8]) {
    let _ = run_inner(&mut Unstructured::new(input));
}

fn run_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let mut sources = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        sources.push(match u.int_in_range(0..=4)? {
            0 => HashSource::Header(name(u)?),
            1 => HashSource::Cookie(name(u)?),
            2 => HashSource::Query(name(u)?),
            3 => HashSource::Path(Empty {}),
            _ => HashSource::SourceIp(Empty {}),
        });
    }
    let cookie = pairs(u, &[b"; ", b";", b";;", b" ; ", b","])?;
    let query = pairs(u, &[b"&", b"&&", b"#", b"?"])?;
    let mut path = b"/p".to_vec();
    if u.ratio(3, 4)? {
        path.push(b'?');
    }
    path.extend_from_slice(&query);
    let header_name = name(u)?;
    let header: &[u8] = u.arbitrary()?;
    let (address, ip) = address(u)?;
    let request = StaticRequest::default()
        .with_header("cookie", &cookie)
        .with_header(":path", &path)
        .with_header(&header_name, header)
        .with_source(&address);

    // A key is never empty and never longer than the limit, whatever the request holds.
    if let Some(key) = request_key::extract(&sources, &request) {
        assert!(
            !key.is_empty() && key.len() <= MAX_KEY_LEN,
            "key of {} bytes",
            key.len()
        );
    }
    // The first source decides when its value is usable.
    if let Some(HashSource::Header(wanted)) = sources.first() {
        if *wanted == header_name && !header.is_empty() && header.len() <= MAX_KEY_LEN {
            assert_eq!(
                request_key::extract(&sources, &request).as_deref(),
                Some(header)
            );
        }
    }

    // A cookie's value lies inside the header, trimmed, without a pair separator.
    let wanted = name(u)?;
    if let Some(value) = request_key::cookie(&cookie, wanted.as_bytes()) {
        let (start, end) = (
            cookie.as_ptr() as usize,
            cookie.as_ptr() as usize + cookie.len(),
        );
        let at = value.as_ptr() as usize;
        assert!(
            at >= start && at + value.len() <= end,
            "a slice of the header"
        );
        assert!(!value.contains(&b';'), "no separator in a value");
        assert_eq!(value.trim_ascii(), value, "trimmed");
    }

    // The client address: Envoy's forms parse back to the address, IPv4-mapped as IPv4.
    let parsed = request_key::client_ip(&address);
    if let Some(ip) = ip {
        assert_eq!(parsed, Some(ip::canonical(ip)), "{address}");
    }
    if let Some(IpAddr::V6(v6)) = parsed {
        assert!(
            v6.to_ipv4_mapped().is_none(),
            "mapped addresses count as IPv4"
        );
    }
    let config = IpHashConfig {
        ipv4_prefix: u.int_in_range(1..=32)?,
        ipv6_prefix: u.int_in_range(1..=128)?,
    };
    let key = request_key::ip_key(&address, config);
    assert_eq!(
        key.is_some(),
        parsed.is_some(),
        "a key for every address read"
    );
    if let Some(key) = key {
        // Masking is idempotent: the key of the key is the key.
        let text = String::from_utf8(key.clone()).unwrap_or_default();
        assert_eq!(request_key::ip_key(&text, config), Some(key), "{address}");
    }
    Ok(())
}
