"""The bytes of a quorum queue's log (``broker.quorum_codec``): exact vectors for every
command kind, malformed input refused, batches, and a machine's snapshot restored."""

from __future__ import annotations

import random

import pytest

from mqemu.broker.message import Message
from mqemu.broker.queue_machine import QueueMachine
from mqemu.broker.message_wire import dump_message, dump_value, load_message
from mqemu.broker.quorum_codec import CommandError, add_ids, decode, dump, encode, encode_ids, join, load, split

pytestmark = pytest.mark.timeout(10)

ONE_AND_A_HALF = b"\x3f\xf8\x00\x00\x00\x00\x00\x00"  # 1.5 as a big-endian double
ZERO = b"\x00" * 8

VECTORS = [
    (("expire", 1.5), b"\x07" + ONE_AND_A_HALF),
    (("purge", 0.0), b"\x09" + ZERO),
    (("settle", "a", [1, 258], 0.0),
     b"\x04" + ZERO + b"\x00\x01" + b"\x00\x00\x00\x02" + b"a" + b"\x00" * 7 + b"\x01" + b"\x00" * 6 + b"\x01\x02"),
    (("requeue", "t", [], 1.5), b"\x05" + ONE_AND_A_HALF + b"\x00\x01" + b"\x00\x00\x00\x00" + b"t"),
    (("reject", "é", [7], 0.0), b"\x06" + ZERO + b"\x00\x02" + b"\x00\x00\x00\x01" + "é".encode() + b"\x00" * 7 + b"\x07"),
    (("consumer_added", "c1", 10, 1.5, -2, True),
     b"\x02" + ONE_AND_A_HALF + b"\x00\x02" + b"\x00\x00\x00\x0a" + b"\xff\xfe" + b"\x01" + b"c1"),
    (("consumer_removed", "c1", 0.0), b"\x03" + ZERO + b"\x00\x02" + b"c1"),
    (("cancel", "c1", 0.0), b"\x0a" + ZERO + b"\x00\x02" + b"c1"),
    (("take", "g", 3, False, 1.5), b"\x08" + ONE_AND_A_HALF + b"\x00\x01" + b"\x00" * 7 + b"\x03" + b"\x00" + b"g"),
]


@pytest.mark.parametrize("command,data", VECTORS, ids=[v[0][0] for v in VECTORS])
def test_command_bytes(command, data):
    assert encode(command) == data
    assert decode(data) == command


def test_an_id_command_grown_in_place_is_the_command_with_every_id():
    buf = encode_ids("settle", "a", [1], 0.0)
    add_ids(buf, [258])
    assert bytes(buf) == VECTORS[2][1] and decode(bytes(buf)) == ("settle", "a", [1, 258], 0.0)
    buf = encode_ids("reject", "é", [], 0.0)
    add_ids(buf, [])
    add_ids(buf, [7])
    assert bytes(buf) == VECTORS[4][1]
    assert split(join([b"x", buf])) == [b"x", bytes(buf)]


def test_a_message_s_meta_is_its_own_when_another_with_the_same_amqp_properties_was_dumped():
    raw = b"\x10\x00\x02"  # the AMQP property list of delivery-mode 2
    first = Message("", "q", b"1", {"delivery_mode": 2}, raw)
    other = Message("", "q", b"2", {"delivery_mode": 2, "headers": {"a": 1}}, raw)  # a stale cache
    same = Message("", "q", b"3", {"delivery_mode": 2}, raw)
    plain = Message("", "q", b"4", {"delivery_mode": 2})
    for m in (first, other, same, first, plain):
        assert dump_message(m) == dump_message(Message("", "q", m.body, m.properties))  # no cache without the raw bytes
        back = load_message(dump_message(m))
        assert (back.body, back.properties) == (m.body, m.properties)


def test_enqueue_bytes_carry_the_message_as_plain_values_never_a_pickle():
    m = Message("ex", "rk", b"body", {"delivery_mode": 2})
    data = encode(("enqueue", m, 1.5))
    meta = (b"l\x00\x00\x00\x03"  # [properties, routing_keys, fields]
            + b"m\x00\x00\x00\x01" + b"\x00\x0ddelivery_mode" + b"i" + b"\x00" * 7 + b"\x02"
            + b"N" + b"N")
    assert data == (b"\x01" + ONE_AND_A_HALF + b"\x01" + b"\x00\x02ex" + b"\x00\x02rk"
                    + len(meta).to_bytes(4, "big") + meta + b"body")
    assert data == b"\x01" + ONE_AND_A_HALF + dump_message(m)
    name, back, now = decode(data)
    assert (name, now) == ("enqueue", 1.5)
    assert (back.exchange, back.routing_key, back.body, back.properties) == ("ex", "rk", b"body", m.properties)
    m2 = Message("", "q", b"", {"headers": {"x": b"\x00", "n": [1, "a"]}}, fields={"mqtt.qos": 1})
    back2 = decode(encode(("enqueue", m2, 0.0)))[1]
    assert (back2.properties, back2.fields) == (m2.properties, m2.fields)
    # a second message with the same meta shares its decoded values, its own body and keys
    m3 = Message("", "q2", b"other", {"headers": {"x": b"\x00", "n": [1, "a"]}}, fields={"mqtt.qos": 1})
    back3 = decode(encode(("enqueue", m3, 0.0)))[1]
    assert back3.properties is back2.properties and (back3.routing_key, back3.body) == ("q2", b"other")
    with pytest.raises(CommandError):  # a known meta does not let a bad routing key through
        decode(encode(("enqueue", m3, 0.0)).replace(b"\x00\x02q2", b"\x00\x02\xff\xfe"))


@pytest.mark.parametrize("data", [
    b"", b"\x00" + ZERO, b"\x0b" + ZERO, b"\x07" + ZERO[:7], b"\x07" + ZERO + b"x",
    b"\x04" + ZERO + b"\x00\x01\x00\x00\x00\x02a" + b"\x00" * 15,  # one id short
    b"\x03" + ZERO + b"\x00\x05ab",  # tag shorter than its length
    b"\x02" + ZERO + b"\x00\x01\x00\x00\x00\x00\x00\x00\x00",  # no tag
    b"\x01" + ZERO + b"\x01\x00\x05ab",  # exchange shorter than its length
    b"\x01" + ZERO + b"\x02\x00\x00\x00\x00\x00\x00\x00\x00",  # an unknown message version
    b"\x01" + ZERO + b"\x01\x00\x00\x00\x00\x00\x00\x00\x05N",  # meta longer than what is left
    b"\x01" + ZERO + b"\x01\x00\x00\x00\x00\x00\x00\x00\x01N",  # meta not [properties, keys, fields]
    b"\x01" + ZERO + b"\x01\x00\x00\x00\x00\x00\x00\x00\x01\x80",  # a pickle's first byte as meta
    b"\x03" + ZERO + b"\x00\x01\xff",  # not UTF-8
])
def test_malformed_commands_are_refused(data):
    with pytest.raises(CommandError):
        decode(data)


def test_a_batch_splits_back_into_its_commands_and_a_torn_one_is_refused():
    cmds = [encode(("expire", 1.5)), encode(("purge", 0.0))]
    batch = join(cmds)
    assert batch == b"\x00\x00\x00\x09" + cmds[0] + b"\x00\x00\x00\x09" + cmds[1]
    assert [bytes(c) for c in split(batch)] == cmds
    assert [bytes(c) for c in split(join(cmds[:1]))] == cmds[:1]
    for cut in (1, 5, len(batch) - 1):
        with pytest.raises(CommandError):
            split(batch[:cut])


def test_a_snapshot_restores_a_machine_that_goes_on_as_the_original():
    rnd = random.Random(5)
    a = QueueMachine(message_ttl=5000, max_length=40, delivery_limit=2, max_length_bytes=10_000)
    now = 0.0

    def step(m: QueueMachine, r: random.Random, now: float) -> list:
        op = r.random()
        tags = [t for t, c in m.consumers.items() if c.prefetch >= 0]
        if op < 0.4:
            return m.enqueue(Message("", "q", str(r.random()).encode(), {"delivery_mode": 2}), now)
        if op < 0.45 and len(tags) < 3:
            return m.consumer_added(f"c{r.randrange(10**9)}", r.randrange(0, 4), now, r.randrange(0, 3))
        if op < 0.48 and tags:
            return m.cancel(r.choice(tags), now)
        if op < 0.5 and m.ready:
            return m.take("g", m.ready[0], r.random() < 0.5, now)
        held = [(t, list(c.checked_out)) for t, c in m.consumers.items() if c.checked_out]
        if op < 0.95 and held:
            tag, ids = r.choice(held)
            return getattr(m, r.choice(["settle", "requeue", "reject"]))(tag, r.sample(ids, r.randint(0, len(ids))), now)
        return m.expire(now)

    for _ in range(500):
        now += rnd.random() / 10
        step(a, rnd, now)
    b = load(dump(a))
    assert b.snapshot() == a.snapshot() and b.settings() == a.settings()
    ra, rb = random.Random(9), random.Random(9)
    for _ in range(500):
        now += 0.05
        assert step(a, ra, now) == step(b, rb, now)
    assert b.snapshot() == a.snapshot()


def test_a_snapshot_is_plain_values_and_malformed_ones_are_refused():
    m = QueueMachine(message_ttl=5000, delivery_limit=2)
    m.enqueue(Message("", "q", b"a", {"delivery_mode": 2}), 1.0)
    m.consumer_added("n1/c.1", 1, 1.0)
    data = dump(m)
    assert data[:1] == b"l" and b"\x80\x05" not in data[:2]  # not a pickle
    assert load(data).snapshot() == m.snapshot()
    good = [1, list(m.settings()), m.next_id, list(m.ready), [], [], [], 0, None]
    assert load(dump_value(good)).next_id == m.next_id
    bad = [
        b"", b"\x80\x05N.", dump_value([1, 2, 3]), dump_value([2, *good[1:]]),
        dump_value([1, [1, 2], *good[2:]]),
        dump_value([1, good[1], "x", *good[3:]]),
        dump_value([*good[:4], [[1, b"not a message", None, 0, False, False]], *good[5:]]),
        dump_value([*good[:4], [[1]], *good[5:]]),
        dump_value([*good[:5], [[7, 1, 0, False, []]], *good[6:]]),
        dump_value([*good[:3], [99], *good[4:]]),  # a ready id with no message
        data[:-1],
    ]
    for b in bad:
        with pytest.raises(CommandError):
            load(b)
