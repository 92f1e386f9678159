"""A small blocking WebSocket client on wsproto for the tests (stomp.py has no WebSocket
transport): the handshake, text and binary messages, and the payload read back."""

from __future__ import annotations

import socket
import ssl

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, RejectData,
                            Request, TextMessage)


class WsClient:
    def __init__(self, port: int, path: str = "/ws", subprotocols: tuple[str, ...] = ("v12.stomp",),
                 context: ssl.SSLContext | None = None, timeout: float = 5) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if context else sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.status: int | None = None
        self.subprotocol: str | None = None
        self.messages: list[tuple[str, bytes]] = []  # ("text" | "binary", payload)
        self.closed: int | None = None  # the server's close code
        self.sock.sendall(self.ws.send(Request(host="localhost", target=path, subprotocols=list(subprotocols))))
        while self.status is None:
            self._read()

    def _read(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.ws.receive_data(None)
            if self.closed is None:
                self.closed = -1
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.status, self.subprotocol = 101, event.subprotocol
            elif isinstance(event, RejectConnection):
                self.status = event.status_code
            elif isinstance(event, RejectData):
                pass
            elif isinstance(event, TextMessage):
                self.messages.append(("text", event.data.encode()))
            elif isinstance(event, BytesMessage):
                self.messages.append(("binary", bytes(event.data)))
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = event.code
                try:
                    self.sock.sendall(self.ws.send(event.response()))
                except Exception:
                    pass
        return True

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def payload(self) -> bytes:
        return b"".join(m for _kind, m in self.messages)

    def read_until(self, needle: bytes) -> bytes:
        """Read until the payload so far holds needle (or the connection ends)."""
        while needle not in self.payload() and self.closed is None:
            self._read()
        return self.payload()

    def wait_closed(self) -> int | None:
        while self.closed is None:
            try:
                if not self._read():
                    break
            except (ConnectionResetError, BrokenPipeError):
                self.closed = -1
        return self.closed

    def close(self) -> None:
        self.sock.close()


def stomp_frame(command: str, headers: dict[str, str], body: str = "") -> str:
    lines = [command] + [f"{k}:{v}" for k, v in headers.items()]
    return "\n".join(lines) + "\n\n" + body + "\x00"
