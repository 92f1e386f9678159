"""Sans-IO STOMP 1.0 / 1.1 / 1.2 frame codec.

No sockets, no trio, no broker imports: bytes go in through
:meth:`StompDecoder.feed`, :class:`Frame` objects come out of
:meth:`StompDecoder.next_frame` / :meth:`StompDecoder.read_frames`, and
:func:`encode_frame` turns a command, headers and a body back into bytes.

Wire format (STOMP 1.2, "Augmented BNF")::

    frame   = command EOL *( header EOL ) EOL *OCTET NULL *( EOL )
    EOL     = [CR] LF
    header  = header-name ":" header-value

Decisions and engine quirks (each is also commented where it is applied):

* CR before LF is accepted as part of the EOL in every version, although only
  1.2 defines it; real 1.0/1.1 clients (and telnet users) send CRLF and both
  ActiveMQ and RabbitMQ accept it.
* Header values are never trimmed in 1.1/1.2 (STOMP 1.2 spec; ActiveMQ's
  ``testHeaderValuesAreNotWSTrimmed``).  In **1.0** names and values are
  stripped of surrounding spaces/tabs, as ActiveMQ's 1.0 parser does (the 1.0
  document shows ``key: value`` style examples and early clients followed
  it).  RabbitMQ never trims; stomp.py sends ``key:value`` with no blanks, so
  the difference only shows for hand-written 1.0 frames.  With ``version``
  None (before CONNECT) values are taken literally.
* The first ``:`` splits name and value; later colons stay in the value
  (ActiveMQ message ids look like ``ID:host-1234-...``), as every broker does.
* The command line may carry surrounding spaces/tabs (ActiveMQ trims it) but
  must otherwise be ASCII letters; case is passed through unchanged so the
  session can answer "unknown command".
* A NUL octet before the blank line that ends the headers is an error rather
  than a frame terminator, so a client that forgot the blank line gets an
  ERROR instead of a hang.
* The STOMP command is treated like CONNECT (never escaped).

The frame model, Value Encoding and :func:`encode_frame` live in
:mod:`.frames`; every public name is re-exported here.
"""

from __future__ import annotations

from typing import Literal, NoReturn

from .frames import (
    _UNESCAPE_11,
    _UNESCAPE_12,
    _UNESCAPED_COMMANDS,
    HEARTBEAT,
    NEED_DATA,
    SUPPORTED_VERSIONS,
    Frame,
    StompFrameError,
    _BadEscape,
    _Sentinel,
    _unescape,
    _unescape_lenient,
    encode_frame,
    negotiate_version,
)

__all__ = [
    "NEED_DATA",
    "HEARTBEAT",
    "SUPPORTED_VERSIONS",
    "Frame",
    "StompFrameError",
    "StompDecoder",
    "encode_frame",
    "negotiate_version",
]

# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------

_LF = 0x0A
_CR = 0x0D
_BLANK = " \t"


class StompDecoder:
    """Incremental STOMP frame decoder.

    Feed it bytes with :meth:`feed`; take frames with :meth:`next_frame` or
    :meth:`read_frames`.  Incomplete input never raises; any split of the
    same bytes yields the same frames.  EOLs between frames (heart-beats) are
    skipped silently.

    ``version`` selects header decoding: None (before CONNECT) and "1.0" take
    values literally (1.0 also trims blanks, see the module docstring); "1.1"
    and "1.2" undo Value Encoding except on CONNECT/CONNECTED/STOMP.

    If ``auto_version`` is true (default) and a CONNECT/STOMP frame is decoded
    while ``version`` is None, ``version`` is set at once to
    :func:`negotiate_version` of its ``accept-version`` header (None if that
    fails), so frames the client pipelined behind CONNECT in the same batch
    are already decoded with the right rules.  The session may overwrite
    ``version`` afterwards; it takes effect from the next frame.

    ``strict_escapes`` (default true) refuses an undefined escape sequence; when false it
    is kept as it is, as ActiveMQ does.

    After a :class:`StompFrameError` the stream cannot be resynchronised:
    every later call raises the same error again.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = 4 * 1024 * 1024,
        max_headers: int = 1000,
        max_header_length: int = 10240,
        auto_version: bool = True,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_length = max_header_length
        self.auto_version = auto_version
        self.strict_escapes = True
        self.version: str | None = None
        self._buf = bytearray()
        self._pos = 0  # start of the frame (or of the heart-beats) being read
        self._error: StompFrameError | None = None
        # Header-scan state, relative to _pos (survives compaction).
        self._scan = 0  # bytes already searched for the end of the headers
        self._line_start = 0  # start of the last, unfinished line
        self._lf_count = 0  # LFs seen so far in the header section
        self._crlf = False  # last frame's headers ended with CRLF CRLF
        # Parsed headers of a frame whose body is not complete yet:
        # (command, headers, body offset rel. to _pos, content-length|None).
        self._pending: tuple[str, dict[str, str], int, int | None] | None = None
        self._body_scan = 0  # body bytes already searched for NUL (rel. to _pos)

    # -- input ------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.  Never raises."""
        buf = self._buf
        pos = self._pos
        if pos:
            if pos >= len(buf):
                buf.clear()
                self._pos = 0
            elif pos >= 65536 or pos * 2 >= len(buf):
                del buf[:pos]
                self._pos = 0
        buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    # -- output -----------------------------------------------------------

    def read_frames(self) -> list[Frame]:
        """Every whole frame now buffered, in order (possibly empty).

        Raises:
            StompFrameError: the first buffered frame is malformed or over a
                limit.  When good frames precede the bad one, they are
                returned first and the error is raised by the next call.
        """
        frames: list[Frame] = []
        while True:
            try:
                frame = self.next_frame()
            except StompFrameError:
                if frames:
                    return frames  # the error is re-raised on the next call
                raise
            if frame is NEED_DATA:
                return frames
            frames.append(frame)

    def next_frame(self) -> Frame | Literal[_Sentinel.NEED_DATA]:
        """The next whole frame, or :data:`NEED_DATA`.

        Raises:
            StompFrameError: malformed frame (bad escape, header line without
                ``:``, bad or lying ``content-length``, invalid UTF-8, NUL
                inside the headers, invalid command) or a limit exceeded
                (``max_headers``, ``max_header_length``, ``max_frame_size``).
        """
        if self._error is not None:
            raise self._error
        try:
            if self._pending is None:
                if not self._read_headers():
                    return NEED_DATA
            return self._read_body()
        except StompFrameError as exc:
            self._error = exc
            raise

    # -- internals --------------------------------------------------------

    def _skip_eols(self) -> bool:
        """Skip heart-beat EOLs at _pos; False if the buffer ends in a lone CR."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        while pos < end:
            c = buf[pos]
            if c == _LF:
                pos += 1
            elif c == _CR:
                if pos + 1 >= end:
                    self._pos = pos
                    return False  # maybe CRLF, maybe a bad command: wait
                if buf[pos + 1] != _LF:
                    break
                pos += 2
            else:
                break
        self._pos = pos
        return True

    def _read_headers(self) -> bool:
        """Parse command + headers into self._pending; False if incomplete."""
        buf = self._buf
        if self._scan == 0:
            if not self._skip_eols():
                return False
        start = self._pos
        end = len(buf)
        if start >= end:
            return False
        # Never look further than a frame may be long (STOMP 1.2, "Size Limits").
        limit = min(end, start + self.max_frame_size + 3)
        # Resume a few bytes back so a terminator split across feeds is found.
        frm = max(start, start + self._scan - 2)
        first, second = (b"\n\r\n", b"\n\n") if self._crlf else (b"\n\n", b"\n\r\n")
        hit = buf.find(first, frm, limit)
        other = buf.find(second, frm, limit if hit < 0 else hit + len(second))
        if other >= 0 and (hit < 0 or other < hit):
            hit = other
            first, second = second, first
        if hit >= 0:
            self._crlf = first == b"\n\r\n"
            hdr_end = hit + 1  # index just past the LF ending the last line
            body_start = hit + len(first)
            nul = buf.find(b"\x00", frm, hdr_end)
            if nul >= 0:
                self._fail_nul(start, nul)
            self._parse_header_block(start, hdr_end, body_start)
            return True
        # Incomplete header section: enforce limits on what has arrived so a
        # client streaming endless headers is refused without buffering them.
        scan_end = limit
        nul = buf.find(b"\x00", frm, scan_end)
        if nul >= 0:
            self._fail_nul(start, nul)
        new_from = start + self._scan
        self._lf_count += buf.count(b"\n", new_from, scan_end)
        last_lf = buf.rfind(b"\n", new_from, scan_end)
        if last_lf >= 0:
            self._line_start = last_lf + 1 - start
        self._scan = scan_end - start
        if self._lf_count > self.max_headers + 1:
            raise StompFrameError(
                "Too many headers",
                f"The frame has more than {self.max_headers} headers",
            )
        if scan_end - (start + self._line_start) > self.max_header_length + 1:
            raise StompFrameError(
                "Header too long",
                f"A header line is longer than {self.max_header_length} bytes",
            )
        if end - start > self.max_frame_size:
            raise StompFrameError(
                "Frame too large",
                f"The frame headers exceed the maximum frame size of {self.max_frame_size} bytes",
            )
        return False

    def _fail_nul(self, start: int, nul: int) -> NoReturn:
        lines = bytes(self._buf[start:nul]).split(b"\n")
        raise StompFrameError(
            "Malformed frame",
            "NUL octet inside the frame headers (missing blank line after the headers?)",
            self._salvage_receipt(lines),
        )

    def _parse_header_block(self, start: int, hdr_end: int, body_start: int) -> None:
        buf = self._buf
        self._scan = 0
        self._lf_count = 0
        self._line_start = 0
        try:
            text = buf[start : hdr_end - 1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raw_lines = bytes(buf[start : hdr_end - 1]).split(b"\n")
            raise StompFrameError(
                "Invalid UTF-8 in headers",
                f"Frame headers are not valid UTF-8 (byte offset {exc.start}) "
                "(STOMP 1.2, Value Encoding: headers are UTF-8)",
                self._salvage_receipt(raw_lines),
            ) from None
        lines = text.split("\n")
        if "\r" in text:
            # EOL = [CR] LF (STOMP 1.2, Augmented BNF); tolerated in 1.0/1.1 too.
            lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
        max_len = self.max_header_length
        if len(lines) - 1 > self.max_headers:
            raise StompFrameError(
                "Too many headers",
                f"The frame has more than {self.max_headers} headers",
                self._salvage_receipt_text(lines),
            )
        command = lines[0]
        if len(command) > max_len:
            raise StompFrameError(
                "Header too long", f"The command line is longer than {max_len} bytes"
            )
        if not (command.isascii() and command.isalpha()):
            # ActiveMQ trims the command line; do the same before judging it.
            command = command.strip(_BLANK)
            if not (command.isascii() and command.isalpha()):
                raise StompFrameError(
                    "Invalid command",
                    f"Cannot parse a STOMP command from {lines[0][:64]!r}",
                    self._salvage_receipt_text(lines),
                )
        version = self.version
        table: dict[str, str] | None = None
        if version in ("1.1", "1.2") and command not in _UNESCAPED_COMMANDS:
            table = _UNESCAPE_12 if version == "1.2" else _UNESCAPE_11
        trim = version == "1.0"
        headers: dict[str, str] = {}
        if not trim and (table is None or "\\" not in text) and len(text) * 4 <= max_len:
            # The common case, kept lean: no escapes, no trimming, and the whole block too
            # short for any line to pass the length limit.
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise StompFrameError(
                        "Malformed header",
                        f"Header line {line[:64]!r} has no ':' separator",
                        self._salvage_receipt_text(lines),
                    )
                if name not in headers:  # STOMP 1.2, Repeated Header Entries
                    headers[name] = value
            lines = ()  # type: ignore[assignment]  # the loop below then does nothing
        for line in lines[1:]:
            # Cheap pre-check: a UTF-8 character is at most 4 bytes.
            if len(line) * 4 > max_len and len(line.encode("utf-8")) > max_len:
                raise StompFrameError(
                    "Header too long",
                    f"A header line is longer than {max_len} bytes",
                    self._salvage_receipt_text(lines),
                )
            i = line.find(":")
            if i < 0:
                raise StompFrameError(
                    "Malformed header",
                    f"Header line {line[:64]!r} has no ':' separator",
                    self._salvage_receipt_text(lines),
                )
            name = line[:i]
            value = line[i + 1 :]
            if table is not None and "\\" in line:
                if not self.strict_escapes:
                    name = _unescape_lenient(name, table)
                    value = _unescape_lenient(value, table)
                    if name not in headers:
                        headers[name] = value
                    continue
                try:
                    name = _unescape(name, table)
                    value = _unescape(value, table)
                except _BadEscape as exc:
                    raise StompFrameError(
                        "Undefined escape sequence",
                        f"Header {line[:64]!r} contains the undefined escape sequence "
                        f"{exc.sequence!r} (STOMP {version}, Value Encoding)",
                        self._salvage_receipt_text(lines),
                    ) from None
            elif trim:
                # ActiveMQ quirk: 1.0 header names and values are trimmed.
                name = name.strip(_BLANK)
                value = value.strip(_BLANK)
            if name not in headers:  # STOMP 1.2, Repeated Header Entries
                headers[name] = value

        receipt = headers.get("receipt")
        clen: int | None = None
        raw_cl = headers.get("content-length")
        if raw_cl is not None:
            # Surrounding blanks tolerated (ActiveMQ trims it); digits only, so
            # "+5", "1_0" or non-ASCII digits that int() would take are refused.
            digits = raw_cl.strip(_BLANK)
            if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
                raise StompFrameError(
                    "Invalid content-length",
                    f"content-length {raw_cl[:32]!r} is not a non-negative integer "
                    "(STOMP 1.2, Header content-length)",
                    receipt,
                )
            clen = int(digits)
        header_size = body_start - start
        if clen is not None and header_size + clen > self.max_frame_size:
            # Refused before a byte of the body is buffered.
            raise StompFrameError(
                "Frame too large",
                f"content-length {clen} exceeds the maximum frame size of "
                f"{self.max_frame_size} bytes",
                receipt,
            )
        if version is None and self.auto_version and command in ("CONNECT", "STOMP"):
            # Takes effect for the next frame, e.g. one pipelined behind CONNECT.
            self.version = negotiate_version(headers.get("accept-version"))
        self._pending = (command, headers, header_size, clen)
        self._body_scan = header_size

    def _read_body(self) -> Frame | Literal[_Sentinel.NEED_DATA]:
        assert self._pending is not None
        command, headers, body_off, clen = self._pending
        buf = self._buf
        start = self._pos
        body_start = start + body_off
        if clen is not None:
            nul = body_start + clen
            if len(buf) <= nul:
                return NEED_DATA
            if buf[nul] != 0:
                raise StompFrameError(
                    "Body longer than content-length",
                    f"Expected a NUL octet after the {clen}-byte body given by content-length "
                    "(STOMP 1.2, Header content-length)",
                    headers.get("receipt"),
                )
        else:
            limit = min(len(buf), start + self.max_frame_size + 1)
            nul = buf.find(b"\x00", start + self._body_scan, limit)
            if nul < 0:
                self._body_scan = limit - start
                if limit - start > self.max_frame_size:
                    raise StompFrameError(
                        "Frame too large",
                        f"The frame exceeds the maximum frame size of {self.max_frame_size} bytes",
                        headers.get("receipt"),
                    )
                return NEED_DATA
        body = bytes(buf[body_start:nul]) if nul > body_start else b""
        self._pos = nul + 1
        self._pending = None
        return Frame(command, headers, body)

    def _salvage_receipt_text(self, lines: list[str]) -> str | None:
        return self._salvage_receipt([ln.encode("utf-8", "surrogatepass") for ln in lines])

    def _salvage_receipt(self, lines: list[bytes]) -> str | None:
        """Best-effort ``receipt`` header of a frame that failed to parse."""
        for raw in lines[1:]:
            name, sep, value = raw.rstrip(b"\r").partition(b":")
            if sep and name.strip(b" \t") == b"receipt":
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError:
                    return None
                if self.version == "1.0":
                    return text.strip(_BLANK)
                if self.version in ("1.1", "1.2") and "\\" in text:
                    try:
                        return _unescape(
                            text, _UNESCAPE_12 if self.version == "1.2" else _UNESCAPE_11
                        )
                    except _BadEscape:
                        return None
                return text
        return None
