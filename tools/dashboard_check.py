#!/usr/bin/env python3
"""Offline check of the docker-compose demo's monitoring: the Grafana dashboard, its provisioning,
the Prometheus config and docker-compose.yml, without Docker.

- Every query in compose/grafana/dashboards/eisodos.json (panels and template variables) parses
  as PromQL (PyPI `promql-parser`, the Rust crate's bindings), after Grafana's variables are
  replaced by sample values.
- Every metric a query names is exported by a real scrape of the shipped Envoy config
  (envoy/envoy.yaml, re-pointed at free ports, in front of three compose/upstream.py upstreams
  on loopback), with every label the query uses (matchers, `by`, `on`, legends). Two scrapes:
  the config as shipped (round-robin), then with `"policy": "least_request"`, which counts
  requests in flight. Each scrape follows traffic that exercises the families: requests, then
  every upstream failing until eisodos reports all backends down (failed probes, an ejection,
  local replies).
- The Prometheus config scrapes Envoy's admin port at /stats/prometheus; Grafana's provisioning
  names the datasource the dashboard uses and the directory docker-compose.yml mounts the
  dashboards at; docker-compose.yml mounts files that exist and publishes ports on loopback only.

`--scrape FILE` (repeatable) checks the dashboard against saved scrapes instead of starting
Envoy, e.g. `curl -s 127.0.0.1:9901/stats/prometheus > scrape.txt` from a running compose demo.
Prints one line per check and `N passed, N failed`; exits 1 when anything failed.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import promql_parser
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "compose"))
import upstream  # noqa: E402  (compose/upstream.py, the demo's upstream)

DASHBOARD = REPO / "compose/grafana/dashboards/eisodos.json"
DATASOURCES = REPO / "compose/grafana/provisioning/datasources/prometheus.yaml"
PROVIDERS = REPO / "compose/grafana/provisioning/dashboards/eisodos.yaml"
PROMETHEUS = REPO / "compose/prometheus.yml"
COMPOSE = REPO / "docker-compose.yml"
ENVOY_LOCAL = REPO / "envoy/envoy.yaml"
ENVOY_COMPOSE = REPO / "envoy/envoy-compose.yaml"

# Grafana's own variables, replaced by a value of the right kind before parsing.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "15m"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*(\w+)\s*\)\s*$")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
LABEL_PAIR = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')
# Long enough for three probe intervals of the shipped config on a busy machine.
ALL_DOWN_TIMEOUT_S = 60
READY_TIMEOUT_S = 60


class Report:
    """One line per check, printed unless quiet; `failures` decides the exit code."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.passed = 0
        self.failures = []
        self.missing_metrics = set()

    @property
    def failed(self):
        return len(self.failures)

    def ok(self, line):
        self.passed += 1
        if not self.quiet:
            print(f"ok: {line}")

    def fail(self, line):
        self.failures.append(line)
        if not self.quiet:
            print(f"FAILED: {line}")

    def check(self, condition, line, why=""):
        if condition:
            self.ok(line)
        else:
            self.fail(f"{line}{': ' + why if why else ''}")


# --- the dashboard's queries -------------------------------------------------------------------


def dashboard_queries(dashboard):
    """(where, expr, legend) for every panel target and every query variable."""
    queries = []
    for panel in all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                where = f'panel "{panel.get("title")}" [{target.get("refId")}]'
                queries.append((where, target["expr"], target.get("legendFormat", "")))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            expr = query.get("query") if isinstance(query, dict) else query
            queries.append((f'variable "{variable.get("name")}"', expr, ""))
    return queries


def all_panels(panels):
    """Panels, with those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def substitute(expr, variables):
    """`expr` with Grafana's variables replaced; a variable the dashboard lacks is an error."""

    def value(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name in BUILTIN_VARIABLES:
            return BUILTIN_VARIABLES[name]
        if name in variables:
            # Used inside a regex matcher: any value of the label.
            return ".*"
        raise ValueError(f"unknown variable ${name}")

    return VARIABLE.sub(value, expr)


def analyse(expr, variables):
    """(metric names, label names) a query uses; raises ValueError when it does not parse."""
    text = substitute(expr, variables)
    extra_labels = set()
    label_values = LABEL_VALUES.match(text)
    if label_values:
        # Grafana's label_values(selector, label) is not PromQL; its selector is.
        text, label = label_values.group(1), label_values.group(2)
        extra_labels.add(label)
    tree = promql_parser.parse(text)
    metrics, labels = set(), set(extra_labels)

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                metrics.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name != "__name__":
                    labels.add(matcher.name)
        modifier = getattr(node, "modifier", None)
        if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
            labels.update(modifier.labels)
        if isinstance(node, promql_parser.BinaryExpr) and modifier is not None:
            if modifier.matching is not None:
                labels.update(modifier.matching.labels)
            labels.update(modifier.group_labels or [])

    promql_parser.walk(tree, visit)
    return metrics, labels


def check_queries(report, dashboard, families):
    """Each query parses, and names only metrics and labels the scrapes export."""
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    for where, expr, legend in dashboard_queries(dashboard):
        one_line = " ".join(expr.split())
        try:
            metrics, labels = analyse(expr, variables)
        except ValueError as err:
            report.fail(f"{where} does not parse: {err}: {one_line}")
            continue
        report.ok(f"{where} parses: {one_line}")
        labels |= set(LEGEND_LABEL.findall(legend))
        if not metrics:
            report.fail(f"{where} names no metric")
        for metric in sorted(metrics):
            if metric not in families:
                report.missing_metrics.add(metric)
                report.fail(f"{where}: {metric} is not in the scrape")
                continue
            missing = sorted(labels - families[metric]["labels"])
            have = ", ".join(sorted(families[metric]["labels"]))
            sources = ", ".join(families[metric]["sources"])
            report.check(
                not missing,
                f"{where}: {metric}{{{have}}} exported ({sources})",
                f"no label {', '.join(missing)}",
            )


# --- scrapes -----------------------------------------------------------------------------------


def parse_exposition(text, source, families=None):
    """Adds the samples of a Prometheus text scrape to `families`: name -> labels, sources."""
    families = {} if families is None else families
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        family = families.setdefault(match.group(1), {"labels": set(), "sources": []})
        family["labels"].update(name for name, _ in LABEL_PAIR.findall(match.group(2) or ""))
        if source not in family["sources"]:
            family["sources"].append(source)
    return families


def render_envoy_config(base, wasm, ports, policy=None):
    """The shipped config on loopback: admin and listener on port 0 (Envoy picks free ones),
    each backend cluster at its upstream's port, the .wasm by absolute path."""
    config = json.loads(json.dumps(base))
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for cluster in config["static_resources"]["clusters"]:
        cluster["type"] = "STATIC"
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                address.update(address="127.0.0.1", port_value=ports[cluster["name"]])
    wasm_filter = wasm_filter_config(config)
    wasm_filter["vm_config"]["code"]["local"]["filename"] = str(wasm)
    if policy:
        plugin = json.loads(wasm_filter["configuration"]["value"])
        plugin.pop(plugin.get("policy", "round_robin"), None)
        plugin["policy"] = policy
        wasm_filter["configuration"]["value"] = json.dumps(plugin)
    return config


def wasm_filter_config(config):
    """The eisodos filter's `config` in the first listener's connection manager."""
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for http_filter in manager["typed_config"]["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.wasm":
            return http_filter["typed_config"]["config"]
    raise ValueError("no envoy.filters.http.wasm filter in the first listener")


def get(url, timeout=5):
    """(status, body) of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def wait_for(what, condition, timeout_s, process=None):
    """Polls `condition` until it returns something true; raises on timeout or a dead Envoy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Envoy exited ({process.returncode}) while waiting for {what}")
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def scrape_shipped_envoy(envoy_bin, wasm, policy=None):
    """Runs Envoy on envoy/envoy.yaml (policy changed if given) with three upstreams, sends
    traffic, fails every upstream until eisodos says all are down, and returns the scrape."""
    base = yaml.safe_load(ENVOY_LOCAL.read_text())
    plugin = json.loads(wasm_filter_config(base)["configuration"]["value"])
    status_path = plugin.get("status_path")
    if not status_path:
        raise RuntimeError("envoy/envoy.yaml: the plugin config has no status_path to watch")
    with tempfile.TemporaryDirectory(prefix="eisodos-dashboard-") as tmp:
        tmp = Path(tmp)
        servers, states = {}, {}
        process = None
        try:
            for backend in plugin["backends"]:
                name = backend["cluster"]
                states[name] = tmp / f"{name}.state"
                servers[name] = upstream.serve_in_thread(name, 0, str(states[name]))
            ports = {name: server.server_address[1] for name, server in servers.items()}
            config_path = tmp / "envoy.json"
            config_path.write_text(json.dumps(render_envoy_config(base, wasm, ports, policy)))
            admin_path, log_path = tmp / "admin", tmp / "envoy.log"
            with open(log_path, "w") as log:
                process = subprocess.Popen(
                    [envoy_bin, "-c", str(config_path), "--concurrency", "2",
                     "--disable-hot-restart", "--admin-address-path", str(admin_path),
                     "-l", "warn"],
                    cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            try:
                return drive_and_scrape(process, admin_path, servers, states, status_path)
            except RuntimeError as err:
                raise RuntimeError(f"{err}\n--- Envoy log ---\n{log_path.read_text()[-4000:]}")
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for server in servers.values():
                server.shutdown()
                server.server_close()


def drive_and_scrape(process, admin_path, servers, states, status_path):
    def ready_admin():
        # The address file may be read while Envoy is still writing it: read it again each time.
        address = admin_path.read_text().strip() if admin_path.exists() else ""
        return address and get(f"http://{address}/ready")[0] == 200 and f"http://{address}"

    admin = wait_for("Envoy to be ready", ready_admin, READY_TIMEOUT_S, process)
    listeners = json.loads(get(f"{admin}/listeners?format=json")[1])
    port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
    front = f"http://127.0.0.1:{port}"
    for _ in range(30):
        status, body = get(f"{front}/")
        if status != 200 or body.strip() not in servers:
            raise RuntimeError(f"a request before any failure got {status} {body!r}")
    for state in states.values():
        upstream.write_state(str(state), "fail")

    def all_down():
        # Failing requests feed passive ejection while the probes take the backends out.
        get(f"{front}/")
        status, body = get(f"{front}{status_path}")
        try:
            return status == 200 and json.loads(body).get("mode") == "all_down"
        except ValueError:
            return False

    wait_for("eisodos to report all backends down", all_down, ALL_DOWN_TIMEOUT_S, process)
    for _ in range(10):
        get(f"{front}/")  # answered by eisodos itself: local replies
    status, text = get(f"{admin}/stats/prometheus")
    if status != 200:
        raise RuntimeError(f"/stats/prometheus answered {status}")
    return text


# --- static files ------------------------------------------------------------------------------


def load(report, path, parse):
    try:
        data = parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        report.fail(f"{path.relative_to(REPO)} does not parse: {err}")
        return None
    report.ok(f"{path.relative_to(REPO)} parses")
    return data


def compose_mounts(service):
    """{container path: repository path} of a compose service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = REPO / source
    return mounts


def check_static_files(report):
    """Prometheus, Grafana provisioning and docker-compose.yml agree with each other."""
    compose = load(report, COMPOSE, yaml.safe_load)
    prometheus = load(report, PROMETHEUS, yaml.safe_load)
    datasources = load(report, DATASOURCES, yaml.safe_load)
    providers = load(report, PROVIDERS, yaml.safe_load)
    dashboard = load(report, DASHBOARD, json.loads)
    envoy_compose = load(report, ENVOY_COMPOSE, yaml.safe_load)
    if None in (compose, prometheus, datasources, providers, dashboard, envoy_compose):
        return dashboard
    services = compose.get("services", {})
    wanted = {"envoy", "backend_a", "backend_b", "backend_c", "prometheus", "grafana"}
    report.check(wanted <= set(services), "docker-compose.yml has the services "
                 + ", ".join(sorted(wanted)), f"missing {sorted(wanted - set(services))}")
    for name, service in sorted(services.items()):
        for target, source in compose_mounts(service).items():
            # The .wasm is built, not committed; `just validate` builds it first.
            report.check(source.exists(), f"{name} mounts {source.relative_to(REPO)} at {target}",
                         "no such file")
        for published in service.get("ports", []):
            report.check(str(published).startswith("127.0.0.1:"),
                         f"{name} publishes {published} on loopback only")

    # Prometheus scrapes Envoy's admin port, at the path with the labelled metrics.
    admin_port = envoy_compose["admin"]["address"]["socket_address"]["port_value"]
    jobs = prometheus.get("scrape_configs", [])
    scrapes_envoy = [
        job for job in jobs
        if job.get("metrics_path") == "/stats/prometheus"
        and f"envoy:{admin_port}" in [t for c in job.get("static_configs", [])
                                       for t in c.get("targets", [])]
    ]
    report.check(bool(scrapes_envoy),
                 f"compose/prometheus.yml scrapes envoy:{admin_port}/stats/prometheus")
    interval = (scrapes_envoy[0].get("scrape_interval") if scrapes_envoy else None) or \
        prometheus.get("global", {}).get("scrape_interval")
    report.check(interval == "5s", f"compose/prometheus.yml scrapes every {interval}", "want 5s")
    prometheus_port = next((t.split(":")[-1] for t in
                            services.get("prometheus", {}).get("ports", [])), None)

    # Grafana: the datasource the dashboard names, the dashboards where compose mounts them.
    sources = {d.get("uid"): d for d in datasources.get("datasources", [])}
    for uid, source in sources.items():
        report.check(source.get("type") == "prometheus" and
                     source.get("url") == f"http://prometheus:{prometheus_port}",
                     f'datasource "{source.get("name")}" (uid {uid}) is the compose Prometheus',
                     f'type {source.get("type")}, url {source.get("url")}')
    used = set()
    for panel in all_panels(dashboard.get("panels", [])):
        for item in [panel, *panel.get("targets", [])]:
            if isinstance(item.get("datasource"), dict):
                used.add(item["datasource"].get("uid"))
    for variable in dashboard.get("templating", {}).get("list", []):
        if isinstance(variable.get("datasource"), dict):
            used.add(variable["datasource"].get("uid"))
    report.check(used and used <= set(sources), "the dashboard's datasource uids "
                 f"{sorted(used)} are provisioned", f"provisioned: {sorted(sources)}")
    uid = dashboard.get("uid", "")
    report.check(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid or "") is not None,
                 f'dashboard uid "{uid}" (title "{dashboard.get("title")}")',
                 "1 to 40 letters, digits, - or _")
    ids = [panel.get("id") for panel in all_panels(dashboard.get("panels", []))]
    report.check(len(ids) == len(set(ids)), f"{len(ids)} panels with distinct ids")
    grafana = services.get("grafana", {})
    mounts = compose_mounts(grafana)
    for provider in providers.get("providers", []):
        path = provider.get("options", {}).get("path")
        report.check(mounts.get(path) == DASHBOARD.parent,
                     f'dashboard provider "{provider.get("name")}" reads {path}',
                     "docker-compose.yml mounts compose/grafana/dashboards elsewhere")
    report.check(mounts.get("/etc/grafana/provisioning") == REPO / "compose/grafana/provisioning",
                 "Grafana reads its provisioning from compose/grafana/provisioning")
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    home_source = next((source / Path(home).relative_to(target) for target, source in
                        mounts.items() if home.startswith(target + "/")), None)
    report.check(home_source is not None and home_source.exists(),
                 f"Grafana's home dashboard {home} is a mounted file")

    # The upstreams listen where Envoy's compose clusters send requests and probes.
    for cluster in envoy_compose["static_resources"]["clusters"]:
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"]["socket_address"]
        command = services.get(address["address"], {}).get("command", [])
        report.check(str(address["port_value"]) in command,
                     f'cluster {cluster["name"]} -> service {address["address"]} listening on '
                     f'{address["port_value"]}', f"command {command}")
    return dashboard


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envoy", default=str(REPO / ".venv/bin/envoy"))
    parser.add_argument("--wasm", default=str(REPO / "target/wasm32-wasip1/release/eisodos.wasm"))
    parser.add_argument("--scrape", action="append", type=Path,
                        help="check against this saved scrape instead of starting Envoy")
    args = parser.parse_args()
    report = Report()
    dashboard = check_static_files(report)
    if dashboard is None:
        print(f"{report.passed} passed, {report.failed} failed")
        return 1
    families = {}
    if args.scrape:
        for path in args.scrape:
            parse_exposition(path.read_text(), str(path), families)
    else:
        for policy in (None, "least_request"):
            source = f"envoy.yaml with {policy}" if policy else "envoy.yaml as shipped"
            try:
                text = scrape_shipped_envoy(args.envoy, args.wasm, policy)
            except (RuntimeError, OSError) as err:
                report.fail(f"scrape of {source}: {err}")
                continue
            parse_exposition(text, source, families)
            eisodos = sorted(name for name in families if name.startswith("eisodos_"))
            print(f"scraped {source}: eisodos families now {', '.join(eisodos) or 'none'}")
    check_queries(report, dashboard, families)
    if report.missing_metrics:
        print("metrics the dashboard uses that no scrape exported: "
              + ", ".join(sorted(report.missing_metrics)))
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
