"""The store contract, run on every back-end (MemoryStore and SQLiteStore).

The memory store keeps no messages and nothing across a reopen (``keeps_messages`` False):
where a test is about what survives, it checks only that the memory store comes back empty
and answers durability tickets at once.
"""

from __future__ import annotations


from mqemu.broker.message import Message


def persistent(body: bytes, **props) -> Message:
    return Message("", "", body, {"delivery_mode": 2, **props})


def ready_bodies(vhost, queue: str) -> list[bytes]:
    return [e.message.body for e in vhost.queues[queue].ready]


async def test_definitions_survive_a_reopen(open_store, store_kind):
    async with open_store() as s:
        vh = s.vhost
        vh.declare_exchange("ex.d", "topic", durable=True, arguments={"alternate-exchange": "ae"})
        vh.declare_exchange("ex.t", "fanout", durable=False)
        vh.declare_queue("q.d", durable=True, arguments={"x-max-length": 10})
        vh.declare_queue("q.t", durable=False)
        vh.bind("ex.d", "q.d", "a.*", {"k": [1, {"n": b"x"}]})
        vh.bind("ex.d", "q.t", "b.*")  # transient end: not stored
        await s.durable()
    async with open_store() as s:
        vh = s.vhost
        if store_kind == "memory":
            assert "ex.d" not in vh.exchanges and "q.d" not in vh.queues
            return
        assert vh.exchanges["ex.d"].type == "topic" and vh.exchanges["ex.d"].alternate_exchange == "ae"
        assert "ex.t" not in vh.exchanges and "q.t" not in vh.queues
        assert vh.queues["q.d"].settings.max_length == 10
        (b,) = vh.exchanges["ex.d"].bindings
        assert (b.destination, b.routing_key, b.args) == ("q.d", "a.*", {"k": ("__array__", (1, ("__table__", (("n", b"x"),))))})
        vh.unbind("ex.d", "q.d", "a.*", {"k": [1, {"n": b"x"}]})
        vh.delete_exchange("ex.d")
        vh.delete_queue("q.d")
        await s.durable()
    async with open_store() as s:
        assert "ex.d" not in s.vhost.exchanges and "q.d" not in s.vhost.queues


async def test_messages_come_back_in_order_flagged_redelivered(open_store, store_kind):
    async with open_store() as s:
        q = s.vhost.declare_queue("q", durable=True)
        for i in range(5):
            s.vhost.publish("", "q", persistent(b"%d" % i, headers={"i": i}))
        s.vhost.publish("", "q", Message("", "", b"transient"))
        ids = [e.store_id for e in q.ready]
        await s.durable()
    if store_kind == "memory":
        assert ids == [None] * 6
    else:
        assert ids[:5] == sorted(ids[:5]) and None not in ids[:5] and ids[5] is None
    async with open_store() as s:
        if store_kind == "memory":
            assert not s.store.keeps_messages and "q" not in s.vhost.queues
            return
        q = s.vhost.queues["q"]
        assert ready_bodies(s.vhost, "q") == [b"0", b"1", b"2", b"3", b"4"]
        assert all(e.redelivered for e in q.ready)
        assert q.ready[2].message.headers == {"i": 2} and q.bytes_ready == 5


async def test_acks_requeues_and_dead_letter_moves(open_store, store_kind):
    async with open_store() as s:
        vh = s.vhost
        vh.declare_exchange("dlx", "fanout", durable=True)
        vh.declare_queue("dlq", durable=True)
        vh.bind("dlx", "dlq", "")
        q = vh.declare_queue("q", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
        for i in range(4):
            vh.publish("", "q", persistent(b"%d" % i))
        await s.durable()  # written, so the settles below are real deletes
        e0, e1, e2 = q.get(False), q.get(False), q.get(False)
        q.ack(e0, None)  # acked: gone
        q.reject([e1], None, requeue=True)  # requeued: stays
        q.reject([e2], None, requeue=False)  # dead-lettered: moves to dlq
        await s.durable()
    async with open_store() as s:
        if store_kind == "memory":
            return
        assert ready_bodies(s.vhost, "q") == [b"1", b"3"]
        dead = s.vhost.queues["dlq"].ready
        assert [e.message.body for e in dead] == [b"2"]
        assert dead[0].message.headers["x-death"][0]["reason"] == "rejected"


async def test_message_in_several_queues_is_stored_once(open_store, store_kind, tmp_path):
    async with open_store() as s:
        vh = s.vhost
        vh.declare_exchange("fan", "fanout", durable=True)
        for name in ("a", "b", "c"):
            vh.declare_queue(name, durable=True)
            vh.bind("fan", name, "")
        vh.publish("fan", "", persistent(b"one"))
        await s.durable()
        vh.queues["a"].ack(vh.queues["a"].get(False), None)
        await s.durable()
    if store_kind == "sqlite":
        import sqlite3
        con = sqlite3.connect(tmp_path / "data" / "mqemu.sqlite")
        assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
        assert con.execute("SELECT COUNT(*) FROM queue_messages").fetchone()[0] == 2
        con.close()
    async with open_store() as s:
        if store_kind == "memory":
            return
        vh = s.vhost
        assert ready_bodies(vh, "a") == [] and ready_bodies(vh, "b") == [b"one"] == ready_bodies(vh, "c")
        assert vh.queues["b"].ready[0].message is vh.queues["c"].ready[0].message  # one body in memory
        for name in ("b", "c"):
            vh.queues[name].ack(vh.queues[name].get(False), None)
        await s.durable()
    if store_kind == "sqlite":
        con = sqlite3.connect(tmp_path / "data" / "mqemu.sqlite")
        assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        con.close()


async def test_ticket_is_answered_only_after_its_batch_is_on_disk(open_store, store_kind):
    async with open_store() as s:
        s.vhost.declare_queue("q", durable=True)
        s.vhost.publish("", "q", persistent(b"x"))
        called = []
        s.store.when_durable(s.store.barrier(), lambda: called.append(True))
        if store_kind == "memory":
            assert called == [True]  # nothing to wait for
            return
        assert called == []  # no commit happens inside the publishing call
        await s.durable()
        assert called == [True]
        assert s.store.commits >= 1


async def test_acked_before_written_is_never_written(open_store, store_kind):
    async with open_store() as s:
        q = s.vhost.declare_queue("q", durable=True)
        await s.durable()
        s.vhost.publish("", "q", persistent(b"x"))
        q.ack(q.get(False), None)
        if store_kind == "sqlite":
            assert all(op is None for op in s.store._ops)  # cancelled in memory
        await s.durable()
    async with open_store() as s:
        assert not s.vhost.queues.get("q") or not s.vhost.queues["q"].ready


async def test_exclusive_and_auto_delete_queues_do_not_survive(open_store, store_kind):
    async with open_store() as s:
        vh = s.vhost
        vh.declare_queue("excl", durable=True, exclusive_owner=object())
        vh.declare_queue("auto", durable=True, auto_delete=True)
        vh.declare_queue("kept", durable=True)
        vh.publish("", "auto", persistent(b"x"))
        await s.durable()
    async with open_store() as s:
        assert "excl" not in s.vhost.queues and "auto" not in s.vhost.queues
        assert ("kept" in s.vhost.queues) == (store_kind == "sqlite")
    async with open_store() as s:  # and they were removed from the store, not just skipped
        assert s.snapshot.queues == [] or [d["name"] for d in s.snapshot.queues] == ["kept"]


async def test_records_round_trip(open_store, store_kind):
    async with open_store() as s:
        s.store.put_record("mqtt.retained", "a/b", b"\x00payload")
        s.store.put_record("mqtt.retained", "a/c", b"other")
        s.store.put_record("stomp.durable", "client-1", b"sub")
        s.store.delete_record("mqtt.retained", "a/c")
        if store_kind == "memory":
            assert s.store.records == {"mqtt.retained": {"a/b": b"\x00payload"}, "stomp.durable": {"client-1": b"sub"}}
        await s.durable()
    async with open_store() as s:
        if store_kind == "memory":
            assert s.snapshot.records == {}
            return
        assert s.snapshot.records == {"mqtt.retained": {"a/b": b"\x00payload"}, "stomp.durable": {"client-1": b"sub"}}
        assert s.broker.records == s.snapshot.records


async def test_queue_deleted_with_messages_leaves_nothing(open_store, store_kind, tmp_path):
    async with open_store() as s:
        q = s.vhost.declare_queue("q", durable=True)
        for i in range(3):
            s.vhost.publish("", "q", persistent(b"%d" % i))
        await s.durable()
        q.get(False)  # one unacked when the queue goes
        s.vhost.delete_queue("q")
        s.vhost.declare_queue("q", durable=True)  # same name, new queue
        s.vhost.publish("", "q", persistent(b"new"))
        await s.durable()
    async with open_store() as s:
        if store_kind == "memory":
            return
        assert ready_bodies(s.vhost, "q") == [b"new"]
    import sqlite3
    con = sqlite3.connect(tmp_path / "data" / "mqemu.sqlite")
    try:  # the unacked message of the deleted queue was dropped at the reopen
        assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
    finally:
        con.close()


async def test_store_keys_by_value_and_hands_back_handles(open_store, store_kind):
    """The store names a queue by (vhost, queue) and gives each queue's copy a handle kept
    on the entry; it never writes on the Message (a message in two queues is one row)."""
    async with open_store() as s:
        vh = s.vhost
        vh.declare_exchange("fan", "fanout", durable=True)
        for name in ("a", "b"):
            vh.declare_queue(name, durable=True)
            vh.bind("fan", name, "")
        msg = persistent(b"one")
        vh.publish("fan", "", msg)
        ea, eb = vh.queues["a"].ready[0], vh.queues["b"].ready[0]
        assert ea.message is msg is eb.message and not hasattr(msg, "id")
        if store_kind == "memory":
            assert ea.store_id is None is eb.store_id
            assert s.store.add_message(("/", "a"), msg) is None
            return
        assert ea.store_id is not None and ea.store_id == eb.store_id  # one message row
        other = persistent(b"two")
        h = s.store.add_message(("/", "a"), other)  # the store API, by value
        assert h is not None and h != ea.store_id
        assert s.store.add_message(("/", "nope"), other) is None  # a queue it does not know
        s.store.remove_message(("/", "a"), h)
        await s.durable()
        vh.queues["a"].ack(vh.queues["a"].get(False), None)  # b still holds the row
        await s.durable()
    async with open_store() as s:
        if store_kind == "memory":
            return
        assert ready_bodies(s.vhost, "a") == [] and ready_bodies(s.vhost, "b") == [b"one"]
        (entry,) = s.vhost.queues["b"].ready
        assert entry.store_id == s.snapshot.message_ids[("/", "b")][0]
        s.vhost.queues["b"].ack(s.vhost.queues["b"].get(False), None)
        await s.durable()
    async with open_store() as s:
        assert ready_bodies(s.vhost, "b") == []


async def test_quorum_requeue_copy_keeps_its_store_row(open_store, store_kind):
    """A quorum queue's requeue replaces the entry's message (x-delivery-count); the entry's
    handle still settles the stored row."""
    async with open_store() as s:
        q = s.vhost.declare_queue("qq", durable=True, arguments={"x-queue-type": "quorum"})
        s.vhost.publish("", "qq", persistent(b"x"))
        await s.durable()
        e = q.get(False)
        q.reject([e], None, requeue=True)
        e = q.get(False)
        assert e.message.headers["x-delivery-count"] == 1
        q.ack(e, None)
        await s.durable()
    async with open_store() as s:
        if store_kind == "sqlite":
            assert ready_bodies(s.vhost, "qq") == []
