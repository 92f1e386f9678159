"""The management API's questions to the other nodes of a cluster: a small request/answer over
the node's links (link channel ``mgmt``), asked only when an HTTP request needs the cluster's
view (nothing is polled).

A request is the JSON ``{"q": id, "op": OP, "args": {...}}``; the peer answers on its own link
to the asker with ``{"a": id, "ok": VALUE}`` (or ``{"a": id, "error": TEXT}``). What an ``op``
means and what its answer holds is the HTTP layer's (``protocols/http/cluster.py``): this
module only carries the bytes, so it imports nothing of the protocols. ``ask`` sends to every
peer at once and waits at most ``timeout`` seconds (1 s): a peer whose link is down, that does
not answer in time or answers an error is ``None`` in the result (left out; ``/api/nodes``
shows it not running).
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any, Callable

import trio

log = logging.getLogger("mqemu.ha.clustering.mgmt")

CHANNEL = "mgmt"
TIMEOUT = 1.0  # seconds a request waits for the peers' answers

Answerer = Callable[[str, dict[str, Any]], Any]


class _Pending:
    __slots__ = ("waiting", "answers", "done")

    def __init__(self, waiting: set[str]) -> None:
        self.waiting = waiting
        self.answers: dict[str, Any] = {}
        self.done = trio.Event()


class ClusterAsk:
    """One node's side of the management requests. ``node`` is this node's name, ``nodes``
    every node's (this one included), ``answer(op, args)`` what this node answers to a peer's
    request (a JSON value, or an awaitable of one; an exception is answered as an error).
    ``home(vhost, queue)`` is the queue's home node from the replicated definitions (None:
    node-local, e.g. exclusive). The HTTP app reaches it as ``node.cluster_ask``."""

    def __init__(self, links: Any, nodes: list[str], answer: Answerer,
                 home: Callable[[str, str], str | None], timeout: float = TIMEOUT) -> None:
        self.links = links
        self.node = links.node
        self.nodes = sorted(nodes)
        self.peers = [n for n in self.nodes if n != self.node]
        self.home = home
        self.timeout = timeout
        self._answer = answer
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._nursery: trio.Nursery | None = None
        links.on(CHANNEL, self._received)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Answers peers' requests in tasks of its own (never in the link's reader)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def reachable(self, peer: str) -> bool:
        return bool(self.links.up(peer))

    async def ask(self, op: str, args: dict[str, Any] | None = None,
                  peers: list[str] | None = None) -> dict[str, Any]:
        """Ask ``peers`` (default: every other node) ``op``; their answers by name, None for
        each peer that did not answer within the timeout (or whose link is down)."""
        targets = self.peers if peers is None else [p for p in peers if p != self.node]
        rid = next(self._ids)
        data = json.dumps({"q": rid, "op": op, "args": args or {}}, separators=(",", ":")).encode()
        sent = {p for p in targets if self.links.send(p, CHANNEL, data)}
        pending = _Pending(set(sent))
        if sent:
            self._pending[rid] = pending
            try:
                with trio.move_on_after(self.timeout):
                    await pending.done.wait()
            finally:
                self._pending.pop(rid, None)
        return {p: pending.answers.get(p) for p in targets}

    # -- the link's side ---------------------------------------------------------------
    def _received(self, peer: str, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            log.warning("mgmt: a malformed frame from %s dropped", peer)
            return
        if "q" in msg:
            if self._nursery is not None:
                self._nursery.start_soon(self._reply, peer, msg["q"], str(msg.get("op")), msg.get("args") or {})
            return
        pending = self._pending.get(msg.get("a"))
        if pending is None or peer not in pending.waiting:
            return  # late: its request timed out
        pending.waiting.discard(peer)
        if "ok" in msg:
            pending.answers[peer] = msg["ok"]
        else:
            log.info("mgmt: %s answered an error: %s", peer, msg.get("error"))
        if not pending.waiting:
            pending.done.set()

    async def _reply(self, peer: str, rid: int, op: str, args: dict[str, Any]) -> None:
        try:
            value = self._answer(op, args)
            if hasattr(value, "__await__"):
                value = await value
            out = {"a": rid, "ok": value}
        except Exception as e:  # a bad request or a bug: the asker leaves this node out
            log.warning("mgmt: request %r from %s failed: %s: %s", op, peer, type(e).__name__, e)
            out = {"a": rid, "error": f"{type(e).__name__}: {e}"}
        self.links.send(peer, CHANNEL, json.dumps(out, separators=(",", ":")).encode())
