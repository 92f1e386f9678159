"""Micro-benchmark: AMQP 0-9-1 basic.publish encode/decode, mqemu codec vs pamqp.

Run: python bench/bench_amqp_codec.py
Prints microseconds per message (method + content header + one 256-byte body
frame). Not a test.
"""

from __future__ import annotations

import timeit

from mqemu.protocols.amqp091 import codec, spec

BODY = b"x" * 256
PROPS = {"content_type": "application/json", "delivery_mode": 2}
N = 50_000


def per_msg(fn, n: int = N) -> float:
    best = min(timeit.repeat(fn, number=n, repeat=5))
    return best / n * 1e6


def bench_mqemu() -> None:
    method = spec.BasicPublish(exchange="amq.direct", routing_key="some.routing.key")
    wire = codec.encode_content(1, method, PROPS, BODY, 131072)
    raw = codec.encode_properties(PROPS)

    def encode() -> bytes:
        return codec.encode_content(1, method, PROPS, BODY, 131072)

    def encode_raw() -> bytes:
        return codec.encode_content(1, method, None, BODY, 131072, raw_properties=raw)

    def deliver() -> bytes:
        return codec.encode_deliver(1, "ctag-1", 12345, False, "amq.direct", "some.routing.key", raw, BODY, 131072)

    dec = codec.FrameDecoder()
    dec.feed(codec.PROTOCOL_HEADER)
    dec.read_frames()

    def decode() -> list:
        dec.feed(wire)
        return dec.read_frames()

    assert len(decode()) == 3
    print(f"mqemu  encode publish (props dict)   {per_msg(encode):6.2f} us/msg")
    print(f"mqemu  encode publish (raw props)    {per_msg(encode_raw):6.2f} us/msg")
    print(f"mqemu  encode_deliver fast path      {per_msg(deliver):6.2f} us/msg")
    print(f"mqemu  decode publish (3 frames)     {per_msg(decode):6.2f} us/msg")


def bench_pamqp() -> None:
    try:
        from pamqp import body as pbody
        from pamqp import commands as pc
        from pamqp import frame as pframe
        from pamqp import header as pheader
    except ImportError:
        print("pamqp not importable: skipping comparison")
        return

    def encode() -> bytes:
        props = pc.Basic.Properties(content_type="application/json", delivery_mode=2)
        return b"".join((
            pframe.marshal(pc.Basic.Publish(exchange="amq.direct", routing_key="some.routing.key"), 1),
            pframe.marshal(pheader.ContentHeader(0, len(BODY), props), 1),
            pframe.marshal(pbody.ContentBody(BODY), 1),
        ))

    wire = encode()

    def decode() -> list:
        out, data = [], wire
        while data:
            n, _ch, frame = pframe.unmarshal(data)
            data = data[n:]
            out.append(frame)
        return out

    assert len(decode()) == 3
    print(f"pamqp  encode publish                {per_msg(encode, N // 5):6.2f} us/msg")
    print(f"pamqp  decode publish (3 frames)     {per_msg(decode, N // 5):6.2f} us/msg")


if __name__ == "__main__":
    bench_mqemu()
    bench_pamqp()
