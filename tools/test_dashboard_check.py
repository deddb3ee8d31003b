"""Tests of tools/dashboard_check.py, of compose/upstream.py and of `just chaos`, offline.

Run by `just validate`: .venv/bin/python -m unittest discover -s tools -p 'test_*.py'
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import dashboard_check
import upstream  # compose/upstream.py: dashboard_check put compose/ on sys.path

REPO = dashboard_check.REPO

# What /stats/prometheus shows with the metric scheme of issue 12 (names, labels, Envoy's
# output format: `# TYPE` lines, escaped label values, a mesh cluster name).
SCRAPE = """\
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="backend_a"} 3
# TYPE eisodos_requests_total counter
eisodos_requests_total{plugin="eisodos",backend="outbound|80||svc-a.default.svc.cluster.local"} 10
eisodos_requests_total{plugin="eisodos",backend="quo\\"te"} 1
# TYPE eisodos_ejections_total counter
eisodos_ejections_total{plugin="eisodos",backend="backend_a"} 1
# TYPE eisodos_probes_total counter
eisodos_probes_total{plugin="eisodos",backend="backend_a",result="network_failure"} 4
# TYPE eisodos_local_replies_total counter
eisodos_local_replies_total{plugin="eisodos",reason="no_healthy_backend"} 2
# TYPE eisodos_cas_exhausted_total counter
eisodos_cas_exhausted_total{plugin="eisodos"} 0
# TYPE eisodos_backend_healthy gauge
eisodos_backend_healthy{plugin="eisodos",backend="backend_a"} 0
# TYPE eisodos_in_flight gauge
eisodos_in_flight{plugin="eisodos",backend="backend_a"} 0
# TYPE eisodos_mode gauge
eisodos_mode{plugin="eisodos"} 3
# TYPE other counter
other{} 1
"""


def dashboard():
    return json.loads(dashboard_check.DASHBOARD.read_text())


def check(dashboard_json, scrape_text):
    report = dashboard_check.Report(quiet=True)
    families = dashboard_check.parse_exposition(scrape_text, "test")
    dashboard_check.check_queries(report, dashboard_json, families)
    return report


class QueryCheck(unittest.TestCase):
    def test_the_dashboard_passes_against_the_decided_metric_scheme(self):
        report = check(dashboard(), SCRAPE)
        self.assertEqual(report.failures, [])
        # Every panel's query and the plugin variable were looked at.
        self.assertEqual(report.passed, 2 * len(dashboard_check.dashboard_queries(dashboard())))

    def test_a_metric_missing_from_the_scrape_is_named(self):
        scrape = "\n".join(line for line in SCRAPE.splitlines() if "eisodos_mode" not in line)
        report = check(dashboard(), scrape)
        self.assertEqual(report.missing_metrics, {"eisodos_mode"})
        self.assertEqual(report.failures, ['panel "Mode" [A]: eisodos_mode is not in the scrape'])

    def test_a_label_the_query_uses_must_be_exported(self):
        scrape = SCRAPE.replace(',result="network_failure"', "")
        report = check(dashboard(), scrape)
        self.assertEqual(len(report.failures), 1)
        self.assertIn("eisodos_probes_total", report.failures[0])
        self.assertIn("no label result", report.failures[0])

    def test_a_query_that_does_not_parse_fails(self):
        broken = dashboard()
        broken["panels"][0]["targets"][0]["expr"] = "sum(rate(eisodos_requests_total[1m])"
        report = check(broken, SCRAPE)
        self.assertEqual(len(report.failures), 1)
        self.assertIn("does not parse", report.failures[0])

    def test_a_variable_the_dashboard_does_not_define_fails(self):
        broken = dashboard()
        broken["panels"][0]["targets"][0]["expr"] = 'eisodos_mode{plugin=~"$plugins"}'
        report = check(broken, SCRAPE)
        self.assertEqual(len(report.failures), 1)
        self.assertIn("unknown variable $plugins", report.failures[0])

    def test_labels_come_from_matchers_groupings_and_matching(self):
        metrics, labels = dashboard_check.analyse(
            'sum by (backend) (rate(a{plugin=~"$p"}[$__rate_interval])) / on (x) group_left (y) b',
            {"p"})
        self.assertEqual(metrics, {"a", "b"})
        self.assertEqual(labels, {"backend", "plugin", "x", "y"})

    def test_exposition_labels_survive_escapes_and_mesh_names(self):
        families = dashboard_check.parse_exposition(SCRAPE, "test")
        self.assertEqual(families["eisodos_requests_total"]["labels"], {"plugin", "backend"})
        self.assertEqual(families["other"]["labels"], set())


class StaticFiles(unittest.TestCase):
    def test_the_compose_prometheus_and_grafana_files_agree(self):
        report = dashboard_check.Report(quiet=True)
        self.assertIsNotNone(dashboard_check.check_static_files(report))
        self.assertEqual(report.failures, [])


class Readme(unittest.TestCase):
    def test_the_readme_lists_every_panel_with_its_metric(self):
        readme = (REPO / "README.md").read_text()
        rows = {line.split(" | ")[0].lstrip("| "): line for line in readme.splitlines()
                if line.startswith("| ")}
        for panel in dashboard_check.all_panels(dashboard()["panels"]):
            self.assertIn(panel["title"], rows, "README.md has no row for this panel")
            metrics, _ = dashboard_check.analyse(panel["targets"][0]["expr"], {"plugin"})
            for metric in metrics:
                self.assertIn(metric, rows[panel["title"]])


class Upstream(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.state = os.path.join(self.dir.name, "state")
        self.server = upstream.serve_in_thread("backend_a", 0, self.state)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def switch(self, *args):
        # As `just chaos` does it inside the container: the script's own command line.
        subprocess.run([sys.executable, str(REPO / "compose/upstream.py"), "--state", self.state,
                        "--set", *args], check=True, capture_output=True)

    def test_answers_its_name_until_told_otherwise(self):
        self.assertEqual(self.get("/"), (200, "backend_a\n"))
        self.assertEqual(self.get("/healthz"), (200, "backend_a\n"))

    def test_fail_answers_503_to_requests_and_probes_and_ok_brings_it_back(self):
        self.switch("fail")
        self.assertEqual(self.get("/")[0], 503)
        self.assertEqual(self.get("/healthz")[0], 503)
        self.switch("ok")
        self.assertEqual(self.get("/healthz"), (200, "backend_a\n"))

    def test_slow_answers_no_sooner_than_the_delay(self):
        self.switch("slow", "--delay-ms", "300")
        started = time.monotonic()
        self.assertEqual(self.get("/healthz"), (200, "backend_a\n"))
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_a_state_file_that_does_not_parse_counts_as_ok(self):
        Path(self.state).write_text("slow")
        self.assertEqual(upstream.read_state(self.state), ("ok", 0.0))


@unittest.skipUnless(shutil.which("just"), "just is not installed")
class Chaos(unittest.TestCase):
    """`just chaos` with a `docker` on PATH that records its arguments."""

    def run_chaos(self, *args):
        with tempfile.TemporaryDirectory() as tmp:
            record = Path(tmp) / "calls"
            docker = Path(tmp) / "docker"
            docker.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
            docker.chmod(0o755)
            env = dict(os.environ, PATH=f"{tmp}:{os.environ['PATH']}")
            result = subprocess.run(["just", "chaos", *args], cwd=REPO, env=env,
                                    capture_output=True, text=True)
            calls = record.read_text().splitlines() if record.exists() else []
        return result.returncode, calls, result.stderr

    def test_slow_and_fail_switch_the_upstream_in_its_container(self):
        exec_ = "compose exec -T backend_b python /app/upstream.py --name backend_b --set"
        self.assertEqual(self.run_chaos("slow", "backend_b", "300")[:2],
                         (0, [f"{exec_} slow --delay-ms 300"]))
        self.assertEqual(self.run_chaos("fail", "backend_b")[:2], (0, [f"{exec_} fail"]))

    def test_kill_stops_the_container_and_ok_starts_it_and_clears_the_state(self):
        self.assertEqual(self.run_chaos("kill", "backend_c")[:2],
                         (0, ["compose kill backend_c"]))
        self.assertEqual(self.run_chaos("ok", "backend_c")[:2], (0, [
            "compose start backend_c",
            "compose exec -T backend_c python /app/upstream.py --name backend_c --set ok",
        ]))

    def test_an_unknown_backend_or_mode_calls_nothing(self):
        code, calls, stderr = self.run_chaos("slow", "backend_z")
        self.assertEqual((code, calls), (2, []))
        self.assertIn("backend_a, backend_b or backend_c", stderr)
        code, calls, stderr = self.run_chaos("explode", "backend_a")
        self.assertEqual((code, calls), (2, []))
        self.assertIn("slow, fail, kill or ok", stderr)


if __name__ == "__main__":
    unittest.main()
