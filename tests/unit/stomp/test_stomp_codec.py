"""Golden vectors, split-invariance and malformed-frame tables for the STOMP codec."""

from __future__ import annotations

import pytest

from mqemu.protocols.stomp.codec import (
    HEARTBEAT,
    NEED_DATA,
    Frame,
    StompDecoder,
    StompFrameError,
    encode_frame,
    negotiate_version,
)


def decode_all(data: bytes, version: str | None = "1.2", **kw: int) -> list[Frame]:
    dec = StompDecoder(auto_version=False, **kw)
    dec.version = version
    dec.feed(data)
    return dec.read_frames()


def decode_error(data: bytes, version: str | None = "1.2", **kw: int) -> StompFrameError:
    dec = StompDecoder(auto_version=False, **kw)
    dec.version = version
    dec.feed(data)
    with pytest.raises(StompFrameError) as info:
        dec.read_frames()
    return info.value


# ---------------------------------------------------------------------------
# Golden vectors: decoding
# ---------------------------------------------------------------------------

CONNECT_12 = (
    b"CONNECT\n"
    b"accept-version:1.0,1.1,1.2\n"
    b"host:/\n"
    b"login:guest\n"
    b"passcode:a\\b:c\n"
    b"heart-beat:10000,10000\n"
    b"\n\x00"
)

DECODE_VECTORS: list[tuple[str, str | None, bytes, list[Frame]]] = [
    (
        "connect-before-version-literal",
        None,
        CONNECT_12,
        [
            Frame(
                "CONNECT",
                {
                    "accept-version": "1.0,1.1,1.2",
                    "host": "/",
                    "login": "guest",
                    "passcode": "a\\b:c",
                    "heart-beat": "10000,10000",
                },
            )
        ],
    ),
    (
        # CONNECT is never unescaped, even once a version is known.
        "connect-12-not-unescaped",
        "1.2",
        b"CONNECT\nlogin:a\\nb\npasscode:x\\y\n\n\x00",
        [Frame("CONNECT", {"login": "a\\nb", "passcode": "x\\y"})],
    ),
    (
        "stomp-command-not-unescaped",
        "1.1",
        b"STOMP\naccept-version:1.1\nlogin:a\\q\n\n\x00",
        [Frame("STOMP", {"accept-version": "1.1", "login": "a\\q"})],
    ),
    (
        "send-content-length-nul-in-body",
        "1.2",
        b"SEND\ndestination:/queue/a\ncontent-length:5\n\nab\x00cd\x00",
        [Frame("SEND", {"destination": "/queue/a", "content-length": "5"}, b"ab\x00cd")],
    ),
    (
        "send-without-content-length",
        "1.2",
        b"SEND\ndestination:/queue/a\n\nhello world\x00",
        [Frame("SEND", {"destination": "/queue/a"}, b"hello world")],
    ),
    (
        "send-content-length-zero",
        "1.1",
        b"SEND\ndestination:/q\ncontent-length:0\n\n\x00",
        [Frame("SEND", {"destination": "/q", "content-length": "0"})],
    ),
    (
        "no-headers",
        "1.2",
        b"DISCONNECT\n\n\x00",
        [Frame("DISCONNECT", {})],
    ),
    (
        "escapes-12",
        "1.2",
        b"SEND\nde\\cst:a\\nb\\rc\\\\d\\ce\n\n\x00",
        [Frame("SEND", {"de:st": "a\nb\rc\\d:e"})],
    ),
    (
        "escapes-11",
        "1.1",
        b"SEND\nde\\cst:a\\nb\\\\d\\ce\n\n\x00",
        [Frame("SEND", {"de:st": "a\nb\\d:e"})],
    ),
    (
        "no-escapes-10",
        "1.0",
        b"SEND\nx:a\\nb\\r\\c\\q\n\n\x00",
        [Frame("SEND", {"x": "a\\nb\\r\\c\\q"})],
    ),
    (
        "no-escapes-before-connect",
        None,
        b"SEND\nx:a\\q\n\n\x00",
        [Frame("SEND", {"x": "a\\q"})],
    ),
    (
        "value-colons-kept",
        "1.2",
        b"MESSAGE\nmessage-id:ID:host-1:2:3\n\n\x00",
        [Frame("MESSAGE", {"message-id": "ID:host-1:2:3"})],
    ),
    (
        "crlf-lines-12",
        "1.2",
        b"SEND\r\ndestination:/q\r\ncontent-length:2\r\n\r\nhi\x00",
        [Frame("SEND", {"destination": "/q", "content-length": "2"}, b"hi")],
    ),
    (
        "crlf-lines-tolerated-10",
        "1.0",
        b"SEND\r\ndestination:/q\r\n\r\nhi\x00",
        [Frame("SEND", {"destination": "/q"}, b"hi")],
    ),
    (
        "mixed-eols",
        "1.2",
        b"SEND\ndestination:/q\r\n\nhi\x00SEND\r\nx:y\n\r\nho\x00",
        [Frame("SEND", {"destination": "/q"}, b"hi"), Frame("SEND", {"x": "y"}, b"ho")],
    ),
    (
        "repeated-headers-first-wins",
        "1.2",
        b"MESSAGE\nfoo:World\nfoo:Hello\nbar:1\n\n\x00",
        [Frame("MESSAGE", {"foo": "World", "bar": "1"})],
    ),
    (
        "repeated-after-unescape-first-wins",
        "1.2",
        b"SEND\na\\cb:1\na:b:2\n\n\x00",
        [Frame("SEND", {"a:b": "1", "a": "b:2"})],
    ),
    (
        "heartbeats-between-frames",
        "1.2",
        b"\n\r\n\nSEND\nx:1\n\n\x00\n\n\r\nSEND\nx:2\n\n\x00\r\n\n",
        [Frame("SEND", {"x": "1"}), Frame("SEND", {"x": "2"})],
    ),
    (
        "values-not-trimmed-12",
        "1.2",
        b"SEND\ntest1: value\ntest2:value \n\n\x00",
        [Frame("SEND", {"test1": " value", "test2": "value "})],
    ),
    (
        "values-trimmed-10",
        "1.0",
        b"SEND\ndestination: /queue/a \n login :guest\n\n\x00",
        [Frame("SEND", {"destination": "/queue/a", "login": "guest"})],
    ),
    (
        "content-length-padded",
        "1.2",
        b"SEND\ncontent-length: 2 \n\nab\x00",
        [Frame("SEND", {"content-length": " 2 "}, b"ab")],
    ),
    (
        "utf8-headers-and-binary-body",
        "1.2",
        "SEND\ndestination:/q/\u00e9\u2603\n\n".encode() + b"\xff\xfe\x00",
        [Frame("SEND", {"destination": "/q/\u00e9\u2603"}, b"\xff\xfe")],
    ),
    (
        "command-blanks-trimmed-case-kept",
        "1.2",
        b" send \n\n\x00",
        [Frame("send", {})],
    ),
    (
        "empty-header-value",
        "1.2",
        b"SEND\nx:\n\n\x00",
        [Frame("SEND", {"x": ""})],
    ),
]


@pytest.mark.parametrize(
    "version,data,expected",
    [v[1:] for v in DECODE_VECTORS],
    ids=[v[0] for v in DECODE_VECTORS],
)
def test_decode_golden(version: str | None, data: bytes, expected: list[Frame]) -> None:
    assert decode_all(data, version) == expected


@pytest.mark.parametrize(
    "version,data,expected",
    [v[1:] for v in DECODE_VECTORS],
    ids=[v[0] for v in DECODE_VECTORS],
)
def test_decode_any_split(version: str | None, data: bytes, expected: list[Frame]) -> None:
    # Every single split point, then byte-at-a-time.
    for cut in range(len(data) + 1):
        dec = StompDecoder(auto_version=False)
        dec.version = version
        frames: list[Frame] = []
        dec.feed(data[:cut])
        frames += dec.read_frames()
        dec.feed(data[cut:])
        frames += dec.read_frames()
        assert frames == expected, cut
        assert dec.buffered == 0 or set(data[-dec.buffered :]) <= {10, 13}
    dec = StompDecoder(auto_version=False)
    dec.version = version
    frames = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        frames += dec.read_frames()
    assert frames == expected


def test_header_order_preserved() -> None:
    (frame,) = decode_all(b"SEND\nz:1\na:2\nm:3\n\n\x00")
    assert list(frame.headers) == ["z", "a", "m"]


def test_next_frame_need_data() -> None:
    dec = StompDecoder()
    assert dec.next_frame() is NEED_DATA
    dec.feed(b"SEND\nx:1\n\nab")
    assert dec.next_frame() is NEED_DATA
    assert dec.read_frames() == []
    dec.feed(b"c\x00\n")
    assert dec.next_frame() == Frame("SEND", {"x": "1"}, b"abc")
    assert dec.next_frame() is NEED_DATA


def test_lone_cr_waits_for_lf() -> None:
    dec = StompDecoder()
    dec.feed(b"\r")
    assert dec.read_frames() == []
    dec.feed(b"\nSEND\n\n\x00")
    assert dec.read_frames() == [Frame("SEND", {})]


def test_feed_accepts_bytearray_and_memoryview() -> None:
    dec = StompDecoder()
    dec.feed(bytearray(b"SEND\n\nA\x00"))
    dec.feed(memoryview(b"SEND\n\nB\x00"))
    assert [f.body for f in dec.read_frames()] == [b"A", b"B"]


def test_many_frames_in_one_batch_and_compaction() -> None:
    one = encode_frame("SEND", {"destination": "/q", "n": "x"}, b"payload", content_length=True)
    dec = StompDecoder()
    dec.version = "1.2"
    for _ in range(3):
        dec.feed(one * 1000 + one[:7])
        frames = dec.read_frames()
        dec.feed(one[7:])
        frames += dec.read_frames()
        assert len(frames) == 1001
        assert dec.buffered == 0


def test_auto_version_applies_to_pipelined_frames() -> None:
    dec = StompDecoder()
    assert dec.version is None
    dec.feed(b"CONNECT\naccept-version:1.1,1.2\nhost:/\n\n\x00SEND\nx:a\\nb\n\n\x00")
    frames = dec.read_frames()
    assert dec.version == "1.2"
    assert frames[1].headers == {"x": "a\nb"}


def test_auto_version_without_accept_version_is_10() -> None:
    dec = StompDecoder()
    dec.feed(b"CONNECT\nlogin:a\n\n\x00SEND\nx: a\\nb\n\n\x00")
    frames = dec.read_frames()
    assert dec.version == "1.0"
    assert frames[1].headers == {"x": "a\\nb"}


def test_auto_version_disabled() -> None:
    dec = StompDecoder(auto_version=False)
    dec.feed(b"CONNECT\naccept-version:1.2\n\n\x00")
    dec.read_frames()
    assert dec.version is None


def test_negotiate_version() -> None:
    assert negotiate_version(None) == "1.0"
    assert negotiate_version("1.0,1.1") == "1.1"
    assert negotiate_version("1.2, 1.0") == "1.2"
    assert negotiate_version("2.0") is None


# ---------------------------------------------------------------------------
# Golden vectors: encoding
# ---------------------------------------------------------------------------

ENCODE_VECTORS: list[tuple[str, tuple, dict, bytes]] = [
    (
        "connected-never-escaped",
        ("CONNECTED", {"version": "1.2", "server": "mqemu/0.1:x", "heart-beat": "0,0"}),
        {"version": "1.2"},
        b"CONNECTED\nversion:1.2\nserver:mqemu/0.1:x\nheart-beat:0,0\n\n\x00",
    ),
    (
        "connect-never-escaped",
        ("CONNECT", {"login": "a\\b:c"}),
        {"version": "1.2"},
        b"CONNECT\nlogin:a\\b:c\n\n\x00",
    ),
    (
        "message-12-escapes",
        ("MESSAGE", {"de:st": "a\nb\rc\\d:e"}, b"hi"),
        {"version": "1.2"},
        b"MESSAGE\nde\\cst:a\\nb\\rc\\\\d\\ce\n\nhi\x00",
    ),
    (
        "message-11-escapes-no-cr",
        ("MESSAGE", {"de:st": "a\nb\rc\\d:e"}, b"hi"),
        {"version": "1.1"},
        b"MESSAGE\nde\\cst:a\\nb\rc\\\\d\\ce\n\nhi\x00",
    ),
    (
        "message-10-literal",
        ("MESSAGE", {"k": "a\\b:c"}, b"hi"),
        {"version": "1.0"},
        b"MESSAGE\nk:a\\b:c\n\nhi\x00",
    ),
    (
        "message-10-eols-become-spaces",
        ("ERROR", {"message": "bad\r\nthing"}),
        {"version": "1.0"},
        b"ERROR\nmessage:bad  thing\n\n\x00",
    ),
    (
        "nul-in-header-replaced",
        ("MESSAGE", {"k\x00": "a\x00b"}),
        {"version": "1.2"},
        "MESSAGE\nk\ufffd:a\ufffdb\n\n".encode() + b"\x00",
    ),
    (
        "no-version-literal",
        ("ERROR", {"message": "a:b\\c"}),
        {"version": None},
        b"ERROR\nmessage:a:b\\c\n\n\x00",
    ),
    (
        "content-length-flag",
        ("MESSAGE", {"destination": "/q"}, b"a\x00b"),
        {"content_length": True},
        b"MESSAGE\ndestination:/q\ncontent-length:3\n\na\x00b\x00",
    ),
    (
        "content-length-flag-empty-body",
        ("RECEIPT", {"receipt-id": "7"}),
        {"content_length": True},
        b"RECEIPT\nreceipt-id:7\n\n\x00",
    ),
    (
        "content-length-flag-keeps-callers",
        ("MESSAGE", {"content-length": "3", "x": "y"}, b"abc"),
        {"content_length": True},
        b"MESSAGE\ncontent-length:3\nx:y\n\nabc\x00",
    ),
    (
        "no-content-length-by-default",
        ("MESSAGE", {"destination": "/q"}, b"abc"),
        {},
        b"MESSAGE\ndestination:/q\n\nabc\x00",
    ),
    (
        "list-headers-may-repeat",
        ("MESSAGE", [("foo", "1"), ("foo", "2")]),
        {},
        b"MESSAGE\nfoo:1\nfoo:2\n\n\x00",
    ),
    (
        "utf8",
        ("MESSAGE", {"d": "\u00e9\u2603"}, b"\xff"),
        {},
        "MESSAGE\nd:\u00e9\u2603\n\n".encode() + b"\xff\x00",
    ),
]


@pytest.mark.parametrize(
    "args,kwargs,expected",
    [v[1:] for v in ENCODE_VECTORS],
    ids=[v[0] for v in ENCODE_VECTORS],
)
def test_encode_golden(args: tuple, kwargs: dict, expected: bytes) -> None:
    assert encode_frame(*args, **kwargs) == expected


def test_heartbeat_constant() -> None:
    assert HEARTBEAT == b"\n"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_roundtrip_escapes(version: str) -> None:
    headers = {"a:b": "x\ny\\z:w", "plain": "v", "": "empty-name"}
    if version == "1.2":
        headers["cr"] = "p\rq"
    data = encode_frame("MESSAGE", headers, b"\x00\x01", version, content_length=True)
    (frame,) = decode_all(data, version)
    assert frame.headers == {**headers, "content-length": "2"}
    assert frame.body == b"\x00\x01"


# ---------------------------------------------------------------------------
# Malformed frames
# ---------------------------------------------------------------------------

BIG = 10 * 1024**3

ERROR_VECTORS: list[tuple[str, str | None, bytes, dict, str, str | None]] = [
    ("bad-escape-12", "1.2", b"SEND\nreceipt:r1\nx:a\\tb\n\n\x00", {}, "Undefined escape sequence", "r1"),
    ("cr-escape-undefined-in-11", "1.1", b"SEND\nx:a\\rb\n\n\x00", {}, "Undefined escape sequence", None),
    ("trailing-backslash", "1.2", b"SEND\nx:ab\\\nreceipt:r2\n\n\x00", {}, "Undefined escape sequence", "r2"),
    ("bad-escape-in-name", "1.2", b"SEND\nx\\y:1\n\n\x00", {}, "Undefined escape sequence", None),
    ("escaped-receipt-salvaged", "1.2", b"SEND\nreceipt:a\\cb\nx:\\q\n\n\x00", {}, "Undefined escape sequence", "a:b"),
    ("no-colon", "1.2", b"SEND\nreceipt:r3\nnocolon\n\n\x00", {}, "Malformed header", "r3"),
    ("no-colon-before-receipt", "1.0", b"SEND\nnocolon\nreceipt: r4\n\n\x00", {}, "Malformed header", "r4"),
    (
        "body-longer-than-content-length",
        "1.2",
        b"SEND\nreceipt:r5\ncontent-length:2\n\nabc\x00",
        {},
        "Body longer than content-length",
        "r5",
    ),
    ("content-length-not-numeric", "1.2", b"SEND\ncontent-length:abc\nreceipt:r6\n\n\x00", {}, "Invalid content-length", "r6"),
    ("content-length-negative", "1.2", b"SEND\ncontent-length:-1\n\n\x00", {}, "Invalid content-length", None),
    ("content-length-plus", "1.2", b"SEND\ncontent-length:+1\n\na\x00", {}, "Invalid content-length", None),
    ("content-length-empty", "1.2", b"SEND\ncontent-length:\n\n\x00", {}, "Invalid content-length", None),
    ("content-length-huge-digits", "1.2", b"SEND\ncontent-length:" + b"9" * 5000 + b"\n\n\x00", {}, "Invalid content-length", None),
    (
        "too-many-headers",
        "1.2",
        b"SEND\nreceipt:r7\n" + b"".join(b"h%d:v\n" % i for i in range(5)) + b"\n\x00",
        {"max_headers": 5},
        "Too many headers",
        "r7",
    ),
    (
        "header-too-long",
        "1.2",
        b"SEND\nreceipt:r8\nx:" + b"y" * 100 + b"\n\n\x00",
        {"max_header_length": 50},
        "Header too long",
        "r8",
    ),
    (
        "header-too-long-multibyte",
        "1.2",
        b"SEND\nx:" + "\u00e9".encode() * 30 + b"\n\n\x00",
        {"max_header_length": 50},
        "Header too long",
        None,
    ),
    (
        "content-length-over-frame-size",
        "1.2",
        b"SEND\nreceipt:r9\ncontent-length:%d\n\n" % BIG,
        {},
        "Frame too large",
        "r9",
    ),
    (
        "body-over-frame-size",
        "1.2",
        b"SEND\nreceipt:r10\n\n" + b"x" * 200 + b"\x00",
        {"max_frame_size": 100},
        "Frame too large",
        "r10",
    ),
    ("invalid-utf8-value", "1.2", b"SEND\nreceipt:r11\nx:\xff\xfe\n\n\x00", {}, "Invalid UTF-8 in headers", "r11"),
    ("invalid-utf8-surrogate", "1.2", b"SEND\nx:\xed\xa0\x80\n\n\x00", {}, "Invalid UTF-8 in headers", None),
    ("invalid-command-space", "1.2", b"SE ND\nreceipt:r12\n\n\x00", {}, "Invalid command", "r12"),
    ("invalid-command-binary", "1.2", b"\x16\x03\x01\n\n\x00", {}, "Invalid command", None),
    ("nul-in-headers", "1.2", b"DISCONNECT\nreceipt:r13\n\x00", {}, "Malformed frame", "r13"),
]


@pytest.mark.parametrize(
    "version,data,limits,message,receipt",
    [v[1:] for v in ERROR_VECTORS],
    ids=[v[0] for v in ERROR_VECTORS],
)
def test_malformed(
    version: str | None, data: bytes, limits: dict, message: str, receipt: str | None
) -> None:
    err = decode_error(data, version, **limits)
    assert err.message == message
    assert err.receipt_id == receipt
    assert err.detail
    # Same outcome whatever the split (incomplete input itself never raises).
    for cut in range(0, len(data), max(1, len(data) // 40)):
        dec = StompDecoder(auto_version=False, **limits)
        dec.version = version
        dec.feed(data[:cut])
        try:
            dec.read_frames()
            dec.feed(data[cut:])
            dec.read_frames()
        except StompFrameError as exc:
            assert exc.message == message, cut
        else:
            pytest.fail(f"no error at cut {cut}")


def test_error_is_sticky() -> None:
    dec = StompDecoder()
    dec.version = "1.2"
    dec.feed(b"SEND\nx:\\t\n\n\x00SEND\n\n\x00")
    with pytest.raises(StompFrameError) as first:
        dec.next_frame()
    with pytest.raises(StompFrameError) as second:
        dec.read_frames()
    assert first.value is second.value


def test_good_frames_before_bad_one_are_returned_first() -> None:
    dec = StompDecoder()
    dec.version = "1.2"
    dec.feed(b"SEND\n\nok\x00SEND\nbad\n\n\x00")
    assert dec.read_frames() == [Frame("SEND", {}, b"ok")]
    with pytest.raises(StompFrameError, match="Malformed header"):
        dec.read_frames()


def test_huge_content_length_refused_before_body() -> None:
    dec = StompDecoder()
    dec.feed(b"SEND\ncontent-length:%d\n\n" % BIG)
    with pytest.raises(StompFrameError, match="Frame too large"):
        dec.read_frames()


def test_body_without_nul_refused_once_over_limit() -> None:
    dec = StompDecoder(max_frame_size=1000)
    dec.feed(b"SEND\n\n")
    for _ in range(9):
        dec.feed(b"x" * 100)
        assert dec.read_frames() == []
    with pytest.raises(StompFrameError, match="Frame too large"):
        for _ in range(3):
            dec.feed(b"x" * 100)
            dec.read_frames()
    assert dec.buffered <= 1300


def test_endless_headers_refused_without_blank_line() -> None:
    dec = StompDecoder(max_headers=1000)
    dec.feed(b"SEND\n")
    with pytest.raises(StompFrameError, match="Too many headers"):
        for i in range(2000):
            dec.feed(b"h%d:v\n" % i)
            dec.read_frames()
    assert i <= 1001


def test_endless_header_line_refused() -> None:
    dec = StompDecoder(max_header_length=1024)
    dec.feed(b"SEND\nx:")
    with pytest.raises(StompFrameError, match="Header too long"):
        for i in range(100):  # noqa: B007 (i is read after the loop)
            dec.feed(b"y" * 100)
            dec.read_frames()
    assert i <= 11


def test_endless_command_line_refused() -> None:
    dec = StompDecoder(max_header_length=1024)
    with pytest.raises(StompFrameError, match="Header too long"):
        for _ in range(100):
            dec.feed(b"S" * 100)
            dec.read_frames()


def test_header_section_over_frame_size() -> None:
    dec = StompDecoder(max_frame_size=500)
    dec.feed(b"SEND\n")
    with pytest.raises(StompFrameError, match="Frame too large"):
        for i in range(100):
            dec.feed(b"h%03d:v\n" % i)
            dec.read_frames()


def test_limits_exactly_at_bounds_are_accepted() -> None:
    hdrs = b"".join(b"h%d:v\n" % i for i in range(10))
    assert decode_all(b"SEND\n" + hdrs + b"\n\x00", max_headers=10)[0].headers["h9"] == "v"
    line = b"x:" + b"y" * 48
    assert decode_all(b"SEND\n" + line + b"\n\n\x00", max_header_length=50)
    frame = b"SEND\n\n" + b"z" * 94 + b"\x00"
    assert decode_all(frame, max_frame_size=100)[0].body == b"z" * 94
    frame = b"SEND\ncontent-length:75\n\n" + b"z" * 75 + b"\x00"
    assert decode_all(frame, max_frame_size=100)[0].body == b"z" * 75
