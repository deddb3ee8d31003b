#!/usr/bin/env python3
"""An upstream for the docker-compose demo whose behaviour can be switched while it runs.

Serve:   upstream.py --name backend_a --port 5678 [--state /tmp/chaos]
Switch:  upstream.py --state /tmp/chaos --set ok | slow [--delay-ms 1000] | fail

Every request, `/healthz` included, answers 200 with the name (like hashicorp/http-echo did),
unless the state file says otherwise: `slow` answers after `--delay-ms`, `fail` answers 503.
The state lives in a file rather than behind an admin path because Envoy forwards every path to
the upstream: a path would let any client of the demo break a backend. `just chaos` runs the
switch inside the container with `docker compose exec`.

Standard library only: it runs in the official python image as it is, and in `.venv` for the
offline check (tools/dashboard_check.py), which imports it.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "slow", "fail")
DEFAULT_STATE = "/tmp/eisodos-upstream-state.json"


def write_state(path, mode, delay_ms=1000):
    """Replaces the state file atomically, so a request never reads half of it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-")
    with os.fdopen(fd, "w") as out:
        json.dump({"mode": mode, "delay_ms": delay_ms}, out)
    os.replace(tmp, path)


def read_state(path):
    """The current (mode, delay in seconds); no file, or one that does not parse, is `ok`."""
    try:
        with open(path) as state_file:
            state = json.load(state_file)
        mode = state.get("mode", "ok")
        delay_ms = int(state.get("delay_ms", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return "ok", 0.0
    return (mode if mode in MODES else "ok"), max(delay_ms, 0) / 1000


def make_server(name, port, state_path, host="0.0.0.0"):
    """A threaded HTTP/1.1 server: a slow answer does not hold up the others."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            mode, delay = read_state(state_path)
            if mode == "slow":
                time.sleep(delay)
            status, body = (503, f"{name}: failing\n") if mode == "fail" else (200, f"{name}\n")
            payload = body.encode() if self.command != "HEAD" else b""
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = _answer

        def log_message(self, *args):
            # One line per request would drown the compose logs; the dashboard shows the traffic.
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(name, port, state_path, host="127.0.0.1"):
    """Starts a server on a thread, for the offline check; `server.shutdown()` stops it."""
    server = make_server(name, port, state_path, host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the text every answer carries")
    parser.add_argument("--port", type=int, default=5678)
    parser.add_argument("--state", default=DEFAULT_STATE, help="the state file")
    parser.add_argument("--set", choices=MODES, help="switch a running upstream and exit")
    parser.add_argument("--delay-ms", type=int, default=1000, help="how slow `slow` is")
    args = parser.parse_args()
    if args.set:
        write_state(args.state, args.set, args.delay_ms)
        detail = f" ({args.delay_ms} ms)" if args.set == "slow" else ""
        print(f"{args.name or 'upstream'}: {args.set}{detail}")
        return 0
    if not args.name:
        parser.error("--name is required to serve")
    server = make_server(args.name, args.port, args.state)
    # As a container's PID 1 the process gets no default SIGTERM action: without this
    # `docker compose stop` would wait ten seconds and then kill it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{args.name}: listening on :{args.port}, state in {args.state}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
