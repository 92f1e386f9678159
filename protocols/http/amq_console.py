"""ActiveMQ's web console surfaces on the ActiveMQ engine (port 8161): the REST message API
(``MessageServlet``), a Jolokia subset (``amq_jolokia``) and the ``/admin/xml`` pages
monitoring checks read (``amq_jolokia.xml_*``).

Basic auth as the console's Jetty realm asks it (realm ``ActiveMQRealm``): with users in the
node's config (the simple authentication plugin on), a user of the node with its password;
without, the stock console login ``admin``/``admin``. Every handler runs in the node's trio
loop and calls the broker directly.

REST messages, as ActiveMQ 5.17's ``MessageServlet``:

- the destination is ``destination=`` (``queue://``/``topic://`` prefixes pick the kind), else
  the path after ``/api/message/`` with ``/`` turned into ``.``; without a prefix ``type=queue``
  makes it a queue, anything else (or none) a topic (the servlet's default);
- POST sends a text message: the ``body`` parameter, else the request body; ``JMSDeliveryMode``
  (``persistent``, the default, or not), ``JMSPriority`` (5), ``JMSTimeToLive`` (ms),
  ``JMSCorrelationID``, ``JMSType``, ``JMSReplyTo``, ``JMSExpiration``; every other parameter
  is a string property. 200 ``Message sent`` with a ``messageID`` header;
- GET and DELETE receive one message: ``readTimeout`` ms (at most 20 000; none: no wait), 204
  when none came; the body as text (``application/xml`` when it starts with ``<``,
  ``xml=true``/``json=true`` choose), headers ``destination``, ``id`` and the message's
  properties. ``clientId`` names a client whose topic subscription outlives the request (until
  ``oneShot=true`` or POST ``action=unsubscribe``); without one, a topic is subscribed for the
  request only. A queue is read straight from the queue (no prefetching consumer).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mqemu.broker.errors import BrokerError
from mqemu.broker.message import Message

from . import amq_jolokia as jol
from . import amq_model as model
from .common import MAX_BODY, HttpError, read_body

REALM = 'basic realm="ActiveMQRealm"'
MAX_READ_TIMEOUT_MS = 20000
_POLL = 0.02  # how often a waiting GET looks at its queue again (s)
_RESERVED = {"destination", "type", "body", "JMSDeliveryMode", "JMSPriority", "JMSTimeToLive",
             "JMSCorrelationID", "JMSExpiration", "JMSReplyTo", "JMSType"}
_ids = itertools.count(1)
_producer = f"ID:mqemu-{uuid.uuid4().hex[:12]}-1:1:1:1"


def authenticate(request: Request, broker: Any) -> None:
    """Raise 401 (with the realm's challenge) unless the request logs in."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    ok = False
    if scheme.lower() == "basic" and value:
        try:
            name, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, password = "", ""
        auth = broker.auth
        if auth.users_configured:
            user = auth.users.get(name)
            ok = user is not None and user.password_matches(password)
        else:
            ok = (name, password) == ("admin", "admin")
    if not ok:
        raise HttpError(401, "", "", headers={"www-authenticate": REALM})


async def params(request: Request, *, form: bool) -> dict[str, str]:
    """The servlet's parameters: the query, then a form body's fields (first value wins)."""
    out: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, v)
    if form and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raw = await read_body(request)
        request.state.raw = b""
        for k, v in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
            out.setdefault(k, v)
    return out


def destination(request: Request, p: dict[str, str]) -> tuple[str, str] | None:
    """(kind, name) of the request's destination, or None when it names none."""
    name = p.get("destination") or ""
    if not name:
        name = request.path_params.get("name", "").strip("/").replace("/", ".")
        if not name:
            return None
    if name.startswith("topic://"):
        kind = "topic"
    elif name.startswith(("queue://", "channel://")):
        kind = "queue"
    else:
        kind = "queue" if p.get("type", "").lower() == "queue" else "topic"
    if "://" in name:
        name = name[name.index("://") + 3:]
    return (kind, name) if name else None


def _no_destination() -> Response:
    return PlainTextResponse("No destination supplied", 500)


async def post_message(request: Request, node: Any, state: model.ConsoleState) -> Response:
    p = await params(request, form=True)
    if p.get("action") == "unsubscribe" and "clientId" in p:
        _drop_client(node, state, p["clientId"])
        return Response(status_code=200)
    dest = destination(request, p)
    if dest is None:
        return _no_destination()
    text = p.get("body")
    if text is None:
        raw = getattr(request.state, "raw", None)
        data = raw if raw is not None else await read_body(request)
        # the servlet reads the body line by line, ending each line with a newline
        text = "".join(line + "\n" for line in data.decode("utf-8", "replace").splitlines())
    try:
        props = _properties(p)
    except ValueError as e:
        return PlainTextResponse(f"Could not post JMS message: {e}", 500)
    kind, name = dest
    vh = model.vhost(node.broker)
    try:
        if kind == "queue":
            if name not in vh.queues:
                vh.declare_queue(name, True, None, False, {})
            vh.publish("", name, Message("", name, text.encode("utf-8"), props))
        else:
            state.topics.add(name)
            vh.publish(model.TOPIC_EXCHANGE, name, Message(model.TOPIC_EXCHANGE, name, text.encode("utf-8"), props))
    except BrokerError as e:
        return PlainTextResponse(f"Could not post JMS message: {e}", 500)
    return PlainTextResponse("Message sent", 200, headers={"messageID": props["message_id"]})


def _properties(p: dict[str, str]) -> dict[str, Any]:
    """The core's properties for a servlet send (raises ValueError for a bad number)."""
    mode = p.get("JMSDeliveryMode")
    persistent = True if mode is None else mode.strip().lower() == "persistent"
    props: dict[str, Any] = {
        "delivery_mode": 2 if persistent else 1,
        "priority": int(p.get("JMSPriority", "5")),
        "message_id": f"{_producer}:{next(_ids)}",
        "timestamp": int(time.time()),
    }
    ttl = int(p.get("JMSTimeToLive", "0"))
    if ttl > 0:
        props["expiration"] = str(ttl)
    for key, prop in (("JMSCorrelationID", "correlation_id"), ("JMSType", "type")):
        if key in p:
            props[prop] = p[key]
    if "JMSReplyTo" in p:
        reply = p["JMSReplyTo"]  # a queue unless it says topic:// (ActiveMQDestination.createDestination)
        if reply.startswith("topic://"):
            props["reply_to"] = f"/topic/{reply[8:]}"
        else:
            props["reply_to"] = f"/queue/{reply[8:] if reply.startswith('queue://') else reply}"
    headers = {k: v for k, v in p.items() if k not in _RESERVED}
    if headers:
        props["headers"] = headers
    return props


async def get_message(request: Request, node: Any, state: model.ConsoleState) -> Response:
    p = await params(request, form=False)
    dest = destination(request, p)
    if dest is None:
        return _no_destination()
    try:
        timeout_ms = min(int(p["readTimeout"]), MAX_READ_TIMEOUT_MS) if "readTimeout" in p else -1
    except ValueError:
        return PlainTextResponse("readTimeout is not a number", 500)
    kind, name = dest
    vh = model.vhost(node.broker)
    client = p.get("clientId")
    one_shot = p.get("oneShot", "").lower() == "true"
    temporary = None
    if kind == "queue":
        q = vh.queues.get(name) or vh.declare_queue(name, True, None, False, {})
    else:
        qname = state.subscriptions.get(client, {}).get(name) if client else None
        q = vh.queues.get(qname) if qname else None
        if q is None:
            q = vh.declare_queue(vh.server_named().replace("amq.gen-", "rest-sub-"), False, None, True, {})
            vh.bind(model.TOPIC_EXCHANGE, q.name, name.replace(">", "#"))
            if client:
                state.subscriptions.setdefault(client, {})[name] = q.name
            else:
                temporary = q.name
    try:
        entry = await _receive(q, timeout_ms)
    finally:
        if temporary is not None or (one_shot and kind == "topic" and client):
            _unsubscribe(vh, q.name)
            if client:
                state.subscriptions.get(client, {}).pop(name, None)
    if entry is None:
        return Response(status_code=204)
    return _message_response(entry.message, kind, name, p)


async def _receive(q: Any, timeout_ms: int) -> Any:
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        if q.deleted:
            return None
        entry = q.get(no_ack=False)
        if entry is not None:
            q.ack(entry, None)
            q.dispatch()
            return entry
        if time.monotonic() >= deadline:
            return None
        await anyio.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))


def _unsubscribe(vh: Any, qname: str) -> None:
    if qname in vh.queues:
        try:
            vh.delete_queue(qname)
        except BrokerError:
            pass


def _drop_client(node: Any, state: model.ConsoleState, client: str) -> None:
    vh = model.vhost(node.broker)
    for qname in state.subscriptions.pop(client, {}).values():
        _unsubscribe(vh, qname)


def _message_response(msg: Message, kind: str, name: str, p: dict[str, str]) -> Response:
    text = msg.body.decode("utf-8", "replace")
    if p.get("xml", "").lower() == "true":
        ctype = "application/xml"
    elif p.get("json", "").lower() == "true":
        ctype = "application/json"
    else:
        ctype = "application/xml" if text.startswith("<") else "text/plain"
    if text.startswith("<?") and "?>" in text:
        text = text[text.index("?>") + 2:]
    props = msg.properties
    headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache",
               "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
               "destination": f"{kind}://{name}", "id": str(props.get("message_id") or "")}
    for k, v in (props.get("headers") or {}).items():
        if isinstance(k, str) and k.isprintable() and k not in headers:
            headers[k] = str(v if not isinstance(v, bytes) else v.decode("utf-8", "replace"))
    return Response(text.encode("utf-8"), 200, headers=headers, media_type=ctype)


def console_app(node: Any) -> Starlette:
    """The ASGI app of an ActiveMQ-engine node's console port."""
    state = model.ConsoleState()

    def endpoint(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                length = request.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY:
                    return PlainTextResponse("Request entity too large", 413)
                authenticate(request, node.broker)
                return await handler(request, node, state)
            except HttpError as e:
                if e.status == 401:
                    return PlainTextResponse("Unauthorized", 401, headers=e.headers)
                return PlainTextResponse(e.reason, e.status)
        return run

    async def message(request: Request, node: Any, state: model.ConsoleState) -> Response:
        if request.method == "POST":
            return await post_message(request, node, state)
        return await get_message(request, node, state)

    methods = ["GET", "POST", "DELETE"]
    return Starlette(routes=[
        Route("/api/message", endpoint(message), methods=methods),
        Route("/api/message/{name:path}", endpoint(message), methods=methods),
        Route("/api/jolokia", endpoint(jol.jolokia), methods=["GET", "POST"]),
        Route("/api/jolokia/{path:path}", endpoint(jol.jolokia), methods=["GET", "POST"]),
        Route("/admin/xml/queues.jsp", endpoint(jol.xml_queues), methods=["GET"]),
        Route("/admin/xml/topics.jsp", endpoint(jol.xml_topics), methods=["GET"]),
        Route("/admin/xml/subscribers.jsp", endpoint(jol.xml_subscribers), methods=["GET"]),
        Route("/admin/", endpoint(jol.admin_index), methods=["GET"]),
        Route("/admin", endpoint(jol.admin_index), methods=["GET"]),
    ])
