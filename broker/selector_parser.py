"""The JMS message selector grammar (JMS 1.1 §3.8.1.1) as ActiveMQ Classic 5.17 parses it.

A hand-written lexer and recursive-descent parser that turn selector text into a tree of
closures ``fn(message, entry) -> value``; ``selector.py`` wraps the root in a ``Selector``.
Values are None (SQL NULL / unknown), bool, int, float or str. The operator precedence is
ActiveMQ's, lowest first: OR, AND, ``= <> IS [NOT] NULL``, ``> >= < <= [NOT] LIKE
[NOT] BETWEEN [NOT] IN``, ``+ -``, ``* / %``, unary ``+ - NOT``.

ActiveMQ: NOT is a unary operator that binds tighter than any comparison, so ``NOT a = 1``
means ``(NOT a) = 1``; write ``NOT (a = 1)``.

Every error is a ``SelectorSyntaxError`` carrying a reason; ``selector.compile_selector``
turns it into ``errors.InvalidSelector``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from . import selector_eval as ev

Fn = Callable[[Any, Any], Any]


class SelectorSyntaxError(Exception):
    """The text is not a selector ActiveMQ accepts; the argument says why."""


# -- lexer -------------------------------------------------------------------------------
KEYWORDS = frozenset(("NOT", "AND", "OR", "BETWEEN", "LIKE", "ESCAPE", "IN", "IS", "TRUE",
                      "FALSE", "NULL", "XPATH", "XQUERY"))

_SKIP = re.compile(r"(?:[ \t\n\r\f]+|--[^\n\r]*(?:\r\n|\n|\r)|/\*.*?\*/)+", re.S)
_ID = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_STRING = re.compile(r"'(?:[^']|'')*'")
_OP = re.compile(r"<>|<=|>=|[=<>(),+\-*/%]")
# Numeric literals as SelectorParser.jj defines them; the lexer keeps the longest match.
_NUMBERS = (
    ("DECIMAL", re.compile(r"[1-9][0-9]*[lL]?")),
    ("HEX", re.compile(r"0[xX][0-9a-fA-F]+")),
    ("OCTAL", re.compile(r"0[0-7]*")),
    ("FLOAT", re.compile(r"[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
                         r"|[0-9]+[eE][+-]?[0-9]+")),
)
_LONG_MAX = (1 << 63) - 1

# Bounds on a selector, so that parsing never hits Python's recursion limit and one
# evaluation is a bounded amount of work (ActiveMQ's generated parser has none but the JVM's
# stack). MAX_NESTING: parentheses and unary operators inside each other (each costs the
# parser about eight frames). MAX_DEPTH: how deep the compiled closures nest (a chain
# ``a + a + ... + a`` of N terms is N deep, and evaluation recurses that far). MAX_NODES:
# closures in the whole selector, the work of one evaluation (an IN list is one node
# however long). A selector past any of them is refused as invalid, like any syntax error.
MAX_NESTING = 40
MAX_DEPTH = 100
MAX_NODES = 1000


def tokenize(text: str) -> list[tuple[str, Any, int]]:
    """(kind, value, column) tokens ending with ("EOF", None, n). Raises SelectorSyntaxError."""
    tokens: list[tuple[str, Any, int]] = []
    pos, n = 0, len(text)
    while True:
        m = _SKIP.match(text, pos)
        if m:
            pos = m.end()
        if pos >= n:
            tokens.append(("EOF", None, pos + 1))
            return tokens
        c = text[pos]
        if c == "'":
            m = _STRING.match(text, pos)
            if m is None:
                raise SelectorSyntaxError(f"Lexical error at line 1, column {pos + 1}. Unterminated string literal")
            tokens.append(("STRING", m.group()[1:-1].replace("''", "'"), pos + 1))
        elif c.isascii() and (c.isalpha() or c in "_$"):
            m = _ID.match(text, pos)
            word = m.group()
            upper = word.upper()
            tokens.append((upper, word, pos + 1) if upper in KEYWORDS else ("ID", word, pos + 1))
        elif c.isascii() and (c.isdigit() or (c == "." and pos + 1 < n and text[pos + 1].isdigit())):
            kind, m = max(((k, r.match(text, pos)) for k, r in _NUMBERS),
                          key=lambda km: len(km[1].group()) if km[1] else -1)
            tokens.append(("NUMBER", _number(kind, m.group()), pos + 1))
        else:
            m = _OP.match(text, pos)
            if m is None:
                raise SelectorSyntaxError(f"Lexical error at line 1, column {pos + 1}. Encountered: {c!r}")
            tokens.append((m.group(), m.group(), pos + 1))
        pos = m.end()


def _number(kind: str, image: str) -> int | float:
    if kind == "FLOAT":
        return float(image)
    if kind == "DECIMAL":
        return int(image.rstrip("lL"))  # ActiveMQ: too big for a long becomes a BigDecimal
    value = int(image[2:], 16) if kind == "HEX" else int(image, 8)
    if value > _LONG_MAX:
        raise SelectorSyntaxError(f"For input string: \"{image}\"")  # Long.parseLong overflows
    return value


# -- tree nodes --------------------------------------------------------------------------
CONST, BOOL_CONST, PROP, BOOL, VALUE = "const", "bool-const", "prop", "bool", "value"


class Node:
    """One parsed expression: its closure, its kind (for ActiveMQ's parse-time checks)
    and how ActiveMQ prints it in error texts."""

    __slots__ = ("fn", "kind", "value", "text", "depth", "size")

    def __init__(self, fn: Fn, kind: str, text: str, value: Any = None, under: tuple["Node", ...] = ()) -> None:
        self.fn, self.kind, self.text, self.value = fn, kind, text, value
        # How deep the closures nest (evaluation recurses that deep) and how many there are
        # (the work of one evaluation); ``Parser.parse`` bounds both.
        self.depth: int = 1 + max((n.depth for n in under), default=0)
        self.size: int = 1 + sum(n.size for n in under)


def _constant(value: Any, text: str) -> Node:
    kind = BOOL_CONST if value is None or isinstance(value, bool) else CONST
    return Node(lambda m, e: value, kind, text, value)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# -- parser ------------------------------------------------------------------------------
class Parser:
    """Recursive descent over ``SelectorParser.jj``'s productions."""

    def __init__(self, text: str, prop: Callable[[str], Fn], convert_strings: bool) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.prop = prop
        self.convert = convert_strings
        self.nesting = 0

    # token helpers
    def peek(self, ahead: int = 0) -> str:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)][0]

    def take(self, kind: str) -> Any:
        tok = self.tokens[self.i]
        if tok[0] != kind:
            self.fail()
        self.i += 1
        return tok[1]

    def fail(self) -> None:
        kind, value, col = self.tokens[self.i]
        shown = "<EOF>" if kind == "EOF" else str(value)
        raise SelectorSyntaxError(f'Encountered "{shown}" at line 1, column {col}.')

    # productions
    def parse(self) -> Node:
        node = self.boolean(self.or_expr())
        self.take("EOF")
        if node.depth > MAX_DEPTH:
            raise SelectorSyntaxError(f"Selector too deep: expressions nest {node.depth} levels, "
                                      f"the limit is {MAX_DEPTH}")
        if node.size > MAX_NODES:
            raise SelectorSyntaxError(f"Selector too large: {node.size} terms and operators, "
                                      f"the limit is {MAX_NODES}")
        return node

    def nest(self) -> None:
        """One more level of parentheses or unary operators; refused past MAX_NESTING."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            col = self.tokens[self.i][2]
            raise SelectorSyntaxError(f"Selector nested more than {MAX_NESTING} levels deep at "
                                      f"line 1, column {col}")

    def boolean(self, node: Node) -> Node:
        """ActiveMQ's asBooleanExpression: a property is cast, a non-boolean is refused."""
        if node.kind in (BOOL, BOOL_CONST):
            return node
        if node.kind == PROP:
            return Node(ev.boolean_cast(node.fn), BOOL, node.text, under=(node,))
        raise SelectorSyntaxError(f"Expression will not result in a boolean value: {node.text}")

    def or_expr(self) -> Node:
        left = self.and_expr()
        if self.peek() != "OR":
            return left
        parts = [self.boolean(left)]
        while self.peek() == "OR":
            self.i += 1
            parts.append(self.boolean(self.and_expr()))
        return Node(ev.or_(*(p.fn for p in parts)), BOOL, "( " + " OR ".join(p.text for p in parts) + " )",
                    under=tuple(parts))

    def and_expr(self) -> Node:
        left = self.equality()
        if self.peek() != "AND":
            return left
        parts = [self.boolean(left)]
        while self.peek() == "AND":
            self.i += 1
            parts.append(self.boolean(self.equality()))
        return Node(ev.and_(*(p.fn for p in parts)), BOOL, "( " + " AND ".join(p.text for p in parts) + " )",
                    under=tuple(parts))

    def equality(self) -> Node:
        left = self.comparison()
        while True:
            t = self.peek()
            if t in ("=", "<>"):
                self.i += 1
                right = self.comparison()
                _check_equal(left, right)
                fn = ev.equal(left.fn, right.fn, self.convert)
                text = f"{left.text} = {right.text}"
                if t == "<>":
                    fn, text = ev.not_(fn), f"(NOT {text})"
                left = Node(fn, BOOL, text, under=(left, right))
            elif t == "IS" and self.peek(1) == "NULL":
                self.i += 2
                left = Node(ev.is_null(left.fn), BOOL, f"{left.text} IS NULL", under=(left,))
            elif t == "IS" and self.peek(1) == "NOT":
                self.i += 2
                self.take("NULL")
                left = Node(ev.not_(ev.is_null(left.fn)), BOOL, f"{left.text} IS NOT NULL", under=(left,))
            else:
                return left

    def comparison(self) -> Node:
        left = self.additive()
        while True:
            t = self.peek()
            negate = t == "NOT" and self.peek(1) in ("LIKE", "BETWEEN", "IN")
            op = self.peek(1) if negate else t
            if op in (">", ">=", "<", "<="):
                self.i += 1
                left = self.ordering(op, left, self.additive())
            elif op == "LIKE":
                self.i += 2 if negate else 1
                left = self.like(left, negate)
            elif op == "BETWEEN":
                self.i += 2 if negate else 1
                low = self.additive()
                self.take("AND")
                high = self.additive()
                if negate:
                    parts = [self.ordering("<", left, low), self.ordering(">", left, high)]
                    left = Node(ev.or_(parts[0].fn, parts[1].fn), BOOL, f"{left.text} NOT BETWEEN {low.text} AND {high.text}",
                                under=tuple(parts))
                else:
                    parts = [self.ordering(">=", left, low), self.ordering("<=", left, high)]
                    left = Node(ev.and_(parts[0].fn, parts[1].fn), BOOL, f"{left.text} BETWEEN {low.text} AND {high.text}",
                                under=tuple(parts))
            elif op == "IN":
                self.i += 2 if negate else 1
                left = self.in_list(left, negate)
            else:
                return left

    def ordering(self, op: str, left: Node, right: Node) -> Node:
        for side in (left, right):  # ActiveMQ: only numbers may be compared with > >= < <=
            if side.kind in (BOOL_CONST, BOOL) or (side.kind == CONST and not ev.is_number(side.value)):
                raise SelectorSyntaxError(f"Value '{side.text}' cannot be compared.")
        return Node(ev.ordering(op, left.fn, right.fn, self.convert), BOOL, f"{left.text} {op} {right.text}",
                    under=(left, right))

    def like(self, left: Node, negate: bool) -> Node:
        pattern = self.take("STRING")
        escape = None
        if self.peek() == "ESCAPE":
            self.i += 1
            escape = self.take("STRING")
            if len(escape) != 1:
                raise SelectorSyntaxError(
                    "The ESCAPE string litteral is invalid.  It can only be one character.  "
                    f"Litteral used: {escape}")
        fn = ev.like(left.fn, pattern, escape)
        text = f"{left.text} LIKE {_quote(pattern)}"
        node = Node(fn, BOOL, text, under=(left,))
        return Node(ev.not_(fn), BOOL, f"(NOT {text})", under=(node,)) if negate else node

    def in_list(self, left: Node, negate: bool) -> Node:
        if left.kind != PROP:  # ActiveMQ: IN applies to a property only
            raise SelectorSyntaxError(f"Expected a property for In expression, got: {left.text}")
        self.take("(")
        items = [self.take("STRING")]
        while self.peek() == ",":
            self.i += 1
            items.append(self.take("STRING"))
        self.take(")")
        word = "NOT IN" if negate else "IN"
        return Node(ev.in_(left.fn, frozenset(items), negate), BOOL,
                    f"{left.text} {word} ( {', '.join(_quote(s) for s in items)} )", under=(left,))

    def additive(self) -> Node:
        left = self.multiplicative()
        while self.peek() in ("+", "-") and self.peek(1) not in ("EOF", ")", ","):
            op = self.take(self.peek())
            right = self.multiplicative()
            left = Node(ev.arithmetic(op, left.fn, right.fn), VALUE, f"({left.text} {op} {right.text})",
                        under=(left, right))
        return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while self.peek() in ("*", "/", "%"):
            op = self.take(self.peek())
            right = self.unary()
            left = Node(ev.arithmetic(op, left.fn, right.fn), VALUE, f"({left.text} {op} {right.text})",
                        under=(left, right))
        return left

    def unary(self) -> Node:
        t = self.peek()
        if t == "+":
            self.nest()
            self.i += 1
            node = self.unary()
            self.nesting -= 1
            return node
        if t == "-":
            self.nest()
            self.i += 1
            operand = self.unary()
            self.nesting -= 1
            if operand.kind == CONST and ev.is_number(operand.value):
                return _constant(-operand.value, f"-{operand.text}")
            return Node(ev.negate(operand.fn), VALUE, f"(- {operand.text})", under=(operand,))
        if t == "NOT":
            self.nest()
            self.i += 1
            operand = self.boolean(self.unary())
            self.nesting -= 1
            return Node(ev.not_(operand.fn), BOOL, f"(NOT {operand.text})", under=(operand,))
        if t in ("XPATH", "XQUERY"):
            # ActiveMQ evaluates these against an XML body; mqemu does not support them.
            raise SelectorSyntaxError(f"{t} selectors are not supported by mqemu")
        if t == "ID" and self.peek(1) == "(":
            # ActiveMQ's extension functions (REGEX, INLIST, SPLIT, ...) are not supported.
            raise SelectorSyntaxError(f"invalid function call expression: {self.tokens[self.i][1]}")
        return self.primary()

    def primary(self) -> Node:
        kind, value, _ = self.tokens[self.i]
        if kind == "(":
            self.nest()
            self.i += 1
            node = self.or_expr()
            self.take(")")
            self.nesting -= 1
            return node
        self.i += 1
        if kind == "STRING":
            return _constant(value, _quote(value))
        if kind == "NUMBER":
            return _constant(value, repr(value))
        if kind in ("TRUE", "FALSE", "NULL"):
            return _constant({"TRUE": True, "FALSE": False, "NULL": None}[kind], kind)
        if kind == "ID":
            return Node(self.prop(value), PROP, value, value)
        self.i -= 1
        self.fail()
        raise AssertionError  # fail() always raises


def _check_equal(left: Node, right: Node) -> None:
    """ActiveMQ's checks on the operands of = and <>."""
    for side in (left, right):
        if side.kind == BOOL_CONST and side.value is None:
            raise SelectorSyntaxError(f"'{side.text}' cannot be compared.")
    if left.kind == BOOL_CONST and right.kind == CONST:
        raise SelectorSyntaxError(f"'{left.text}' cannot be compared with '{right.text}'")
