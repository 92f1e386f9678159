"""STOMP frame model, Value Encoding and the frame encoder (sans-IO).

Split out of :mod:`mqemu.protocols.stomp.codec`, which re-exports every public
name here; import from ``codec``.  Standard library only.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable

__all__ = [
    "NEED_DATA",
    "HEARTBEAT",
    "SUPPORTED_VERSIONS",
    "Frame",
    "StompFrameError",
    "encode_frame",
    "negotiate_version",
]

#: One heart-beat: a single EOL (STOMP 1.2, "Heart-beating").
HEARTBEAT = b"\n"

#: Versions this codec understands, lowest first.
SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")

# Frames whose headers are never escaped (STOMP 1.2, "Value Encoding": CONNECT
# and CONNECTED stay unescaped for compatibility with 1.0 peers).  STOMP is the
# 1.1+ alias of CONNECT and is handled the same way.
_UNESCAPED_COMMANDS = frozenset({"CONNECT", "CONNECTED", "STOMP"})


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


#: Returned by :meth:`StompDecoder.next_frame` when no whole frame is buffered.
NEED_DATA = _Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded (or to-be-encoded) STOMP frame.

    ``headers`` keeps wire order; when a name repeats only the first value is
    kept (STOMP 1.2, "Repeated Header Entries").
    """

    command: str
    headers: dict[str, str]
    body: bytes = b""


class StompFrameError(Exception):
    """A frame is malformed or over a limit; the connection must be closed.

    Attributes:
        message: short text for the ERROR frame's ``message`` header.
        detail: longer text for the ERROR frame's body.
        receipt_id: the bad frame's ``receipt`` header if it could be read,
            else None (the ERROR frame should then carry no ``receipt-id``).
    """

    def __init__(self, message: str, detail: str = "", receipt_id: str | None = None) -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message
        self.detail = detail or message
        self.receipt_id = receipt_id


def negotiate_version(accept_version: str | None) -> str | None:
    """Highest version in a CONNECT ``accept-version`` header we support.

    A missing header means 1.0 (STOMP 1.2, "Protocol Negotiation").  Returns
    None when the client offers nothing we speak.  Never raises.
    """
    if accept_version is None:
        return "1.0"
    offered = {v.strip() for v in accept_version.split(",")}
    for version in reversed(SUPPORTED_VERSIONS):
        if version in offered:
            return version
    return None


# ---------------------------------------------------------------------------
# Escaping (STOMP 1.1 / 1.2, "Value Encoding")
# ---------------------------------------------------------------------------

_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_12 = {"n": "\n", "c": ":", "\\": "\\", "r": "\r"}
# ".?" so that a lone backslash at the end of a value is also caught.
_ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)


class _BadEscape(Exception):
    def __init__(self, sequence: str) -> None:
        super().__init__(sequence)
        self.sequence = sequence


def _unescape(text: str, table: dict[str, str]) -> str:
    """Undo Value Encoding; raises _BadEscape on an undefined sequence."""

    def repl(match: re.Match[str]) -> str:
        try:
            return table[match.group(1)]
        except KeyError:
            raise _BadEscape(match.group(0)) from None

    return _ESCAPE_RE.sub(repl, text)


def _unescape_lenient(text: str, table: dict[str, str]) -> str:
    """Undo Value Encoding, keeping an undefined sequence as it is (ActiveMQ's decoder)."""
    return _ESCAPE_RE.sub(lambda m: table.get(m.group(1), m.group(0)), text)


# No version can carry a NUL in a header (it ends the frame for peers that read
# to the first NUL), so every escaper turns NUL into U+FFFD.


def escape_12(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if ":" in text:
        text = text.replace(":", "\\c")
    return text


def escape_11(text: str) -> str:
    # 1.1 has no \r escape: a CR is sent raw (STOMP 1.1, "Value Encoding").
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if ":" in text:
        text = text.replace(":", "\\c")
    return text


def escape_10(text: str) -> str:
    # 1.0, CONNECT and CONNECTED cannot carry EOLs in a header at all; writing
    # them raw would desynchronise the peer's framing, so they become spaces.
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------


def encode_frame(
    command: str,
    headers: dict[str, str] | Iterable[tuple[str, str]],
    body: bytes | bytearray | memoryview = b"",
    version: str | None = "1.2",
    *,
    content_length: bool = False,
    end: bytes = b"\x00",
) -> bytes:
    """Serialise one frame.

    Header names and values are escaped as ``version`` requires (1.2: ``\\\\``
    ``\\n`` ``\\r`` ``\\c``; 1.1: the same without ``\\r``; 1.0 or None: no
    escaping, CR/LF replaced by a space); NUL always becomes U+FFFD.  CONNECT, CONNECTED and STOMP frames
    are never escaped (STOMP 1.2, "Value Encoding").

    ``headers`` may be a dict or a list of pairs (a list may repeat a name;
    decoders keep the first).  No ``content-length`` is added unless
    ``content_length=True`` and the body is non-empty and the caller did not
    already supply one (STOMP 1.2, "Header content-length": SHOULD be sent
    whenever there is a body; required when the body contains NULs).

    ``end`` closes the frame: a NUL, or a NUL and the EOL both engines send after it.

    Never raises for str/bytes input.
    """
    if command in _UNESCAPED_COMMANDS or version is None or version == "1.0":
        esc = escape_10
    elif version == "1.1":
        esc = escape_11
    else:
        esc = escape_12
    items = headers.items() if isinstance(headers, dict) else headers
    parts = [command]
    has_cl = False
    for name, value in items:
        if name == "content-length":
            has_cl = True
        parts.append(f"{esc(name)}:{esc(value)}")
    if content_length and body and not has_cl:
        parts.append(f"content-length:{len(body)}")
    parts.append("")
    parts.append("")
    return b"".join(("\n".join(parts).encode("utf-8"), body, end))
