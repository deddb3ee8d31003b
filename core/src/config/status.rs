//! The status page: `status_path` and `status_allowed_cidrs`.

use std::net::IpAddr;

use super::json::Object;
use super::ConfigError;
use crate::ip;

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        // A network inside ::ffff:0:0/96 is the IPv4 network it maps, as the addresses
        // compared with it are ([`ip::canonical`]); a shorter prefix stays IPv6, and matches
        // no IPv4 client (`::/0` is every IPv6 client, not every client).
        Some(match (ip::canonical(network), prefix.checked_sub(96)) {
            (IpAddr::V4(v4), Some(v4_prefix)) if network.is_ipv6() => Self {
                network: IpAddr::V4(v4),
                prefix: v4_prefix,
            },
            _ => Self { network, prefix },
        })
    }

    /// Whether `ip` lies in this network. An IPv4-mapped IPv6 address matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip::canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = ip::mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = ip::mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The status page: a JSON view of every backend's health, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// Request path that answers with the status (exact match, query string ignored).
    pub path: String,
    /// Clients allowed to see it; others get the normal routing.
    pub allowed: Vec<Cidr>,
}

/// The status page: `status_path`, and `status_allowed_cidrs` (loopback when absent), which
/// needs it.
pub(super) fn read(top: &mut Object<'_>) -> Result<Option<StatusConfig>, ConfigError> {
    let path = match top.optional("status_path")? {
        Some(at) => {
            let path = at.string()?;
            if !path.starts_with('/')
                || path.contains('?')
                || path.len() > super::MAX_NAME_LEN
                || !path.bytes().all(|c| c.is_ascii_graphic())
            {
                return Err(at.error(
                    "must be a path starting with /, without a query, printable ASCII".to_owned(),
                ));
            }
            Some(path)
        }
        None => None,
    };
    let cidrs = top.optional("status_allowed_cidrs")?;
    let Some(path) = path else {
        return match cidrs {
            Some(at) => {
                Err(at.error("applies only with status_path; set it or remove this".to_owned()))
            }
            None => Ok(None),
        };
    };
    let allowed = match cidrs {
        None => vec![
            Cidr::parse("127.0.0.0/8").unwrap_or(Cidr {
                network: IpAddr::from([127, 0, 0, 1]),
                prefix: 8,
            }),
            Cidr::parse("::1/128").unwrap_or(Cidr {
                network: IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
                prefix: 128,
            }),
        ],
        Some(at) => {
            let items = at.array()?;
            let mut allowed = Vec::with_capacity(items.len());
            for item in items {
                let text = item.str()?;
                match Cidr::parse(text) {
                    Some(cidr) => allowed.push(cidr),
                    None => {
                        return Err(
                            item.error(format!("\"{text}\" is not an address or address/prefix"))
                        )
                    }
                }
            }
            allowed
        }
    };
    Ok(Some(StatusConfig { path, allowed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let loopback = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(loopback.contains("127.1.2.3".parse().unwrap()));
        assert!(!loopback.contains("128.0.0.1".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        let host = Cidr::parse("10.1.2.3").unwrap();
        assert!(host.contains("10.1.2.3".parse().unwrap()));
        assert!(!host.contains("10.1.2.4".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        // Written as IPv4-mapped IPv6: the IPv4 network, for IPv4 and mapped clients alike.
        let mapped = Cidr::parse("::ffff:192.0.2.0/120").unwrap();
        assert!(mapped.contains("192.0.2.7".parse().unwrap()));
        assert!(mapped.contains("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!mapped.contains("192.0.3.7".parse().unwrap()));
        let mapped_host = Cidr::parse("::ffff:10.0.0.1").unwrap();
        assert!(mapped_host.contains("10.0.0.1".parse().unwrap()));
        assert!(!mapped_host.contains("10.0.0.2".parse().unwrap()));
        // A prefix shorter than the mapped range stays IPv6: no IPv4 client is in `::/0`.
        assert!(!Cidr::parse("::/0")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        let everyone = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(everyone.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
