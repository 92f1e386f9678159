"""The verdict on a history: what was lost, duplicated, recovered, unexpected or reordered,
per fault window, with the unavailability windows and each fault's time to the next delivery.

``check(records) -> Verdict``; the terms are defined in ``mqemu.ha.history``'s docstring.
``mqemu check HISTORY...`` (several files are merged by time) prints it (``--json`` for the object) and exits 0 if nothing
acknowledged was lost, 1 if something was, 2 if the file is not a history.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .history import HistoryError, read_histories

# Which operation kind a failed or successful record belongs to, for the unavailability
# windows: a broken connection is open until the next successful (re)connect.
KIND = {"enqueue": "enqueue", "dequeue": "dequeue", "ack": "ack",
        "connect": "connect", "reconnect": "connect", "error": "connect"}


@dataclass(slots=True)
class Counts:
    """Counts and ids per category, for the whole history or one fault window."""
    attempted: int = 0
    acknowledged: int = 0
    delivered: int = 0  # attempted ids delivered at least once (Jepsen's ok)
    lost: int = 0
    duplicated: int = 0  # deliveries beyond the number of publishes
    recovered: int = 0
    unexpected: int = 0  # deliveries of ids never attempted
    reordered: int = 0
    redelivered: int = 0  # deliveries after an unacknowledged delivery of the same id
    ok_frac: float | None = None
    lost_ids: list[Any] = field(default_factory=list)
    duplicated_ids: list[Any] = field(default_factory=list)
    recovered_ids: list[Any] = field(default_factory=list)
    unexpected_ids: list[Any] = field(default_factory=list)
    reordered_ids: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Window:
    """From a fault's start (or the history's start) to the next fault's start (or its end)."""
    start: float
    until: float
    fault: dict[str, Any] | None = None  # {"action", "target"}; None before the first fault
    fault_end: float | None = None
    counts: Counts = field(default_factory=Counts)


@dataclass(slots=True)
class Unavailable:
    """One client could not do one kind of operation from ``start`` (its first failure)
    until ``end`` (its first success after it; None: not before the history ended)."""
    process: str
    kind: str
    start: float
    end: float | None
    seconds: float | None
    error: str | None = None


@dataclass(slots=True)
class Phase:
    """One step of a takeover, from the topology's facts (``f: "node"`` records): ``at``
    seconds after the fault began, who (a node, or ``topology`` for the supervisor), what
    (``lock-acquired``, ``recovered``, ``listening``, ``role``, ...) and its details."""
    at: float
    process: str
    event: str
    detail: str = ""


def describe_fact(rec: dict[str, Any]) -> str:
    """The facts of a node record in words: "waited 3.100 s", "0.012 s, 120 messages"."""
    event = rec.get("value")
    if rec["process"] == "topology" and event == "role":
        role = rec.get("role")
        return f"{rec.get('node')} {role}" + (": its endpoints open" if role == "active" else "")
    if event == "lock-acquired":
        return f"waited {rec.get('waited', 0):.3f} s"
    if event == "store-loaded":
        return f"in {rec.get('seconds', 0):.3f} s"
    if event == "recovered":
        return f"in {rec.get('seconds', 0):.3f} s, {rec.get('messages', 0)} messages"
    if event == "listening":
        return f"{rec.get('protocol')} on {rec.get('port')}"
    if event == "role":
        return str(rec.get("role"))
    return ""


@dataclass(slots=True)
class FaultRecovery:
    action: str
    target: str
    start: float
    first_delivery: float | None  # the first delivery to any consumer after the fault began
    seconds: float | None
    # The first delivery on a consumer connection made after the fault began (messages the
    # client had already received before a kill do not count); None without a reconnect.
    reconnected: float | None = None
    delivery_after_reconnect: float | None = None
    seconds_after_reconnect: float | None = None
    # Where the takeover's time went: the nodes' and the supervisor's events in the fault's
    # window (empty unless the topology's facts were merged into the history).
    phases: list[Phase] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    valid: bool  # nothing lost and nothing unexpected (Jepsen's total-queue validity)
    start: float
    end: float
    counts: Counts
    windows: list[Window]
    unavailable: list[Unavailable]
    faults: list[FaultRecovery]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Ids:
    """Per message id, what the history says happened to it."""

    def __init__(self) -> None:
        self.publishes: Counter[Any] = Counter()
        self.first_attempt: dict[Any, float] = {}
        self.acknowledged: set[Any] = set()
        self.fresh: Counter[Any] = Counter()
        self.fresh_times: dict[Any, list[float]] = {}
        self.redelivered: list[tuple[Any, float]] = []
        self.first_delivery: dict[Any, float] = {}
        self.outstanding: set[Any] = set()  # delivered, not yet acknowledged by the consumer
        # Acks written but never answered (AMQP, MQTT: ``confirmed: false``) per consumer on
        # its current connection; when that connection breaks they become in doubt: the
        # broker may never have read them, and a redelivery (flagged so) is no duplicate.
        self.unanswered: dict[str, set[Any]] = {}
        self.in_doubt: set[Any] = set()
        # A redelivery flagged so of a message whose ack is still unanswered: the acking
        # client's connection may have been cut before it noticed (the broker closed it,
        # requeued, and gave the message to another consumer first). Judged when that client
        # next breaks (a redelivery) or reconnects cleanly or the history ends (a duplicate).
        self.pending: dict[str, list[tuple[Any, float]]] = {}
        self.max_seq: dict[Any, int] = {}
        self.reordered: list[tuple[Any, float]] = []

    def feed(self, rec: dict[str, Any]) -> None:
        f, typ, value, t = rec["f"], rec["type"], _key(rec.get("value")), rec["time"]
        if f == "enqueue":
            if typ == "invoke":
                self.publishes[value] += 1
                self.first_attempt.setdefault(value, t)
            elif typ == "ok":
                self.acknowledged.add(value)
        elif f == "dequeue" and typ == "ok":
            self._delivered(rec, value, t)
        elif f == "ack" and typ == "ok":
            self.outstanding.discard(value)
            if rec.get("confirmed") is False:
                self.unanswered.setdefault(rec["process"], set()).add(value)
        elif f == "error" and rec["process"] in self.unanswered:
            self.in_doubt |= self.unanswered.pop(rec["process"])
        elif f in ("connect", "reconnect") and typ == "ok":
            self.unanswered.pop(rec["process"], None)  # the connection before it ended without a break
            self.duplicates(rec["process"])
        if f == "error" and rec["process"] in self.pending:
            # a break soon after: they were redeliveries; a later one does not excuse them
            self.duplicates(rec["process"], before=t - BREAK_NOTICED)
            self.pending.pop(rec["process"], None)

    def duplicates(self, process: str | None = None, before: float | None = None) -> None:
        """Pending redeliveries (of ``process``, or all; those before ``before`` only) that no
        break of the acking client's connection explains: duplicates."""
        for proc in [process] if process is not None else list(self.pending):
            for value, t in self.pending.pop(proc, []):
                if before is not None and t >= before:
                    continue
                self.redelivered.remove((value, t))
                self.fresh[value] += 1
                self.fresh_times.setdefault(value, []).append(t)

    def _delivered(self, rec: dict[str, Any], value: Any, t: float) -> None:
        doubt = value in self.in_doubt
        if doubt:
            self.in_doubt.discard(value)
        acker = None
        if not doubt and rec.get("redelivered") and value not in self.outstanding:
            acker = next((p for p, values in self.unanswered.items() if value in values), None)
            if acker is not None:
                self.unanswered[acker].discard(value)
                self.pending.setdefault(acker, []).append((value, t))
        if value in self.outstanding or ((doubt or acker is not None) and rec.get("redelivered")):
            self.redelivered.append((value, t))
            self.outstanding.add(value)
        else:
            self.fresh[value] += 1
            self.fresh_times.setdefault(value, []).append(t)
            self.outstanding.add(value)
        if value in self.first_delivery:
            return
        self.first_delivery[value] = t
        pub, seq = rec.get("publisher"), rec.get("seq")
        if rec.get("redelivered") or pub is None or not isinstance(seq, int):
            return
        if seq < self.max_seq.get(pub, -1):
            self.reordered.append((value, t))
        else:
            self.max_seq[pub] = seq


# Seconds within which a client notices that the broker closed its connection: a break
# later than that after a redelivery does not explain it (``_Ids.pending``).
BREAK_NOTICED = 1.0


def _key(value: Any) -> Any:
    """Message ids are strings or numbers; anything else is compared by its JSON text."""
    return value if isinstance(value, (str, int, float)) or value is None else json.dumps(value, sort_keys=True)


def check(records: Iterable[dict[str, Any]]) -> Verdict:
    """The verdict on a history's records (``read_history``'s output; sorted by time here)."""
    records = sorted(records, key=lambda r: r["time"])
    ids = _Ids()
    for rec in records:
        ids.feed(rec)
    ids.duplicates()  # no break came for them before the history ended
    start = records[0]["time"] if records else 0.0
    end = records[-1]["time"] if records else 0.0
    windows = _windows(records, start, end)
    starts = [w.start for w in windows[1:]]

    def where(t: float) -> Counts:
        return windows[bisect.bisect_right(starts, t)].counts

    total = Counts()
    _categorise(ids, total, where)
    for c in [total, *(w.counts for w in windows)]:
        c.ok_frac = c.delivered / c.attempted if c.attempted else None
        for name in ("lost_ids", "duplicated_ids", "recovered_ids", "unexpected_ids", "reordered_ids"):
            getattr(c, name).sort(key=str)
    return Verdict(valid=not total.lost and not total.unexpected, start=start, end=end, counts=total,
                   windows=windows, unavailable=_unavailable(records), faults=_recoveries(records, windows))


def _categorise(ids: _Ids, total: Counts, where: Any) -> None:
    for value, n in ids.publishes.items():
        window = where(ids.first_attempt[value])
        delivered = value in ids.first_delivery
        acked = value in ids.acknowledged
        extra = ids.fresh[value] - n
        for c in (total, window):
            c.attempted += 1
            c.acknowledged += acked
            c.delivered += delivered
            if acked and not delivered:
                c.lost += 1
                c.lost_ids.append(value)
            if delivered and not acked:
                c.recovered += 1
                c.recovered_ids.append(value)
            if extra > 0:
                c.duplicated += extra
                c.duplicated_ids.append(value)
    for value, times in ids.fresh_times.items():
        if value in ids.publishes:
            continue
        for t in times:
            for c in (total, where(t)):
                c.unexpected += 1
                if value not in c.unexpected_ids:
                    c.unexpected_ids.append(value)
    for value, t in ids.reordered:
        for c in (total, where(t)):
            c.reordered += 1
            c.reordered_ids.append(value)
    for _value, t in ids.redelivered:
        for c in (total, where(t)):
            c.redelivered += 1


def _windows(records: list[dict[str, Any]], start: float, end: float) -> list[Window]:
    every = [r for r in records if r["f"] == "fault"]
    faults = [r for r in every if r["type"] == "invoke"]
    windows = [Window(start=start, until=faults[0]["time"] if faults else end)]
    for i, rec in enumerate(faults):
        until = faults[i + 1]["time"] if i + 1 < len(faults) else end
        windows.append(Window(start=rec["time"], until=until, fault=_fault_name(rec),
                              fault_end=_fault_end(every, rec)))
    return windows


def _fault_name(rec: dict[str, Any]) -> dict[str, Any]:
    value = rec.get("value")
    if isinstance(value, dict):
        return {"action": str(value.get("action")), "target": str(value.get("target"))}
    return {"action": str(value), "target": ""}


def _fault_end(faults: list[dict[str, Any]], begin: dict[str, Any]) -> float | None:
    for rec in faults:
        if rec["time"] >= begin["time"] and rec["type"] != "invoke" and rec.get("value") == begin.get("value"):
            return rec["time"]
    return None


def _unavailable(records: list[dict[str, Any]]) -> list[Unavailable]:
    """A window opens at the invocation of the first operation that failed (or at a broken
    connection's record) and closes at the next success of the same kind by the same client."""
    open_: dict[tuple[str, str], Unavailable] = {}
    invoked: dict[tuple[str, str, Any], float] = {}
    out: list[Unavailable] = []
    for rec in records:
        kind = KIND.get(rec["f"])
        if kind is None:
            continue
        key, typ = (rec["process"], kind), rec["type"]
        if typ == "invoke":
            invoked[(rec["process"], rec["f"], _key(rec.get("value")))] = rec["time"]
        elif typ in ("fail", "info"):
            began = invoked.pop((rec["process"], rec["f"], _key(rec.get("value"))), rec["time"])
            if key not in open_:
                error = rec.get("error")
                open_[key] = Unavailable(rec["process"], kind, began, None, None, None if error is None else str(error))
        elif typ == "ok":
            invoked.pop((rec["process"], rec["f"], _key(rec.get("value"))), None)
            if key in open_:
                gap = open_.pop(key)
                gap.end, gap.seconds = rec["time"], rec["time"] - gap.start
                out.append(gap)
    out.extend(open_.values())
    out.sort(key=lambda u: (u.start, u.process, u.kind))
    return out


def _recoveries(records: list[dict[str, Any]], windows: list[Window]) -> list[FaultRecovery]:
    deliveries = [r["time"] for r in records if r["f"] == "dequeue" and r["type"] == "ok"]
    consumers = {r["process"] for r in records if r["f"] == "dequeue"}
    connects = [r["time"] for r in records if r["type"] == "ok" and r["f"] in ("connect", "reconnect")
                and r["process"] in consumers]
    facts = [r for r in records if r["f"] == "node"]
    out = []
    for w in windows[1:]:
        assert w.fault is not None
        first = _after(deliveries, w.start)
        rec = FaultRecovery(w.fault["action"], w.fault["target"], w.start, first,
                            None if first is None else first - w.start)
        rec.reconnected = _after(connects, w.start)
        if rec.reconnected is not None:
            rec.delivery_after_reconnect = _after(deliveries, rec.reconnected)
            if rec.delivery_after_reconnect is not None:
                rec.seconds_after_reconnect = rec.delivery_after_reconnect - w.start
        rec.phases = [Phase(r["time"] - w.start, r["process"], str(r.get("value")), describe_fact(r))
                      for r in facts if w.start <= r["time"] < w.until]
        out.append(rec)
    return out


def _after(times: list[float], t: float) -> float | None:
    """The first of the sorted ``times`` later than ``t``."""
    i = bisect.bisect_right(times, t)
    return times[i] if i < len(times) else None


def summary(verdict: Verdict) -> str:
    """The verdict as a few lines of text (times relative to the history's start)."""
    t0 = verdict.start

    def line(label: str, c: Counts) -> str:
        frac = "-" if c.ok_frac is None else f"{c.ok_frac:.4f}"
        text = (f"{label}: attempted {c.attempted}, acknowledged {c.acknowledged}, ok-frac {frac}, "
                f"lost {c.lost}, duplicated {c.duplicated}, recovered {c.recovered}, "
                f"unexpected {c.unexpected}, reordered {c.reordered}, redelivered {c.redelivered}")
        if c.lost_ids:
            text += f"\n  lost ids: {', '.join(map(str, c.lost_ids[:20]))}{' ...' if c.lost > 20 else ''}"
        return text

    out = [f"{'VALID' if verdict.valid else 'INVALID'}: {line('total', verdict.counts)}"]
    for w in verdict.windows:
        name = "before any fault" if w.fault is None else f"{w.fault['action']} {w.fault['target']}"
        out.append(line(f"[{w.start - t0:8.3f} s .. {w.until - t0:8.3f} s] {name}", w.counts))
    for f in verdict.faults:
        after = "no delivery after it" if f.seconds is None else f"first delivery after {f.seconds:.3f} s"
        if f.seconds_after_reconnect is not None:
            after += f", first on a new connection after {f.seconds_after_reconnect:.3f} s"
        out.append(f"fault {f.action} {f.target} at {f.start - t0:.3f} s: {after}")
        for p in f.phases:
            out.append(f"  +{p.at:.3f} s {p.process} {p.event}" + (f" ({p.detail})" if p.detail else ""))
    for u in verdict.unavailable:
        span = "until the end" if u.seconds is None else f"for {u.seconds:.3f} s"
        out.append(f"unavailable: {u.process} {u.kind} from {u.start - t0:.3f} s {span}"
                   + (f" ({u.error})" if u.error else ""))
    return "\n".join(out)


def add_check_command(sub: Any) -> None:
    """``mqemu check HISTORY... [--json] [--timeline FILE]`` on the CLI's subparsers."""
    p = sub.add_parser("check", help="the verdict on a workload's history (exit 1 if anything was lost)",
                       description="Read a history (JSONL) and report lost, duplicated, recovered, "
                       "unexpected and reordered messages, per fault window, with unavailability "
                       "windows. Exit status: 0 nothing lost, 1 something lost, 2 not a history.")
    p.add_argument("history", nargs="+", help="the JSONL history file(s); several are merged by time "
                   "(e.g. the workload's and a fault injector's)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.add_argument("--control", metavar="URL", default=None,
                   help="a running topology's control URL: merge its faults (from any shell's `mqemu fault`) "
                   "and its nodes' events (lock, recovery, listeners, roles) over the history's span")
    p.add_argument("--timeline", metavar="FILE", default=None,
                   help="draw throughput, faults and gaps: FILE.html (inline SVG) or FILE.png (matplotlib)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        records = read_histories(args.history)
    except (HistoryError, OSError) as e:
        print(f"mqemu check: {e}", file=sys.stderr)
        return 2
    if args.control:
        from .control import ControlClient, ControlError
        from .history import merge_facts
        try:
            records = merge_facts(records, ControlClient(args.control).facts())
        except ControlError as e:
            print(f"mqemu check: {e}", file=sys.stderr)
            return 2
    verdict = check(records)
    print(json.dumps(verdict.to_json(), indent=1) if args.json else summary(verdict))
    if args.timeline:
        from .timeline import TimelineError, write_timeline
        try:
            write_timeline(records, verdict, args.timeline)
        except TimelineError as e:
            print(f"mqemu check: {e}", file=sys.stderr)
            return 2
    return 1 if verdict.counts.lost else 0
