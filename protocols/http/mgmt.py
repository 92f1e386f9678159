"""RabbitMQ's management API as a starlette app (the subset tools use: rabbitmqadmin,
pyrabbit2, monitoring checks).

Every handler is a coroutine run in the node's trio loop (starlette on anyio's trio
backend), so it calls the broker directly; no handler runs in a thread. Routes match the
raw path, so a ``%2F`` (the vhost ``/``) stays inside its segment, and each handler decodes
its segments. Basic auth and the management tags are checked before the handler runs; an
``HttpError`` becomes RabbitMQ's ``{"error", "reason"}`` body.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import api_access as acc
from . import api_node as nd
from . import api_objects as obj
from .common import Ctx, HttpError, JsonList, authenticate

log = logging.getLogger("mqemu.protocols.http.mgmt")

Handler = Callable[[Ctx], Awaitable[Response]]

# path -> {method: handler}
ROUTES: list[tuple[str, dict[str, Handler]]] = [
    ("/api/overview", {"GET": nd.overview}),
    ("/api/nodes", {"GET": nd.nodes}),
    ("/api/nodes/{node}", {"GET": nd.get_node}),
    ("/api/whoami", {"GET": acc.whoami}),
    ("/api/aliveness-test/{vhost}", {"GET": nd.aliveness}),
    ("/api/health/checks/alarms", {"GET": nd.alarms}),
    ("/api/health/checks/local-alarms", {"GET": nd.alarms}),
    ("/api/health/checks/port-listener/{port}", {"GET": nd.port_listener}),
    ("/api/health/checks/protocol-listener/{protocol}", {"GET": nd.protocol_listener}),
    ("/api/health/checks/virtual-hosts", {"GET": nd.virtual_hosts}),
    ("/api/health/checks/node-is-quorum-critical", {"GET": nd.node_is_quorum_critical}),
    ("/api/connections", {"GET": nd.list_connections}),
    ("/api/connections/{name}", {"GET": nd.get_connection, "DELETE": nd.delete_connection}),
    ("/api/vhosts/{vhost}/connections", {"GET": nd.list_connections}),
    ("/api/channels", {"GET": nd.list_channels}),
    ("/api/consumers", {"GET": nd.list_consumers}),
    ("/api/consumers/{vhost}", {"GET": nd.list_consumers}),
    ("/api/queues", {"GET": obj.list_queues}),
    ("/api/queues/{vhost}", {"GET": obj.list_queues}),
    ("/api/queues/{vhost}/{queue}", {"GET": obj.get_queue, "PUT": obj.put_queue, "DELETE": obj.delete_queue}),
    ("/api/queues/{vhost}/{queue}/contents", {"DELETE": obj.purge_queue}),
    ("/api/queues/{vhost}/{queue}/get", {"POST": obj.get_messages}),
    ("/api/queues/{vhost}/{queue}/bindings", {"GET": obj.list_bindings}),
    ("/api/exchanges", {"GET": obj.list_exchanges}),
    ("/api/exchanges/{vhost}", {"GET": obj.list_exchanges}),
    ("/api/exchanges/{vhost}/{exchange}", {"GET": obj.get_exchange, "PUT": obj.put_exchange,
                                           "DELETE": obj.delete_exchange}),
    ("/api/exchanges/{vhost}/{exchange}/publish", {"POST": obj.publish}),
    ("/api/exchanges/{vhost}/{exchange}/bindings/{side:source_or_destination}", {"GET": obj.exchange_bindings}),
    ("/api/bindings", {"GET": obj.list_bindings}),
    ("/api/bindings/{vhost}", {"GET": obj.list_bindings}),
    ("/api/bindings/{vhost}/e/{source}/{kind:q_or_e}/{destination}", {"GET": obj.list_between,
                                                                       "POST": obj.create_binding}),
    ("/api/bindings/{vhost}/e/{source}/{kind:q_or_e}/{destination}/{props}", {"GET": obj.get_binding,
                                                                               "DELETE": obj.delete_binding}),
    ("/api/vhosts", {"GET": acc.list_vhosts}),
    ("/api/vhosts/{vhost}", {"GET": acc.get_vhost, "PUT": acc.put_vhost, "DELETE": acc.delete_vhost}),
    ("/api/vhosts/{vhost}/permissions", {"GET": acc.list_permissions}),
    ("/api/users", {"GET": acc.list_users}),
    ("/api/users/{user}", {"GET": acc.get_user, "PUT": acc.put_user, "DELETE": acc.delete_user}),
    ("/api/users/{user}/permissions", {"GET": acc.list_permissions}),
    ("/api/permissions", {"GET": acc.list_permissions}),
    ("/api/permissions/{vhost}/{user}", {"GET": acc.get_permission, "PUT": acc.put_permission,
                                         "DELETE": acc.delete_permission}),
    ("/api/policies", {"GET": acc.list_policies}),
    ("/api/policies/{vhost}", {"GET": acc.list_policies}),
    ("/api/policies/{vhost}/{name}", {"GET": acc.get_policy, "PUT": acc.put_policy, "DELETE": acc.delete_policy}),
    ("/api/definitions", {"GET": acc.get_definitions, "POST": acc.post_definitions}),
    ("/api/definitions/{vhost}", {"GET": acc.get_definitions, "POST": acc.post_definitions}),
]


def _endpoint(node: Any, methods: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            return _not_allowed(methods)
        try:
            user = authenticate(request, node.broker)
            response = await handler(Ctx(request, node, user))
        except HttpError as e:
            return e.response()
        columns = request.query_params.get("columns")
        if isinstance(response, JsonList) and ("page" in request.query_params or "sort" in request.query_params):
            try:
                data = paged(request.query_params, [x for part in response.slices() for x in part])
            except HttpError as e:
                return e.response()
            return JSONResponse(_select(data, columns.split(",")) if columns else data)
        if isinstance(response, JsonList):
            return StreamingResponse(_stream(response, columns.split(",") if columns else None),
                                     media_type="application/json")
        if columns and isinstance(response, JSONResponse) and response.status_code == 200:
            response = JSONResponse(_select(json.loads(bytes(response.body)), columns.split(",")))
        return response
    return endpoint


async def _stream(answer: JsonList, columns: list[str] | None) -> AsyncIterator[bytes]:
    yield b"["
    first = True
    for part in answer.slices():
        if columns:
            part = _select(part, columns)
        text = json.dumps(part, ensure_ascii=False, separators=(",", ":"))[1:-1]
        if text:
            yield (text if first else "," + text).encode("utf-8")
            first = False
        await anyio.sleep(0)  # the node's loop runs between slices
    yield b"]"


def paged(params: Any, items: list[dict[str, Any]]) -> Any:
    """RabbitMQ's ``sort``/``sort_reverse`` and, with ``page``, its pagination: ``name``
    (a substring, or with ``use_regex=true`` a regular expression) filters, ``page_size``
    1-500 (default 100); the answer is the page with its counts."""
    key = params.get("sort") or ("name" if "page" in params else None)
    if key:
        def value(item: dict[str, Any]) -> Any:
            v: Any = item
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            return (v is None, str(v) if not isinstance(v, (int, float)) else "", v if isinstance(v, (int, float)) else 0)
        items = sorted(items, key=value, reverse=params.get("sort_reverse") == "true")
    if "page" not in params:
        return items
    total = len(items)
    name = params.get("name")
    if name:
        if params.get("use_regex") == "true":
            try:
                rx = re.compile(name)
            except re.error:
                raise HttpError(400, "bad_request", f"invalid regular expression {name}") from None
            items = [i for i in items if rx.search(str(i.get("name", "")))]
        else:
            items = [i for i in items if name in str(i.get("name", ""))]
    page, size = params.get("page"), params.get("page_size", "100")
    if not (page.isdigit() and size.isdigit() and int(page) >= 1 and 1 <= int(size) <= 500):
        raise HttpError(400, "invalid_pagination_parameters", f"Invalid pagination parameters: page number {page}, "
                        f"page size {params.get('page_size', 'undefined')}")
    page_n, size_n = int(page), int(size)
    pages = max(1, -(-len(items) // size_n))
    if page_n > pages:
        raise HttpError(400, "page_out_of_range", f"Page out of range, page: {page_n} page size: {size_n}, "
                        f"len: {len(items)}")
    chunk = items[(page_n - 1) * size_n:page_n * size_n]
    return {"filtered_count": len(items), "item_count": len(chunk), "items": chunk, "page": page_n,
            "page_count": pages, "page_size": size_n, "total_count": total}


def _select(data: Any, columns: list[str]) -> Any:
    """RabbitMQ's ``?columns=a,b.c``: only those keys of each object (dotted: nested)."""
    def pick(obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col in columns:
            src, dst = obj, out
            parts = col.split(".")
            for part in parts[:-1]:
                if not isinstance(src.get(part), dict):
                    break
                src, dst = src[part], dst.setdefault(part, {})
            else:
                if parts[-1] in src:
                    dst[parts[-1]] = src[parts[-1]]
        return out
    if isinstance(data, list):
        return [pick(o) if isinstance(o, dict) else o for o in data]
    if isinstance(data, dict) and isinstance(data.get("items"), list) and "page_count" in data:
        return dict(data, items=[pick(o) for o in data["items"]])  # a page: its items
    return pick(data) if isinstance(data, dict) else data


def _not_allowed(methods: dict[str, Handler]) -> Response:
    allow = ["HEAD", "GET", "OPTIONS"] if "GET" in methods else ["OPTIONS"]
    allow += [m for m in methods if m != "GET"]
    return Response(status_code=405, headers={"allow": ", ".join(allow)})


class RawPath:
    """ASGI middleware: route on the raw path, so ``%2F`` stays in its segment."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = dict(scope, path=scope["raw_path"].decode("latin-1").split("?", 1)[0])
        await self.app(scope, receive, send)


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return Response(status_code=405)
    return JSONResponse({"error": "Object Not Found", "reason": "Not Found"}, 404)


def management_app(node: Any) -> Any:
    from starlette.convertors import Convertor, register_url_convertor

    class QorE(Convertor):
        regex = "[qe]"

        def convert(self, value: str) -> str:
            return value

        def to_string(self, value: str) -> str:
            return value

    class Side(QorE):
        regex = "source|destination"

    register_url_convertor("q_or_e", QorE())
    register_url_convertor("source_or_destination", Side())
    routes = [Route(path, _endpoint(node, methods), methods=["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"])
              for path, methods in ROUTES]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    return RawPath(app)
