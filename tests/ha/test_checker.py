"""The checker on hand-written histories: each category caught exactly, per fault window,
with unavailability windows and fault-to-delivery times; malformed files refused."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from typing import Any

import pytest

from mqemu.ha.checker import check
from mqemu.ha.cli import main
from mqemu.ha.history import HistoryError, HistoryWriter, parse_lines, read_history


class H:
    """A history written by hand: each call adds one record at the given time."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, t: float, process: str, type: str, f: str, value: Any = None, **extra: Any) -> "H":
        self.records.append({"time": t, "wall": 1e9 + t, "process": process, "type": type, "f": f,
                             "value": value, **extra})
        return self

    def publish(self, t: float, msg: str, seq: int, outcome: str = "ok") -> "H":
        self.add(t, "p", "invoke", "enqueue", msg, publisher="p", seq=seq)
        if outcome:
            self.add(t + 0.01, "p", outcome, "enqueue", msg, publisher="p", seq=seq)
        return self

    def deliver(self, t: float, msg: str, seq: int | None = None, ack: bool = True, redelivered: bool = False) -> "H":
        self.add(t, "c", "ok", "dequeue", msg, publisher="p", seq=seq, redelivered=redelivered)
        if ack:
            self.add(t + 0.001, "c", "invoke", "ack", msg).add(t + 0.002, "c", "ok", "ack", msg)
        return self


def test_nothing_wrong_is_valid_and_everything_ok():
    h = H()
    for i in range(5):
        h.publish(i, f"m{i}", i)
    for i in range(5):
        h.deliver(10 + i, f"m{i}", i)
    v = check(h.records)
    assert v.valid
    c = v.counts
    assert (c.attempted, c.acknowledged, c.delivered, c.ok_frac) == (5, 5, 5, 1.0)
    assert (c.lost, c.duplicated, c.recovered, c.unexpected, c.reordered, c.redelivered) == (0, 0, 0, 0, 0, 0)
    assert v.unavailable == [] and v.faults == [] and len(v.windows) == 1


def test_lost_counts_only_acknowledged_messages_never_delivered():
    h = H().publish(0, "a", 0).publish(1, "b", 1).publish(2, "c", 2, outcome="info")
    h.publish(3, "d", 3, outcome="fail").publish(4, "e", 4, outcome="")  # e: invoked, no answer at all
    h.deliver(5, "a", 0)
    v = check(h.records)
    assert not v.valid
    assert (v.counts.lost, v.counts.lost_ids) == (1, ["b"])
    assert v.counts.recovered == 0
    assert (v.counts.attempted, v.counts.acknowledged, v.counts.delivered) == (5, 2, 1)
    assert v.counts.ok_frac == pytest.approx(0.2)


def test_recovered_is_delivered_without_an_acknowledgement():
    h = H().publish(0, "a", 0, outcome="info").publish(1, "b", 1, outcome="fail").publish(2, "c", 2)
    h.deliver(3, "a", 0).deliver(4, "b", 1).deliver(5, "c", 2)
    v = check(h.records)
    assert v.valid
    assert (v.counts.recovered, v.counts.recovered_ids, v.counts.lost) == (2, ["a", "b"], 0)


def test_unexpected_is_delivered_but_never_attempted():
    h = H().publish(0, "a", 0).deliver(1, "a", 0).deliver(2, "ghost").deliver(3, "ghost")
    v = check(h.records)
    assert not v.valid
    assert (v.counts.unexpected, v.counts.unexpected_ids) == (2, ["ghost"])
    assert v.counts.duplicated == 0 and v.counts.attempted == 1


def test_duplicated_is_a_fresh_copy_beyond_the_publishes_and_redeliveries_are_apart():
    h = H().publish(0, "a", 0).publish(1, "b", 1).publish(2, "c", 2)
    h.deliver(3, "a", 0).deliver(4, "a", 0)  # acked, then handed out again: a duplicate
    h.deliver(5, "b", 1, ack=False).deliver(6, "b", 1, redelivered=True)  # never acked: a redelivery
    h.publish(7, "c", 2).deliver(8, "c", 2).deliver(9, "c", 2)  # published twice, two copies: fine
    v = check(h.records)
    assert v.valid  # duplicates are reported, as Jepsen does, without failing the verdict
    assert (v.counts.duplicated, v.counts.duplicated_ids, v.counts.redelivered) == (1, ["a"], 1)
    assert v.counts.attempted == 3


def test_an_ack_cut_by_a_fault_then_a_redelivery_is_a_redelivery_not_a_duplicate():
    """The flake of the external-mode test: the consumer acked, the link went down before the
    broker read the ack, the broker redelivered. STOMP's ack waits for its receipt, so the
    cut ack ends ``info``; an AMQP/MQTT ack has no answer (``confirmed: false``), and the
    consumer's broken connection puts it in doubt until a redelivery flagged so."""
    h = H().publish(0, "s", 0).publish(1, "a", 1)
    h.add(2, "c", "ok", "dequeue", "s", publisher="p", seq=0, redelivered=False)
    h.add(2.1, "c", "invoke", "ack", "s")
    h.add(2.2, "c", "ok", "dequeue", "a", publisher="p", seq=1, redelivered=False)
    h.add(2.3, "c", "invoke", "ack", "a").add(2.31, "c", "ok", "ack", "a", confirmed=False)
    h.add(2.5, "nemesis", "invoke", "fault", {"action": "down", "target": "node-1"})
    h.add(2.6, "c", "info", "ack", "s", error="ConnectionError: disconnected")  # no receipt
    h.add(2.61, "c", "info", "error", "127.0.0.1:1", error="ConnectionError: disconnected")
    h.add(3, "nemesis", "ok", "fault", {"action": "down", "target": "node-1"})
    h.add(3.1, "c", "ok", "reconnect", "127.0.0.1:1")
    h.deliver(3.2, "s", 0, redelivered=True).deliver(3.3, "a", 1, redelivered=True)
    v = check(h.records)
    assert v.valid
    c = v.counts
    assert (c.duplicated, c.redelivered, c.lost, c.delivered) == (0, 2, 0, 2)
    assert v.windows[1].counts.redelivered == 2


def test_a_true_duplicate_is_still_caught_whatever_the_acks():
    h = H().publish(0, "a", 0).publish(1, "b", 1).publish(2, "c", 2)
    # a: the ack answered (a STOMP receipt), the connection broke after: its redelivery is a duplicate
    h.deliver(3, "a", 0).add(3.5, "c", "info", "error", "x").add(3.6, "c", "ok", "reconnect", "x")
    h.deliver(4, "a", 0, redelivered=True)
    # b: an unanswered ack on a connection that never broke: nothing undid it
    h.add(5, "c", "ok", "dequeue", "b", publisher="p", seq=1, redelivered=False)
    h.add(5.1, "c", "ok", "ack", "b", confirmed=False).deliver(6, "b", 1, redelivered=True)
    # c: an unanswered ack in doubt after a break, but the copy is not flagged redelivered
    h.add(7, "c", "ok", "dequeue", "c", publisher="p", seq=2, redelivered=False)
    h.add(7.1, "c", "ok", "ack", "c", confirmed=False).add(7.5, "c", "info", "error", "x")
    h.add(7.6, "c", "ok", "reconnect", "x").deliver(8, "c", 2, redelivered=False)
    v = check(h.records)
    assert (v.counts.duplicated, v.counts.duplicated_ids, v.counts.redelivered) == (3, ["a", "b", "c"], 0)


def test_a_redelivery_to_another_consumer_before_the_acker_notices_its_break():
    """A node stops: it closes consumer a's connection with a's ack unread, requeues, and
    hands the message (flagged) to consumer b before a's client notices the close. A break
    of a's connection soon after explains it; one much later, or a clean reconnect, does not."""
    h = H().publish(0, "m", 0).publish(0.1, "n", 1)
    h.add(1, "a", "ok", "dequeue", "m", publisher="p", seq=0, redelivered=False)
    h.add(1.1, "a", "ok", "ack", "m", confirmed=False)
    h.add(1.2, "b", "ok", "dequeue", "m", publisher="p", seq=0, redelivered=True)
    h.add(1.5, "a", "info", "error", "x")  # a notices the break
    h.add(2, "a", "ok", "dequeue", "n", publisher="p", seq=1, redelivered=False)
    h.add(2.1, "a", "ok", "ack", "n", confirmed=False)
    h.add(2.2, "b", "ok", "dequeue", "n", publisher="p", seq=1, redelivered=True)
    h.add(5, "a", "info", "error", "x")  # nearly 3 s later: not what caused it
    v = check(h.records)
    assert (v.counts.redelivered, v.counts.duplicated, v.counts.duplicated_ids) == (1, 1, ["n"])
    h2 = H().publish(0, "m", 0)
    h2.add(1, "a", "ok", "dequeue", "m", publisher="p", seq=0, redelivered=False)
    h2.add(1.1, "a", "ok", "ack", "m", confirmed=False)
    h2.add(1.2, "b", "ok", "dequeue", "m", publisher="p", seq=0, redelivered=True)
    h2.add(1.3, "a", "ok", "reconnect", "x")  # no break: the ack was lost by the broker
    assert check(h2.records).counts.duplicated_ids == ["m"]


def test_clients_of_the_same_name_in_two_histories_are_two_clients(tmp_path):
    """Two workloads both name their consumer ``consumer-0``: merged, each keeps its own."""
    from mqemu.ha.history import read_histories

    a, b = tmp_path / "history-1-stomp.jsonl", tmp_path / "history-2-amqp.jsonl"
    a.write_text(json.dumps({"time": 1, "process": "consumer-0", "type": "ok", "f": "connect", "value": "x"}) + "\n")
    b.write_text(json.dumps({"time": 2, "process": "consumer-0", "type": "ok", "f": "connect", "value": "y"}) + "\n"
                 + json.dumps({"time": 3, "process": "nemesis", "type": "invoke", "f": "fault",
                               "value": {"action": "kill", "target": "active"}}) + "\n")
    merged = read_histories([a, b])
    assert [r["process"] for r in merged] == ["history-1-stomp/consumer-0", "history-2-amqp/consumer-0", "nemesis"]
    assert [r["process"] for r in read_histories([a])] == ["consumer-0"]


def test_an_unanswered_ack_before_a_clean_reconnect_is_not_in_doubt():
    h = H().publish(0, "a", 0)
    h.add(1, "c", "ok", "dequeue", "a", publisher="p", seq=0, redelivered=False)
    h.add(1.1, "c", "ok", "ack", "a", confirmed=False)
    h.add(2, "c", "ok", "reconnect", "x").add(3, "c", "info", "error", "x")  # a later connection broke
    h.deliver(4, "a", 0, redelivered=True)
    assert check(h.records).counts.duplicated == 1


def test_reordered_per_publisher_ignoring_redeliveries():
    h = H()
    for i in range(4):
        h.publish(i, f"m{i}", i)
    h.add(4, "q", "invoke", "enqueue", "x0", publisher="q", seq=0).add(4.1, "q", "ok", "enqueue", "x0")
    h.deliver(10, "m0", 0).deliver(11, "m2", 2).deliver(12, "m1", 1)  # m1 after m2: reordered
    h.add(12.5, "c", "ok", "dequeue", "x0", publisher="q", seq=0)  # another publisher: its own order
    h.deliver(13, "m0", 0, redelivered=True)  # a redelivery of an older one: ignored
    h.deliver(14, "m3", 3)
    v = check(h.records)
    assert (v.counts.reordered, v.counts.reordered_ids) == (1, ["m1"])
    assert v.counts.duplicated == 1  # m0 came back after its ack


def test_fault_windows_split_the_counts_and_time_the_first_delivery_after_each_fault():
    h = H().publish(0, "a", 0).deliver(0.5, "a", 0)
    h.add(1.0, "nemesis", "invoke", "fault", {"action": "kill", "target": "active"})
    h.publish(1.1, "b", 1, outcome="info").add(1.2, "p", "info", "error", "n1:1", error="EOF")
    h.add(1.3, "p", "invoke", "reconnect", "n2:2").add(1.4, "p", "fail", "reconnect", "n2:2", error="refused")
    h.add(1.5, "nemesis", "ok", "fault", {"action": "kill", "target": "active"})
    h.add(1.9, "p", "invoke", "reconnect", "n2:2").add(2.0, "p", "ok", "reconnect", "n2:2")
    h.publish(2.1, "b", 1).publish(2.2, "c", 2)
    h.deliver(2.5, "b", 1)
    h.add(3.0, "nemesis", "invoke", "fault", {"action": "pause", "target": "standby"})
    h.publish(3.1, "d", 3).deliver(3.6, "ghost")
    v = check(h.records)
    w0, w1, w2 = v.windows
    assert (w0.fault, w0.start, w0.until, w0.counts.attempted, w0.counts.lost) == (None, 0, 1.0, 1, 0)
    assert w1.fault == {"action": "kill", "target": "active"} and (w1.start, w1.fault_end, w1.until) == (1.0, 1.5, 3.0)
    assert (w1.counts.attempted, w1.counts.acknowledged, w1.counts.lost_ids) == (2, 2, ["c"])
    assert w2.fault == {"action": "pause", "target": "standby"} and w2.fault_end is None
    assert (w2.counts.lost_ids, w2.counts.unexpected_ids, w2.until) == (["d"], ["ghost"], 3.6 + 0.002)
    assert (v.counts.lost, v.counts.unexpected) == (2, 1)
    assert [(f.action, f.first_delivery, f.seconds) for f in v.faults] == [
        ("kill", 2.5, pytest.approx(1.5)), ("pause", 3.6, pytest.approx(0.6))]
    assert [(f.reconnected, f.delivery_after_reconnect) for f in v.faults] == [(None, None), (None, None)]
    gaps = [(u.process, u.kind, u.start, u.end, u.error) for u in v.unavailable]
    # the publish of b was invoked at 1.1 and never answered: unavailable from its invocation
    assert gaps == [("p", "enqueue", 1.1, 2.1 + 0.01, None), ("p", "connect", 1.2, 2.0, "EOF")]
    assert v.unavailable[0].seconds == pytest.approx(1.01)


def test_the_first_delivery_on_a_new_consumer_connection_after_a_fault():
    h = H().publish(0, "a", 0).publish(0.1, "b", 1).publish(0.2, "c", 2).add(0.3, "c", "ok", "connect", "n1")
    h.add(1.0, "nemesis", "invoke", "fault", {"action": "kill", "target": "active"})
    h.deliver(1.01, "a", 0)  # already in the client's buffer when the node died
    h.add(1.1, "c", "info", "error", "n1").add(1.5, "p", "ok", "reconnect", "n2")  # a publisher: not counted
    h.deliver(1.6, "b", 1, ack=False)  # still the old connection's buffer
    h.add(1.8, "c", "ok", "reconnect", "n2").deliver(2.2, "c", 2)
    [f] = check(h.records).faults
    assert (f.first_delivery, f.reconnected, f.delivery_after_reconnect) == (1.01, 1.8, 2.2)
    assert (f.seconds, f.seconds_after_reconnect) == (pytest.approx(0.01), pytest.approx(1.2))


def test_an_outage_without_a_success_after_it_stays_open():
    h = H().publish(0, "a", 0).add(1, "p", "invoke", "reconnect", "h:1").add(2, "p", "fail", "reconnect", "h:1")
    v = check(h.records)
    assert [(u.kind, u.start, u.end, u.seconds) for u in v.unavailable] == [("connect", 1, None, None)]


def test_verdict_is_json_and_an_empty_history_is_valid():
    v = check([])
    assert v.valid and v.counts.ok_frac is None
    json.dumps(v.to_json())


def test_writer_buffers_and_flushes_every_n_records_and_on_close(tmp_path):
    path = tmp_path / "h.jsonl"
    w = HistoryWriter(path, flush_every=3)
    w.record("p", "invoke", "enqueue", "a")
    w.record("p", "ok", "enqueue", "a")
    assert path.read_text() == ""
    w.fault("kill", "node-1")
    assert len(path.read_text().splitlines()) == 3
    w.record("c", "ok", "dequeue", "a", redelivered=False)
    w.close()
    recs = read_history(path)
    assert [(r["process"], r["type"], r["f"], r["value"]) for r in recs] == [
        ("p", "invoke", "enqueue", "a"), ("p", "ok", "enqueue", "a"),
        ("nemesis", "invoke", "fault", {"action": "kill", "target": "node-1"}), ("c", "ok", "dequeue", "a")]
    assert all(isinstance(r["wall"], float) for r in recs)


@pytest.mark.parametrize("line, message", [
    ("{not json", "h:2: not JSON"),
    ("[1, 2]", "h:2: a record is a JSON object, not list"),
    ('{"type": "ok", "f": "enqueue", "process": "p"}', "h:2: 'time' must be a number"),
    ('{"time": 1, "type": "done", "f": "enqueue", "process": "p"}', "h:2: 'type' must be one of"),
    ('{"time": 1, "type": "ok", "f": 3, "process": "p"}', "h:2: 'f' must be a string"),
])
def test_malformed_lines_are_refused_with_their_line_number(line, message):
    good = '{"time": 0, "type": "ok", "f": "enqueue", "process": "p", "value": "a"}'
    with pytest.raises(HistoryError) as e:
        list(parse_lines([good, line], "h"))
    assert str(e.value).startswith(message)


def _write(path, h: H) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in h.records))
    return str(path)


def test_cli_exit_status_is_0_without_loss_1_with_loss_2_for_a_bad_file(tmp_path, capsys):
    good = _write(tmp_path / "good.jsonl", H().publish(0, "a", 0).deliver(1, "a", 0))
    lossy = _write(tmp_path / "lossy.jsonl", H().publish(0, "a", 0).publish(1, "b", 1).deliver(2, "a", 0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time": 0, "type": "ok", "f": "x", "process": "p"}\nnope\n')
    assert main(["check", good]) == 0
    assert capsys.readouterr().out.startswith("VALID: total: attempted 1")
    assert main(["check", lossy, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["valid"], out["counts"]["lost_ids"], out["counts"]["ok_frac"]) == (False, ["b"], 0.5)
    assert main(["check", str(bad)]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.jsonl")]) == 2


def test_cli_merges_a_fault_injectors_history_with_the_workloads(tmp_path, capsys):
    work = _write(tmp_path / "w.jsonl", H().publish(0, "a", 0).deliver(1, "a", 0).publish(3, "b", 1))
    faults = _write(tmp_path / "f.jsonl", H().add(2, "nemesis", "invoke", "fault", {"action": "kill", "target": "n1"}))
    assert main(["check", work, faults, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [w["fault"] for w in out["windows"]] == [None, {"action": "kill", "target": "n1"}]
    assert out["windows"][1]["counts"]["lost_ids"] == ["b"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)
        if tag != "meta":  # a void element
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def test_timeline_html_is_self_contained_and_draws_faults_and_gaps(tmp_path):
    h = H().publish(0, "a", 0).deliver(0.5, "a", 0)
    h.add(1.0, "nemesis", "invoke", "fault", {"action": "kill", "target": "<active>"})
    h.add(1.2, "p", "info", "error", "n1", error="EOF").add(2.0, "p", "ok", "reconnect", "n2")
    h.publish(2.1, "b", 1).deliver(2.5, "b", 1)
    hist = _write(tmp_path / "h.jsonl", h)
    out = tmp_path / "t.html"
    assert main(["check", hist, "--timeline", str(out)]) == 0
    text = out.read_text()
    parser = _Tags()
    parser.feed(text)
    assert parser.open == []  # every tag closed
    assert {"svg", "polyline", "rect", "title"} <= set(parser.tags)
    assert "kill &lt;active&gt;" in text and "src=" not in text and "href=" not in text
    assert "p connect unavailable 0.800 s" in text


def test_timeline_png_without_matplotlib_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    hist = _write(tmp_path / "h.jsonl", H().publish(0, "a", 0).deliver(1, "a", 0))
    assert main(["check", hist, "--timeline", str(tmp_path / "t.png")]) == 2
    assert "pip install 'mqemu[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_timeline_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    h = H().publish(0, "a", 0).deliver(0.5, "a", 0).add(1.0, "nemesis", "invoke", "fault", {"action": "kill"})
    h.add(1.2, "p", "info", "error", "n1", error="EOF").add(2.0, "p", "ok", "reconnect", "n2")
    out = tmp_path / "t.png"
    assert main(["check", _write(tmp_path / "h.jsonl", h), "--timeline", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_of_another_kind_of_file_is_refused(tmp_path, capsys):
    hist = _write(tmp_path / "h.jsonl", H().publish(0, "a", 0).deliver(1, "a", 0))
    assert main(["check", hist, "--timeline", str(tmp_path / "t.svg")]) == 2
    assert "a timeline is .html or .png" in capsys.readouterr().err
