"""``protocols/websocket.py`` over trio's in-memory streams: the upgrade, payload bytes
whatever the cut of TCP reads and WebSocket frames, pings, closes, and the route choice."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, Request,
                            TextMessage)

from mqemu.protocols.transport import HandshakeFailed
from mqemu.protocols.websocket import Route, accept, choose

pytestmark = pytest.mark.timeout(10)

STOMP = Route("stomp", lambda peer, conn_id: None, ("v12.stomp", "v11.stomp"), lenient=True, text=True)
MQTT = Route("mqtt", lambda peer, conn_id: None, ("mqtt",), binary_only=True)


def test_choose_by_path_and_subprotocol():
    web = (Route("mqtt", MQTT.make_session, ("mqtt",), path="/ws", binary_only=True),)
    assert choose(web, "/ws?x=1", ["mqtt"])[1:] == ("mqtt", 101)
    assert choose(web, "/other", ["mqtt"])[2] == 404
    assert choose(web, "/ws", ["foo"])[2] == 400
    assert choose(web, "/ws", [])[1:] == (None, 101)
    both = (STOMP, MQTT)  # ActiveMQ's one port
    assert choose(both, "/", ["mqtt"])[0] is MQTT
    assert choose(both, "/", [])[0] is STOMP
    assert choose(both, "/", ["v11.stomp", "v12.stomp"])[1] == "v12.stomp"
    assert choose(both, "/", ["unknown"])[:2] == (STOMP, None)


async def pump_to(client_stream, data: bytes, step: int) -> None:
    for i in range(0, len(data), step):
        await client_stream.send_all(data[i:i + step])


async def client_events(client_stream, ws: WSConnection) -> list:
    ws.receive_data(await client_stream.receive_some(65536))
    return list(ws.events())


@pytest.mark.parametrize("step", [1, 7, 4096])
async def test_payload_whatever_the_cut(step):
    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws = WSConnection(ConnectionType.CLIENT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_to, client_stream, ws.send(Request(host="x", target="/",
                                                                   subprotocols=["v12.stomp"])), step)
        stream = await accept(server_stream, (STOMP,))
    assert stream.subprotocol == "v12.stomp"
    events = await client_events(client_stream, ws)
    assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == "v12.stomp"
    data = ws.send(TextMessage(data="CONNECT\n\n\x00SEND"))
    data += ws.send(BytesMessage(data=b"\nx:y\n\nbody\x00", message_finished=False))
    data += ws.send(BytesMessage(data=b"more", message_finished=True))
    got = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_to, client_stream, data, step)
        while not got.endswith(b"more"):
            got += await stream.receive_some(65536)
    assert got == b"CONNECT\n\n\x00SEND\nx:y\n\nbody\x00more"
    # output: UTF-8 as text, other bytes as binary
    await stream.send_all(b"MESSAGE\n\n\x00")
    await stream.send_all(b"\xff\xfe")
    events = await client_events(client_stream, ws)
    assert [type(e) for e in events] == [TextMessage, BytesMessage]
    # a ping is answered, a close is answered and ends the stream
    await client_stream.send_all(ws.send(Ping(b"hi")) + ws.send(CloseConnection(code=1000)))
    assert await stream.receive_some(65536) == b""
    events = await client_events(client_stream, ws)
    assert isinstance(events[0], Pong) and isinstance(events[1], CloseConnection)


async def test_text_to_a_binary_only_route_closes_with_1003():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws = WSConnection(ConnectionType.CLIENT)
    await client_stream.send_all(ws.send(Request(host="x", target="/", subprotocols=["mqtt"])))
    stream = await accept(server_stream, (MQTT,))
    await client_events(client_stream, ws)
    await client_stream.send_all(ws.send(TextMessage(data="\x10\x00")))
    assert await stream.receive_some(65536) == b""
    events = await client_events(client_stream, ws)
    assert isinstance(events[0], CloseConnection) and events[0].code == 1003


async def test_refusals():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws = WSConnection(ConnectionType.CLIENT)
    await client_stream.send_all(ws.send(Request(host="x", target="/", subprotocols=["foo"])))
    with pytest.raises(HandshakeFailed, match="400"):
        await accept(server_stream, (MQTT,))
    events = await client_events(client_stream, ws)
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 400
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(HandshakeFailed):
        await accept(server_stream, (MQTT,))
    assert (await client_stream.receive_some(65536)).startswith(b"HTTP/1.1 400")
