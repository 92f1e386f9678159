"""Queues, exchanges and bindings in RabbitMQ's management API: list, get, declare (PUT),
delete, purge, ``get`` messages from a queue, ``publish`` to an exchange, bindings by
``properties_key``."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from starlette.responses import Response

from mqemu.broker.errors import BrokerError
from mqemu.broker.message import Message

from . import cluster
from .api_node import consumer_json
from .cluster import lists_queue
from .common import (Ctx, HttpError, JsonList, bad_request, created_or_updated, flag, from_broker_error, no_content, not_found,
                     ok, segment)
from .rates import exchange_sample, exchange_stats, sampler_of
from .shapes import (binding_json, default_bindings, exchange_json, message_json, properties_key, queue_down_json,
                     queue_json)

ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")


def _vhost_for_write(ctx: Ctx) -> Any:
    return ctx.vhost(segment(ctx.request, "vhost"), missing=HttpError(404, "not_found", "vhost_not_found"))


def _exchange_name(ctx: Ctx) -> str:
    name = segment(ctx.request, "exchange")
    return "" if name == "amq.default" else name


# -- queues ---------------------------------------------------------------------------
async def list_queues(ctx: Ctx) -> Any:
    """Every queue once: in a cluster each from its home node (``cluster.lists_queue``)."""
    node = ctx.node
    vhosts = ctx.vhosts_from_path()
    names = {vh.name for vh in vhosts}
    only = segment(ctx.request, "vhost") if "vhost" in ctx.request.path_params else None
    local = [(vh, q) for vh in vhosts for q in vh.queues.values() if lists_queue(node, vh.name, q.name)]

    def render(pair: tuple[Any, Any]) -> dict[str, Any]:
        return queue_json(node, pair[0], pair[1], pair[0].queue_policies.get(pair[1].name))
    ask = cluster.ask_of(node)
    if ask is None:
        return JsonList(local, render)
    answers = await ask.ask("queues", {"vhost": only})
    silent = {peer for peer, a in answers.items() if a is None}
    theirs = [q for a in answers.values() if a for q in a if q["vhost"] in names]
    down = [queue_down_json(vh, q, home) for vh in vhosts for q in list(vh.queues.values())
            if (home := ask.home(vh.name, q.name)) in silent]
    return JsonList(local + theirs + down, lambda o: o if isinstance(o, dict) else render(o))


async def get_queue(ctx: Ctx) -> Response:
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    name = segment(ctx.request, "queue")
    ask = cluster.ask_of(ctx.node)
    home = ask.home(vh.name, name) if ask is not None else None
    if home is not None and home != ask.node:  # the home node's figures
        data = await cluster.first(ctx.node, "queue", {"vhost": vh.name, "name": name}, [home]) \
            if ask.reachable(home) else None
        if data is not None:
            return ok(data)
        if name in vh.queues:  # its home does not answer: down, as RabbitMQ shows it
            return ok(queue_down_json(vh, vh.queues[name], home))
    q = vh.queues.get(name)
    if q is None:
        # another node's node-local (exclusive) queue, or one whose declaration is not here yet
        data = await cluster.first(ctx.node, "queue", {"vhost": vh.name, "name": name}) if ask is not None else None
        if data is None:
            raise not_found()
        return ok(data)
    data = queue_json(ctx.node, vh, q, vh.queue_policies.get(q.name))
    data["consumer_details"] = [consumer_json(ctx.node, vh, c) for c in q.consumers]
    data["deliveries"], data["incoming"] = [], []
    return ok(data)


async def put_queue(ctx: Ctx) -> Response:
    vh = _vhost_for_write(ctx)
    name = segment(ctx.request, "queue")
    body = await ctx.body()
    ctx.check(vh.name, "configure", "queue", name)
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise bad_request("arguments must be an object")
    exists = name in vh.queues
    try:
        vh.declare_queue(name, durable=flag(body.get("durable")), auto_delete=flag(body.get("auto_delete")),
                         arguments=arguments)
    except BrokerError as e:
        raise from_broker_error(e) from None
    return created_or_updated(not exists)


async def delete_queue(ctx: Ctx) -> Response:
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    name = segment(ctx.request, "queue")
    q = vh.queues.get(name)
    if q is None:
        raise not_found()
    ctx.check(vh.name, "configure", "queue", name)
    params = ctx.request.query_params
    try:
        if_unused, if_empty = flag(params.get("if-unused")), flag(params.get("if-empty"))
        # the management plugin deletes any queue, another connection's exclusive one too
        vh.delete_queue(name, if_unused=if_unused, if_empty=if_empty, internal=not (if_unused or if_empty))
    except BrokerError as e:
        raise from_broker_error(e) from None
    return no_content()


async def purge_queue(ctx: Ctx) -> Response:
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    q = vh.queues.get(segment(ctx.request, "queue"))
    if q is None:
        raise not_found()
    ctx.check(vh.name, "read", "queue", q.name)
    q.purge()
    return no_content()


async def get_messages(ctx: Ctx) -> Response:
    """``POST .../get``: up to ``count`` messages, settled as ``ackmode`` says."""
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    q = vh.queues.get(segment(ctx.request, "queue"))
    if q is None:
        raise not_found()
    body = await ctx.body()
    ctx.check(vh.name, "read", "queue", q.name)
    ackmode = body.get("ackmode")
    if ackmode is None and "requeue" in body:  # rabbitmqadmin before 3.7 sent requeue
        ackmode = "ack_requeue_true" if flag(body.get("requeue")) else "ack_requeue_false"
    if ackmode not in ACKMODES:
        raise bad_request(f"Unsupported ackmode {ackmode}" if ackmode else "ackmode is required")
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise bad_request(f"Unsupported encoding {encoding}")
    try:
        count = int(body.get("count", 1))
        truncate = int(body["truncate"]) if body.get("truncate") not in (None, "") else None
    except (TypeError, ValueError):
        raise bad_request("count and truncate must be integers") from None
    entries = []
    out = []
    no_ack = ackmode == "ack_requeue_false"  # as RabbitMQ: a basic.get with no_ack (get_no_ack in the stats)
    for _ in range(max(0, count)):
        entry = q.get(no_ack=no_ack)
        if entry is None:
            break
        entries.append(entry)
        out.append(message_json(entry, len(q.ready), encoding, truncate))
    if entries and not no_ack:
        if ackmode.startswith("ack_requeue_true") or ackmode == "reject_requeue_true":
            q.reject(entries, None, requeue=True)
        else:
            q.reject(entries, None, requeue=False)
    return ok(out)


# -- exchanges ------------------------------------------------------------------------
async def _exchange_stats(ctx: Ctx, only: str | None) -> Any:
    """``stats(vh, ex)``: an exchange's message_stats, in a cluster summed over the nodes."""
    node = ctx.node
    sampler = sampler_of(node)
    peers = await cluster.gather(node, "exchanges", {"vhost": only})

    def stats(vh: Any, ex: Any) -> dict[str, Any] | None:
        counts, rates = exchange_sample(vh, ex), sampler.exchange_rates(vh.name, ex) or (0.0, 0.0)
        total = [*counts, *rates]
        for part in peers:
            theirs = part.get(vh.name, {}).get(ex.name)
            if theirs is not None:
                total = [a + b for a, b in zip(total, theirs)]
        return exchange_stats(total[:2], total[2:]) if any(total[:2]) else None
    return stats


async def list_exchanges(ctx: Ctx) -> Any:
    only = segment(ctx.request, "vhost") if "vhost" in ctx.request.path_params else None
    pairs = [(vh, ex) for vh in ctx.vhosts_from_path() for ex in vh.exchanges.values()]
    stats = await _exchange_stats(ctx, only)
    return JsonList(pairs, lambda pair: exchange_json(pair[0], pair[1], stats(*pair)))


async def get_exchange(ctx: Ctx) -> Response:
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    ex = vh.exchanges.get(_exchange_name(ctx))
    if ex is None:
        raise not_found()
    data = exchange_json(vh, ex, (await _exchange_stats(ctx, vh.name))(vh, ex))
    data["incoming"], data["outgoing"] = [], []
    return ok(data)


async def put_exchange(ctx: Ctx) -> Response:
    vh = _vhost_for_write(ctx)
    name = _exchange_name(ctx)
    body = await ctx.body()
    ctx.check(vh.name, "configure", "exchange", name)
    xtype = body.get("type")
    if not xtype:
        raise bad_request("[{key_missing,type}]")
    arguments = body.get("arguments") or {}
    exists = name in vh.exchanges
    try:
        vh.declare_exchange(name, xtype, durable=flag(body.get("durable")),
                            auto_delete=flag(body.get("auto_delete")), internal=flag(body.get("internal")),
                            arguments=arguments)
    except BrokerError as e:
        raise from_broker_error(e) from None
    return created_or_updated(not exists)


async def delete_exchange(ctx: Ctx) -> Response:
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    name = _exchange_name(ctx)
    if name not in vh.exchanges:
        raise not_found()
    ctx.check(vh.name, "configure", "exchange", name)
    try:
        vh.delete_exchange(name, if_unused=flag(ctx.request.query_params.get("if-unused")))
    except BrokerError as e:
        raise from_broker_error(e) from None
    return no_content()


async def publish(ctx: Ctx) -> Response:
    """``POST .../publish``: ``{"routed": bool}``."""
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    name = _exchange_name(ctx)
    body = await ctx.body()
    ctx.check(vh.name, "write", "exchange", name)
    for key in ("routing_key", "payload", "payload_encoding", "properties"):
        if key not in body:
            raise bad_request(f"[{{key_missing,{key}}}]")
    payload = body["payload"]
    if body["payload_encoding"] == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise bad_request("not_base64") from None
    elif body["payload_encoding"] == "string":
        data = str(payload).encode("utf-8")
    else:
        raise bad_request(f"unsupported payload encoding {body['payload_encoding']}")
    props = body["properties"] or {}
    if not isinstance(props, dict):
        raise bad_request("properties must be an object")
    properties = {k: v for k, v in props.items() if v is not None}
    if "delivery_mode" in properties:
        try:
            properties["delivery_mode"] = int(properties["delivery_mode"])
        except (TypeError, ValueError):
            raise bad_request("delivery_mode must be an integer") from None
    try:
        routed, _refused = vh.publish(name, str(body["routing_key"]), Message(name, str(body["routing_key"]), data,
                                                                             properties))
    except BrokerError as e:  # RabbitMQ: 400 with the AMQP error as a channel would get it
        raise bad_request(f"{e.code} {e}") from None
    return ok({"routed": routed > 0})


# -- bindings -------------------------------------------------------------------------
def _bindings_of(vh: Any) -> list[dict[str, Any]]:
    return default_bindings(vh) + [binding_json(vh, b) for b in vh.bindings()]


async def list_bindings(ctx: Ctx) -> Any:
    if "queue" in ctx.request.path_params:  # /api/queues/VH/Q/bindings
        vh = ctx.vhosts_from_path()[0]
        name = segment(ctx.request, "queue")
        if name not in vh.queues:
            raise not_found()
        return ok([b for b in _bindings_of(vh) if b["destination_type"] == "queue" and b["destination"] == name])
    return JsonList([(vh, b) for vh in ctx.vhosts_from_path() for b in [*default_bindings(vh), *vh.bindings()]],
                    _binding)


def _binding(pair: tuple[Any, Any]) -> Any:
    """A default binding (already JSON) or a Binding of the vhost."""
    vh, b = pair
    return b if isinstance(b, dict) else binding_json(vh, b)


async def exchange_bindings(ctx: Ctx) -> Any:
    """``/api/exchanges/VH/X/bindings/source`` (bindings from X) and ``.../destination`` (to X)."""
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    name = _exchange_name(ctx)
    if name not in vh.exchanges:
        raise not_found()
    side = ctx.request.path_params["side"]
    if side == "source":
        chosen = [b for b in _bindings_of(vh) if b["source"] == name]
    else:
        chosen = [b for b in _bindings_of(vh) if b["destination_type"] == "exchange" and b["destination"] == name]
    return ok(chosen)


def _ends(ctx: Ctx) -> tuple[Any, str, str, str]:
    """vhost, source, destination and its kind from the path."""
    vh = ctx.vhost(segment(ctx.request, "vhost"))
    kind = "queue" if ctx.request.path_params["kind"] == "q" else "exchange"
    source = segment(ctx.request, "source")
    dest = segment(ctx.request, "destination")
    if source not in vh.exchanges or (dest not in (vh.queues if kind == "queue" else vh.exchanges)):
        raise not_found()
    return vh, source, dest, kind


async def list_between(ctx: Ctx) -> Response:
    vh, source, dest, kind = _ends(ctx)
    return ok([b for b in _bindings_of(vh) if b["source"] == source and b["destination"] == dest
               and b["destination_type"] == kind])


async def create_binding(ctx: Ctx) -> Response:
    vh, source, dest, kind = _ends(ctx)
    body = await ctx.body()
    ctx.check(vh.name, "write", kind, dest)
    ctx.check(vh.name, "read", "exchange", source)
    key = str(body.get("routing_key", ""))
    arguments = body.get("arguments") or {}
    try:
        vh.bind(source, dest, key, arguments, destination_kind=kind)
    except BrokerError as e:
        raise from_broker_error(e) from None
    location = f"{properties_key(key, arguments)}"
    return Response(status_code=201, headers={"location": location})


def _find_binding(ctx: Ctx) -> tuple[Any, Any]:
    vh, source, dest, kind = _ends(ctx)
    props = segment(ctx.request, "props")  # decoded once, as properties_key(...) decoded once
    for b in vh.bindings():
        if (b.source, b.destination, b.destination_kind) == (source, dest, kind) and \
                unquote(properties_key(b.routing_key, b.args)) == props:
            return vh, b
    raise not_found()


async def get_binding(ctx: Ctx) -> Response:
    vh, b = _find_binding(ctx)
    return ok(binding_json(vh, b))


async def delete_binding(ctx: Ctx) -> Response:
    vh, b = _find_binding(ctx)
    ctx.check(vh.name, "write", b.destination_kind, b.destination)
    vh.unbind(b.source, b.destination, b.routing_key, b.args, destination_kind=b.destination_kind)
    return no_content()


