"""The server's own frames: CONNECTED, RECEIPT and ERROR, encoded once each (sans-IO)."""

from __future__ import annotations

from .codec import encode_frame

# RECEIPT frames are common (one per SEND with a receipt): a plain format, no dict.
_RECEIPT = b"RECEIPT\nreceipt-id:%s\n\n\x00"


def connected_frame(version: str, session: str, heart_beat: str, server: str) -> bytes:
    """STOMP 1.2, "CONNECTED": version, session, heart-beat and server headers."""
    headers = [("version", version), ("session", session), ("heart-beat", heart_beat), ("server", server)]
    return encode_frame("CONNECTED", headers, b"", version)


def receipt_frame(receipt: str, version: str) -> bytes:
    if receipt.isascii() and receipt.isprintable() and ":" not in receipt and "\\" not in receipt:
        return _RECEIPT % receipt.encode()
    return encode_frame("RECEIPT", [("receipt-id", receipt)], b"", version)


def error_frame(message: str, detail: str, receipt_id: str | None, version: str,
                extra: list[tuple[str, str]] | None = None) -> bytes:
    """STOMP 1.2, "ERROR": a ``message`` header, ``receipt-id`` when the refused frame asked
    for a receipt, and the details as a text/plain body."""
    headers = [("message", message)]
    if receipt_id is not None:
        headers.append(("receipt-id", receipt_id))
    headers.extend(extra or ())
    headers.append(("content-type", "text/plain"))
    return encode_frame("ERROR", headers, detail.encode("utf-8"), version, content_length=True)
