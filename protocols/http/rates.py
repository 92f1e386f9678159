"""Message statistics and rates as RabbitMQ's management plugin gives them (``message_stats``
with ``*_details: {"rate": ...}``, and the queue lengths' ``*_details``).

Nothing is counted here per message: queues count what they do (``Queue.counts``) and a
``Sampler`` reads those counters every ``interval`` seconds (RabbitMQ's
``collect_statistics_interval``, 5 s by default), off the message path: ``server.py`` runs
its loop beside the HTTP listener. A rate is RabbitMQ's instant rate: the difference between
the last two samples over the time between them (an object made since the sample before
had zeros then; the first sample of the node gives no rates), so a rate is as old as the last
sample. Counts are read live, so they are exact at
once. A vhost's and the node's totals keep what deleted queues did (at their last sample),
as RabbitMQ's do.

Which counter is which statistic: ``publish`` (messages the queue took), ``deliver`` (to
consumers that ack), ``deliver_no_ack``, ``get``, ``get_no_ack``, ``get_empty``,
``deliver_get`` (their sum), ``ack``, ``redeliver`` (entries requeued, each delivered again
flagged redelivered). A vhost's and the node's ``publish`` is the sum of its queues' (a
message routed to two queues counts twice; RabbitMQ counts channel publishes). Exchanges:
``publish_in`` (messages published to it) and ``publish_out`` (queues they reached: a message
routed to two queues counts twice, as RabbitMQ sums its queue_exchange_stats) from the two
counters the core keeps per exchange (``Exchange.published``, ``routed``; the default
exchange's fast path counts on the vhost, and, as RabbitMQ 3.10, every publish to it counts
out too, whether the queue named exists or not).

Imports no trio (``tests/unit/transport/test_trio_free.py``): the loop is in ``server.py``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Iterable

DEFAULT_INTERVAL = 5.0  # seconds, RabbitMQ's collect_statistics_interval (5000 ms)

#: The statistics of a queue's sample, in order (``queue_sample``).
QUEUE_STATS = ("publish", "deliver", "deliver_no_ack", "get", "get_no_ack", "get_empty", "deliver_get", "ack",
               "redeliver")
#: The lengths after them in a sample.
LENGTHS = ("messages", "messages_ready", "messages_unacknowledged")
_N = len(QUEUE_STATS)
#: Statistics RabbitMQ's vhosts (and overview, with the node's disk ones) show that mqemu does
#: not count (always 0).
NOT_COUNTED = ("confirm", "drop_unroutable", "return_unroutable")
NOT_COUNTED_NODE = NOT_COUNTED + ("disk_reads", "disk_writes")

Sample = tuple[int, ...]
Rates = tuple[float, ...]


def queue_sample(q: Any) -> Sample:
    """The queue's statistics (``QUEUE_STATS``) and lengths (``LENGTHS``) now."""
    c = q.counts
    ready = len(q.ready)
    unacked = q.unacked
    no_ack = c.delivered_no_ack(unacked)
    return (c.enqueued, c.delivered - no_ack - c.got - c.got_no_ack, no_ack, c.got, c.got_no_ack,
            c.get_empty, c.delivered, c.acked, c.requeued, ready + unacked, ready, unacked)


def _add(a: Sample, b: Sample) -> Sample:
    return tuple(x + y for x, y in zip(a, b))


_ZERO: Sample = (0,) * (_N + len(LENGTHS))


class Sampler:
    """The last two samples of every queue, vhost and the node; see the module's text."""

    def __init__(self, broker: Any, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.broker = broker
        self.interval = interval
        self.clock = clock
        self.samples = 0  # samples taken so far (tests wait for the next one)
        self.running = False  # a loop samples (``server.py`` starts one per node)
        self._times: tuple[float, float] | None = None  # (previous, last)
        # (vhost, queue name) -> (queue, previous sample or None, last sample)
        self._queues: dict[tuple[str, str], tuple[Any, Sample | None, Sample]] = {}
        self._retired: dict[str, Sample] = {}  # per vhost: deleted queues' last samples
        self._vhosts: dict[str, tuple[Sample | None, Sample]] = {}
        self._node: tuple[Sample | None, Sample] = (None, _ZERO)
        # (vhost, exchange name) -> (exchange, previous (in, out) or None, last (in, out))
        self._exchanges: dict[tuple[str, str], tuple[Any, Sample | None, Sample]] = {}

    # -- sampling (the loop calls this every interval) ----------------------------------
    def sample(self) -> None:
        now = self.clock()
        old = self._queues
        queues: dict[tuple[str, str], tuple[Any, Sample | None, Sample]] = {}
        vhosts: dict[str, tuple[Sample | None, Sample]] = {}
        node_total = self._retired.get("", _ZERO)
        for vname, vh in list(self.broker.vhosts.items()):
            retired = self._retired.get(vname, _ZERO)
            total = retired
            for qname, q in list(vh.queues.items()):
                s = queue_sample(q)
                key = (vname, qname)
                seen = old.get(key)
                # a queue made since the last sample had nothing then (its counters start at 0)
                prev = seen[2] if seen is not None and seen[0] is q else _ZERO if self._times is not None else None
                queues[key] = (q, prev, s)
                total = _add(total, s)
            seen_v = self._vhosts.get(vname)
            vhosts[vname] = (seen_v[1] if seen_v is not None else _ZERO if self._times is not None else None, total)
        # what queues gone since the last sample did stays in their vhost's totals
        for key, (q, _, last) in old.items():
            if queues.get(key, (None,))[0] is not q:
                vname = key[0]
                kept = last[:_N] + (0,) * len(LENGTHS)  # a deleted queue holds no messages
                self._retired[vname] = _add(self._retired.get(vname, _ZERO), kept)
                if vname in vhosts:
                    before, total = vhosts[vname]
                    vhosts[vname] = (before, _add(total, kept))
        for vname, (_, last) in self._vhosts.items():  # a deleted vhost's counts stay in the node's
            if vname not in vhosts:
                self._retired[""] = _add(self._retired.get("", _ZERO), last[:_N] + (0,) * len(LENGTHS))
                node_total = _add(node_total, last[:_N] + (0,) * len(LENGTHS))
        for _, total in vhosts.values():
            node_total = _add(node_total, total)
        exchanges: dict[tuple[str, str], tuple[Any, Sample | None, Sample]] = {}
        old_x = self._exchanges
        for vname, vh in list(self.broker.vhosts.items()):
            for xname, ex in list(vh.exchanges.items()):
                seen_x = old_x.get((vname, xname))
                prev = seen_x[2] if seen_x is not None and seen_x[0] is ex else \
                    _ZERO_X if self._times is not None else None
                exchanges[(vname, xname)] = (ex, prev, exchange_sample(vh, ex))
        self._queues, self._vhosts, self._exchanges = queues, vhosts, exchanges
        self._node = (self._node[1] if self._times is not None else None, node_total)
        self._times = (self._times[1] if self._times is not None else now, now)
        self.samples += 1

    # -- reading ------------------------------------------------------------------------
    def _rates(self, prev: Sample | None, last: Sample) -> Rates | None:
        if prev is None or self._times is None:
            return None
        dt = self._times[1] - self._times[0]
        if dt <= 0:
            return None
        return tuple((b - a) / dt for a, b in zip(prev, last))

    @staticmethod
    def _stats(counts: Iterable[int], rates: Rates | None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, (name, value) in enumerate(zip(QUEUE_STATS, counts)):
            out[name] = value
            out[name + "_details"] = {"rate": round(float(rates[i]), 2) if rates is not None else 0.0}
        for name in extra:
            out[name] = 0
            out[name + "_details"] = {"rate": 0.0}
        return dict(sorted(out.items()))

    @staticmethod
    def _length_rates(rates: Rates | None) -> dict[str, dict[str, float]]:
        return {name + "_details": {"rate": round(float(rates[_N + i]), 2) if rates is not None else 0.0}
                for i, name in enumerate(LENGTHS)}

    def queue(self, vhost: str, q: Any) -> tuple[dict[str, Any] | None, dict[str, dict[str, float]]]:
        """A queue's ``message_stats`` (None before it did anything, as RabbitMQ omits it)
        and its lengths' ``*_details``."""
        now = queue_sample(q)
        seen = self._queues.get((vhost, q.name))
        rates = self._rates(seen[1], seen[2]) if seen is not None and seen[0] is q else None
        stats = self._stats(now[:_N], rates) if any(now[:_N]) else None
        return stats, self._length_rates(rates)

    def vhost(self, vhost: Any) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
        """A vhost's ``message_stats`` (its queues' together) and its lengths' ``*_details``."""
        counts = self._retired.get(vhost.name, _ZERO)
        for q in list(vhost.queues.values()):
            counts = _add(counts, queue_sample(q))
        prev, last = self._vhosts.get(vhost.name, (None, _ZERO))
        rates = self._rates(prev, last)
        return self._stats(counts[:_N], rates, NOT_COUNTED), self._length_rates(rates)

    def node(self) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
        """The overview's ``message_stats`` and its ``queue_totals``' ``*_details``."""
        counts = self._retired.get("", _ZERO)
        for vname, vh in list(self.broker.vhosts.items()):
            counts = _add(counts, self._retired.get(vname, _ZERO))
            for q in list(vh.queues.values()):
                counts = _add(counts, queue_sample(q))
        prev, last = self._node
        rates = self._rates(prev, last)
        return self._stats(counts[:_N], rates, NOT_COUNTED_NODE), self._length_rates(rates)

    def exchange_rates(self, vhost: str, ex: Any) -> Rates | None:
        """(publish_in, publish_out) per second over the last two samples, None before."""
        seen = self._exchanges.get((vhost, ex.name))
        return self._rates(seen[1], seen[2]) if seen is not None and seen[0] is ex else None

    def exchange(self, vhost: Any, ex: Any) -> dict[str, Any] | None:
        """An exchange's ``message_stats`` (None before anything was published to it)."""
        counts = exchange_sample(vhost, ex)
        if not any(counts):
            return None
        return exchange_stats(counts, self.exchange_rates(vhost.name, ex))

    def queue_rates(self, vhost: str, q: Any) -> dict[str, float]:
        """The web page's per-second rates of a queue (publish, deliver_get, ack)."""
        seen = self._queues.get((vhost, q.name))
        rates = self._rates(seen[1], seen[2]) if seen is not None and seen[0] is q else None
        if rates is None:
            return {"publish": 0.0, "deliver_get": 0.0, "ack": 0.0}
        return {name: round(float(rates[QUEUE_STATS.index(name)]), 2) for name in ("publish", "deliver_get", "ack")}


_ZERO_X: Sample = (0, 0)


def exchange_sample(vhost: Any, ex: Any) -> Sample:
    """(publish_in, publish_out) of an exchange now."""
    if ex.name == "":  # RabbitMQ 3.10 counts every default-exchange publish out, a queue found or not
        return ex.published + vhost.default_published, ex.routed + vhost.default_published
    return ex.published, ex.routed


def exchange_stats(counts: Iterable[float], rates: Iterable[float] | None) -> dict[str, Any]:
    """RabbitMQ's exchange ``message_stats`` from (in, out) counts and rates."""
    pin, pout = counts
    rin, rout = rates if rates is not None else (0.0, 0.0)
    stats = {"publish_in": int(pin), "publish_in_details": {"rate": round(float(rin), 2)}}
    if pout:  # RabbitMQ shows publish_out once a message went out
        stats.update(publish_out=int(pout), publish_out_details={"rate": round(float(rout), 2)})
    return stats


def exchange_counts(node: Any, vhost: str | None) -> dict[str, dict[str, list[float]]]:
    """This node's exchange counters and rates for the cluster's sum: vhost -> name ->
    [in, out, in rate, out rate] (exchanges nothing was published to are left out)."""
    sampler = sampler_of(node)
    out: dict[str, dict[str, list[float]]] = {}
    for vname, vh in list(node.broker.vhosts.items()):
        if vhost is not None and vname != vhost:
            continue
        for ex in list(vh.exchanges.values()):
            counts = exchange_sample(vh, ex)
            if any(counts):
                rates = sampler.exchange_rates(vname, ex) or (0.0, 0.0)
                out.setdefault(vname, {})[ex.name] = [*counts, *rates]
    return out


_SAMPLERS: "weakref.WeakKeyDictionary[Any, Sampler]" = weakref.WeakKeyDictionary()


def sampler_of(node: Any) -> Sampler:
    """The node's sampler (one per node, made on first use), sampling every
    ``node.options.stats_interval`` seconds (default 5)."""
    s = _SAMPLERS.get(node)
    if s is None:
        interval = getattr(getattr(node, "options", None), "stats_interval", None) or DEFAULT_INTERVAL
        s = _SAMPLERS[node] = Sampler(node.broker, float(interval))
    return s


def merge(parts: list[tuple[dict[str, Any], dict[str, dict[str, float]]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Several vhosts' statistics as one (the overview of a user who sees only some vhosts)."""
    stats: dict[str, Any] = {}
    lengths: dict[str, Any] = {}
    for part, out in ((0, stats), (1, lengths)):
        for p in parts:
            for k, v in p[part].items():
                if isinstance(v, dict):
                    out[k] = {"rate": round(out.get(k, {"rate": 0.0})["rate"] + v["rate"], 2)}
                else:
                    out[k] = out.get(k, 0) + v
    return stats, lengths
