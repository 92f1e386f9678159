"""The cluster's view in the management API: in a cluster every node answers with the whole
cluster (RabbitMQ's management plugin does the same).

The node gives the app ``node.cluster_ask`` (``ha/clustering/mgmt.ClusterAsk``; None outside a
cluster, and then nothing here asks anything): ``nodes`` (every node's name), ``node`` (this
one's), ``home(vhost, queue)`` (the queue's home node from the replicated definitions, None
for a node-local queue), ``reachable(peer)`` and ``async ask(op, args, peers=None)`` ->
{peer: answer or None}. A handler asks the other nodes only when its request needs them;
``answer`` is what this node answers to a peer's ``op`` (the ``ClusterAsk`` calls it):

- ``node``: ``{"node": <this node's /api/nodes object>, "unreachable": [peers]}``;
- ``overview``: this node's share (``api_node.overview_part``), args ``vhosts``, ``user``;
- ``queues`` (args ``vhost``): the queues whose home this node is, and its node-local ones;
  ``queue`` (``vhost``, ``name``): one of them with its consumers, or None;
- ``connections``, ``channels``, ``consumers``: all of this node's; ``connection`` (``name``);
- ``close`` (``name``, ``reason``, ``user``): ``closed``, ``not_found`` or ``not_authorised``;
- ``exchanges`` (``vhost``): this node's exchange counters, summed by the asker.

Peers answer everything they have; the asking node applies the user's view (vhosts, own
connections) to the answers. A node that does not answer within the timeout is left out.
"""

from __future__ import annotations

from typing import Any, Callable

from .common import JsonList


def ask_of(node: Any) -> Any:
    return getattr(node, "cluster_ask", None)


def lists_queue(node: Any, vhost: str, name: str) -> bool:
    """Whether this node lists the queue: outside a cluster always; in one, when it is the
    queue's home, or the queue is node-local (exclusive, auto-delete, server-named)."""
    ask = ask_of(node)
    if ask is None:
        return True
    home = ask.home(vhost, name)
    return home is None or home == ask.node


def cluster_name(node: Any) -> str:
    ask = ask_of(node)
    return f"rabbit@{ask.nodes[0]}" if ask is not None else f"rabbit@{node.name}"


def links_json(node: Any) -> list[dict[str, Any]]:
    """``cluster_links``: the peers this node has both link directions with."""
    ask = ask_of(node)
    if ask is None:
        return []
    return [{"name": f"rabbit@{p}", "peer_addr": "", "peer_port": 0, "sock_addr": "", "sock_port": 0,
             "send_bytes": 0, "recv_bytes": 0, "stats": {}} for p in ask.peers if ask.reachable(p)]


async def gather(node: Any, op: str, args: dict[str, Any], peers: list[str] | None = None) -> list[Any]:
    """The answers of the peers that answered (none outside a cluster)."""
    ask = ask_of(node)
    if ask is None:
        return []
    answers = await ask.ask(op, args, peers)
    return [a for a in answers.values() if a is not None]


async def first(node: Any, op: str, args: dict[str, Any], peers: list[str] | None = None) -> Any:
    """The first peer's answer that is not None (an object one of them has)."""
    for a in await gather(node, op, args, peers):
        if a is not None:
            return a
    return None


async def listing(node: Any, local: list[Any], render: Callable[[Any], dict[str, Any]], op: str,
                  args: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> JsonList:
    """This node's objects (rendered as they are streamed) and, in a cluster, the peers'
    answers to ``op`` that ``keep`` lets through (already JSON)."""
    ask = ask_of(node)
    if ask is None:
        return JsonList(local, render)
    extra = [item for part in await gather(node, op, args) for item in part if keep(item)]
    return JsonList(local + extra, lambda o: o if isinstance(o, dict) else render(o))


def _down(name: str) -> dict[str, Any]:
    """A node that did not answer, as RabbitMQ lists a stopped member."""
    return {"name": f"rabbit@{name}", "type": "disc", "running": False, "partitions": [], "cluster_links": []}


async def nodes(node: Any, only: str | None = None) -> list[dict[str, Any]]:
    """``/api/nodes``: every node of the cluster, ``running`` when it answered; each one's
    ``partitions`` are the running nodes it does not reach."""
    from .api_node import node_json

    mine = node_json(node)
    ask = ask_of(node)
    if ask is None:
        return [mine] if only in (None, mine["name"]) else []
    answers = await ask.ask("node", {})
    seen: dict[str, tuple[dict[str, Any], list[str]]] = {ask.node: (mine, [p for p in ask.peers
                                                                          if not ask.reachable(p)])}
    for peer, a in answers.items():
        if a is not None:
            seen[peer] = (a["node"], a["unreachable"])
    out = []
    for name in ask.nodes:
        if name not in seen:
            out.append(_down(name))
            continue
        data, unreachable = seen[name]
        data["partitions"] = [f"rabbit@{p}" for p in unreachable if p in seen]
        out.append(data)
    return [n for n in out if only is None or n["name"] == only]


def answer(node: Any, op: str, args: dict[str, Any]) -> Any:
    """This node's answer to a peer's request (see the module's text)."""
    from . import api_node as nd
    from .rates import exchange_counts
    from .shapes import queue_json

    broker = node.broker
    if op == "node":
        ask = ask_of(node)
        return {"node": nd.node_json(node), "unreachable": [p for p in ask.peers if not ask.reachable(p)]
                if ask is not None else []}
    if op == "overview":
        return nd.overview_part(node, args.get("vhosts"), args.get("user"))
    if op == "queues":
        only = args.get("vhost")
        return [queue_json(node, vh, q, vh.queue_policies.get(q.name)) for vh in list(broker.vhosts.values())
                if only is None or vh.name == only for q in list(vh.queues.values()) if lists_queue(node, vh.name, q.name)]
    if op == "queue":
        vh = broker.vhosts.get(args["vhost"])
        q = vh.queues.get(args["name"]) if vh is not None else None
        if q is None or not lists_queue(node, vh.name, q.name):  # another node's copy: not its figures
            return None
        data = queue_json(node, vh, q, vh.queue_policies.get(q.name))
        data["consumer_details"] = [nd.consumer_json(node, vh, c) for c in q.consumers]
        data["deliveries"], data["incoming"] = [], []
        return data
    if op == "connections":
        return [nd.connection_json(node, s, i) for s, i in nd.local_connections(node)]
    if op == "connection":
        found = nd.find_connection(node, args["name"])
        return nd.connection_json(node, *found) if found is not None else None
    if op == "close":
        return nd.close_connection(node, args["name"], args["reason"], args.get("user"))
    if op == "channels":
        return nd.channels_json(node, nd.local_connections(node))
    if op == "consumers":
        return [nd.consumer_json(node, vh, c) for vh, c in nd.local_consumers(node, list(broker.vhosts.values()))]
    if op == "exchanges":
        return exchange_counts(node, args.get("vhost"))
    raise ValueError(f"unknown request {op!r}")
