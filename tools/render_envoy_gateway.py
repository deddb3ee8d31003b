#!/usr/bin/env python3
"""Render deploy/envoy-gateway/ into the Envoy configuration Envoy Gateway would give its proxy.

Envoy Gateway turns Gateway API objects and its own policies into xDS. This script applies
the same translation rules to the manifests, for the objects and fields they use, and writes
one static Envoy config (JSON) that a plain Envoy runs on loopback: the listener, routes and
clusters Envoy Gateway would send over xDS are put in `static_resources`, the endpoints it
would send over EDS (pod addresses) are the loopback addresses given with `--endpoint`, and
the Wasm module is read from a local file instead of Envoy Gateway's Wasm cache.

Each rule below names the Envoy Gateway source it follows (paths in envoyproxy/gateway):

- names: listener and route configuration `<ns>/<gateway>/<listener>`, virtual host
  `<listener name>/<hostname with . as _>`, route `httproute/<ns>/<name>/rule/<r>/match/<m>/
  <hostname>`, cluster `httproute/<ns>/<name>/rule/<r>`, and `.../rule/<r>/backend/<b>` when
  a rule needs a cluster per backend (internal/gatewayapi/helpers.go irListenerName,
  irRouteName, irRouteDestinationName, irDestinationSettingName; route.go
  processHTTPRouteParentRefListener; internal/xds/translator/translator.go virtualHostName;
  listener.go routeConfigName);
- route order: the Gateway API's precedence, sorted stably in reverse (internal/gatewayapi/
  sort.go): exact path before regex before prefix, longer paths, more header matches, more
  exact header matches, more query matches first;
- route actions: one cluster, or weighted clusters when a backend has its own filters
  (internal/ir/xds.go NeedsClusterPerSetting; internal/xds/translator/route.go
  buildXdsRouteAction, buildXdsWeightedRouteAction, applyWeightedClusterFilters); a
  URLRewrite hostname is `host_rewrite_literal` with `append_x_forwarded_host`
  (buildXdsURLRewriteAction); a rule without usable backends answers 500;
- the Wasm filter: one per EnvoyExtensionPolicy `wasm[]` entry, added to the connection
  manager disabled and enabled on each route of the targeted HTTPRoute with an empty
  FilterConfig; filter name `envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<policy>/wasm/
  <i>`, plugin name `wasm[].name` (else that IR name), `vm_id` the IR name, `root_id` the
  `rootID`, `configuration` the `config` as JSON in a StringValue, `fail_open` the `failOpen`
  (internal/gatewayapi/envoyextensionpolicy.go buildWasm, irConfigNameForWasm;
  internal/xds/translator/wasm.go);
- the early header mutation: a ClientTrafficPolicy's `headers.earlyRequestHeaders.remove`
  becomes `early_header_mutation_extensions` of the connection manager
  (internal/gatewayapi/clienttrafficpolicy.go; internal/xds/translator/listener.go
  buildEarlyHeaderMutation, header_mutation.go buildHeaderMutationRules);
- the bootstrap `Merge` of the EnvoyProxy the GatewayClass names in `parametersRef` (eisodos'
  stats tags), applied as Envoy Gateway applies it (internal/xds/bootstrap);
- the connection manager, router and cluster settings Envoy Gateway always sets
  (internal/xds/translator/listener.go addHCMToXDSListener, cluster.go; as in an
  `egctl x translate` output).

Left out, as they do not change routing: access logs, the proxy's stats and readiness
listeners, the xDS and Wasm-cache clusters, and the bootstrap's overload manager.

Anything in the manifests this script does not translate is an error, not ignored.

    render_envoy_gateway.py --wasm target/wasm32-wasip1/release/eisodos.wasm \\
        --admin-port 19000 --listener-port 10080 \\
        --endpoint svc-a=127.0.0.1:8001 --endpoint svc-b=127.0.0.1:8002 \\
        --endpoint svc-c=127.0.0.1:8003 > envoy-gateway.json
    render_envoy_gateway.py --describe   # eisodos' backends and the Services behind them
"""

import argparse
import glob
import json
import os
import sys

import yaml

GATEWAY_API = "gateway.networking.k8s.io"
EG_API = "gateway.envoyproxy.io"
WASM_FILTER = "envoy.filters.http.wasm"
ROUTER_FILTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"
TYPE = "type.googleapis.com/"
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy", "envoy-gateway")


class RenderError(Exception):
    """The manifests use something this translation does not cover, or are inconsistent."""


def load(directory):
    docs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            docs.extend((path, d) for d in yaml.safe_load_all(f) if d)
    if not docs:
        raise RenderError(f"no manifests in {directory}")
    return docs


def of_kind(docs, group, kind):
    return [d for _, d in docs if d.get("kind") == kind and d.get("apiVersion", "").startswith(group + "/")]


def ns(obj):
    return obj["metadata"].get("namespace", "default")


def targets(policy, kind):
    """(namespace, name) of the policy's targetRefs of `kind` (targetRef, targetRefs)."""
    spec = policy["spec"]
    if "targetSelectors" in spec:
        raise RenderError(f"{policy['kind']} {policy['metadata']['name']}: targetSelectors not translated")
    refs = spec.get("targetRefs") or ([spec["targetRef"]] if "targetRef" in spec else [])
    for ref in refs:
        if ref.get("sectionName"):
            raise RenderError(f"{policy['kind']} {policy['metadata']['name']}: sectionName not translated")
    return {(ns(policy), r["name"]) for r in refs if r.get("kind") == kind}


def the_listener(docs):
    """The one Gateway and its one HTTP listener (all this translation covers)."""
    gateways = of_kind(docs, GATEWAY_API, "Gateway")
    if len(gateways) != 1:
        raise RenderError(f"expected one Gateway, found {len(gateways)}")
    gateway = gateways[0]
    listeners = gateway["spec"]["listeners"]
    if len(listeners) != 1 or listeners[0].get("protocol") != "HTTP" or listeners[0].get("hostname"):
        raise RenderError("expected one HTTP listener without a hostname on the Gateway")
    return gateway, listeners[0]


def attached(route, gateway, listener):
    for ref in route["spec"].get("parentRefs", []):
        if ref.get("kind", "Gateway") != "Gateway" or ref["name"] != gateway["metadata"]["name"]:
            continue
        if ref.get("namespace", ns(route)) != ns(gateway):
            continue
        if ref.get("sectionName", listener["name"]) == listener["name"]:
            return True
    return False


def host_rewrite(filters, where):
    """The URLRewrite hostname among `filters`, the only filter translated."""
    hostname = None
    for f in filters or []:
        rewrite = f.get("urlRewrite") or {}
        if f.get("type") != "URLRewrite" or set(rewrite) - {"hostname"}:
            raise RenderError(f"{where}: only URLRewrite with a hostname is translated, got {f}")
        hostname = rewrite["hostname"]
    return hostname


def route_entries(route):
    """The IR routes of one HTTPRoute: one per rule and match, before hostnames and order."""
    prefix = f"httproute/{ns(route)}/{route['metadata']['name']}/"
    entries = []
    for r, rule in enumerate(route["spec"].get("rules", [])):
        where = f"{prefix}rule/{r}"
        unknown = set(rule) - {"matches", "filters", "backendRefs", "name"}
        if unknown:
            raise RenderError(f"{where}: {sorted(unknown)} not translated")
        backends = []
        for b, ref in enumerate(rule.get("backendRefs", [])):
            if ref.get("kind", "Service") != "Service" or ref.get("group", "") != "":
                raise RenderError(f"{where}: only Service backendRefs are translated")
            weight = ref.get("weight", 1)
            if weight == 0:
                continue  # route.go: a backendRef of weight 0 takes no traffic
            backends.append({
                "service": ref["name"],
                "namespace": ref.get("namespace", ns(route)),
                "port": ref["port"],
                "weight": weight,
                "host_rewrite": host_rewrite(ref.get("filters"), f"{where}/backend/{b}"),
                "setting": f"{where}/backend/{b}",
            })
        # The CRD defaults matches to one PathPrefix "/" match.
        for m, match in enumerate(rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]):
            unknown = set(match) - {"path", "headers"}
            if unknown:
                raise RenderError(f"{where}/match/{m}: {sorted(unknown)} not translated")
            path = match.get("path") or {"type": "PathPrefix", "value": "/"}
            headers = []
            for h in match.get("headers", []):
                if h.get("type", "Exact") != "Exact":
                    raise RenderError(f"{where}/match/{m}: only Exact header matches are translated")
                headers.append((h["name"], h["value"]))
            entries.append({
                "name": f"{where}/match/{m}",
                "route": route,
                "rule_name": rule.get("name"),
                "path_type": path.get("type", "PathPrefix"),
                "path": path.get("value", "/"),
                "headers": headers,
                "host_rewrite": host_rewrite(rule.get("filters"), where),
                "cluster": where,
                "backends": backends,
            })
    return entries


def precedence(entry):
    """internal/gatewayapi/sort.go's Less as a key (cookies and query params are not translated)."""
    rank = {"PathPrefix": 0, "RegularExpression": 1, "Exact": 2}[entry["path_type"]]
    length = 0 if entry["path_type"] == "PathPrefix" and entry["path"] == "/" else len(entry["path"])
    # Every translated header match is Exact: the count of exact ones is the count.
    return (rank, length, len(entry["headers"]), len(entry["headers"]))


def path_match(entry):
    kind, value = entry["path_type"], entry["path"]
    if kind == "Exact":
        return {"path": value}
    if kind == "RegularExpression":
        return {"safe_regex": {"regex": value}}
    if value == "/":
        return {"prefix": "/"}
    return {"path_separated_prefix": value.rstrip("/")}


def resources_metadata(kind, obj, section=None):
    resource = {"kind": kind, "name": obj["metadata"]["name"], "namespace": ns(obj)}
    if section:
        resource["sectionName"] = section
    return {"filter_metadata": {"envoy-gateway": {"resources": [resource]}}}


def needs_cluster_per_backend(entry):
    return any(b["host_rewrite"] for b in entry["backends"])


def xds_route(entry, hostname, wasm_filters):
    route = {
        "name": f"{entry['name']}/{hostname.replace('.', '_')}",
        "match": dict(path_match(entry)),
        "metadata": resources_metadata("HTTPRoute", entry["route"], entry["rule_name"]),
    }
    if entry["headers"]:
        route["match"]["headers"] = [{"name": n, "string_match": {"exact": v}} for n, v in entry["headers"]]
    if not entry["backends"]:
        route["direct_response"] = {"status": 500}
    elif needs_cluster_per_backend(entry):
        clusters = []
        for b in entry["backends"]:
            cluster = {"name": b["setting"], "weight": b["weight"]}
            if b["host_rewrite"]:
                cluster["host_rewrite_literal"] = b["host_rewrite"]
            clusters.append(cluster)
        route["route"] = {
            "cluster_not_found_response_code": "INTERNAL_SERVER_ERROR",
            "weighted_clusters": {"clusters": clusters},
            "upgrade_configs": [{"upgrade_type": "websocket"}],
        }
    else:
        route["route"] = {"cluster": entry["cluster"], "upgrade_configs": [{"upgrade_type": "websocket"}]}
    if entry["host_rewrite"] and "route" in route:
        route["route"]["host_rewrite_literal"] = entry["host_rewrite"]
        route["route"]["append_x_forwarded_host"] = True
    enabled = wasm_filters.get((ns(entry["route"]), entry["route"]["metadata"]["name"]), [])
    if enabled:
        route["typed_per_filter_config"] = {
            name: {"@type": TYPE + "envoy.config.route.v3.FilterConfig", "config": {}} for name in enabled
        }
    return route


def xds_clusters(entries, endpoints):
    """One cluster per rule, or per backend where the rule needs it (cluster.go, EDS made static)."""
    clusters, seen = [], set()

    def cluster(name, backends, route):
        if name in seen:
            return
        seen.add(name)
        localities = []
        for b in backends:
            address = endpoints.get(b["service"], endpoints.get("*"))
            if address is None:
                raise RenderError(f"no --endpoint for Service {b['service']} (cluster {name})")
            host, port = address
            localities.append({
                "locality": {"region": b["setting"]},
                "load_balancing_weight": b["weight"],
                "lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}},
                    "load_balancing_weight": 1,
                }],
                "metadata": {"filter_metadata": {"envoy-gateway": {"resources": [{
                    "kind": "Service", "name": b["service"], "namespace": b["namespace"],
                    "sectionName": str(b["port"]),
                }]}}},
            })
        clusters.append({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "10s",
            "per_connection_buffer_limit_bytes": 32768,
            "dns_lookup_family": "V4_PREFERRED",
            "ignore_health_on_host_removal": True,
            "common_lb_config": {},
            "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
            "load_balancing_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.least_request",
                "typed_config": {
                    "@type": TYPE + "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                    "locality_lb_config": {"locality_weighted_lb_config": {}},
                },
            }}]},
            "metadata": resources_metadata("HTTPRoute", route),
            "load_assignment": {"cluster_name": name, "endpoints": localities},
        })

    for entry in entries:
        if not entry["backends"]:
            continue
        if needs_cluster_per_backend(entry):
            for b in entry["backends"]:
                cluster(b["setting"], [b], entry["route"])
        else:
            cluster(entry["cluster"], entry["backends"], entry["route"])
    return clusters


def wasm_filters(docs, wasm_path):
    """The connection manager's Wasm filters, and which HTTPRoute enables which (wasm.go)."""
    filters, enabled_on = [], {}
    for policy in of_kind(docs, EG_API, "EnvoyExtensionPolicy"):
        if set(policy["spec"]) - {"targetRef", "targetRefs", "wasm"}:
            raise RenderError(f"EnvoyExtensionPolicy {policy['metadata']['name']}: only wasm is translated")
        routes = targets(policy, "HTTPRoute")
        for i, wasm in enumerate(policy["spec"].get("wasm", [])):
            ir_name = f"envoyextensionpolicy/{ns(policy)}/{policy['metadata']['name']}/wasm/{i}"
            config = {
                "name": wasm.get("name", ir_name),
                "vm_config": {
                    "vm_id": ir_name,
                    "runtime": "envoy.wasm.runtime.v8",
                    # Envoy Gateway serves the module from its cache over HTTP (a `remote`
                    # source with the sha256 of the .wasm); here it is the local file.
                    "code": {"local": {"filename": wasm_path}},
                },
                # The API server hands `config` over as JSON: compact, keys sorted.
                "configuration": {
                    "@type": TYPE + "google.protobuf.StringValue",
                    "value": json.dumps(wasm["config"], separators=(",", ":"), sort_keys=True)
                    if "config" in wasm else "",
                },
            }
            if wasm.get("failOpen"):
                config["fail_open"] = True
            if wasm.get("rootID") is not None:
                config["root_id"] = wasm["rootID"]
            name = f"{WASM_FILTER}/{ir_name}"
            filters.append({
                "name": name,
                "disabled": True,
                "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.wasm.v3.Wasm", "config": config},
            })
            for route in routes:
                enabled_on.setdefault(route, []).append(name)
    return filters, enabled_on


def early_removals(docs, gateway):
    removed = []
    for policy in of_kind(docs, EG_API, "ClientTrafficPolicy"):
        if (ns(gateway), gateway["metadata"]["name"]) not in targets(policy, "Gateway"):
            continue
        headers = policy["spec"].get("headers", {})
        if set(policy["spec"]) - {"targetRef", "targetRefs", "headers"} or set(headers) - {"earlyRequestHeaders"} \
                or set(headers.get("earlyRequestHeaders", {})) - {"remove"}:
            raise RenderError(f"ClientTrafficPolicy {policy['metadata']['name']}: only "
                              "headers.earlyRequestHeaders.remove is translated")
        removed.extend(headers.get("earlyRequestHeaders", {}).get("remove", []))
    return removed


def routed_entries(docs):
    gateway, listener = the_listener(docs)
    entries = []
    for route in of_kind(docs, GATEWAY_API, "HTTPRoute"):
        if attached(route, gateway, listener):
            entries.extend(route_entries(route))
    # Sorted per listener over all its routes, stably, most specific first.
    entries.sort(key=precedence, reverse=True)
    return gateway, listener, entries


def eisodos_backends(docs, entries):
    """Each eisodos backend with the Service behind it; checks the names agree."""
    described = []
    for policy in of_kind(docs, EG_API, "EnvoyExtensionPolicy"):
        for wasm in policy["spec"].get("wasm", []):
            config = wasm.get("config")
            if not isinstance(config, dict) or "backends" not in config:
                continue
            header = config.get("cluster_header", "x-eisodos-cluster")
            if header.lower() not in (h.lower() for h in early_removals(docs, the_listener(docs)[0])):
                raise RenderError(f"{header} is not removed early by a ClientTrafficPolicy: a client could pick")
            for i, backend in enumerate(config["backends"]):
                cluster = backend["cluster"]
                # The first route (in Envoy's order) that the header value selects must be
                # the rule whose generated cluster has that very name.
                chosen = next((e for e in entries if (header, cluster) in
                               {(n.lower(), v) for n, v in e["headers"]}), None)
                if chosen is None or chosen["cluster"] != cluster or len(chosen["backends"]) != 1 \
                        or needs_cluster_per_backend(chosen):
                    raise RenderError(
                        f"backends[{i}].cluster {cluster}: no HTTPRoute rule both matches "
                        f"{header}: {cluster} and is generated as that one cluster")
                b = chosen["backends"][0]
                described.append({"cluster": cluster, "service": b["service"], "port": b["port"],
                                  "authority": backend.get("authority"),
                                  "host_rewrite": chosen["host_rewrite"]})
    if not described:
        raise RenderError("no eisodos configuration (a wasm[].config with backends)")
    return described


def merge_bootstrap(base, extra):
    """A bootstrap `Merge` as Envoy Gateway applies it (internal/xds/bootstrap, ApplyBootstrap
    with BootstrapTypeMerge): objects merged key by key, lists appended, scalars replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_bootstrap(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list):
            base[key].extend(value)
        else:
            base[key] = value


def envoy_proxy_bootstrap(docs, gateway):
    """The bootstrap `Merge` of the EnvoyProxy the GatewayClass's `parametersRef` names (the
    GatewayClass-wide proxy settings; internal/gatewayapi, processGatewayClassParamsRef), or
    {} without one. Only `spec.bootstrap` with `type: Merge` is translated."""
    classes = [c for c in of_kind(docs, GATEWAY_API, "GatewayClass")
               if c["metadata"]["name"] == gateway["spec"]["gatewayClassName"]]
    ref = classes[0]["spec"].get("parametersRef") if classes else None
    if ref is None:
        return {}
    if ref.get("group") != EG_API or ref.get("kind") != "EnvoyProxy":
        raise RenderError(f"GatewayClass parametersRef to {ref.get('group')}/{ref.get('kind')} not translated")
    proxies = [p for p in of_kind(docs, EG_API, "EnvoyProxy")
               if p["metadata"]["name"] == ref["name"] and ns(p) == ref.get("namespace", "default")]
    if not proxies:
        raise RenderError(f"no EnvoyProxy {ref.get('namespace', 'default')}/{ref['name']} in the manifests")
    spec = proxies[0]["spec"]
    if set(spec) - {"bootstrap"}:
        raise RenderError(f"EnvoyProxy {ref['name']}: {sorted(set(spec) - {'bootstrap'})} not translated")
    bootstrap = spec.get("bootstrap") or {}
    if bootstrap.get("type", "Replace") != "Merge":
        raise RenderError(f"EnvoyProxy {ref['name']}: bootstrap type {bootstrap.get('type', 'Replace')} not translated")
    return yaml.safe_load(bootstrap["value"]) or {}


def render(docs, wasm_path, admin_port, listener_port, endpoints):
    gateway, listener, entries = routed_entries(docs)
    eisodos_backends(docs, entries)
    filters, enabled_on = wasm_filters(docs, wasm_path)
    name = f"{ns(gateway)}/{gateway['metadata']['name']}/{listener['name']}"
    hostnames = {}
    for entry in entries:
        for hostname in entry["route"]["spec"].get("hostnames") or ["*"]:
            hostnames.setdefault(hostname, []).append(xds_route(entry, hostname, enabled_on))
    virtual_hosts = [{
        "name": f"{name}/{hostname.replace('.', '_')}",
        "domains": [hostname],
        "metadata": resources_metadata("Gateway", gateway, listener["name"]),
        "routes": routes,
    } for hostname, routes in hostnames.items()]
    # Envoy Gateway moves ports below 1024 up by 10000 inside the proxy, and names stats by it.
    port = listener["port"] + 10000 if listener["port"] < 1024 else listener["port"]
    hcm = {
        "@type": TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"http-{port}",
        "route_config": {"name": name, "ignore_port_in_host_matching": True, "virtual_hosts": virtual_hosts},
        "http_filters": filters + [{
            "name": ROUTER_FILTER,
            "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.router.v3.Router",
                             "suppress_envoy_headers": True},
        }],
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "server_header_transformation": "PASS_THROUGH",
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "http2_protocol_options": {"initial_connection_window_size": 1048576,
                                   "initial_stream_window_size": 65536, "max_concurrent_streams": 100},
    }
    removed = early_removals(docs, gateway)
    if removed:
        hcm["early_header_mutation_extensions"] = [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": TYPE + "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": h} for h in removed],
            },
        }]
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "per_connection_buffer_limit_bytes": 32768,
                "max_connections_to_accept_per_socket_event": 1,
                "default_filter_chain": {"name": name, "filters": [{"name": HCM, "typed_config": hcm}]},
            }],
            "clusters": xds_clusters(entries, endpoints),
        },
    }
    merge_bootstrap(bootstrap, envoy_proxy_bootstrap(docs, gateway))
    return bootstrap


def endpoint(text):
    service, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not service or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected SERVICE=HOST:PORT, got {text}")
    return service, (host, int(port))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", default=DEFAULT_DIR, help="directory of manifests (deploy/envoy-gateway)")
    parser.add_argument("--describe", action="store_true",
                        help="print eisodos' backends and the Services behind them as JSON, and check they agree")
    parser.add_argument("--wasm", help="the eisodos .wasm the proxy loads")
    parser.add_argument("--admin-port", type=int)
    parser.add_argument("--listener-port", type=int)
    parser.add_argument("--endpoint", type=endpoint, action="append", default=[], metavar="SERVICE=HOST:PORT",
                        help="where a Service's endpoints are (repeat per Service; * for every Service)")
    args = parser.parse_args()
    try:
        docs = load(args.manifests)
        if args.describe:
            print(json.dumps(eisodos_backends(docs, routed_entries(docs)[2]), indent=2))
            return 0
        if not (args.wasm and args.admin_port and args.listener_port):
            parser.error("--wasm, --admin-port and --listener-port are required to render")
        config = render(docs, os.path.abspath(args.wasm), args.admin_port, args.listener_port, dict(args.endpoint))
    except RenderError as e:
        print(f"render_envoy_gateway: {e}", file=sys.stderr)
        return 1
    print(json.dumps(config, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
