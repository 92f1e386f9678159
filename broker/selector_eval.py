"""Closures that evaluate JMS selector operators (JMS 1.1 §3.8.1.2) as ActiveMQ 5.17 does.

Each builder takes the closures of its operands and returns one closure
``fn(message, entry) -> value``, where a value is None (NULL, unknown), bool, int, float or
str. AND, OR and NOT follow SQL three-valued logic; comparisons with a NULL operand are
unknown. A closure may raise (ActiveMQ throws on ``'a' * 2``); ``Selector.matches`` treats
that as no match.

ActiveMQ quirks kept here, each marked "ActiveMQ:" where it is implemented:
- a string compared with a number is false, not unknown, unless the selector was compiled
  with ``convert_string_expressions`` (what ActiveMQ does for every STOMP subscription);
- ``a = b`` with both absent is true, and ``5 = a`` with ``a`` absent is false (not unknown);
- ``x IN (...)`` is unknown when ``x`` is not a string.
"""

from __future__ import annotations

import decimal
import math
import operator
import re
from typing import Any, Callable

Fn = Callable[[Any, Any], Any]

_JAVA_INT = re.compile(r"[+-]?[0-9]+\Z")
_JAVA_DOUBLE = re.compile(r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)\Z")
_ORDER = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


def _number(v: Any) -> int | float:
    t = type(v)
    if t is int or t is float:
        return v
    if t is decimal.Decimal:
        return float(v)
    raise TypeError(f"Cannot convert value: {v} into a number")


def _parse_as(kind: type, s: str) -> Any:
    """Java's Integer/Long.valueOf or Double.valueOf of a string; None when it throws."""
    if kind is int:
        return int(s) if _JAVA_INT.match(s) else None
    s = s.strip()
    if not _JAVA_DOUBLE.match(s):
        return None
    return float(s.rstrip("fFdD").replace("Infinity", "inf"))


def coerce(lv: Any, rv: Any, convert: bool) -> tuple[Any, Any] | None:
    """Operands of different types made comparable, or None when ActiveMQ says false."""
    if type(lv) is decimal.Decimal:
        lv = float(lv)
    if type(rv) is decimal.Decimal:
        rv = float(rv)
    lt, rt = type(lv), type(rv)
    if lt is rt:
        return lv, rv
    ln, rn = lt is int or lt is float, rt is int or rt is float
    if ln and rn:
        return lv, rv
    if not convert:
        return None  # ActiveMQ: a string property compared with a number is false
    if ln and rt is str:
        parsed = _parse_as(lt, rv)
        return None if parsed is None else (lv, parsed)
    if lt is str and rt is bool:
        return lv.lower() == "true", rv  # Boolean.valueOf
    if lt is str and rn:
        parsed = _parse_as(rt, lv)
        return None if parsed is None else (parsed, rv)
    return None


# -- logic -------------------------------------------------------------------------------
def and_(*fns: Fn) -> Fn:
    def f(m: Any, e: Any) -> bool | None:
        unknown = False
        for fn in fns:
            v = fn(m, e)
            if v is False:
                return False
            if v is None:
                unknown = True
        return None if unknown else True
    return f


def or_(*fns: Fn) -> Fn:
    def f(m: Any, e: Any) -> bool | None:
        unknown = False
        for fn in fns:
            v = fn(m, e)
            if v is True:
                return True
            if v is None:
                unknown = True
        return None if unknown else False
    return f


def not_(fn: Fn) -> Fn:
    def f(m: Any, e: Any) -> bool | None:
        v = fn(m, e)
        return None if v is None else not v
    return f


def boolean_cast(fn: Fn) -> Fn:
    """A bare property used as a condition: true only for a boolean true."""
    def f(m: Any, e: Any) -> bool | None:
        v = fn(m, e)
        if v is None:
            return None
        return v if type(v) is bool else False
    return f


# -- comparisons -------------------------------------------------------------------------
def equal(left: Fn, right: Fn, convert: bool) -> Fn:
    def f(m: Any, e: Any) -> bool | None:
        lv, rv = left(m, e), right(m, e)
        # ActiveMQ: NULL = NULL is true; a NULL on the right only is false, on the left unknown.
        if lv is None:
            return True if rv is None else None
        if rv is None:
            return False
        if type(lv) is type(rv):
            return lv == rv
        pair = coerce(lv, rv, convert)
        return False if pair is None else pair[0] == pair[1]
    return f


def is_null(fn: Fn) -> Fn:
    return lambda m, e: fn(m, e) is None


def ordering(op: str, left: Fn, right: Fn, convert: bool) -> Fn:
    cmp = _ORDER[op]

    def f(m: Any, e: Any) -> bool | None:
        lv = left(m, e)
        if lv is None:
            return None
        rv = right(m, e)
        if rv is None:
            return None
        if type(lv) is not type(rv):
            pair = coerce(lv, rv, convert)
            if pair is None:
                return False
            lv, rv = pair
        return cmp(lv, rv)
    return f


class LikePattern:
    """A LIKE pattern (JMS 1.1 §3.8.1.2: ``%`` any string, ``_`` any one character) matched
    in linear time, without backtracking.

    The pattern is cut at each ``%`` into fixed-length segments. The first must match at the
    start of the value, the last at its end, and the ones between are found left to right,
    each at its leftmost place after the previous one: taking the leftmost place never loses
    a match, so no choice is ever undone. A segment without ``_`` is found with ``str.find``;
    one with ``_`` is a regular expression of literals and ``.`` only (no quantifier, so it
    cannot backtrack). A match costs O(len(value) x longest segment) at worst, in C; what a
    backtracking regular expression of ``%a%a%a...%b`` cost grew with a power of the value's
    length (3.5 s for 80 characters).
    """

    __slots__ = ("head", "tail", "middle", "whole", "min_len", "regexes")

    def __init__(self, pattern: str, escape: str | None) -> None:
        segments: list[list[str | None]] = [[]]  # None stands for '_'
        i, n = 0, len(pattern)
        while i < n:
            c = pattern[i]
            if escape is not None and c == escape and i + 1 < n and pattern[i + 1] in ("%", "_", escape):
                segments[-1].append(pattern[i + 1])  # ActiveMQ: escapes only %, _ and itself
                i += 2
                continue
            if c == "%":
                segments.append([])
            else:
                segments[-1].append(None if c == "_" else c)
            i += 1
        parts = [_segment(s) for s in segments]
        # each segment as a regular expression, for ``matcher``
        self.regexes = ["".join("." if c is None else re.escape(c) for c in s) for s in segments]
        self.whole = parts[0] if len(parts) == 1 else None
        self.head = parts[0]
        self.tail = parts[-1]
        self.middle = tuple(p for p in parts[1:-1] if p[1])  # '%%' is one '%'
        self.min_len = sum(p[1] for p in parts)

    def matcher(self) -> Callable[[str], Any]:
        """A callable with the same truth as ``match``, one C call for the common shapes,
        each linear: ``a_c`` and ``abc%`` (regular expressions whose only ``.*``, if any, is
        last, so nothing is ever retried), ``%abc`` and ``%abc%``."""
        regexes, head, tail, middle = self.regexes, self.head, self.tail, self.middle
        if len(regexes) == 1 or (len(regexes) == 2 and not tail[1]):
            return re.compile(".*".join(regexes), re.S).fullmatch
        if len(regexes) == 2 and not head[1] and tail[2] is None:
            return operator.methodcaller("endswith", tail[0])
        if not head[1] and not tail[1] and len(middle) == 1 and middle[0][2] is None:
            return operator.methodcaller("__contains__", middle[0][0])
        return self.match

    def match(self, v: str) -> bool:
        n = len(v)
        if n < self.min_len:
            return False
        whole = self.whole
        if whole is not None:
            return n == whole[1] and _at(whole, v, 0)
        head, tail = self.head, self.tail
        pos = head[1]
        end = n - tail[1]
        if (pos and not _at(head, v, 0)) or (tail[1] and not _at(tail, v, end)):
            return False
        for seg in self.middle:
            text, length, rx = seg
            found = v.find(text, pos, end) if rx is None else _search(rx, v, pos, end)
            if found < 0:
                return False
            pos = found + length
        return True


def _segment(items: list[str | None]) -> tuple[str, int, "re.Pattern[str] | None"]:
    """(literal text, length, regex or None when there is no '_')."""
    if None not in items:
        return "".join(items), len(items), None  # type: ignore[arg-type]
    rx = re.compile("".join("." if c is None else re.escape(c) for c in items), re.S)
    return "", len(items), rx


def _at(seg: tuple[str, int, "re.Pattern[str] | None"], v: str, pos: int) -> bool:
    text, _, rx = seg
    return v.startswith(text, pos) if rx is None else rx.match(v, pos) is not None


def _search(rx: "re.Pattern[str]", v: str, pos: int, end: int) -> int:
    m = rx.search(v, pos, end)
    return -1 if m is None else m.start()


def like(fn: Fn, pattern: str, escape: str | None) -> Fn:
    """LIKE with % and _ (JMS 1.1 §3.8.1.2); the escape character escapes only %, _ and
    itself, otherwise it stands for itself (ActiveMQ). Linear time: see ``LikePattern``."""
    match = LikePattern(pattern, escape).matcher()

    def f(m: Any, e: Any) -> bool | None:
        v = fn(m, e)
        if v is None:
            return None
        if type(v) is not str:
            return False
        return True if match(v) else False
    return f


def in_(fn: Fn, items: frozenset[str], negate: bool) -> Fn:
    def f(m: Any, e: Any) -> bool | None:
        v = fn(m, e)
        if type(v) is not str:
            return None  # ActiveMQ: NULL and non-strings are unknown, with IN and NOT IN
        return (v in items) != negate
    return f


# -- arithmetic --------------------------------------------------------------------------
def _java_str(v: Any) -> str:
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is float:
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        if v == 0 or 1e-3 <= abs(v) < 1e7:
            return repr(v)
        sign, digits, exp = decimal.Decimal(repr(v)).normalize().as_tuple()
        rest = "".join(map(str, digits[1:])) or "0"
        return f"{'-' if sign else ''}{digits[0]}.{rest}E{len(digits) + exp - 1}"
    return str(v)


def _divide(a: Any, b: Any) -> float:
    a, b = float(_number(a)), float(_number(b))
    if b == 0.0:  # Java double division
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _modulo(a: Any, b: Any) -> float:
    a, b = float(_number(a)), float(_number(b))
    if b == 0.0 or math.isinf(a):
        return math.nan
    return math.fmod(a, b)  # Java's % keeps the sign of the dividend


def _plus(a: Any, b: Any) -> Any:
    if type(a) is str:
        return a + _java_str(b)  # ActiveMQ: string + anything concatenates
    return _number(a) + _number(b)


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": _plus,
    "-": lambda a, b: _number(a) - _number(b),
    "*": lambda a, b: _number(a) * _number(b),
    "/": _divide,
    "%": _modulo,
}


def arithmetic(op: str, left: Fn, right: Fn) -> Fn:
    apply = _ARITHMETIC[op]

    def f(m: Any, e: Any) -> Any:
        lv = left(m, e)
        if lv is None:
            return None
        rv = right(m, e)
        if rv is None:
            return None
        if type(lv) is bool:
            raise TypeError(f"Cannot call {op} operation on: {lv} and: {rv}")
        return apply(lv, rv)
    return f


def negate(fn: Fn) -> Fn:
    def f(m: Any, e: Any) -> Any:
        v = fn(m, e)
        return -v if is_number(v) else None
    return f
