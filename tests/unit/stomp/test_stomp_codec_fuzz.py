"""Property tests: arbitrary bytes only ever raise StompFrameError; encode/decode agree."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqemu.protocols.stomp.codec import Frame, StompDecoder, StompFrameError, encode_frame

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

stomp_ish = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"SEND", b"CONNECT", b"\n", b"\r\n", b"\x00", b":", b"\\", b"\\n", b"\\c",
             b"content-length:", b"3", b"receipt:r", b"destination:/q", b"\n\n", b"\xff"]
        ),
    ),
    max_size=30,
).map(b"".join)


_token = st.text("abcAZ:\\nrct- \r\xe9", max_size=8).map(str.encode)


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """Mostly well-formed frames (sometimes lying content-length), with heart-beats."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        eol = draw(st.sampled_from([b"\n", b"\r\n"]))
        out.append(draw(st.sampled_from([b"", b"\n", b"\r\n\n"])))
        out.append(draw(st.sampled_from([b"SEND", b"CONNECT", b"MESSAGE", b"ack"])) + eol)
        body = draw(st.binary(max_size=20))
        for name, value in draw(st.lists(st.tuples(_token, _token), max_size=4)):
            out.append(name + b":" + value + eol)
        if draw(st.booleans()):
            cl = len(body) + draw(st.sampled_from([0, 0, 0, -1, 1]))
            out.append(b"content-length:%d" % cl + eol)
        else:
            body = body.replace(b"\x00", b"")
        out.append(eol + body + b"\x00")
    return b"".join(out)


@SETTINGS
@given(
    data=st.one_of(st.binary(max_size=300), stomp_ish, framed()),
    version=st.sampled_from([None, "1.0", "1.1", "1.2"]),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=5),
)
def test_arbitrary_bytes_only_raise_frame_error(data: bytes, version: str | None, cuts: list[int]) -> None:
    def run(pieces: list[bytes]) -> tuple[list[Frame], str | None]:
        dec = StompDecoder(max_frame_size=200, max_headers=8, max_header_length=64)
        dec.version = version
        frames: list[Frame] = []
        try:
            for piece in pieces:
                dec.feed(piece)
                frames += dec.read_frames()
        except StompFrameError as exc:
            assert isinstance(exc.message, str) and exc.message
            assert exc.receipt_id is None or isinstance(exc.receipt_id, str)
            return frames, "error"
        return frames, None

    whole_frames, whole_err = run([data])
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    split_frames, split_err = run(pieces)
    if whole_err is None and split_err is None:
        assert split_frames == whole_frames
    # Frames decoded before any error are the same prefix either way.
    n = min(len(whole_frames), len(split_frames))
    assert whole_frames[:n] == split_frames[:n]


# NUL cannot be carried in a header (the encoder replaces it with U+FFFD).
header_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)


@SETTINGS
@given(
    command=st.sampled_from(["SEND", "MESSAGE", "ERROR", "RECEIPT"]),
    headers=st.dictionaries(header_text, header_text, max_size=6),
    body=st.binary(max_size=50),
    version=st.sampled_from(["1.1", "1.2"]),
)
def test_encode_decode_roundtrip(command: str, headers: dict[str, str], body: bytes, version: str) -> None:
    if version == "1.1":
        # 1.1 cannot carry a CR at the end of a line (it is read as CRLF).
        headers = {k.replace("\r", ""): v.replace("\r", "") for k, v in headers.items()}
    headers.pop("content-length", None)
    data = encode_frame(command, headers, body, version, content_length=True)
    dec = StompDecoder()
    dec.version = version
    dec.feed(data)
    (frame,) = dec.read_frames()
    expected = dict(headers)
    if body:
        expected["content-length"] = str(len(body))
    assert frame == Frame(command, expected, body)
