//! The `:authority` (Host) each backend is probed with, resolved once per configuration:
//! `backends[i].authority`, else `health_check.authority`, else derived from the cluster name.
//!
//! A mesh's cluster names are not Hosts: Istio's `outbound|80||svc-a.default.svc.cluster.local`
//! and Envoy Gateway's `httproute/default/web/rule/0` would go out as they are, and a server
//! that checks its Host answers 400 to every probe. So a name is read for the host it carries,
//! and a name that carries none is rejected while health checks are on.

use super::host;
use super::{Backend, ConfigError};

/// The Host of every backend's probes, by backend index, with `health_check.authority`
/// (`shared`) as the fallback of a backend without its own.
pub(super) fn resolve(
    backends: &[Backend],
    shared: Option<&str>,
) -> Result<Vec<String>, ConfigError> {
    let mut authorities = Vec::with_capacity(backends.len());
    for (i, backend) in backends.iter().enumerate() {
        let authority = match backend.authority.as_deref().or(shared) {
            Some(authority) => authority.to_owned(),
            None => derive(&backend.cluster).map_err(|why| {
                ConfigError::new(
                    format!("backends[{i}].authority"),
                    format!(
                        "not set, and health checks are on: the cluster name \"{}\" {why}; set \
                         this (or health_check.authority) to the Host the backend answers to",
                        backend.cluster.escape_default()
                    ),
                )
            })?,
        };
        authorities.push(authority);
    }
    Ok(authorities)
}

/// Without `health_check` no probe is sent: a backend's `authority` would do nothing.
pub(super) fn unused(backends: &[Backend]) -> Result<(), ConfigError> {
    match backends.iter().position(|backend| backend.authority.is_some()) {
        Some(i) => Err(ConfigError::new(
            format!("backends[{i}].authority"),
            "applies only with health_check (it is the probes' Host); add health_check or remove this",
        )),
        None => Ok(()),
    }
}

/// The Host a cluster name carries, or why it carries none.
///
/// - Istio, `outbound|<port>|<subset>|<fqdn>` (and its SNI form
///   `outbound_.<port>_.<subset>_.<fqdn>`): the service's `<fqdn>`, with `:<port>` unless the
///   port is 80 or 443, as a client addressing the service sends it (RFC 9110 §7.2: the URI's
///   authority; RFC 3986 §6.2.3: a scheme's default port is left out). `inbound|<port>||`
///   names no service.
/// - Envoy Gateway's route-rule clusters, `<kind>route/<namespace>/<route>/rule/<n>`, carry no
///   host.
/// - Any other name that is a Host value is its own Host.
pub fn derive(cluster: &str) -> Result<String, String> {
    if let Some(derived) = istio(cluster) {
        return derived;
    }
    if envoy_gateway_route_rule(cluster) {
        return Err(
            "is an Envoy Gateway route-rule cluster, which carries no host (Envoy \
                    Gateway's own health checks default to the route's hostname)"
                .to_owned(),
        );
    }
    match host::problem(cluster) {
        None => Ok(cluster.to_owned()),
        Some(problem) => Err(format!("is not a valid Host ({problem})")),
    }
}

/// Istio's cluster names (`model.BuildSubsetKey` and `BuildDNSSrvSubsetKey` in
/// istio/istio's `pilot/pkg/model/service.go`): `None` for a name that is not one.
fn istio(cluster: &str) -> Option<Result<String, String>> {
    let (direction, rest, separator) = [
        ("outbound", "|"),
        ("inbound", "|"),
        ("outbound", "_."),
        ("inbound", "_."),
    ]
    .into_iter()
    .find_map(|(direction, separator)| {
        let rest = cluster.strip_prefix(direction)?.strip_prefix(separator)?;
        Some((direction, rest, separator))
    })?;
    // `<port>|<subset>|<fqdn>`, read as Istio's `ParseSubsetKey` reads it.
    let (port, rest) = cut(rest, separator)?;
    let (_subset, fqdn) = cut(rest, separator)?;
    let port = host::port_number(port)?;
    if cut(fqdn, separator).is_some() {
        return None;
    }
    if direction == "inbound" {
        return Some(Err(
            "is an Istio inbound cluster, which names no service host".to_owned(),
        ));
    }
    if fqdn.is_empty() {
        return Some(Err("is an Istio cluster without a service host".to_owned()));
    }
    if fqdn.starts_with('*') {
        return Some(Err(format!(
            "is the Istio cluster of the wildcard host {fqdn}, which names no one host"
        )));
    }
    // A service entry may name an IPv6 address: bracketed in a Host.
    let host = if host::is_ipv6(fqdn) {
        format!("[{fqdn}]")
    } else {
        fqdn.to_owned()
    };
    let authority = match port {
        80 | 443 => host,
        port => format!("{host}:{port}"),
    };
    Some(match host::problem(&authority) {
        None => Ok(authority),
        Some(problem) => Err(format!(
            "is an Istio cluster whose host is not valid ({problem})"
        )),
    })
}

/// `text` before and after the first `separator`. (By bytes: `str`'s substring search would
/// add several KB to the `.wasm` for these two short separators.)
fn cut<'a>(text: &'a str, separator: &str) -> Option<(&'a str, &'a str)> {
    if separator.is_empty() {
        return None;
    }
    let at = text
        .as_bytes()
        .windows(separator.len())
        .position(|window| window == separator.as_bytes())?;
    Some((text.get(..at)?, text.get(at + separator.len()..)?))
}

/// Envoy Gateway's route-rule cluster names (`irRouteDestinationName` in envoyproxy/gateway's
/// `internal/gatewayapi/helpers.go`): `httproute/<namespace>/<route>/rule/<n>`, likewise for
/// `grpcroute`, `tlsroute`, `tcproute`, `udproute` (`rule/-1` for a rule without index).
fn envoy_gateway_route_rule(cluster: &str) -> bool {
    let route_rule = || {
        let (kind, rest) = cut(cluster, "/")?;
        let (namespace, rest) = cut(rest, "/")?;
        let (route, rest) = cut(rest, "/")?;
        let index = rest.strip_prefix("rule/")?;
        let index = index.strip_prefix('-').unwrap_or(index);
        Some(
            kind.ends_with("route")
                && !namespace.is_empty()
                && !route.is_empty()
                && !index.is_empty()
                && index.bytes().all(|c| c.is_ascii_digit()),
        )
    };
    route_rule() == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, rejected};

    #[test]
    fn istio_names_give_the_service_host() {
        for (cluster, host) in [
            (
                "outbound|80||svc-a.default.svc.cluster.local",
                "svc-a.default.svc.cluster.local",
            ),
            (
                "outbound|80|v1|reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local",
            ),
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local:9080",
            ),
            ("outbound|443||api.example.com", "api.example.com"),
            (
                "outbound_.8080_._.svc-b.default.svc.cluster.local",
                "svc-b.default.svc.cluster.local:8080",
            ),
            (
                "outbound_.80_.v1_.reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local",
            ),
            ("outbound|8080||2001:db8::1", "[2001:db8::1]:8080"),
        ] {
            assert_eq!(derive(cluster).as_deref(), Ok(host), "{cluster}");
        }
    }

    #[test]
    fn a_name_that_is_a_host_is_its_own() {
        for cluster in [
            "backend_a",
            "svc.ns.svc.cluster.local",
            "127.0.0.1:8080",
            // Envoy Gateway's clusters for a URL (a JWKS or OIDC provider) read as Hosts.
            "oauth2_example_com_443",
            // Not Istio's shape (a port that is no port): an ordinary name.
            "outbound_.x_.y",
        ] {
            assert_eq!(derive(cluster).as_deref(), Ok(cluster), "{cluster}");
        }
    }

    #[test]
    fn names_that_carry_no_host_say_why() {
        for (cluster, why) in [
            ("inbound|8080||", "Istio inbound cluster"),
            (
                "inbound|80|http|svc.default.svc.cluster.local",
                "Istio inbound cluster",
            ),
            ("outbound|80||", "Istio cluster without a service host"),
            ("outbound|443||*.example.com", "wildcard host *.example.com"),
            (
                "outbound|80||bad host",
                "is an Istio cluster whose host is not valid",
            ),
            (
                "httproute/default/backend/rule/0",
                "Envoy Gateway route-rule cluster",
            ),
            (
                "grpcroute/default/backend/rule/3",
                "Envoy Gateway route-rule cluster",
            ),
            (
                "tcproute/default/backend/rule/-1",
                "Envoy Gateway route-rule cluster",
            ),
            // Envoy Gateway's merged backend clusters (`irBackendClusterName`): a Service's
            // name, not the Host its clients send.
            (
                "service/default/backend/3000",
                "is not a valid Host (has '/', which a host cannot contain)",
            ),
            ("outbound|80||a|b", "is not a valid Host"),
            ("outbound|http||svc", "is not a valid Host"),
        ] {
            let err = derive(cluster).expect_err(cluster);
            assert!(err.contains(why), "{cluster}: {err}");
        }
    }

    fn authorities(json: &str) -> Vec<String> {
        parse(json).unwrap().health_check.unwrap().probe_authorities
    }

    #[test]
    fn a_backend_authority_wins_over_the_shared_one_which_wins_over_the_name() {
        let config = r#"{"health_check": {"path": "/h", "authority": "shared.example"},
            "backends": [{"cluster": "outbound|80||a.ns.svc.cluster.local", "authority": "own.example:8080"},
                         {"cluster": "outbound|80||b.ns.svc.cluster.local"}]}"#;
        assert_eq!(authorities(config), ["own.example:8080", "shared.example"]);
        let config = r#"{"health_check": {"path": "/h"},
            "backends": [{"cluster": "httproute/ns/web/rule/0", "authority": "web.example"},
                         {"cluster": "outbound|80|v1|b.ns.svc.cluster.local"},
                         {"cluster": "backend_c"}]}"#;
        assert_eq!(
            authorities(config),
            ["web.example", "b.ns.svc.cluster.local", "backend_c"]
        );
    }

    #[test]
    fn a_name_without_a_host_is_rejected_only_with_health_checks_on() {
        let err = rejected(
            r#"{"health_check": {"path": "/h"},
                "backends": [{"cluster": "backend_a"}, {"cluster": "httproute/default/web/rule/0"}]}"#,
        );
        assert_eq!(err.field, "backends[1].authority");
        assert_eq!(
            err.reason,
            "not set, and health checks are on: the cluster name \"httproute/default/web/rule/0\" \
             is an Envoy Gateway route-rule cluster, which carries no host (Envoy Gateway's own \
             health checks default to the route's hostname); set this (or \
             health_check.authority) to the Host the backend answers to"
        );
        let err =
            rejected(r#"{"health_check": {"path": "/h"}, "backends": [{"cluster": "a,b/c"}]}"#);
        assert_eq!(err.field, "backends[0].authority");
        assert_eq!(
            err.reason,
            "not set, and health checks are on: the cluster name \"a,b/c\" is not a valid Host \
             (has '/', which a host cannot contain); set this (or health_check.authority) to the \
             Host the backend answers to"
        );
        let config = parse(
            r#"{"backends": [{"cluster": "httproute/default/web/rule/0"}, {"cluster": "inbound|8080||"}]}"#,
        )
        .unwrap();
        assert_eq!(config.health_check, None);
    }

    #[test]
    fn authorities_must_be_host_values() {
        for (json, field) in [
            (
                r#"{"health_check": {"path": "/h"}, "backends": [{"cluster": "a", "authority": "a|b"}]}"#,
                "backends[0].authority",
            ),
            (
                r#"{"health_check": {"path": "/h"}, "backends": [{"cluster": "a", "authority": ""}]}"#,
                "backends[0].authority",
            ),
            (
                r#"{"health_check": {"path": "/h"}, "backends": [{"cluster": "a"}, {"cluster": "b", "authority": 5}]}"#,
                "backends[1].authority",
            ),
            (
                r#"{"health_check": {"path": "/h", "authority": "svc/x"}, "backends": [{"cluster": "a"}]}"#,
                "health_check.authority",
            ),
            (
                r#"{"health_check": {"path": "/h", "authority": "svc.local:0"}, "backends": [{"cluster": "a"}]}"#,
                "health_check.authority",
            ),
        ] {
            assert_eq!(rejected(json).field, field, "{json}");
        }
        let err = rejected(
            r#"{"health_check": {"path": "/h", "authority": "user@svc.local"}, "backends": [{"cluster": "a"}]}"#,
        );
        assert!(
            err.reason
                .starts_with("has '@', which a host cannot contain; a Host is a name of"),
            "{err}"
        );
    }

    #[test]
    fn a_backend_authority_needs_health_checks() {
        let err = rejected(
            r#"{"backends": [{"cluster": "a"}, {"cluster": "b", "authority": "b.example"}]}"#,
        );
        assert_eq!(err.field, "backends[1].authority");
        assert!(
            err.reason.starts_with("applies only with health_check"),
            "{err}"
        );
        // `null` is unset, as for every optional field.
        parse(r#"{"backends": [{"cluster": "a", "authority": null}]}"#).unwrap();
    }
}
