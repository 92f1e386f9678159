"""Protocol fields of a message (``Message.fields``) in the SQLite store and the page file,
and data directories written before they existed (schema 1)."""

from __future__ import annotations

import os
import pickle
import sqlite3

import pytest
import trio
from mqemu.broker.core import Broker
from mqemu.broker.message import Field, Message
from mqemu.broker.store import sqlite_schema as schema
from mqemu.broker.store.base import StoreError
from mqemu.broker.store.message_codec import dump_meta, load_meta, make_message
from mqemu.broker.store.sqlite import SQLiteStore

TEXT = Field("stomp", "text", bool)
PUBLISHER = Field("mqtt", "publisher", str)


def test_a_message_without_fields_is_written_as_schema_1_wrote_it():
    m = Message("ex", "rk", b"b", {"delivery_mode": 2})
    m.routing_keys = ["rk", "cc"]
    assert dump_meta(m) == pickle.dumps(({"delivery_mode": 2}, ["rk", "cc"]), protocol=pickle.HIGHEST_PROTOCOL)
    assert load_meta(dump_meta(m)) == ({"delivery_mode": 2}, ["rk", "cc"], None)


def test_fields_round_trip_through_the_blob():
    m = Message("ex", "rk", b"b", {"delivery_mode": 2}, fields={"stomp.text": True, "mqtt.publisher": "c1"})
    back = make_message("ex", "rk", b"b", load_meta(dump_meta(m)))
    assert back.fields == {"stomp.text": True, "mqtt.publisher": "c1"}
    assert TEXT.get(back) is True and PUBLISHER.get(back) == "c1"
    assert back.properties == {"delivery_mode": 2} and back.routing_keys is None


def test_field_is_typed_and_namespaced():
    m = Message("", "q", b"")
    assert TEXT.get(m) is None
    m.fields = TEXT.add(m.fields, True)
    m.fields = PUBLISHER.add(m.fields, "c1")
    assert m.fields == {"stomp.text": True, "mqtt.publisher": "c1"}
    with pytest.raises(TypeError, match="stomp.text is a bool, not str"):
        TEXT.add(None, "yes")  # type: ignore[arg-type]
    m.fields = {"stomp.text": "yes"}  # a value of the wrong type reads as absent
    assert TEXT.get(m) is None
    # copies made by the core (dead-lettering, scheduling) keep the fields
    assert m.copy_with(priority=3).fields is m.fields


async def test_fields_survive_a_reopen(tmp_path):
    data = str(tmp_path / "data")
    store = SQLiteStore(data)
    await store.open()
    broker = Broker(store=store)
    vh = broker.vhosts["/"]
    vh.declare_queue("q", durable=True)
    vh.publish("", "q", Message("", "q", b"text", {"delivery_mode": 2}, fields=TEXT.add(None, True)))
    vh.publish("", "q", Message("", "q", b"plain", {"delivery_mode": 2}))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        done = trio.Event()
        store.when_durable(store.barrier(), done.set)
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    await store.close()

    store = SQLiteStore(data)
    snapshot = await store.open()
    await store.close()
    text, plain = snapshot.messages[("/", "q")]
    assert (text.body, text.fields, plain.body, plain.fields) == (b"text", {"stomp.text": True}, b"plain", None)


def _schema_1_file(data: str) -> None:
    """A data directory as mqemu wrote it before message fields (user_version 1)."""
    os.makedirs(data)
    con = sqlite3.connect(os.path.join(data, schema.DB_NAME), isolation_level=None)
    con.executescript(schema.SCHEMA)
    con.execute("INSERT INTO queues VALUES (1, '/', 'old', 0, 0, ?)", (pickle.dumps({}),))
    con.execute("INSERT INTO messages (id, exchange, routing_key, properties, body) VALUES (1, '', 'old', ?, ?)",
                (pickle.dumps(({"delivery_mode": 2, "headers": {"h": 1}}, None)), b"from v1"))
    con.execute("INSERT INTO queue_messages VALUES (1, 1)")
    con.execute("PRAGMA user_version=1")
    con.close()


async def test_a_schema_1_data_dir_is_read_and_marked_schema_2(tmp_path):
    data = str(tmp_path / "data")
    _schema_1_file(data)
    store = SQLiteStore(data)
    snapshot = await store.open()
    await store.close()
    (msg,) = snapshot.messages[("/", "old")]
    assert (msg.body, msg.properties, msg.fields) == (b"from v1", {"delivery_mode": 2, "headers": {"h": 1}}, None)
    con = sqlite3.connect(os.path.join(data, schema.DB_NAME))
    assert con.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 2
    con.close()


async def test_a_data_dir_from_a_newer_mqemu_is_refused(tmp_path):
    data = str(tmp_path / "data")
    _schema_1_file(data)
    con = sqlite3.connect(os.path.join(data, schema.DB_NAME), isolation_level=None)
    con.execute("PRAGMA user_version=3")
    con.close()
    with pytest.raises(StoreError, match=r"was written by a newer mqemu \(schema 3\)"):
        await SQLiteStore(data).open()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_paged_messages_keep_their_fields(kind, tmp_path):
    """Transient messages page through the page file; persistent ones in a durable queue are
    read back from mqemu.sqlite: both come back with their fields."""
    from mqemu.broker.config import BrokerConfig
    from mqemu.broker.store.memory import MemoryStore

    store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "data"))
    broker = Broker(BrokerConfig(memory_budget=1 << 30), store=store)
    broker.recover(await store.open())
    vh = broker.vhosts["/"]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            q = vh.declare_queue("lazy", durable=True, arguments={"x-queue-mode": "lazy"})
            for i in range(600):
                props = {"delivery_mode": 2} if i % 2 else {}
                vh.publish("", "lazy", Message("", "lazy", b"%d" % i, props,
                                               fields=PUBLISHER.add(None, f"c{i}")))
            assert q.messages_paged == 600
            got = []
            with trio.fail_after(10):
                while len(got) < 600:
                    entry = q.get(no_ack=True)
                    if entry is None:
                        done = trio.Event()
                        store.when_durable(store.barrier(), done.set)
                        await done.wait()
                        await trio.sleep(0.005)
                        continue
                    got.append((entry.message.body, PUBLISHER.get(entry.message)))
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()
    assert got == [(b"%d" % i, f"c{i}") for i in range(600)]
