"""Issue 13, "How it is shown": aio-pika and kombu apps through the cluster's balancer while the
harness kills, pauses and cuts off nodes. One cluster per library, one scenario each:

1. A quorum queue; a publisher with confirms and a consumer with manual acks, both through
   the balancer's AMQP port, reconnecting by their library's own means. Faults in turn, each
   ended only once the cluster shows its effect: kill -9 of ``leader-of:Q`` (then started
   again), a pause of the new leader's node (then resumed), a full partition of the next
   leader's node from the other two (then healed). The checker judges the history: 0 confirmed
   lost, nothing unexpected; redeliveries are allowed, duplicates are printed.
2. A classic queue whose home node is killed: the app's consumer on another node gets
   ``basic.cancel``, its declare gets ``404 NOT_FOUND - home node '...' ... is down or
   inaccessible``; the messages come back when the node does.
"""

from __future__ import annotations

import asyncio
import json
import time

import pika
import pytest
from cluster_apps import AioPikaApp, KombuApp, Recorder
from cluster_helpers import declared_everywhere, node_entry as _node

from mqemu.ha.checker import check
from mqemu.ha.history import append_facts, read_histories

pytestmark = pytest.mark.timeout(240)

NODES = ("node-1", "node-2", "node-3")
QQ = {"x-queue-type": "quorum"}
CLASSIC = {"x-queue-type": "classic"}


def _leader(status, queue, among=NODES):
    """The leader every live member in ``among`` names (it calling itself leader), or None."""
    found = {n["name"]: (n.get("quorum") or {}).get(queue) for n in status["nodes"]
             if n["role"] == "member" and n["name"] in among and (n.get("quorum") or {}).get(queue)}
    leaders = {m["leader"] for m in found.values()}
    if set(found) == set(among) and len(leaders) == 1 and None not in leaders:
        (leader,) = leaders
        return leader if leader in found and found[leader]["role"] == "leader" else None
    return None


def _new_leader(c, queue, old):
    others = tuple(n for n in NODES if n != old)
    status = c.wait_until(lambda s: _leader(s, queue, others) is not None, what=f"a leader of {queue} besides {old}")
    return _leader(status, queue, others)


def _all_back(c, queue):
    c.wait_until(lambda s: all(n["role"] == "member" for n in s["nodes"])
                 and all((n.get("health") or {}).get("amqp") == "healthy" for n in s["nodes"])
                 and _leader(s, queue) is not None, timeout=60, what=f"every node back, {queue} led")


def _quorum_under_faults(c, app_class, tmp_path, queue):
    """The scenario of part 1; returns the verdict and what the clients saw."""
    host, port = c.balancer_endpoint("amqp")
    history = str(tmp_path / f"{queue}.jsonl")
    rec = Recorder(history)
    app = app_class(host, port, queue, QQ, rec).start()
    seen: dict[str, object] = {}
    try:
        c.wait_until(lambda s: _leader(s, queue) is not None, what=f"{queue} led")
        rec.progress(30, 30, "publishing and consuming before the faults")
        # (a) kill -9 of the leader's node, started again once a new leader serves
        (killed,) = [n.name for n in c.topology.resolve(f"leader-of:{queue}")]
        c.kill(f"leader-of:{queue}")
        leader = _new_leader(c, queue, killed)
        rec.progress(20, 20, f"progress after the kill of {killed}")
        c.start_node(killed)
        _all_back(c, queue)
        # (b) a pause of the leader's node: the others elect; resumed, its clients carry on
        paused = _leader(c.status(), queue)
        c.pause(paused)
        leader = _new_leader(c, queue, paused)
        c.resume(paused)
        rec.progress(20, 20, f"progress after the pause of {paused}")
        _all_back(c, queue)
        # (c) the leader's node cut off from the other two (full partition), then healed
        cut = _leader(c.status(), queue)
        c.partition(cut, from_=[n for n in NODES if n != cut])
        leader = _new_leader(c, queue, cut)
        c.heal()
        rec.progress(20, 20, f"progress after the partition of {cut} healed")
        _all_back(c, queue)
        seen.update(killed=killed, paused=paused, cut=cut, last_leader=leader)
        app.finish()
    finally:
        app.stop_publishing.set()
        app.stop_consuming.set()
        rec.close()
    append_facts(history, c.call(c.topology.facts))
    records = read_histories([history])
    verdict = check(records)
    seen["faults"] = _fault_effects(verdict, records)
    seen["duplicate_flags"] = _duplicate_flags(verdict, records)
    seen["reconnects"] = rec.reconnect_times()
    seen["breaks"] = [(p, e) for p, _t, e in rec.breaks]
    return verdict, seen


def _fault_effects(verdict, records):
    """Per fault: seconds to the first delivery after it began, and the longest wait between
    two confirms (or from its start to the first confirm) within its window."""
    confirms = [r["time"] for r in records if r["f"] == "enqueue" and r["type"] == "ok"]
    out = []
    for w, f in zip(verdict.windows[1:], verdict.faults):
        inside = [w.start] + [t for t in confirms if w.start <= t <= w.until]
        gap = max((b - a for a, b in zip(inside, inside[1:])), default=None)
        out.append({"fault": f"{f.action} {f.target}", "first_delivery_s": f.seconds and round(f.seconds, 3),
                    "longest_confirm_gap_s": gap and round(gap, 3)})
    return out


def _duplicate_flags(verdict, records):
    """For each duplicated id, the redelivered flag of each of its deliveries."""
    dups = set(verdict.counts.duplicated_ids)
    flags: dict[str, list[bool]] = {}
    for r in records:
        if r["f"] == "dequeue" and r["type"] == "ok" and r["value"] in dups:
            flags.setdefault(r["value"], []).append(bool(r.get("redelivered")))
    return flags


def _report(library, verdict, seen):
    counts = verdict.counts
    print(json.dumps({"library": library, "attempted": counts.attempted, "acknowledged": counts.acknowledged,
                      "delivered": counts.delivered, "lost": counts.lost, "duplicated": counts.duplicated,
                      "redelivered": counts.redelivered, "recovered": counts.recovered,
                      "unexpected": counts.unexpected, **seen,
                      "unavailable": [(u.process, u.kind, u.seconds and round(u.seconds, 3))
                                      for u in verdict.unavailable]}, default=str))
    assert counts.lost == 0, counts.lost_ids
    assert counts.unexpected == 0, counts.unexpected_ids
    # a copy beyond the publishes is allowed only as a redelivery the broker flagged so (an ack
    # that reached a leader which had already requeued the delivery, after a fault)
    assert all(all(flags[1:]) for flags in seen["duplicate_flags"].values()), seen["duplicate_flags"]
    assert counts.acknowledged >= 90 and counts.delivered >= counts.acknowledged
    # kill, pause, partition (the topology keeps a partition as a fault until the heal): each a
    # window of the verdict
    assert {"kill", "pause", "partition"} <= {f.action for f in verdict.faults}


def _home_port(c, name):
    return _node(c.status(), name)["ports"]["amqp"]


def _classic_home(c, queue, home, n):
    """Declare ``queue`` on ``home`` (a classic queue lives where it was declared) and put
    ``n`` confirmed messages in it."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", _home_port(c, home), connection_attempts=3))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments=CLASSIC)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", queue, b"c%d" % i, pika.BasicProperties(delivery_mode=2))
    conn.close()
    declared_everywhere(c, queue)


def _home_down_text(queue, home):
    return f"NOT_FOUND - home node '{home}' of durable queue '{queue}' in vhost '/' is down or inaccessible"


def test_aio_pika_through_the_balancer_kill_pause_partition_and_a_classic_queue_s_home_down(cluster, tmp_path):
    import aio_pika
    import aiormq

    c = cluster
    verdict, seen = _quorum_under_faults(c, AioPikaApp, tmp_path, "orders-aio")
    _report("aio-pika", verdict, seen)

    # a classic queue at home on node-1, consumed by an aio-pika app connected to node-2
    _classic_home(c, "cq-aio", "node-1", 10)
    events: list[tuple[str, object]] = []

    async def app():
        conn = await aio_pika.connect_robust(host="127.0.0.1", port=_home_port(c, "node-2"),
                                             reconnect_interval=0.1, timeout=5)
        got = []
        async with conn:
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=1)
            underlay = await channel.get_underlay_channel()
            cancelled = asyncio.Event()

            def on_cancel(frame):
                events.append(("basic.cancel", frame.consumer_tag))
                cancelled.set()
            underlay.on_consumer_cancel_callbacks.add(on_cancel)
            queue = await channel.declare_queue("cq-aio", durable=True, arguments=CLASSIC)
            first = asyncio.Event()

            async def on_message(message):
                got.append((message.body, message.redelivered))
                first.set()
                if len(got) > 1:  # the first stays unacked across the kill
                    await message.ack()
            await queue.consume(on_message)
            await asyncio.wait_for(first.wait(), 10)
            await asyncio.to_thread(c.kill, "node-1")
            await asyncio.wait_for(cancelled.wait(), 15)
            # the app's declare on a channel of its own: the channel is closed with 404
            probe = await conn.channel()
            try:
                await probe.declare_queue("cq-aio", durable=True, arguments=CLASSIC)
            except aiormq.exceptions.ChannelNotFoundEntity as e:  # aiormq's class for reply code 404
                events.append(("declare", type(e).__name__, e.args[0]))
            await asyncio.to_thread(c.start_node, "node-1")
            # the robust channel restores the consumer by itself once the home is back
            deadline = asyncio.get_running_loop().time() + 60
            while len({b for b, _r in got}) < 10:
                assert asyncio.get_running_loop().time() < deadline, got
                await asyncio.sleep(0.05)
        return got

    got = asyncio.run(asyncio.wait_for(app(), 120))
    assert events[0][0] == "basic.cancel"
    assert events[1] == ("declare", "ChannelNotFoundEntity", _home_down_text("cq-aio", "node-1")), events
    assert sorted({b for b, _r in got}) == sorted(b"c%d" % i for i in range(10))
    assert (b"c0", True) in got  # held unacked when the home died: back, flagged redelivered
    print(json.dumps({"library": "aio-pika", "classic": [str(e) for e in events], "deliveries": len(got)}))


def test_kombu_through_the_balancer_kill_pause_partition_and_a_classic_queue_s_home_down(cluster, tmp_path):
    import amqp
    import kombu

    c = cluster
    verdict, seen = _quorum_under_faults(c, KombuApp, tmp_path, "orders-kombu")
    _report("kombu", verdict, seen)

    _classic_home(c, "cq-kombu", "node-1", 10)
    queue = kombu.Queue("cq-kombu", routing_key="cq-kombu", exchange=kombu.Exchange(""), durable=True,
                        queue_arguments=CLASSIC)
    got: list[tuple[bytes, bool]] = []
    events: list[object] = []
    with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{_home_port(c, 'node-2')}//", connect_timeout=5) as conn:
        def on_message(message):
            got.append((message.body, message.delivery_info["redelivered"]))
            if len(got) > 1:
                message.ack()
        consumer = conn.Consumer(queue, prefetch_count=1, on_message=on_message)
        consumer.consume()
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
        c.kill("node-1")
        # py-amqp raises the broker's basic.cancel out of drain_events (no on_cancel given)
        with pytest.raises(amqp.exceptions.ConsumerCancelled) as cancel:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
        events.append(("basic.cancel", repr(cancel.value)))
        with pytest.raises(amqp.exceptions.NotFound) as gone:
            queue.bind(conn.channel()).declare()
        events.append(("declare", gone.value.reply_code, gone.value.reply_text))
        assert gone.value.reply_code == 404 and gone.value.reply_text == _home_down_text("cq-kombu", "node-1")
        c.start_node("node-1")
        # the app's retry policy: consume again (its declare first) until the home answers
        deadline = time.monotonic() + 60
        while True:
            try:
                kombu.Consumer(conn.channel(), [queue], prefetch_count=1, on_message=on_message).consume()
                break
            except amqp.exceptions.NotFound:
                assert time.monotonic() < deadline, "the classic queue's home did not come back"
                time.sleep(0.1)
        deadline = time.monotonic() + 60
        while len({b for b, _r in got}) < 10:
            assert time.monotonic() < deadline, got
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
    assert sorted({b for b, _r in got}) == sorted(b"c%d" % i for i in range(10))
    assert (b"c0", True) in got
    print(json.dumps({"library": "kombu", "classic": [str(e) for e in events], "deliveries": len(got)}))
