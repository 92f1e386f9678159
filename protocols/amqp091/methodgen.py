"""Compile straight-line encoders/decoders for AMQP 0-9-1 method frames.

Called once per method class at import time by :mod:`.spec`. For each method
it writes Python source with one precompiled :class:`struct.Struct` per run of
fixed-size fields (including the length prefixes of the following strings and
tables), and ``exec``s it. Nothing looks up a field's type at run time.

Wire layout (AMQP 0-9-1 §4.2.3 general frame format, §4.2.4 method payload,
§4.2.5 field types):

    frame  = type:octet channel:short size:long payload frame-end(0xCE)
    method = class-id:short method-id:short arguments...

Consecutive ``bit`` arguments share octets, least significant bit first, up
to eight per octet (§4.2.5.2). Reserved arguments are written as zero/empty
and skipped on read.

Generated signatures:

* ``encode(channel, method) -> bytes``: the whole method frame.
* ``decode(buf, off, end) -> method``: decode the arguments in
  ``buf[off:end]`` (just after class-id/method-id). Raises AMQPFrameError 501
  when the arguments do not exactly fill the payload (RabbitMQ: "cannot
  decode"), 501 for malformed UTF-8 in a shortstr of a method without content
  (RabbitMQ's ``assert_utf8`` also uses frame_error; like RabbitMQ we skip the
  check for content-carrying methods and keep odd bytes via
  ``surrogateescape``), 502 for a malformed table.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Callable

from .errors import AMQPFrameError, frame_error, syntax_error
from .fieldtable import _decode_table, encode_table

_FIXED_FMT = {"octet": "B", "short": "H", "long": "I", "longlong": "Q", "timestamp": "Q"}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def twin_of(cls: type) -> type:
    """A mutable twin of frozen slotted dataclass ``cls`` for fast construction.

    Performance device: a frozen dataclass's ``__init__`` stores each field
    through ``object.__setattr__``, which makes it 2-3x slower than a plain
    slotted ``__init__``. The twin has the same ``__slots__`` (hence the same
    memory layout) and a plain ``__init__``; after building one we switch its
    ``__class__`` to ``cls``, which CPython allows for identical layouts. The
    result is an ordinary, still frozen, ``cls`` instance.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    assert tuple(names) == tuple(cls.__slots__), cls
    src = f"def __init__(self{''.join(', ' + n for n in names)}):\n"
    src += "".join(f"    self.{n} = {n}\n" for n in names) or "    pass\n"
    ns: dict[str, Any] = {}
    exec(src, ns)
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": cls.__slots__, "__init__": ns["__init__"]})
    probe = twin(*([None] * len(names)))
    probe.__class__ = cls  # fails loudly at import if layouts ever differ
    return twin


def _too_long(name: str, field: str, n: int) -> ValueError:
    return ValueError(f"{name}: shortstr field {field!r} is {n} bytes (max 255)")


def _fill_ids(exc: AMQPFrameError, class_id: int, method_id: int) -> AMQPFrameError:
    if not exc.class_id:
        exc.class_id, exc.method_id = class_id, method_id
    return exc


class _Item:
    """One wire element: a fixed-size value, or the bytes of a string/table."""

    __slots__ = ("fmt", "enc", "dec", "var", "post")

    def __init__(self, fmt: str = "", enc: str = "", dec: str = "_", var: tuple[str, ...] | None = None,
                 post: list[str] | None = None) -> None:
        self.fmt = fmt  # struct format char, "" for a variable part
        self.enc = enc  # expression to pack
        self.dec = dec  # name to unpack into
        self.var = var  # (kind, varname, fieldname|None) for variable parts
        self.post = post or []  # decode lines run right after the unpack


def _plan(fields: tuple[tuple[str, str, bool], ...]) -> tuple[list[_Item], list[str], list[str]]:
    """Turn the field list into wire items, encode prelude lines and length names."""
    items: list[_Item] = []
    prelude: list[str] = []
    lengths: list[str] = []
    bits: list[str | None] | None = None
    bit_item: _Item | None = None
    for i, (fname, ftype, reserved) in enumerate(fields):
        if ftype == "bit":
            if bits is None or len(bits) == 8:
                bits = []
                bit_item = _Item("B", dec=f"x{i}")
                items.append(bit_item)
            assert bit_item is not None
            if not reserved:
                mask = 1 << len(bits)
                bit_item.post.append(f"f_{fname} = (x{bit_item.dec[1:]} & {mask}) != 0")
            bits.append(None if reserved else fname)
            bit_item.enc = " | ".join(f"({1 << k} if m.{b} else 0)" for k, b in enumerate(bits) if b) or "0"
            continue
        bits = None
        if ftype in _FIXED_FMT:
            items.append(_Item(_FIXED_FMT[ftype], "0" if reserved else f"m.{fname}",
                               "_" if reserved else f"f_{fname}"))
        elif ftype in ("shortstr", "longstr", "table"):
            fmt = "B" if ftype == "shortstr" else "I"
            if reserved:  # always sent empty; skipped on read
                items.append(_Item(fmt, "0", f"n{i}"))
                items.append(_Item(var=(ftype, f"n{i}", "")))
                continue
            if ftype == "shortstr":
                prelude.append(f"v{i} = m.{fname}.encode('utf-8', 'surrogateescape')")
                prelude.append(f"n{i} = len(v{i})")
                prelude.append(f"if n{i} > 255: raise _too_long(NAME, {fname!r}, n{i})")
            elif ftype == "longstr":
                prelude.append(f"v{i} = _as_bytes(m.{fname})")
                prelude.append(f"n{i} = len(v{i})")
            else:
                prelude.append(f"v{i} = _encode_table(m.{fname})")
                prelude.append(f"n{i} = len(v{i})")
            lengths.append(f"n{i}")
            items.append(_Item(fmt, f"n{i}", f"n{i}"))
            items.append(_Item(var=(ftype, f"n{i}", fname), enc=f"v{i}"))
        else:  # pragma: no cover - table typo
            raise ValueError(f"unknown AMQP type {ftype!r}")
    return items, prelude, lengths


def _runs(items: list[_Item]) -> list[list[_Item]]:
    """Split items into runs of fixed items and single variable items."""
    runs: list[list[_Item]] = []
    for item in items:
        if item.var is None and runs and runs[-1][0].var is None:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def build(cls: type, fields: tuple[tuple[str, str, bool], ...]) -> tuple[Callable[..., bytes], Callable[..., Any]]:
    """Return (encode, decode) functions compiled for method class ``cls``."""
    ns: dict[str, Any] = {
        "Cls": cls, "NAME": cls.NAME, "_as_bytes": _as_bytes, "_too_long": _too_long,
        "_encode_table": encode_table, "_decode_table": _decode_table,
        "AMQPFrameError": AMQPFrameError, "_frame_error": frame_error, "_syntax_error": syntax_error,
        "_fill_ids": _fill_ids, "struct": struct, "Twin": twin_of(cls),
    }
    items, prelude, lengths = _plan(fields)
    fixed_size = 4 + sum(struct.calcsize(">" + it.fmt) for it in items if it.var is None)

    # ---- encoder: header + arguments + frame-end, one join ----------------
    size_expr = " + ".join([str(fixed_size)] + lengths)
    head = [_Item("B", "1"), _Item("H", "ch"), _Item("I", size_expr), _Item("I", str(cls.INDEX))]
    # reserved strings are sent empty: only their zero length prefix is written
    enc_items = [it for it in items if it.var is None or it.var[2]]
    enc_runs = _runs(head + enc_items + [_Item("B", "206")])
    parts: list[str] = []
    for k, run in enumerate(enc_runs):
        if run[0].var is not None:
            parts.append(run[0].enc)
            continue
        ns[f"_E{k}"] = struct.Struct(">" + "".join(it.fmt for it in run))
        parts.append(f"_E{k}.pack({', '.join(it.enc for it in run)})")
    lines = ["def encode(ch, m):"]
    lines += ["    " + p for p in prelude]
    if len(parts) == 1:
        lines.append(f"    return {parts[0]}")
    else:
        lines.append(f"    return b''.join(({', '.join(parts)},))")

    # ---- decoder ----------------------------------------------------------
    errors = "surrogateescape" if cls.HAS_CONTENT else "strict"
    body: list[str] = []
    for k, run in enumerate(_runs(items)):
        if run[0].var is None:
            st = struct.Struct(">" + "".join(it.fmt for it in run))
            ns[f"_D{k}"] = st
            targets = ", ".join(it.dec for it in run)
            body.append(f"{targets}, = _D{k}.unpack_from(b, o)")
            body.append(f"o += {st.size}")
            for it in run:
                body.extend(it.post)
            continue
        kind, n, fname = run[0].var
        if not fname:
            body.append(f"o += {n}")
        elif kind == "shortstr":
            body.append(f"f_{fname} = b[o:o + {n}].decode('utf-8', {errors!r})")
            body.append(f"o += {n}")
        elif kind == "longstr":
            body.append(f"f_{fname} = bytes(b[o:o + {n}])")
            body.append(f"o += {n}")
        else:
            body.append(f"if o + {n} > e: raise _frame_error(NAME + ': table length ' + str({n}) + "
                        f"' overruns the method payload', {cls.CLASS_ID}, {cls.METHOD_ID})")
            body.append(f"f_{fname} = _decode_table(b, o, o + {n})")
            body.append(f"o += {n}")
    args = ", ".join(f"f_{f}" for f, _t, reserved in fields if not reserved)
    ids = f"{cls.CLASS_ID}, {cls.METHOD_ID}"
    lines.append("def decode(b, o, e):")
    if body:
        lines.append("    start = o")
        lines.append("    try:")
        lines += ["        " + ln for ln in body]
        lines += [
            "    except (struct.error, IndexError):",
            f"        raise _frame_error('cannot decode ' + NAME + ' arguments (' + str(e - start) + ' octets)', {ids}) from None",
            "    except UnicodeDecodeError:",
            f"        raise _frame_error('malformed UTF-8 in shortstr of ' + NAME, {ids}) from None",
            "    except RecursionError:",
            f"        raise _syntax_error('field table nested too deeply in ' + NAME, {ids}) from None",
            "    except AMQPFrameError as exc:",
            f"        raise _fill_ids(exc, {ids})",
            "    if o != e:",
            f"        raise _frame_error('cannot decode ' + NAME + ' arguments (' + str(e - start) + ' octets)', {ids})",
            f"    obj = Twin({args})",
            "    obj.__class__ = Cls",
            "    return obj",
        ]
    else:
        ns["_SINGLETON"] = cls()
        lines += [
            "    if o != e:",
            f"        raise _frame_error('cannot decode ' + NAME + ' arguments (' + str(e - o) + ' octets)', {ids})",
            "    return _SINGLETON",
        ]
    src = "\n".join(lines) + "\n"
    exec(compile(src, f"<amqp091 {cls.NAME}>", "exec"), ns)
    encode, decode = ns["encode"], ns["decode"]
    encode.__qualname__ = encode.__name__ = f"encode_{cls.__name__}"
    decode.__qualname__ = decode.__name__ = f"decode_{cls.__name__}"
    encode.source = decode.source = src  # handy when debugging
    return encode, decode
