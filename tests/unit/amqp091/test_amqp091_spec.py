"""Method table, generated classes, golden method frames, full round trip."""

from __future__ import annotations

import dataclasses

import pytest

from mqemu.protocols.amqp091 import codec, spec
from mqemu.protocols.amqp091.spec import (
    BasicDeliver, BasicNack, BasicPublish, BasicQos, ConfirmSelect, ConnectionClose, ConnectionStart,
    ConnectionStartOk, ExchangeUnbindOk, QueueDeclare, QueueDeclareOk,
)

EXPECTED = {
    (10, 10): "ConnectionStart", (10, 11): "ConnectionStartOk", (10, 20): "ConnectionSecure",
    (10, 21): "ConnectionSecureOk", (10, 30): "ConnectionTune", (10, 31): "ConnectionTuneOk",
    (10, 40): "ConnectionOpen", (10, 41): "ConnectionOpenOk", (10, 50): "ConnectionClose",
    (10, 51): "ConnectionCloseOk", (10, 60): "ConnectionBlocked", (10, 61): "ConnectionUnblocked",
    (10, 70): "ConnectionUpdateSecret", (10, 71): "ConnectionUpdateSecretOk",
    (20, 10): "ChannelOpen", (20, 11): "ChannelOpenOk", (20, 20): "ChannelFlow", (20, 21): "ChannelFlowOk",
    (20, 40): "ChannelClose", (20, 41): "ChannelCloseOk", (30, 10): "AccessRequest", (30, 11): "AccessRequestOk",
    (40, 10): "ExchangeDeclare", (40, 11): "ExchangeDeclareOk", (40, 20): "ExchangeDelete",
    (40, 21): "ExchangeDeleteOk", (40, 30): "ExchangeBind", (40, 31): "ExchangeBindOk",
    (40, 40): "ExchangeUnbind", (40, 51): "ExchangeUnbindOk", (50, 10): "QueueDeclare",
    (50, 11): "QueueDeclareOk", (50, 20): "QueueBind", (50, 21): "QueueBindOk", (50, 30): "QueuePurge",
    (50, 31): "QueuePurgeOk", (50, 40): "QueueDelete", (50, 41): "QueueDeleteOk", (50, 50): "QueueUnbind",
    (50, 51): "QueueUnbindOk", (60, 10): "BasicQos", (60, 11): "BasicQosOk", (60, 20): "BasicConsume",
    (60, 21): "BasicConsumeOk", (60, 30): "BasicCancel", (60, 31): "BasicCancelOk", (60, 40): "BasicPublish",
    (60, 50): "BasicReturn", (60, 60): "BasicDeliver", (60, 70): "BasicGet", (60, 71): "BasicGetOk",
    (60, 72): "BasicGetEmpty", (60, 80): "BasicAck", (60, 90): "BasicReject", (60, 100): "BasicRecoverAsync",
    (60, 110): "BasicRecover", (60, 111): "BasicRecoverOk", (60, 120): "BasicNack", (90, 10): "TxSelect",
    (90, 11): "TxSelectOk", (90, 20): "TxCommit", (90, 21): "TxCommitOk", (90, 30): "TxRollback",
    (90, 31): "TxRollbackOk", (85, 10): "ConfirmSelect", (85, 11): "ConfirmSelectOk",
}


def test_table_is_complete():
    got = {(c.CLASS_ID, c.METHOD_ID): c.__name__ for c in spec.METHODS.values()}
    assert got == EXPECTED
    for (cid, mid), name in EXPECTED.items():
        cls = getattr(spec, name)
        assert cls.INDEX == cid << 16 | mid
        assert spec.METHODS[cls.INDEX] is cls
        assert spec.method_class(cid, mid) is cls


def test_class_attributes_and_flags():
    assert BasicPublish.NAME == "basic.publish"
    assert BasicPublish.HAS_CONTENT and not BasicPublish.SYNCHRONOUS
    assert QueueDeclare.SYNCHRONOUS and not QueueDeclare.HAS_CONTENT
    assert not QueueDeclareOk.SYNCHRONOUS
    assert {c.NAME for c in spec.METHODS.values() if c.HAS_CONTENT} == {
        "basic.publish", "basic.return", "basic.deliver", "basic.get-ok"}
    assert ExchangeUnbindOk.METHOD_ID == 51
    assert spec.method_name(60, 40) == "basic.publish"
    assert "999" in spec.method_name(60, 999)
    assert spec.CLASS_NAMES[85] == "confirm"


def test_field_names_and_defaults():
    names = lambda cls: [f.name for f in dataclasses.fields(cls)]  # noqa: E731
    assert names(QueueDeclare) == ["queue", "passive", "durable", "exclusive", "auto_delete", "no_wait", "arguments"]
    assert names(BasicPublish) == ["exchange", "routing_key", "mandatory", "immediate"]
    assert names(BasicDeliver) == ["consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key"]
    assert names(ConnectionClose) == ["reply_code", "reply_text", "class_id", "method_id"]
    assert names(ConnectionStart) == ["version_major", "version_minor", "server_properties", "mechanisms", "locales"]
    assert names(ConnectionStartOk) == ["client_properties", "mechanism", "response", "locale"]
    assert names(spec.ConnectionOpen) == ["virtual_host"]
    assert names(spec.ConnectionUpdateSecret) == ["new_secret", "reason"]
    assert names(ConfirmSelect) == ["no_wait"]
    assert names(BasicNack) == ["delivery_tag", "multiple", "requeue"]
    assert names(BasicQos) == ["prefetch_size", "prefetch_count", "global_"]
    assert QueueDeclareOk(queue="q") == QueueDeclareOk("q", 0, 0)
    a, b = QueueDeclare(), QueueDeclare()
    assert a.arguments == {} and a.arguments is not b.arguments
    assert ConnectionStartOk().response == b"" and ConnectionStart().mechanisms == b""
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.queue = "x"  # type: ignore[misc]
    assert not hasattr(a, "__dict__")


def frame(ch: int, payload_hex: str) -> bytes:
    payload = bytes.fromhex(payload_hex.replace(" ", ""))
    return b"\x01" + ch.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"


GOLDEN = [
    (0, ConnectionStart(0, 9, {"product": "mqemu"}, b"PLAIN AMQPLAIN", b"en_US"),
     "000a 000a 00 09 00000012 07" + b"product".hex() + "53 00000005" + b"mqemu".hex()
     + "0000000e" + b"PLAIN AMQPLAIN".hex() + "00000005" + b"en_US".hex()),
    (1, BasicPublish(exchange="ex", routing_key="rk", mandatory=True),
     "003c 0028 0000 02 6578 02 726b 01"),
    (1, BasicDeliver(consumer_tag="ct", delivery_tag=1, redelivered=True, exchange="", routing_key="q"),
     "003c 003c 02 6374 0000000000000001 01 00 01 71"),
    (1, QueueDeclare(queue="q", durable=True, auto_delete=True, arguments={"x-max-length": 10}),
     "0032 000a 0000 01 71 0a 00000012 0c" + b"x-max-length".hex() + "49 0000000a"),
    (1, QueueDeclare(queue="", passive=True, exclusive=True, no_wait=True),
     "0032 000a 0000 00 15 00000000"),
    (2, BasicNack(delivery_tag=7, requeue=True), "003c 0078 0000000000000007 02"),
    (2, BasicNack(delivery_tag=7, multiple=True, requeue=True), "003c 0078 0000000000000007 03"),
    (0, spec.ConnectionOpen(virtual_host="/"), "000a 0028 01 2f 00 00"),
    (0, spec.ConnectionTune(2047, 131072, 60), "000a 001e 07ff 00020000 003c"),
    (0, ConnectionClose(320, "CONNECTION_FORCED - bye", 0, 0),
     "000a 0032 0140 17" + b"CONNECTION_FORCED - bye".hex() + "0000 0000"),
    (3, spec.ChannelOpenOk(), "0014 000b 00000000"),
    (3, ConfirmSelect(no_wait=True), "0055 000a 01"),
    (3, spec.TxSelect(), "005a 000a"),
    (3, BasicQos(prefetch_count=10, global_=True), "003c 000a 00000000 000a 01"),
]


@pytest.mark.parametrize("ch,method,hexpayload", GOLDEN, ids=[g[1].NAME for g in GOLDEN])
def test_golden_method_frames(ch, method, hexpayload):
    wire = frame(ch, hexpayload)
    assert codec.encode_method(ch, method) == wire
    dec = codec.FrameDecoder()
    dec.feed(codec.PROTOCOL_HEADER + wire)
    assert dec.read_frames() == [codec.ProtocolHeader(0, 9, 1), codec.MethodFrame(ch, method)]
    assert codec.decode_method(wire[7:-1]) == method


def _sample(ftype: str, name: str):
    return {
        "octet": 200, "short": 65000, "long": 4_000_000_000, "longlong": 2**63 + 5, "timestamp": 1_700_000_000,
        "bit": True, "shortstr": f"{name}-é", "longstr": b"\x00\xffsecret",
        "table": {"k": name, "n": [1, "two", None]},
    }[ftype]


@pytest.mark.parametrize("cls", list(spec.METHODS.values()), ids=lambda c: c.NAME)
def test_round_trip_every_method(cls):
    kwargs = {f: _sample(t, f) for f, t, reserved in cls.FIELDS if not reserved}
    method = cls(**kwargs)
    if kwargs:
        assert method != cls()
    wire = codec.encode_method(5, method)
    dec = codec.FrameDecoder()
    dec.feed(codec.PROTOCOL_HEADER + wire)
    frames = dec.read_frames()
    assert frames[1] == codec.MethodFrame(5, method)
    assert frames[1].method.__class__ is cls
    # defaults round-trip too
    assert codec.decode_method(codec.encode_method(0, cls())[7:-1]) == cls()


def test_shortstr_too_long_on_encode():
    with pytest.raises(ValueError):
        codec.encode_method(1, QueueDeclare(queue="x" * 256))
    codec.encode_method(1, QueueDeclare(queue="x" * 255))


def test_reserved_fields_are_skipped_on_decode():
    # connection.open with a non-empty capabilities shortstr and insist=1 (old clients)
    wire = frame(0, "000a 0028 01 2f 03 616263 01")
    assert codec.decode_method(wire[7:-1]) == spec.ConnectionOpen(virtual_host="/")
    # channel.open-ok with a channel-id longstr
    assert codec.decode_method(bytes.fromhex("0014000b0000000278 79")) == spec.ChannelOpenOk()
