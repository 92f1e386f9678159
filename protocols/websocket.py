"""STOMP and MQTT over WebSocket: a ``transport.Opener`` that answers the HTTP upgrade with
wsproto (sans-IO) and hands the session a stream of the messages' payload bytes, so sessions
see the same byte stream as over TCP: a WebSocket message may carry several protocol frames
or part of one, and nothing here looks at them.

Routes say which protocol a handshake reaches (``Route``): by path (RabbitMQ's Web-STOMP and
Web-MQTT listen on ``/ws``; ActiveMQ's ``ws`` transport takes any path) and by the
subprotocols the client offers (MQTT's ``mqtt``; STOMP's ``v12.stomp``, ``v11.stomp``,
``v10.stomp``). Of the routes on the path, the first whose subprotocols include one the
client offers wins, and its own first such subprotocol is the one accepted; a client that
offers none reaches the first route; one that offers only unknown names reaches the first
``lenient`` route without a subprotocol in the answer (Web-STOMP does so), or gets 400 (MQTT
requires ``mqtt`` [MQTT-6.0.0-3]). An unknown path gets 404, a request that is not a
WebSocket upgrade 400; both close the connection.

Output: each ``send_all`` is one WebSocket message, binary or, for a ``text`` route, a text
message when the bytes are UTF-8 (STOMP frames as RabbitMQ's and ActiveMQ's STOMP-over-WS
send them) and binary otherwise. Input: text and binary messages alike, except on a
``binary_only`` route (MQTT [MQTT-6.0.0-1]), where a text message closes the connection with
1003. Pings are answered; a Close is answered and is the end of the stream; a malformed frame
closes the connection with wsproto's code (1002 and the like). No extension (compression) is
offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Event, Ping, RejectConnection,
                            Request, TextMessage)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .transport import READ_SIZE, HandshakeFailed, MakeSession, Opener

__all__ = ["Route", "WebSocketStream", "websocket_opener"]

UNSUPPORTED_DATA = 1003


@dataclass(frozen=True, slots=True)
class Route:
    """One protocol reachable over a WebSocket listener."""

    protocol: str  # for log lines: "stomp", "mqtt"
    make_session: MakeSession
    subprotocols: tuple[str, ...]
    path: str | None = None  # None: any path
    lenient: bool = False  # accept a client that offers only unknown subprotocols
    text: bool = False  # send UTF-8 output as text messages
    binary_only: bool = False  # a text message from the client closes the connection


def choose(routes: tuple[Route, ...], path: str, offered: list[str]) -> tuple[Route | None, str | None, int]:
    """(route, accepted subprotocol, status): status 101 when a route is found, else the
    HTTP status to refuse with (404 no route for the path, 400 no acceptable subprotocol)."""
    path = path.split("?", 1)[0]
    here = [r for r in routes if r.path is None or r.path == path]
    if not here:
        return None, None, 404
    for route in here:
        for name in route.subprotocols:
            if name in offered:
                return route, name, 101
    if not offered:
        return here[0], None, 101
    for route in here:
        if route.lenient:
            return route, None, 101
    return None, None, 400


class WebSocketStream(trio.abc.Stream):
    """The payload bytes of a server-side WebSocket connection, as a trio stream.

    One reader and one writer may use it at once (as the transport does); the reader's
    answers to pings and closes share a lock with the writer's messages.
    """

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, route: Route, subprotocol: str | None) -> None:
        self.transport_stream = stream
        self.route = route
        self.subprotocol = subprotocol
        self._ws = ws
        self._pending: list[bytes] = []
        self._eof = False
        self._send_lock = trio.Lock()

    def take_events(self) -> bytes:
        """Handle what wsproto parsed; returns the bytes to send back (pongs, a close)."""
        reply = []
        ws = self._ws
        for event in ws.events():
            if isinstance(event, BytesMessage):
                self._pending.append(bytes(event.data))
            elif isinstance(event, TextMessage):
                if self.route.binary_only:
                    reply.append(self._close(UNSUPPORTED_DATA, "text messages are not accepted"))
                    break
                self._pending.append(event.data.encode("utf-8"))
            elif isinstance(event, Ping):
                reply.append(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:  # the client's Close: answer it
                    reply.append(ws.send(event.response()))
                else:  # wsproto found a malformed frame (state still OPEN): close with its code
                    reply.append(self._close(event.code, event.reason or ""))
                self._eof = True
                break
        return b"".join(reply)

    def _close(self, code: int, reason: str) -> bytes:
        self._eof = True
        try:
            return self._ws.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:
            return b""

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            await self.transport_stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._pending:
            if self._eof:
                return b""
            data = await self.transport_stream.receive_some(READ_SIZE)
            if not data:
                self._eof = True
                return b""
            try:
                self._ws.receive_data(data)  # type: ignore[arg-type]
                reply = self.take_events()
            except RemoteProtocolError:
                reply = self._close(1002, "protocol error")
            if reply:
                await self._send_raw(reply)
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        message: Event
        if self.route.text:
            try:
                message = TextMessage(data=bytes(data).decode("utf-8"))
            except UnicodeDecodeError:
                message = BytesMessage(data=bytes(data))
        else:
            message = BytesMessage(data=bytes(data))
        try:
            frame = self._ws.send(message)
        except LocalProtocolError:
            raise trio.BrokenResourceError("the WebSocket is closed") from None
        await self._send_raw(frame)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        try:
            if self._ws.state is ConnectionState.OPEN:
                with trio.move_on_after(1):
                    await self._send_raw(self._ws.send(CloseConnection(code=1000)))
        except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await self.transport_stream.aclose()


def _refusal(ws: WSConnection, status: int) -> bytes:
    try:
        return ws.send(RejectConnection(status_code=status, headers=[(b"content-length", b"0")], has_body=False))
    except LocalProtocolError:
        return b""


async def accept(stream: trio.abc.Stream, routes: tuple[Route, ...]) -> WebSocketStream:
    """Answer the client's upgrade request; raises HandshakeFailed (after an HTTP refusal
    where one can be written) when it is not one the routes accept."""
    ws = WSConnection(ConnectionType.SERVER)
    request: Request | None = None
    while request is None:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise HandshakeFailed("WebSocket: the client hung up before its upgrade request")
        try:
            ws.receive_data(data)  # type: ignore[arg-type]
            for event in ws.events():
                if isinstance(event, Request):
                    request = event
                    break
        except RemoteProtocolError as e:
            hint = e.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            await stream.send_all(_refusal(ws, status))
            raise HandshakeFailed(f"WebSocket: {e} (answered {status})") from None
    route, subprotocol, status = choose(routes, request.target, request.subprotocols)
    if route is None:
        await stream.send_all(_refusal(ws, status))
        why = f"no endpoint at {request.target}" if status == 404 else \
            f"no acceptable subprotocol in {request.subprotocols}"
        raise HandshakeFailed(f"WebSocket: {why} (answered {status})")
    ws_stream = WebSocketStream(stream, ws, route, subprotocol)
    answer = ws.send(AcceptConnection(subprotocol=subprotocol))
    answer += ws_stream.take_events()  # frames that came with the request
    await stream.send_all(answer)
    return ws_stream


def websocket_opener(routes: tuple[Route, ...]) -> Opener:
    """An opener that accepts WebSocket upgrades for routes; the session is the route's."""

    async def open_ws(stream: trio.abc.Stream, conn_id: int) -> tuple[trio.abc.Stream, MakeSession | None]:
        ws_stream = await accept(stream, routes)
        return ws_stream, ws_stream.route.make_session

    return open_ws
