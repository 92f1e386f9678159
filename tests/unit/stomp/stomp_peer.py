"""A sans-IO STOMP client side for session tests: frames in, frames out, no sockets."""

from __future__ import annotations

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.stomp.codec import StompDecoder, encode_frame
from mqemu.protocols.stomp.session import StompSession


def make_broker(engine: str = "rabbitmq") -> Broker:
    return Broker(BrokerConfig(engine=engine))


class Peer:
    """One client connection to a StompSession, driven by hand with a fake clock."""

    def __init__(self, broker: Broker, version: str = "1.2", peer: str = "127.0.0.1") -> None:
        self.broker = broker
        self.session = StompSession(broker, peer, 1, wallclock=lambda: 1_700_000_000.0)
        self.session.bind_transport(lambda: None, lambda: None)
        self.version = version
        self.now = 100.0
        self._dec = StompDecoder()
        self._dec.version = version

    def raw(self, data: bytes) -> None:
        self.session.data_received(data, self.now)

    def send(self, command: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        version = None if command in ("CONNECT", "STOMP") else self.version
        self.raw(encode_frame(command, headers or {}, body, version, content_length=True))

    def connect(self, **headers: str) -> dict[str, str]:
        h = {"accept-version": self.version, "host": "/", "login": "guest", "passcode": "guest"}
        h.update(headers)
        self.send("CONNECT", {k: v for k, v in h.items() if v is not None})
        (frame,) = self.frames()
        assert frame.command == "CONNECTED", frame
        return frame.headers

    def frames(self) -> list:
        out = self.session.outbound
        data = b"".join(out)
        out.clear()
        self.session.outbound_bytes = 0
        self._dec.feed(data)
        return self._dec.read_frames()

    def one(self, command: str):
        frames = self.frames()
        assert [f.command for f in frames] == [command], frames
        return frames[0]

    @property
    def closed(self) -> bool:
        return self.session.closing
