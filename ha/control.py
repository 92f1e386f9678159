"""The topology's control endpoint: JSON over HTTP on 127.0.0.1, served by the standard
library's HTTP server in a thread that calls into the supervisor's trio loop.

- ``GET /status``: ``Topology.status()``.
- ``GET /facts``: ``Topology.facts()``: every fault with its start and end, and every node's
  events, with CLOCK_MONOTONIC times (what ``mqemu workload --control`` and ``mqemu check
  --control`` merge into a history).
- ``POST /fault`` with ``{"action": ..., "target": ..., "protocol": ..., ...}``: a fault
  (``Topology.fault``); 400 with ``{"error": ...}`` when it cannot be done.

``ControlClient`` is the other end, used by ``mqemu ha status``, ``mqemu fault`` and tests.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio

from .topology import Topology, TopologyError


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        calls = {"/status": self.server.topology.status, "/facts": self.server.topology.facts}
        fn = calls.get(self.path.rstrip("/"))
        if fn is not None and self.server.topology.proxies is None:
            self._reply(503, {"error": "the topology is starting"})
        elif fn is not None:
            self._call(lambda: trio.from_thread.run_sync(fn, trio_token=self.server.token))
        else:
            self._reply(404, {"error": f"no such endpoint {self.path}; try GET /status, GET /facts or POST /fault"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/fault":
            self._reply(404, {"error": f"no such endpoint {self.path}; try POST /fault"})
            return
        if self.server.topology.proxies is None:
            self._reply(503, {"error": "the topology is starting"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            action, target = body.pop("action"), body.pop("target")
        except (ValueError, KeyError, AttributeError):
            self._reply(400, {"error": 'the body must be JSON: {"action": ..., "target": ..., ...}'})
            return
        fault = partial(self.server.topology.fault, action, target, **body)
        self._call(lambda: trio.from_thread.run(fault, trio_token=self.server.token))

    def _call(self, fn: Any) -> None:
        """Run ``fn`` (a call into the trio loop) and answer with its result as JSON."""
        try:
            result = fn()
        except (TopologyError, ValueError, TypeError) as e:
            self._reply(400, {"error": str(e)})
        except trio.RunFinishedError:
            self._reply(503, {"error": "the topology is stopping"})
        else:
            self._reply(200, result)

    def _reply(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: faults are logged by the topology


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, topology: Topology, token: trio.lowlevel.TrioToken) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.topology = topology
        self.token = token


class ControlServer:
    """Serves a topology's control endpoint from a thread; ``close()`` stops it."""

    def __init__(self, topology: Topology) -> None:
        self._server = _Server(topology, trio.lowlevel.current_trio_token())
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        topology.control_url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mqemu-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class ControlError(Exception):
    """The control endpoint refused a request or could not be reached."""


class ControlClient:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    def fault(self, action: str, target: str, **params: Any) -> dict[str, Any]:
        return self._request("POST", "/fault", {"action": action, "target": target, **params})

    def facts(self) -> dict[str, Any]:
        """``Topology.facts()``, with ``local_clock``: this process's CLOCK_MONOTONIC before
        and after the request, so ``history.facts_records`` can tell whether the topology runs
        on this machine (the same clock) or where its clock is relative to ours."""
        before = time.monotonic()
        facts = self._request("GET", "/facts")
        facts["local_clock"] = {"before": before, "after": time.monotonic()}
        return facts

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                text = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                text = e.reason
            raise ControlError(text) from None
        except OSError as e:
            raise ControlError(f"cannot reach the control endpoint {self.url}: {e}") from None
