"""The node's web page: ``/`` (one self-contained HTML file, ``ui.html``) and the JSON it
polls, ``/ui/state.json``.

The page holds no data: it asks for the state with basic auth (its login form keeps the
credentials in the tab's sessionStorage) and renders it; rates are the differences of the
queues' counters (``Queue.counts``: ``enqueued``, ``delivered``, ``acked``) between two polls,
computed in the page (the management API's rates are the node's samples, ``rates.py``). Logins: the node's users; on an engine with RabbitMQ's management API, a
management tag too, as that API asks. When the node runs in a topology (``--control-url``,
set by ``ha/topology.py``), the state carries the topology's ``/status`` (nodes and roles)
and ``/facts`` (faults and events: the timeline), fetched from the control endpoint in a
worker thread, so the node's loop never waits on it.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import urllib.request
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mqemu.broker.errors import AuthenticationFailed

from .api_node import connection_name
from .common import MANAGEMENT_TAGS

CONTROL_TIMEOUT = 2.0  # seconds the state waits for the topology's control endpoint


def page_html() -> bytes:
    return resources.files(__package__).joinpath("ui.html").read_bytes()


def _denied(reason: str) -> Response:
    # No WWW-Authenticate: the page shows its own login form rather than the browser's dialog.
    return JSONResponse({"error": "not_authorized", "reason": reason}, 401)


def _login(request: Request, broker: Any) -> str | None:
    """The reason the request is refused, or None when its basic auth names a node user
    (with a management tag on an engine with RabbitMQ's management API)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return "Login required"
    try:
        name, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        user = broker.auth.authenticate(name, password, request.client.host if request.client else None)
    except (binascii.Error, UnicodeDecodeError, AuthenticationFailed):
        return "Login failed"
    if broker.profile.rabbitmq_management and not any(t in MANAGEMENT_TAGS for t in user.tags):
        return "Not management user"
    return None


def _queue(vhost: str, q: Any) -> dict[str, Any]:
    ready = len(q.ready) + (q._paged.count if q._paged is not None else 0)
    return {"vhost": vhost, "name": q.name, "messages": ready + q.unacked, "ready": ready, "unacked": q.unacked,
            "consumers": len(q.consumers), "durable": q.durable, "type": q.settings.queue_type,
            "enqueued": q.counts.enqueued, "delivered": q.counts.delivered, "acked": q.counts.acked}


def _connections(node: Any) -> list[dict[str, Any]]:
    out = []
    for s in list(node.sessions):
        info = s.connection_info() if hasattr(s, "connection_info") else None
        if info is not None:
            out.append({"name": connection_name(s), "protocol": info["protocol"], "user": info["user"],
                        "vhost": info["vhost"], "channels": info["channels"]})
    return out


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=CONTROL_TIMEOUT) as resp:  # noqa: S310 (the topology's own URL)
        return json.loads(resp.read())


async def _topology(url: str) -> dict[str, Any]:
    """The topology's status and facts, or the error that kept them from us."""
    base = url.rstrip("/")
    try:
        status = await anyio.to_thread.run_sync(_fetch_json, base + "/status")
        facts = await anyio.to_thread.run_sync(_fetch_json, base + "/facts")
    except (OSError, ValueError) as e:
        return {"control": url, "error": f"{type(e).__name__}: {e}"}
    nodes = [{"name": n.get("name"), "role": n.get("role"), "pid": n.get("pid"), "paused": n.get("paused", False)}
             for n in status.get("nodes", [])]
    timeline = [dict(f, kind="fault") for f in facts.get("faults", [])]
    timeline += [dict(e, node="supervisor") for e in facts.get("events", [])]
    for name, events in facts.get("nodes", {}).items():
        timeline += [dict(e, node=name) for e in events]
    timeline.sort(key=lambda e: e.get("time") or e.get("start") or 0)
    return {"control": url, "mode": status.get("mode"), "nodes": nodes, "timeline": timeline[-200:]}


def state(node: Any) -> dict[str, Any]:
    """What the page shows of this node now (the topology's part is added by the endpoint)."""
    broker = node.broker
    vhosts = []
    queues = []
    for name, vh in broker.vhosts.items():
        vhosts.append({"name": name, "queues": len(vh.queues), "exchanges": len(vh.exchanges)})
        queues += [_queue(name, q) for q in vh.queues.values()]
    return {"node": node.name, "engine": broker.profile.name, "product": broker.profile.product,
            "version": broker.profile.release, "role": node.role, "ports": dict(node.ports),
            "events": list(node.events)[-50:], "vhosts": vhosts, "queues": queues,
            "connections": _connections(node), "time": time.time(), "topology": None}


def ui_routes(node: Any) -> list[Route]:
    """``/`` and ``/ui/state.json``, to mount beside any engine's API."""
    html = page_html()

    async def index(request: Request) -> Response:
        return Response(html, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})

    async def state_json(request: Request) -> Response:
        refused = _login(request, node.broker)
        if refused is not None:
            return _denied(refused)
        data = state(node)
        control = getattr(node.options, "control_url", None)
        if control:
            data["topology"] = await _topology(control)
        return JSONResponse(data, headers={"cache-control": "no-store"})

    return [Route("/", index, methods=["GET", "HEAD"]), Route("/ui/state.json", state_json, methods=["GET"])]


def ui_app(node: Any) -> Any:
    """The page alone, as an app (``server.make_app`` puts its routes before the engine's)."""
    return Starlette(routes=ui_routes(node))

