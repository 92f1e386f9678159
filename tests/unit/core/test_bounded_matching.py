"""Issue 9 items 1 and 2: topic matching and selector LIKE in bounded time.

Each matcher is checked against a simple reference (same answer) and its work is counted:
the number of function calls (Python and C) made by one match, seen through
``sys.setprofile``, must stay under a bound linear in the input. A backtracking or
exponential matcher blows through the bound (or the test timeout) on the hostile shapes.
"""

from __future__ import annotations

import functools
import gc
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqemu.broker.errors import InvalidSelector
from mqemu.broker.message import Message
from mqemu.broker.selector import compile_selector
from mqemu.broker.selector_eval import LikePattern
from mqemu.broker.selector_parser import MAX_DEPTH, MAX_NESTING, MAX_NODES
from mqemu.broker.topic import TopicTrie

pytestmark = pytest.mark.timeout(60)


def calls(fn, *args):
    """(result, number of Python and C function calls fn made). The cyclic collector is off
    meanwhile: a collection it starts would run finalizers of earlier tests' objects, and
    their calls would count as fn's."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1
    was_enabled = gc.isenabled()
    gc.disable()
    sys.setprofile(prof)
    try:
        result = fn(*args)
    finally:
        sys.setprofile(None)
        if was_enabled:
            gc.enable()
    return result, count


# -- topic trie ---------------------------------------------------------------------------
def ref_topic(pattern: str, key: str) -> bool:
    """The AMQP topic exchange by definition: ``*`` one word, ``#`` zero or more; a key's
    words are all literal."""
    p = pattern.split(".") if pattern else []  # the empty key has no words, as on RabbitMQ
    k = key.split(".") if key else []

    @functools.cache
    def m(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return m(i + 1, j) or (j < len(k) and m(i, j + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or p[i] == k[j]) and m(i + 1, j + 1)
    return m(0, 0)


def trie_nodes(trie: TopicTrie) -> int:
    count, stack = 0, [trie._root]
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.children.values())
    return count


def uncached_match(trie: TopicTrie, key: str):
    trie._cache.clear()
    return calls(trie.match, key)


def step_bound(trie: TopicTrie, key: str) -> int:
    """O(words x distinct trie nodes): a handful of calls per node per word position."""
    return 8 * (key.count(".") + 2) * trie_nodes(trie) + 50


WORDS = st.sampled_from(["a", "b", "*", "#", ""])
PATTERN = st.lists(WORDS, min_size=1, max_size=7).map(".".join)


@settings(max_examples=400, deadline=None)
@given(patterns=st.lists(PATTERN, min_size=1, max_size=6), keys=st.lists(PATTERN, min_size=1, max_size=6),
       drop=st.sets(st.integers(0, 5)))
def test_topic_trie_agrees_with_reference_within_step_bound(patterns, keys, drop):
    trie: TopicTrie[int] = TopicTrie()
    for i, p in enumerate(patterns):
        trie.add(p, i)
    kept = set(range(len(patterns)))
    for i in drop:
        if i < len(patterns):
            assert trie.remove(patterns[i], i)
            kept.discard(i)
    for key in keys:
        got, steps = uncached_match(trie, key)
        assert got == {i for i in kept if ref_topic(patterns[i], key)}, (patterns, key)
        assert steps <= step_bound(trie, key)
        assert trie.match(key) == got  # and from the cache


@pytest.mark.parametrize("pattern, key", [
    ("#.#.#.#.#.#.#", ".".join(["w"] * 40)),            # AMQP: 7.6 s before
    ("#.#.#.#.#.#.#.#.#.#", ".".join(["w"] * 128)),      # each '#' cost ~8x more
    (".".join(["*"] * 23), ".".join(["*"] * 23)),        # MQTT +/+/... against literal '*'
    (".".join(["*"] * 200), ".".join(["*"] * 200)),      # froze the node for good
    (".".join(["#", "a"] * 64), ".".join(["a"] * 128)),  # '#'s that cannot be merged
    (".".join(["#"] * 200), ".".join(["#"] * 200)),      # literal '#' words in the key
])
def test_hostile_topic_shapes_match_within_step_bound(pattern, key):
    trie: TopicTrie[str] = TopicTrie()
    trie.add(pattern, "h")
    got, steps = uncached_match(trie, key)
    assert got == ({"h"} if ref_topic(pattern, key) else set())
    assert steps <= step_bound(trie, key)


def test_thousand_word_binding_and_key_match_without_recursion():
    words = [f"w{i}" for i in range(1000)]
    trie: TopicTrie[str] = TopicTrie()
    trie.add(".".join(words), "exact")
    trie.add(".".join(["*"] * 999 + ["#"]), "stars")
    trie.add(".".join(["+"] * 1000), "plus")  # not a wildcard in the core
    key = ".".join(words)
    assert trie.match(key) == {"exact", "stars"}
    assert trie.match(".".join(["w"] * 20000)) == {"stars"}
    assert trie.match(".".join(["w"] * 998)) == frozenset()
    assert trie.remove(".".join(words), "exact")
    assert trie.match(key) == {"stars"}


def test_literal_wildcard_words_in_a_key_are_ordinary_words():
    trie: TopicTrie[str] = TopicTrie()
    for p in ("a.*.c", "a.#", "x.y", "*", "#.z"):
        trie.add(p, p)
    assert trie.match("a.*.c") == {"a.*.c", "a.#"}
    assert trie.match("a.#") == {"a.#"}
    assert trie.match("*") == {"*"}
    assert trie.match("#") == {"*"}
    assert trie.match("x.*") == frozenset()
    assert trie.match("#.z") == {"#.z"}


def test_consecutive_hashes_are_one_and_remove_by_the_same_text():
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a.#.#.#.b", "q")
    assert trie.match("a.b") == {"q"} and trie.match("a.x.y.b") == {"q"}
    assert trie_nodes(trie) == 4  # root, a, #, b
    assert trie.remove("a.#.#.#.b", "q")
    assert not trie


def test_long_keys_are_matched_but_not_cached():
    trie: TopicTrie[str] = TopicTrie()
    trie.add("#", "all")
    long_key = ".".join(["w"] * 1000)
    assert trie.match(long_key) == {"all"}
    assert long_key not in trie._cache
    assert trie.match("short") == {"all"} and "short" in trie._cache


# -- LIKE ---------------------------------------------------------------------------------
def ref_like(pattern: str, escape: str | None, value: str) -> bool:
    """LIKE by its definition, as a regular expression (fine for short inputs)."""
    rx, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if escape is not None and c == escape and i + 1 < len(pattern) and pattern[i + 1] in ("%", "_", escape):
            rx.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        rx.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(rx), value, re.S) is not None


def like_bound(pattern: str) -> int:
    """A few calls per '%'-segment: each segment is looked for once, never again."""
    return 4 * (pattern.count("%") + 2) + 10


CHARS = st.sampled_from(["a", "b", "%", "_", "\\", "\n"])


@settings(max_examples=600, deadline=None)
@given(pattern=st.lists(CHARS, max_size=10).map("".join), escape=st.sampled_from([None, "\\", "a"]),
       values=st.lists(st.lists(CHARS, max_size=14).map("".join), min_size=1, max_size=5))
def test_like_agrees_with_reference_within_step_bound(pattern, escape, values):
    matcher = LikePattern(pattern, escape)
    fast = matcher.matcher()  # what a selector uses: one C call for the common shapes
    for v in values:
        want = ref_like(pattern, escape, v)
        got, steps = calls(matcher.match, v)
        assert got == want, (pattern, escape, v)
        assert steps <= like_bound(pattern)
        got, steps = calls(fast, v)
        assert bool(got) == want, (pattern, escape, v)
        assert steps <= like_bound(pattern)


@pytest.mark.parametrize("pattern, value, hit", [
    ("%a%a%a%a%a%a%b", "a" * 80, False),     # 3.5 s before
    ("%a%a%a%a%a%a%b", "a" * 100, False),    # 15 s before
    ("%a%a%a%a%a%a%b", "a" * 100_000 + "b", True),
    ("%a_%a_%a_%a_%a_%b", "ab" * 50_000, True),
    ("%a_%a_%a_%a_%a_%c", "ab" * 50_000, False),
    ("_" * 20 + "%" + "a_" * 20, "a" * 100_000, True),
])
def test_hostile_like_patterns_within_step_bound(pattern, value, hit):
    for matcher in (LikePattern(pattern, None).match, LikePattern(pattern, None).matcher()):
        got, steps = calls(matcher, value)
        assert bool(got) is hit
        assert steps <= like_bound(pattern)


def test_like_selector_end_to_end():
    sel = compile_selector("h LIKE '%a%a%a%a%a%a%b'")
    assert not sel.matches(Message("", "k", b"", {"headers": {"h": "a" * 100}}))
    assert sel.matches(Message("", "k", b"", {"headers": {"h": "x" + "a" * 6 + "b"}}))


# -- selector size ------------------------------------------------------------------------
@pytest.mark.parametrize("text, reason", [
    ("(" * 1000 + "a = 1" + ")" * 1000, f"Selector nested more than {MAX_NESTING} levels deep at line 1, column 41"),
    ("NOT " * 1000 + "a", f"Selector nested more than {MAX_NESTING} levels deep at line 1, column 161"),
    ("-" * 1000 + "a > 0", f"Selector nested more than {MAX_NESTING} levels deep at line 1, column 41"),
    ("a" + " + a" * 999 + " > 0", f"Selector too deep: expressions nest 1001 levels, the limit is {MAX_DEPTH}"),
    ("a" + " = a" * 999, f"Selector too deep: expressions nest 1000 levels, the limit is {MAX_DEPTH}"),
    (" OR ".join(f"a = {i}" for i in range(1000)),
     f"Selector too large: 3001 terms and operators, the limit is {MAX_NODES}"),
    (" AND ".join("a = 1" for _ in range(1000)),
     f"Selector too large: 3001 terms and operators, the limit is {MAX_NODES}"),
])
def test_huge_selectors_are_invalid_not_a_recursion_error(text, reason):
    with pytest.raises(InvalidSelector) as e:
        compile_selector(text)
    assert e.value.reason == reason


def test_selectors_inside_the_bounds_still_work():
    m = Message("", "k", b"", {"headers": {"a": 1}})
    assert compile_selector("(" * MAX_NESTING + "a = 1" + ")" * MAX_NESTING).matches(m)
    assert compile_selector("a" + " + a" * 90 + " = 91").matches(m)
    assert compile_selector(" OR ".join(f"a = {i}" for i in range(300))).matches(m)
    many = ", ".join(f"'{i}'" for i in range(10_000))  # an IN list is one node
    assert compile_selector(f"b IN ({many})").matches(Message("", "k", b"", {"headers": {"b": "9999"}}))
