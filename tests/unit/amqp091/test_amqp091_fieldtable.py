"""Field tables and arrays: golden bytes for every type letter, errors."""

from __future__ import annotations

import datetime
import decimal

import pytest

from mqemu.protocols.amqp091 import codec
from mqemu.protocols.amqp091.codec import AMQPFrameError, decode_array, decode_table, encode_array, encode_table


def entry(key: str, tag: str, value_hex: str) -> bytes:
    return bytes([len(key)]) + key.encode() + tag.encode() + bytes.fromhex(value_hex.replace(" ", ""))


UTC = datetime.timezone.utc

# (type letter, wire value, python value, encodes back to the same bytes?)
EVERY_TYPE = [
    ("t", "01", True, True),
    ("t", "00", False, True),
    ("b", "ff", -1, False),
    ("B", "ff", 255, False),
    ("s", "8000", -32768, False),
    ("u", "ffff", 65535, False),
    ("I", "fffffffe", -2, True),
    ("i", "ffffffff", 4294967295, False),
    ("l", "8000000000000000", -(2**63), True),
    ("L", "0000000000000003", 3, False),
    ("f", "3fc00000", 1.5, False),
    ("d", "400c000000000000", 3.5, True),
    ("D", "02 00003039", decimal.Decimal("123.45"), True),
    ("D", "00 fffffff6", decimal.Decimal("-10"), True),
    ("S", "00000003 616263", "abc", True),
    ("S", "00000002 c3a9", "é", True),
    ("S", "00000002 fffe", b"\xff\xfe", False),  # not UTF-8 -> bytes
    ("x", "00000002 00ff", b"\x00\xff", True),
    ("A", "0000000c 49 00000001 53 00000001 78 56", [1, "x", None], True),
    ("T", "000000006553f100", datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), True),
    ("F", "0000000a 01 6b 49 00000007 01 6e 56", {"k": 7, "n": None}, True),
    ("V", "", None, True),
]


@pytest.mark.parametrize("tag,hexval,value,symmetric", EVERY_TYPE, ids=[f"{t[0]}-{i}" for i, t in enumerate(EVERY_TYPE)])
def test_every_type(tag, hexval, value, symmetric):
    wire = entry("key", tag, hexval)
    decoded = decode_table(wire)
    assert decoded == {"key": value}
    assert type(decoded["key"]) is type(value)
    if symmetric:
        assert encode_table({"key": value}) == wire
    # whatever we encode decodes back equal
    assert decode_table(encode_table(decoded)) == decoded


def test_array_fixed_golden():
    body = bytes.fromhex("49 00000001 53 00000001 78 56 74 01".replace(" ", ""))
    assert decode_array(body) == [1, "x", None, True]
    assert encode_array([1, "x", None, True]) == body
    assert encode_table({"a": (1, "x", None, True)}) == b"\x01aA" + len(body).to_bytes(4, "big") + body


def test_encode_mapping():
    table = {
        "bool": True, "small": 2**31 - 1, "neg": -(2**31), "big": 2**31, "float": 0.25,
        "dec": decimal.Decimal("-1.5"), "str": "s", "bytes": b"b", "list": [[], {}],
        "dict": {"nested": {"deeper": "x"}}, "ts": datetime.datetime(2020, 1, 1, tzinfo=UTC), "none": None,
    }
    assert decode_table(encode_table(table)) == table
    tag_of = lambda v: encode_table({"k": v})[2:3]  # noqa: E731
    assert [tag_of(v) for v in (True, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 0.25, decimal.Decimal(1),
                                "s", b"b", bytearray(b"b"), [1], (1,), {}, table["ts"], None)] == [
        b"t", b"I", b"I", b"l", b"l", b"d", b"D", b"S", b"x", b"x", b"A", b"A", b"F", b"T", b"V"]
    with pytest.raises(ValueError):
        encode_table({"huge": 2**64})
    with pytest.raises(TypeError):
        encode_table({"obj": object()})
    with pytest.raises(ValueError):
        encode_table({"k" * 256: 1})


def test_naive_datetime_is_utc():
    naive = datetime.datetime(2020, 1, 1)
    assert decode_table(encode_table({"t": naive})) == {"t": naive.replace(tzinfo=UTC)}


def test_empty_table():
    assert encode_table({}) == b"" and decode_table(b"") == {}


@pytest.mark.parametrize("wire", [
    entry("k", "Z", "00"),  # unknown type letter
    entry("k", "U", "0000"),  # spec's letter that RabbitMQ does not use
    entry("k", "I", "0000"),  # truncated int
    entry("k", "S", "00000010 6162"),  # longstr overruns the table
    entry("k", "F", "00000010 01"),  # nested table overruns
    entry("k", "F", "00000003 01 6b 5a"),  # bad letter inside nested table
    entry("k", "A", "00000001 5a"),  # bad letter inside array
    entry("k", "T", "ffffffffffffffff"),  # timestamp out of datetime range
    b"\x05ab",  # key runs past the end
    entry("k", "D", "02"),  # truncated decimal
])
def test_malformed_tables_are_502(wire):
    with pytest.raises(AMQPFrameError) as info:
        decode_table(wire)
    assert info.value.reply_code == codec.SYNTAX_ERROR == 502
    assert info.value.text.startswith("SYNTAX_ERROR - ")
