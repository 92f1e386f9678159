"""The cluster's definitions as a replicated state (``Definitions``) and how one node's broker is
made to hold them (``apply_to_broker``, ``sync_broker``).

An operation is a JSON object: ``op`` (the ``broker.definition_hook`` operations), ``vhost``,
the item's fields, and for a queue declaration its home ``node``; table values go through
``to_json``/``from_json`` (bytes, decimals and timestamps tagged, so a declare's arguments
compare equal on every node). ``Definitions.apply`` is total: an operation on what is not
there changes nothing, so every member reaches the same state from the same log.

The snapshot (``Definitions.dump``) is the definitions export's shape: the access sections as
``definitions.save_access`` keeps them (``access``, absent until the first change of users,
vhosts, permissions or policies), then ``exchanges``, ``queues`` (each with its ``node`` and
``type``) and ``bindings`` with their ``vhost``, and ``seqs``: the last sequence number
applied from each proposer (``ClusterMeta``: a proposal retried is applied once).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import logging
from typing import Any

from mqemu.broker import definitions as defs
from mqemu.broker.definition_hook import binding_item, replicated_queue
from mqemu.broker.errors import BrokerError
from mqemu.broker.policies import clear_policy

log = logging.getLogger("mqemu.ha.clustering")


# -- table values ---------------------------------------------------------------------
def to_json(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, decimal.Decimal):
        return {"$decimal": str(v)}
    if isinstance(v, datetime.datetime):
        return {"$time": v.isoformat()}
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    return v


def from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1:
            ((k, x),) = v.items()
            if k == "$bytes":
                return base64.b64decode(x)
            if k == "$decimal":
                return decimal.Decimal(x)
            if k == "$time":
                return datetime.datetime.fromisoformat(x)
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def binding_key(vhost: str, item: dict[str, Any]) -> str:
    return json.dumps([vhost, item["source"], item["destination"], item["destination_type"], item["routing_key"],
                       item.get("arguments") or {}], sort_keys=True)


def object_key(op: dict[str, Any]) -> str:
    """The definition an operation is about (the proposer's own pending changes are per key)."""
    kind = op["op"]
    if kind == "access":
        return "access"
    if kind in ("bind", "unbind"):
        return "b" + binding_key(op["vhost"], op)
    return f"{kind.split('.')[0]}\0{op['vhost']}\0{op['name']}"


class Definitions:
    """The replicated state: what every member holds once it applied the same log."""

    def __init__(self) -> None:
        self.access: dict[str, Any] | None = None
        self.exchanges: dict[tuple[str, str], dict[str, Any]] = {}
        self.queues: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: dict[str, dict[str, Any]] = {}
        self.seqs: dict[str, int] = {}

    def apply(self, op: dict[str, Any]) -> None:
        kind, vh = op["op"], str(op.get("vhost") or "")
        if kind == "access":
            self.access = op["access"]
            vhosts = {v["name"] for v in op["access"].get("vhosts", [])}
            for table in (self.exchanges, self.queues):
                for pair in [k for k in table if k[0] not in vhosts]:
                    del table[pair]
            for key in [k for k, b in self.bindings.items() if b["vhost"] not in vhosts]:
                del self.bindings[key]
        elif kind == "exchange.declare":
            self.exchanges.setdefault((vh, op["name"]), _item(op))
        elif kind == "exchange.delete":
            self.exchanges.pop((vh, op["name"]), None)
            self._unbind_all(vh, "exchange", op["name"], source=True)
        elif kind == "queue.declare":
            self.queues.setdefault((vh, op["name"]), _item(op))
        elif kind == "queue.delete":
            self.queues.pop((vh, op["name"]), None)
            self._unbind_all(vh, "queue", op["name"])
        elif kind == "bind":
            self.bindings.setdefault(binding_key(vh, op), _item(op))
        elif kind == "unbind":
            self.bindings.pop(binding_key(vh, op), None)
        else:
            log.warning("an unknown definitions operation %r: skipped", kind)

    def _unbind_all(self, vhost: str, kind: str, name: str, source: bool = False) -> None:
        for key, b in list(self.bindings.items()):
            if b["vhost"] == vhost and ((b["destination_type"] == kind and b["destination"] == name)
                                        or (source and b["source"] == name)):
                del self.bindings[key]

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.access is None else {"access": self.access}
        out["exchanges"] = list(self.exchanges.values())
        out["queues"] = list(self.queues.values())
        out["bindings"] = list(self.bindings.values())
        out["seqs"] = dict(self.seqs)
        return out

    @classmethod
    def load(cls, data: dict[str, Any]) -> Definitions:
        d = cls()
        d.access = data.get("access")
        d.exchanges = {(x["vhost"], x["name"]): x for x in data.get("exchanges", [])}
        d.queues = {(q["vhost"], q["name"]): q for q in data.get("queues", [])}
        d.bindings = {binding_key(b["vhost"], b): b for b in data.get("bindings", [])}
        d.seqs = dict(data.get("seqs", {}))
        return d


def _item(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if k not in ("op", "o", "s")}


# -- a node's broker --------------------------------------------------------------------
def apply_to_broker(broker: Any, op: dict[str, Any], stand_in: Any = None) -> None:
    """Make ``broker`` hold what ``op`` did (the caller has turned the hook off). What cannot
    be done here (an end of a binding missing) is logged and skipped. ``stand_in(vh, op,
    arguments)``, when given, takes a queue declaration instead and says whether it did (a
    classic queue homed on another node: ``ClusterMeta.stand_in``)."""
    kind, vh = op["op"], broker.vhosts.get(op.get("vhost") or "")
    try:
        if kind == "access":
            apply_access(broker, op["access"])
        elif vh is None:
            return
        elif kind == "exchange.declare":
            ex = vh.exchanges.get(op["name"])
            if ex is not None and (ex.type, ex.durable, ex.auto_delete, ex.internal) != (
                    op["type"], op["durable"], op["auto_delete"], op["internal"]):
                vh.delete_exchange(op["name"])  # the cluster's declaration wins
            vh.declare_exchange(op["name"], op["type"], op["durable"], op["auto_delete"], op["internal"],
                                from_json(op.get("arguments") or {}))
        elif kind == "exchange.delete":
            vh.delete_exchange(op["name"])
        elif kind == "queue.declare":
            args = from_json(op.get("arguments") or {})
            if stand_in is not None and stand_in(vh, op, args):
                return
            q = vh.queues.get(op["name"])
            if q is not None and not _replicated(q):
                log.warning("definitions: queue %r in vhost %r is node-local here (exclusive or auto-delete): "
                            "the cluster's declaration is not applied", op["name"], vh.name)
                return
            if q is not None:
                try:
                    vh._check_equivalent(q, op["durable"], False, op["auto_delete"], args)
                except BrokerError:
                    vh.delete_queue(op["name"], internal=True)  # the cluster's declaration wins
            vh.declare_queue(op["name"], durable=op["durable"], auto_delete=op["auto_delete"], arguments=args)
        elif kind == "queue.delete":
            vh.delete_queue(op["name"], internal=True)
        elif kind in ("bind", "unbind"):
            call = vh.bind if kind == "bind" else vh.unbind
            call(op["source"], op["destination"], op["routing_key"], from_json(op.get("arguments") or {}),
                 destination_kind=op["destination_type"])
    except BrokerError as e:
        log.info("definitions: %s in vhost %r not applied here: %s", kind, op.get("vhost"), e)


def apply_access(broker: Any, access: dict[str, Any]) -> None:
    """Users, vhosts, permissions, policies and the kept extras become ``access``."""
    wanted = {v["name"]: v for v in access.get("vhosts", [])}
    for name in [n for n in broker.vhosts if n not in wanted]:
        defs.delete_vhost(broker, name)
    for name, item in wanted.items():
        defs.add_vhost(broker, name, {**item, **(item.get("metadata") or {})})
    defs.restore_access(broker, access)
    keep = {(p["vhost"], p["name"]) for p in access.get("policies", [])}
    for vh in broker.vhosts.values():
        for name in [n for n in vh.policies if (vh.name, n) not in keep]:
            clear_policy(vh, name)
    defs.save_access(broker)


def sync_broker(broker: Any, state: Definitions, remove: bool, stand_in: Any = None) -> None:
    """Make ``broker`` hold ``state``: what is missing is declared; with ``remove``, the
    replicated kinds of definitions the state does not have are deleted (a snapshot installed)."""
    if state.access is not None:
        apply_access(broker, state.access)
    if remove:
        for vh in list(broker.vhosts.values()):
            for b in list(vh.bindings()):
                dest = vh.queues.get(b.destination) if b.destination_kind == "queue" else None
                if b.destination_kind == "queue" and (dest is None or not _replicated(dest)):
                    continue
                if binding_key(vh.name, to_json(binding_item(b))) not in state.bindings:
                    vh.unbind(b.source, b.destination, b.routing_key, b.args, destination_kind=b.destination_kind)
            for name, q in list(vh.queues.items()):
                if _replicated(q) and (vh.name, name) not in state.queues:
                    vh.delete_queue(name, internal=True)
            for name in list(vh.exchanges):
                if name and not name.startswith("amq.") and (vh.name, name) not in state.exchanges:
                    vh.delete_exchange(name)
    for x in state.exchanges.values():
        apply_to_broker(broker, {"op": "exchange.declare", **x})
    for q in state.queues.values():
        apply_to_broker(broker, {"op": "queue.declare", **q}, stand_in)
    for b in state.bindings.values():
        apply_to_broker(broker, {"op": "bind", **b})


def _replicated(q: Any) -> bool:
    return replicated_queue(q.name, q.exclusive_owner, q.auto_delete) and not q.name.startswith(LOCAL_QUEUE_PREFIXES)


# MQTT's session queues stay on their node with the MQTT session state they belong to.
LOCAL_QUEUE_PREFIXES = ("mqtt-subscription-",)
