"""Cross-check against pamqp (an independent implementation), when installed."""

from __future__ import annotations

import pytest

from mqemu.protocols.amqp091 import codec, spec

pamqp_frame = pytest.importorskip("pamqp.frame")
from pamqp import body as pbody  # noqa: E402
from pamqp import commands as pc  # noqa: E402
from pamqp import header as pheader  # noqa: E402


def test_publish_we_encode_pamqp_decodes():
    props = {"content_type": "application/json", "delivery_mode": 2, "headers": {"a": 1, "b": "x"},
             "correlation_id": "c", "priority": 3}
    wire = codec.encode_content(3, spec.BasicPublish(exchange="ex", routing_key="rk", mandatory=True),
                                props, b"y" * 300, 200)
    frames = []
    while wire:
        n, channel, frame = pamqp_frame.unmarshal(wire)
        wire = wire[n:]
        frames.append((channel, frame))
    (_, method), (_, header), *bodies = frames
    assert isinstance(method, pc.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory) == ("ex", "rk", True)
    assert header.body_size == 300
    assert header.properties.headers == {"a": 1, "b": "x"}
    assert header.properties.content_type == "application/json"
    assert b"".join(b.value for _, b in bodies) == b"y" * 300


@pytest.mark.parametrize("ours,theirs", [
    (spec.BasicDeliver("ctag", 42, True, "ex", "rk"), pc.Basic.Deliver("ctag", 42, True, "ex", "rk")),
    (spec.QueueDeclare(queue="q", durable=True, arguments={"x-queue-type": "quorum"}),
     pc.Queue.Declare(queue="q", durable=True, arguments={"x-queue-type": "quorum"})),
    (spec.BasicNack(delivery_tag=9, multiple=True, requeue=False),
     pc.Basic.Nack(delivery_tag=9, multiple=True, requeue=False)),
    (spec.ExchangeBind(destination="d", source="s", routing_key="k"),
     pc.Exchange.Bind(destination="d", source="s", routing_key="k")),
    (spec.ConnectionTune(2047, 131072, 60), pc.Connection.Tune(2047, 131072, 60)),
    (spec.ConfirmSelect(no_wait=True), pc.Confirm.Select(nowait=True)),
])
def test_method_bytes_match_pamqp(ours, theirs):
    wire = pamqp_frame.marshal(theirs, 1)
    assert codec.encode_method(1, ours) == wire
    assert codec.decode_method(wire[7:-1]) == ours


def test_pamqp_content_header_decodes():
    from pamqp.commands import Basic
    props = Basic.Properties(content_type="text/plain", headers={"k": [1, "a"]}, delivery_mode=1,
                             message_id="id", app_id="app")
    wire = pamqp_frame.marshal(pheader.ContentHeader(0, 7, props), 1) + pamqp_frame.marshal(
        pbody.ContentBody(b"1234567"), 1)
    dec = codec.FrameDecoder()
    dec.feed(codec.PROTOCOL_HEADER + wire)
    _, header, body = dec.read_frames()
    assert header.properties == {"content_type": "text/plain", "headers": {"k": [1, "a"]}, "delivery_mode": 1,
                                 "message_id": "id", "app_id": "app"}
    assert body.data == b"1234567"
