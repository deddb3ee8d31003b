#!/usr/bin/env python3
"""Renders deploy/istio/ into the Envoy config Istio would hand the ingress gateway.

    tools/render_istio.py [--deploy deploy/istio] [--mesh tools/istio-mesh.yaml]
                          [--wasm PATH] [--admin-port N] [--listen 8080=PORT]
                          [--endpoint blue=PORT ...] [--out FILE]

It follows istiod's translation for a gateway (istio/istio 1.30, paths cited where each rule
is applied) and writes a static Envoy bootstrap (JSON) that real Envoy runs:

- clusters `outbound|<port>|<subset>|<fqdn>`, one per Service port and one per
  DestinationRule subset (pilot/pkg/model/service.go BuildSubsetKey,
  pilot/pkg/networking/core/cluster_builder.go);
- the listener `0.0.0.0_<targetPort>` per Gateway server, its connection manager and HTTP
  filters (pilot/pkg/networking/core/gateway.go, listener_builder.go);
- the route configuration `http.<targetPort>` with a virtual host `<host>:<port>` per
  VirtualService host bound to the Gateway (gateway.go buildGatewayHTTPRouteConfig);
- the WasmPlugin as an `envoy.filters.http.wasm` filter (pilot/pkg/model/extensions.go,
  pilot/pkg/config/kube/extensions/translate.go), its pluginConfig marshalled as Istio does;
- the EnvoyFilter patches, applied with Istio's semantics (pilot/pkg/networking/core/
  envoyfilter/listener_patch.go, rc_patch.go). Only the operations the manifests use are
  implemented; any other, or a patch that matches nothing, is an error rather than a silent
  skip, so the render cannot drift from the manifests unnoticed.

What a cluster would deliver over xDS is inlined: RDS's route configuration in the connection
manager, ECDS's Wasm filter in place of its `config_discovery`, EDS's endpoints as STATIC
clusters. As Istio's agent does (pkg/wasm/convert.go), the OCI reference becomes a local file
(--wasm) and the ISTIO_META_* VM variables are dropped. Left out because upstream Envoy lacks
them or loopback has no use for them: Istio's own filters (istio.metadata_exchange, istio.alpn,
istio.stats), mTLS transport sockets, tracing and access logs. The bootstrap's stats_config is
the part the agent derives from ProxyConfig: the extraStatTags of the gateway pod's
proxy.istio.io/config annotation (eisodos' metric labels) and the stats matcher's required
prefixes. Last, addresses become loopback and ports the ones given.
"""

import argparse
import copy
import decimal
import json
import math
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
# Istio's root namespace: EnvoyFilters there apply to every namespace's workloads.
ROOT_NAMESPACE = "istio-system"
# pilot/pkg/model/extensions.go: a WasmPlugin becomes a TrafficExtension named
# <name>~istio-translated-wasmplugin (translate.go), whose filter is named by this prefix.
TRAFFIC_EXTENSION_PREFIX = "extensions.istio.io/trafficextension/"
SYNTHETIC_MARKER = "~istio-translated-wasmplugin"
FAIL_STRATEGY = {"FAIL_OPEN": "FAIL_OPEN", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_RELOAD": "FAIL_RELOAD"}
# Phases in the order listener_builder.go appends them, each before the router.
PHASES = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"]


class RenderError(Exception):
    """The manifests or the mesh description cannot be rendered as given."""


# ---- Istio's JSON for a pluginConfig Struct -------------------------------------------------


def go_float(value):
    """A float64 as Go's encoding/json writes it (which github.com/golang/protobuf/jsonpb,
    behind Istio's protomarshal.ToJSON, uses for a Struct's numbers): the shortest
    round-tripping digits, positional below 1e21 and from 1e-6, else an exponent without
    leading zeros (1e+21, 1e-7)."""
    if math.isnan(value) or math.isinf(value):
        raise RenderError(f"pluginConfig: {value} cannot be written as JSON")
    if value == 0:
        return "0" if math.copysign(1, value) > 0 else "-0"
    shortest = repr(value)
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        mantissa, _, exponent = format(decimal.Decimal(shortest), "e").partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        return f"{mantissa}e{'+' if sign == '+' else '-'}{digits}"
    text = format(decimal.Decimal(shortest), "f")
    return text[:-2] if text.endswith(".0") else text


def go_string(text):
    """A string as Go's encoding/json writes it: UTF-8, with <, >, & and the line and paragraph
    separators escaped (HTML-safe, its default)."""
    out = json.dumps(text, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(char, escape)
    return out


def struct_json(value):
    """A YAML value as google.protobuf.Value in jsonpb's compact JSON: every number a double,
    object keys sorted (jsonpb sorts a Struct's map), no spaces."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return go_float(float(value))
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(struct_json(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(go_string(k) + ":" + struct_json(v) for k, v in items) + "}"
    raise RenderError(f"pluginConfig: {value!r} is not a JSON value")


# ---- manifests and the mesh ------------------------------------------------------------------


def load_manifests(deploy):
    docs = []
    for path in sorted(Path(deploy).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["_file"] = str(path)
                docs.append(doc)
    return docs


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def selects(selector_labels, labels):
    return all(labels.get(k) == v for k, v in (selector_labels or {}).items())


def namespaced(doc):
    meta = doc.get("metadata", {})
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


# ---- clusters (cluster_builder.go) -------------------------------------------------------------


def subset_key(subset, host, port):
    """pilot/pkg/model/service.go BuildSubsetKey."""
    return f"outbound|{port}|{subset}|{host}"


def cluster(name, service, endpoints, subset=None):
    host = service["host"]
    parts = host.split(".")
    meta = {"services": [{"host": host, "name": parts[0], "namespace": parts[1]}]}
    if subset:
        meta["subset"] = subset
    return {
        "name": name,
        # EDS in Istio; its endpoints inlined here.
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{
            "max_connections": 4294967295, "max_pending_requests": 4294967295,
            "max_requests": 4294967295, "max_retries": 4294967295, "track_remaining": True}]},
        "common_lb_config": {},
        "metadata": {"filter_metadata": {"istio": meta}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": e["address"], "port_value": e["port"]}}}}
            for e in endpoints]}]},
    }


def build_clusters(docs, mesh):
    rules = {d["spec"]["host"]: d for d in of_kind(docs, "DestinationRule")}
    clusters = []
    for service in mesh["services"]:
        host, port = service["host"], service["port"]
        clusters.append(cluster(subset_key("", host, port), service, service["endpoints"]))
        for subset in (rules.get(host, {}).get("spec", {}).get("subsets") or []):
            members = [e for e in service["endpoints"] if selects(subset.get("labels"), e["labels"])]
            if not members:
                raise RenderError(f"subset {subset['name']} of {host} selects no endpoint of the mesh")
            clusters.append(cluster(subset_key(subset["name"], host, port), service, members, subset["name"]))
    # Istio gives every proxy a cluster with no endpoints for traffic it must drop.
    clusters.append({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s",
                     "load_assignment": {"cluster_name": "BlackHoleCluster"}})
    return clusters


# ---- routes (gateway.go, route/route.go) -------------------------------------------------------


def service_of(mesh, host):
    for service in mesh["services"]:
        if service["host"] == host:
            return service
    raise RenderError(f"no service {host} in the mesh description")


def vs_route(mesh, http):
    """A VirtualService http route as route/route.go translates it (the fields this gateway's
    routes need: name, match, destinations and weights, authority rewrite, Istio's defaults)."""
    if http.get("match"):
        raise RenderError("VirtualService http[].match is not rendered; the shipped routes have none")
    destinations = []
    for dest in http["route"]:
        d = dest["destination"]
        port = (d.get("port") or {}).get("number") or service_of(mesh, d["host"])["port"]
        destinations.append((subset_key(d.get("subset", ""), d["host"], port), dest.get("weight", 100)))
    action = {"timeout": "0s", "max_grpc_timeout": "0s",
              # route/retry/retry.go DefaultPolicy
              "retry_policy": {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                               "num_retries": 2, "host_selection_retry_max_attempts": 5,
                               "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                                         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]}}
    if len(destinations) == 1:
        action["cluster"] = destinations[0][0]
    else:
        action["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in destinations]}
    authority = (http.get("rewrite") or {}).get("authority")
    if authority:
        action["host_rewrite_literal"] = authority
    first = http["route"][0]["destination"]
    return {"name": http.get("name", ""), "match": {"prefix": "/"}, "route": action,
            "decorator": {"operation": f"{first['host']}:{service_of(mesh, first['host'])['port']}/*"}}


def build_route_config(docs, mesh, gateway, server, target_port):
    """gateway.go buildGatewayHTTPRouteConfig: RDS name http.<targetPort>, a virtual host
    `<host>:<server port>` per host of a VirtualService bound to this Gateway."""
    name = f"http.{target_port}"
    gw_ref = namespaced(gateway)
    vhosts = []
    for vs in of_kind(docs, "VirtualService"):
        spec = vs["spec"]
        ns = vs["metadata"].get("namespace", "default")
        bound = [g if "/" in g else f"{ns}/{g}" for g in spec.get("gateways", [])]
        if gw_ref not in bound:
            continue
        routes = [vs_route(mesh, http) for http in spec.get("http", [])]
        for host in spec["hosts"]:
            if host not in server["hosts"] and "*" not in server["hosts"]:
                continue
            vhosts.append({"name": f"{host.lower()}:{server['port']['number']}",
                           "domains": [host.lower()], "routes": copy.deepcopy(routes)})
    if not vhosts:
        vhosts = [{"name": f"blackhole:{server['port']['number']}", "domains": ["*"], "routes": []}]
    return {"name": name, "virtual_hosts": vhosts, "validate_clusters": False,
            "ignore_port_in_host_matching": True, "max_direct_response_body_size_bytes": 1048576}


# ---- the Wasm filter (extensions.go, extensionfilter.go, pkg/wasm/convert.go) ------------------


def wasm_plugins_for(docs, gateway_labels, target_port):
    plugins = []
    for wp in of_kind(docs, "WasmPlugin"):
        spec = wp["spec"]
        if spec.get("targetRefs") or spec.get("targetRef"):
            raise RenderError(f"{wp['_file']}: targetRefs is not rendered (Gateway API gateways only)")
        if not selects((spec.get("selector") or {}).get("matchLabels"), gateway_labels):
            continue
        matches = spec.get("match") or []
        # extensions.go matchTrafficSelectorCommon: a gateway is a CLIENT; no ports means all.
        if matches and not any(
                m.get("mode", "CLIENT_AND_SERVER") in ("CLIENT", "CLIENT_AND_SERVER", "UNDEFINED")
                and (not m.get("ports") or any(p.get("number") == target_port for p in m["ports"]))
                for m in matches):
            continue
        plugins.append(wp)
    return plugins


def wasm_filter(wp, wasm_path):
    spec = wp["spec"]
    ns = wp["metadata"].get("namespace", "default")
    name = f"{ns}.{wp['metadata']['name']}{SYNTHETIC_MARKER}"
    config = {"name": name, "root_id": spec.get("pluginName", ""),
              # buildVMConfig sets no vm_id; the agent strips the ISTIO_META_* variables,
              # leaving no environment at all.
              "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": str(wasm_path)}}}}
    plugin_config = spec.get("pluginConfig")
    config["configuration"] = {"@type": STRING_VALUE_TYPE, "value": struct_json(plugin_config)} \
        if plugin_config else {}
    if spec.get("failStrategy"):
        config["failure_policy"] = FAIL_STRATEGY[spec["failStrategy"]]
    # ECDS's resource inlined in place of `config_discovery`.
    return {"name": TRAFFIC_EXTENSION_PREFIX + name, "typed_config": {"@type": WASM_TYPE, "config": config}}


def http_filters(docs, gateway_labels, target_port, wasm_path):
    """listener_builder.go buildHTTPConnectionManager: the plugins by phase (within a phase,
    higher priority first), then grpc_stats, fault, cors and the router."""
    plugins = wasm_plugins_for(docs, gateway_labels, target_port)
    filters = []
    for phase in PHASES:
        in_phase = [p for p in plugins if p["spec"].get("phase", "UNSPECIFIED_PHASE") == phase]
        in_phase.sort(key=lambda p: -p["spec"].get("priority", 0))
        filters += [wasm_filter(p, wasm_path) for p in in_phase]
    filters += [
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": True, "stats_for_all_methods": False}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    return filters


# ---- the listener (gateway.go, listener_builder.go) ------------------------------------------


def build_listener(docs, mesh, wasm_path):
    gw_mesh = mesh["gateway"]
    target_of = {p["port"]: p["targetPort"] for p in gw_mesh["ports"]}
    gateways = [g for g in of_kind(docs, "Gateway") if selects(g["spec"].get("selector"), gw_mesh["labels"])]
    if len(gateways) != 1 or len(gateways[0]["spec"]["servers"]) != 1:
        raise RenderError("the render handles one Gateway with one server for the gateway's labels")
    gateway = gateways[0]
    server = gateway["spec"]["servers"][0]
    if server["port"]["protocol"] != "HTTP":
        raise RenderError("the render handles an HTTP server")
    target = target_of.get(server["port"]["number"])
    if target is None:
        raise RenderError(f"the gateway Service has no port {server['port']['number']}")
    hcm = {
        "stat_prefix": f"outbound_0.0.0.0_{target}",
        "route_config": build_route_config(docs, mesh, gateway, server, target),
        "http_filters": http_filters(docs, gw_mesh["labels"], target, wasm_path),
        # buildGatewayConnectionManager and buildHTTPConnectionManager's settings for a gateway.
        "use_remote_address": True,
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": True, "cert": True, "dns": True, "uri": True},
        "server_name": "istio-envoy",
        "http_protocol_options": {},
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
    }
    hcm = {"@type": HCM_TYPE, **hcm}
    listener = {
        "name": f"0.0.0.0_{target}",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": target}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
    }
    port_map = {target: {server["port"]["number"]}}
    return listener, port_map


# ---- EnvoyFilter patches (envoyfilter/*.go) ---------------------------------------------------


def proto_merge(dst, src, path="value"):
    """proto.Merge on the JSON form: messages merge field by field, repeated fields append,
    scalars are replaced (pkg/proto/merge, util.MergeAnyWithAny for a typed_config)."""
    for key, value in src.items():
        if key == "@type" and key in dst and dst[key] != value:
            raise RenderError(f"{path}: cannot merge {value} into {dst[key]}")
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            proto_merge(dst[key], value, f"{path}.{key}")
        elif isinstance(value, list) and isinstance(dst.get(key), list):
            dst[key] = dst[key] + copy.deepcopy(value)
        else:
            dst[key] = copy.deepcopy(value)


def envoy_filters_for(docs, mesh):
    """The EnvoyFilters that apply to the gateway, in Istio's order: by priority, then (no
    creation time here) by namespace and name."""
    gw = mesh["gateway"]
    chosen = []
    for ef in of_kind(docs, "EnvoyFilter"):
        ns = ef["metadata"].get("namespace", "default")
        if ns not in (gw["namespace"], ROOT_NAMESPACE):
            continue
        if ef["spec"].get("targetRefs"):
            raise RenderError(f"{ef['_file']}: targetRefs is not rendered")
        if not selects((ef["spec"].get("workloadSelector") or {}).get("labels"), gw["labels"]):
            continue
        chosen.append(ef)
    chosen.sort(key=lambda ef: (ef["spec"].get("priority", 0), namespaced(ef)))
    return chosen


def apply_listener_patch(listener, patch, where):
    match = patch.get("match") or {}
    lm = match.get("listener") or {}
    if lm.get("portNumber") and lm["portNumber"] != listener["address"]["socket_address"]["port_value"]:
        return False
    if lm.get("name") and lm["name"] != listener["name"]:
        return False
    wanted = ((lm.get("filterChain") or {}).get("filter") or {}).get("name")
    if wanted != HCM or (lm.get("filterChain") or {}).get("filter", {}).get("subFilter"):
        raise RenderError(f"{where}: only a connection-manager filter match is rendered")
    if patch["patch"]["operation"] != "MERGE":
        raise RenderError(f"{where}: only MERGE is rendered for NETWORK_FILTER")
    applied = False
    for chain in listener["filter_chains"]:
        for flt in chain["filters"]:
            if flt["name"] == HCM:
                value = patch["patch"]["value"]
                if set(value) - {"name", "typed_config"}:
                    raise RenderError(f"{where}: a filter patch sets name and typed_config only")
                proto_merge(flt["typed_config"], value.get("typed_config", {}), where)
                applied = True
    return applied


def apply_route_patch(route_config, port_map, patch, where):
    rm = (patch.get("match") or {}).get("routeConfiguration") or {}
    target = int(route_config["name"].split(".")[1])
    # rc_patch.go routeConfigurationMatch/anyPortMatches: a gateway route patch matches the
    # server port or the port bound.
    if rm.get("portNumber") and rm["portNumber"] not in port_map.get(target, {target}):
        return False
    if rm.get("name") and rm["name"] != route_config["name"]:
        return False
    vm = rm.get("vhost") or {}
    if vm.get("route"):
        raise RenderError(f"{where}: a route match inside the vhost is not rendered")
    operation = patch["patch"]["operation"]
    applied = False
    for vhost in route_config["virtual_hosts"]:
        if vm.get("name") and vm["name"] != vhost["name"]:
            continue
        if vm.get("domainName") and vm["domainName"] not in vhost["domains"]:
            continue
        value = copy.deepcopy(patch["patch"]["value"])
        # patchHTTPRoutes: INSERT_FIRST (and INSERT_BEFORE) without a route match prepends,
        # ADD (and INSERT_AFTER) without one appends.
        if operation in ("INSERT_FIRST", "INSERT_BEFORE"):
            vhost["routes"].insert(0, value)
        elif operation in ("ADD", "INSERT_AFTER"):
            vhost["routes"].append(value)
        else:
            raise RenderError(f"{where}: {operation} on HTTP_ROUTE is not rendered")
        applied = True
    return applied


def apply_envoy_filters(docs, mesh, listener, port_map):
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    efs = envoy_filters_for(docs, mesh)
    # Istio patches listeners when it builds them and route configurations when it builds
    # those; within each, EnvoyFilters in order, patches in order.
    for apply_to in ("NETWORK_FILTER", "HTTP_ROUTE"):
        for ef in efs:
            for i, patch in enumerate(ef["spec"]["configPatches"]):
                if patch["applyTo"] not in ("NETWORK_FILTER", "HTTP_ROUTE"):
                    raise RenderError(f"{ef['_file']}: applyTo {patch['applyTo']} is not rendered")
                if patch["applyTo"] != apply_to:
                    continue
                where = f"{ef['_file']} configPatches[{i}]"
                context = (patch.get("match") or {}).get("context", "ANY")
                if context not in ("GATEWAY", "ANY"):
                    continue
                if apply_to == "NETWORK_FILTER":
                    applied = apply_listener_patch(listener, patch, where)
                else:
                    applied = apply_route_patch(hcm["route_config"], port_map, patch, where)
                if not applied:
                    raise RenderError(f"{where}: matches nothing in the rendered gateway")


# ---- loopback and the bootstrap ---------------------------------------------------------------


def parse_pairs(values, what):
    pairs = {}
    for value in values or []:
        key, sep, port = value.partition("=")
        if not sep or not port.isdigit():
            raise RenderError(f"--{what} {value}: expected NAME=PORT")
        pairs[key] = int(port)
    return pairs


def render(deploy, mesh_path, wasm_path, admin_port, listen, endpoint_ports):
    docs = load_manifests(deploy)
    mesh = yaml.safe_load(Path(mesh_path).read_text())
    for service in mesh["services"]:
        for e in service["endpoints"]:
            e["port"] = endpoint_ports.pop(e["name"], e["port"])
    if endpoint_ports:
        raise RenderError(f"--endpoint names no endpoint of the mesh: {sorted(endpoint_ports)}")
    listener, port_map = build_listener(docs, mesh, wasm_path)
    apply_envoy_filters(docs, mesh, listener, port_map)
    address = listener["address"]["socket_address"]
    address["address"] = "127.0.0.1"
    address["port_value"] = listen.get(str(address["port_value"]), address["port_value"])
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": stats_config(mesh["gateway"]),
        "static_resources": {"listeners": [listener], "clusters": build_clusters(docs, mesh)},
    }


# The stat prefixes istiod's bootstrap always lets through its stats matcher
# (requiredEnvoyStatsMatcherInclusionPrefixes in pkg/bootstrap/config.go). `wasm` covers the
# `wasmcustom.` stats of Wasm filters, eisodos' among them.
REQUIRED_INCLUSION_PREFIXES = ["cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm"]


def stats_config(gateway):
    """The bootstrap's stats_config as the agent writes it (pkg/bootstrap/config.go,
    getStatsOptions): each of the pod's extraStatTags (ProxyConfig, here from the
    proxy.istio.io/config annotation) becomes the tag regex `(<tag>=\\.=(.*?);\\.;)`, Envoy's
    default tags are off, and the matcher keeps the required prefixes. Istio's own tags for its
    standard metrics (reporter, source_workload, ...) are left out with istio.stats itself."""
    annotation = gateway.get("annotations", {}).get("proxy.istio.io/config", "{}")
    tags = yaml.safe_load(annotation).get("extraStatTags", [])
    return {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": tag, "regex": f"({tag}=\\.=(.*?);\\.;)"} for tag in tags],
        "stats_matcher": {"inclusion_list": {"patterns": [
            {"prefix": prefix} for prefix in REQUIRED_INCLUSION_PREFIXES]}},
    }


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploy", default=ROOT / "deploy/istio")
    parser.add_argument("--mesh", default=ROOT / "tools/istio-mesh.yaml")
    parser.add_argument("--wasm", default=ROOT / "target/wasm32-wasip1/release/eisodos.wasm")
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--listen", action="append", metavar="PORT=LOOPBACK_PORT",
                        help="bind the gateway's port PORT (8080) to this loopback port")
    parser.add_argument("--endpoint", action="append", metavar="NAME=PORT",
                        help="the port of the mesh endpoint NAME")
    parser.add_argument("--out", help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        config = render(args.deploy, args.mesh, Path(args.wasm).resolve(), args.admin_port,
                        parse_pairs(args.listen, "listen"), parse_pairs(args.endpoint, "endpoint"))
    except (RenderError, KeyError, TypeError, ValueError) as e:
        print(f"render_istio: {type(e).__name__ if not isinstance(e, RenderError) else 'error'}: {e}",
              file=sys.stderr)
        return 1
    text = json.dumps(config, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
