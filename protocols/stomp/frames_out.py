"""The server's own frames: CONNECTED, RECEIPT and ERROR, encoded once each (sans-IO).

``end`` is how the engine ends a frame (``flavours``' ``FRAME_END``: both engines send an
EOL after the NUL).
"""

from __future__ import annotations

from collections.abc import Sequence

from .codec import encode_frame

# RECEIPT frames are common (one per SEND with a receipt): a plain format, no dict.
_RECEIPT = b"RECEIPT\nreceipt-id:%s\n\n%s"


def connected_frame(version: str, session: str, heart_beat: str, server: str,
                    order: Sequence[str] = ("version", "session", "heart-beat", "server"),
                    end: bytes = b"\x00") -> bytes:
    """STOMP 1.2, "CONNECTED": version, session, heart-beat and server headers, in the
    engine's ``order``."""
    values = {"version": version, "session": session, "heart-beat": heart_beat, "server": server}
    return encode_frame("CONNECTED", [(name, values[name]) for name in order], b"", version, end=end)


def receipt_frame(receipt: str, version: str, end: bytes = b"\x00") -> bytes:
    if receipt.isascii() and receipt.isprintable() and ":" not in receipt and "\\" not in receipt:
        return _RECEIPT % (receipt.encode(), end)
    return encode_frame("RECEIPT", [("receipt-id", receipt)], b"", version, end=end)


def error_frame(message: str, detail: str, receipt_id: str | None, version: str,
                extra: list[tuple[str, str]] | None = None, end: bytes = b"\x00") -> bytes:
    """STOMP 1.2, "ERROR": a ``message`` header, ``receipt-id`` when the refused frame asked
    for a receipt, and the details as a text/plain body."""
    headers = [("message", message)]
    if receipt_id is not None:
        headers.append(("receipt-id", receipt_id))
    headers.extend(extra or ())
    headers.append(("content-type", "text/plain"))
    return encode_frame("ERROR", headers, detail.encode("utf-8"), version, content_length=True, end=end)
