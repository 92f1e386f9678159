"""A Jolokia ``read``/``exec`` subset and the ``/admin/xml`` pages of ActiveMQ's console.

Jolokia (``/api/jolokia``): GET ``read/<mbean>[/<attribute>]`` and ``exec/<mbean>/<op>[/<arg>...]``
(``!/`` escapes a ``/``), POST a JSON request or a list of them. MBeans:
``org.apache.activemq:type=Broker,brokerName=localhost`` (BrokerName, BrokerVersion, BrokerId,
TotalMessageCount, TotalConsumerCount, TotalProducerCount, TotalEnqueueCount,
TotalDequeueCount, Queues, Topics; exec addQueue, removeQueue, addTopic, removeTopic) and
``...,destinationType=Queue|Topic,destinationName=NAME`` (Name, QueueSize, EnqueueCount,
DequeueCount, DispatchCount, ExpiredCount, InFlightCount, ConsumerCount, ProducerCount; exec
purge; the counts are the queue's own, ``amq_model.queue_stats``). A read of a pattern (``*`` in a key's
value) answers every matching MBean. Answers are Jolokia's: ``{"request", "value",
"timestamp", "status": 200}``; an error is HTTP 200 with ``error_type``, ``error`` and the
status (404 for an unknown MBean or attribute) in the body. Origin check: ActiveMQ 5.17's
``jolokia-access.xml`` turns on strict CORS checking, so a request whose ``Origin`` (else
``Referer``) is not this console's own host is refused (status 403 in the body); ``write``
is not among its allowed commands (403).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import amq_model as model
from .common import read_body

DOMAIN = "org.apache.activemq"
_ATTRS_BROKER = ("BrokerName", "BrokerVersion", "BrokerId", "TotalMessageCount", "TotalConsumerCount",
                 "TotalProducerCount", "TotalEnqueueCount", "TotalDequeueCount", "Queues", "Topics")
_ATTRS_DEST = ("Name", "QueueSize", "EnqueueCount", "DequeueCount", "DispatchCount", "ExpiredCount",
               "InFlightCount", "ConsumerCount", "ProducerCount")


class JolokiaError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def parse_name(text: str) -> tuple[str, dict[str, str]]:
    domain, sep, rest = text.partition(":")
    if not sep or not rest:
        raise JolokiaError(400, "javax.management.MalformedObjectNameException",
                           "Key properties cannot be empty")
    keys: dict[str, str] = {}
    for part in rest.split(","):
        k, eq, v = part.partition("=")
        if not eq or not k:
            raise JolokiaError(400, "javax.management.MalformedObjectNameException",
                               f"Invalid key property: {part}")
        keys[k.strip()] = v.strip()
    return domain, keys


def canonical(keys: dict[str, str]) -> str:
    return f"{DOMAIN}:" + ",".join(f"{k}={keys[k]}" for k in sorted(keys))


def _object_name(kind: str | None = None, name: str | None = None) -> dict[str, str]:
    keys = {"type": "Broker", "brokerName": model.BROKER_NAME}
    if kind is not None and name is not None:
        keys.update(destinationType=kind, destinationName=name)
    return keys


def mbeans(node: Any, state: model.ConsoleState) -> list[dict[str, str]]:
    vh = model.vhost(node.broker)
    out = [_object_name()]
    out += [_object_name("Queue", q.name) for q in model.queues(vh)]
    out += [_object_name("Topic", t) for t in model.topics(vh, state)]
    return out


def _matches(pattern: dict[str, str], keys: dict[str, str]) -> bool:
    if set(pattern) != set(keys):
        return False
    return all(re.fullmatch(re.escape(v).replace(r"\*", ".*").replace(r"\?", "."), keys[k]) for k, v in pattern.items())


def attributes(node: Any, state: model.ConsoleState, keys: dict[str, str]) -> dict[str, Any]:
    """Every attribute of the MBean ``keys`` names (JolokiaError 404 when there is none)."""
    vh = model.vhost(node.broker)
    kind = keys.get("destinationType")
    if keys.get("type") != "Broker" or keys.get("brokerName") != model.BROKER_NAME:
        raise _no_instance(keys)
    if kind is None and set(keys) == {"type", "brokerName"}:
        queues = model.queues(vh)
        topics = model.topics(vh, state)
        return {
            "BrokerName": model.BROKER_NAME, "BrokerVersion": node.broker.profile.version,
            "BrokerId": f"ID:mqemu-{node.broker.profile.name}",
            "TotalMessageCount": sum(model.queue_stats(q)["size"] for q in queues),
            "TotalConsumerCount": sum(len(q.consumers) for q in vh.queues.values()),
            "TotalProducerCount": 0, "TotalEnqueueCount": sum(q.counts.enqueued for q in queues),
            "TotalDequeueCount": sum(model.queue_stats(q)["dequeueCount"] for q in queues),
            "Queues": [{"objectName": canonical(_object_name("Queue", q.name))} for q in queues],
            "Topics": [{"objectName": canonical(_object_name("Topic", t))} for t in topics],
        }
    name = keys.get("destinationName")
    if set(keys) != {"type", "brokerName", "destinationType", "destinationName"} or name is None:
        raise _no_instance(keys)
    if kind == "Queue":
        q = next((q for q in model.queues(vh) if q.name == name), None)
        if q is None:
            raise _no_instance(keys)
        s = model.queue_stats(q)
        return {"Name": name, "QueueSize": s["size"], "EnqueueCount": s["enqueueCount"],
                "DequeueCount": s["dequeueCount"], "DispatchCount": s["dispatchCount"],
                "ExpiredCount": s["expiredCount"], "InFlightCount": s["inflightCount"],
                "ConsumerCount": s["consumerCount"], "ProducerCount": 0}
    if kind == "Topic" and name in model.topics(vh, state):
        return {"Name": name, "QueueSize": 0, "EnqueueCount": 0, "DequeueCount": 0, "DispatchCount": 0,
                "ExpiredCount": 0, "InFlightCount": 0,
                "ConsumerCount": model.topic_consumers(vh, name), "ProducerCount": 0}
    raise _no_instance(keys)


def _no_instance(keys: dict[str, str]) -> JolokiaError:
    return JolokiaError(404, "javax.management.InstanceNotFoundException", canonical(keys))


def read(node: Any, state: model.ConsoleState, req: dict[str, Any]) -> Any:
    domain, keys = parse_name(str(req.get("mbean", "")))
    attr = req.get("attribute")
    if domain != DOMAIN:
        raise _no_instance(keys)
    if any("*" in v or "?" in v for v in keys.values()):
        found = {}
        for k in mbeans(node, state):
            if _matches(keys, k):
                values = attributes(node, state, k)
                found[canonical(k)] = values if attr is None else _pick(values, attr, k, pattern=True)
        if not found:
            raise _no_instance(keys)
        return found
    values = attributes(node, state, keys)
    return values if attr is None else _pick(values, attr, keys)


def _pick(values: dict[str, Any], attr: Any, keys: dict[str, str], pattern: bool = False) -> Any:
    if isinstance(attr, list):
        return {a: _pick(values, a, keys) for a in attr if not pattern or a in values}
    if attr not in values:
        raise JolokiaError(404, "javax.management.AttributeNotFoundException",
                           f"No such attribute: {attr}")
    return values[attr]


def execute(node: Any, state: model.ConsoleState, req: dict[str, Any]) -> Any:
    domain, keys = parse_name(str(req.get("mbean", "")))
    op = str(req.get("operation", "")).split("(", 1)[0]
    args = req.get("arguments") or []
    if domain != DOMAIN:
        raise _no_instance(keys)
    attributes(node, state, keys)  # 404 for an unknown MBean
    vh = model.vhost(node.broker)
    kind = keys.get("destinationType")
    if kind is None and op in ("addQueue", "removeQueue", "addTopic", "removeTopic") and len(args) == 1:
        name = str(args[0])
        if op == "addQueue":
            if name not in vh.queues:
                vh.declare_queue(name, True, None, False, {})
        elif op == "removeQueue":
            if name in vh.queues:
                vh.delete_queue(name)
        elif op == "addTopic":
            state.topics.add(name)
        else:
            state.topics.discard(name)
        return None
    if kind == "Queue" and op == "purge" and not args:
        vh.queues[keys["destinationName"]].purge()
        return None
    raise JolokiaError(400, "java.lang.IllegalArgumentException",
                       f"No operation {op} found on MBean {canonical(keys)}")


def _handle(node: Any, state: model.ConsoleState, req: Any) -> dict[str, Any]:
    now = int(time.time())
    if not isinstance(req, dict):
        return {"error_type": "java.lang.IllegalArgumentException", "error": "java.lang.IllegalArgumentException : "
                "Invalid JSON request", "status": 400, "timestamp": now}
    try:
        kind = req.get("type")
        if kind == "read":
            value = read(node, state, req)
        elif kind == "exec":
            value = execute(node, state, req)
        elif kind == "write":
            raise JolokiaError(403, "java.lang.SecurityException", "Command type write not allowed due to policy used")
        else:
            raise JolokiaError(400, "java.lang.IllegalArgumentException",
                               f"Type {kind} is not supported here (mqemu answers read and exec)")
    except JolokiaError as e:
        return {"request": req, "error_type": e.error_type, "error": f"{e.error_type} : {e.message}",
                "status": e.status, "timestamp": now}
    return {"request": req, "value": value, "timestamp": now, "status": 200}


def _split_path(path: str) -> list[str]:
    """A Jolokia GET path's parts (``!/`` is a ``/`` inside a part, ``!!`` a ``!``)."""
    parts, cur, i = [], [], 0
    while i < len(path):
        c = path[i]
        if c == "!" and i + 1 < len(path):
            cur.append(path[i + 1])
            i += 2
            continue
        if c == "/":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return [p for p in parts if p]


def _origin_refused(request: Request) -> str | None:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return None
    host = urlsplit(origin).netloc
    return None if host and host == request.headers.get("host") else origin


async def jolokia(request: Request, node: Any, state: model.ConsoleState) -> Response:
    refused = _origin_refused(request)
    if refused is not None:
        return JSONResponse({"error_type": "java.lang.Exception", "status": 403,
                             "error": f"java.lang.Exception : Origin {refused} is not allowed to call this agent"})
    if request.method == "POST":
        raw = await read_body(request)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error_type": "java.lang.IllegalArgumentException", "status": 400,
                                 "error": "java.lang.IllegalArgumentException : Invalid JSON request"})
        if isinstance(body, list):
            return JSONResponse([_handle(node, state, r) for r in body])
        return JSONResponse(_handle(node, state, body))
    parts = _split_path(unquote(request.path_params.get("path", "")))
    if not parts:
        return JSONResponse({"request": {"type": "version"}, "status": 200, "timestamp": int(time.time()),
                             "value": {"agent": "1.7.1", "protocol": "7.2", "config": {}, "info": {}}})
    kind, rest = parts[0], parts[1:]
    req: dict[str, Any] = {"type": kind}
    if rest:
        req["mbean"] = rest[0]
    if kind == "read" and len(rest) > 1:
        req["attribute"] = rest[1]
    elif kind == "exec" and len(rest) > 1:
        req["operation"] = rest[1]
        req["arguments"] = rest[2:]
    return JSONResponse(_handle(node, state, req))


# -- /admin/xml ------------------------------------------------------------------------
def _xml(text: str) -> Response:
    return Response(text, 200, media_type="text/xml")


async def xml_queues(request: Request, node: Any, state: model.ConsoleState) -> Response:
    out = ["<queues>"]
    for q in model.queues(model.vhost(node.broker)):
        s = model.queue_stats(q)
        href = quoteattr(f"queueBrowse/{q.name}?view=rss&feedType=atom_1.0")[1:-1]
        rss = quoteattr(f"queueBrowse/{q.name}?view=rss&feedType=rss_2.0")[1:-1]
        out.append(f"<queue name={quoteattr(q.name)}>\n<stats size=\"{s['size']}\"\n"
                   f"consumerCount=\"{s['consumerCount']}\"\nenqueueCount=\"{s['enqueueCount']}\"\n"
                   f"dequeueCount=\"{s['dequeueCount']}\"/>\n"
                   f"<feed>\n<atom>{href}</atom>\n<rss>{rss}</rss>\n</feed>\n</queue>")
    out.append("</queues>")
    return _xml("\n".join(out) + "\n")


async def xml_topics(request: Request, node: Any, state: model.ConsoleState) -> Response:
    vh = model.vhost(node.broker)
    out = ["<topics>"]
    for t in model.topics(vh, state):
        out.append(f"<topic name={quoteattr(t)}>\n<stats size=\"0\"\n"
                   f"consumerCount=\"{model.topic_consumers(vh, t)}\"\nenqueueCount=\"0\"\n"
                   f"dequeueCount=\"0\"/>\n</topic>")
    out.append("</topics>")
    return _xml("\n".join(out) + "\n")


async def xml_subscribers(request: Request, node: Any, state: model.ConsoleState) -> Response:
    out = ["<subscribers>"]
    for q, topic in model.durable_subscribers(model.vhost(node.broker)):
        client, _, sub = q.name.partition(":")
        st = model.queue_stats(q)
        out.append(f"<subscriber clientId={quoteattr(client)} subscriptionName={quoteattr(sub)} "
                   f"connectionId=\"\" destinationName={quoteattr(topic)} selector=\"null\" "
                   f"active=\"{'yes' if q.consumers else 'no'}\">\n"
                   f"<stats pendingQueueSize=\"{len(q.ready)}\"\ndispatchedQueueSize=\"{q.unacked}\"\n"
                   f"dispatchedCounter=\"{st['dispatchCount']}\"\nenqueueCounter=\"{st['enqueueCount']}\"\n"
                   f"dequeueCounter=\"{st['dequeueCount']}\"/>\n</subscriber>")
    out.append("</subscribers>")
    return _xml("\n".join(out) + "\n")


async def admin_index(request: Request, node: Any, state: model.ConsoleState) -> Response:
    vh = model.vhost(node.broker)
    html = (f"<html><head><title>localhost : ActiveMQ Console</title></head><body>"
            f"<h1>Welcome to the mqemu ActiveMQ {node.broker.profile.version} console of localhost</h1>"
            f"<p>Queues: {len(model.queues(vh))}; topics: {len(model.topics(vh, state))}</p>"
            f"<p><a href=\"xml/queues.jsp\">queues.jsp</a> <a href=\"xml/topics.jsp\">topics.jsp</a> "
            f"<a href=\"xml/subscribers.jsp\">subscribers.jsp</a></p></body></html>")
    return Response(html, 200, media_type="text/html")
