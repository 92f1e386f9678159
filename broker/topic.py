"""A token trie for topic bindings, with a bounded cache of match results.

Patterns are dot-separated words where ``*`` stands for exactly one word and ``#`` for zero
or more words (AMQP 0-9-1 §3.1.3.3, the topic exchange). MQTT's ``+``/``#`` and ActiveMQ's
``*``/``>`` are translated to this form by their sessions before they reach the core.

Matching walks the trie once per routing key as a set of states (an NFA run): for each word
of the key, every trie node reached so far steps to its exact child, its ``*`` child and, if
it was itself reached through a ``#``, to itself (``#`` is a self-loop); whenever a node joins
the set its ``#`` child joins too (``#`` may match zero words). Each node is in the set at
most once per word position, so a match costs O(words x distinct nodes reached), never
exponential, and nothing recurses on the key's length. A ``*`` or ``#`` in a routing key is
an ordinary word, as on RabbitMQ: it matches a binding's ``*``/``#`` (which match any word)
and a literal binding word only if that word is the same text (which a binding cannot have,
since ``*``/``#`` there are wildcards), so it takes no path twice.

Words per key are bounded by each protocol's length limits, as on the engines: AMQP routing
and binding keys are short strings (255 bytes, so at most 128 words), an MQTT topic or filter
is at most 65535 bytes (RabbitMQ 3.10 accepted a 20000-level filter and topic when checked),
a STOMP destination is one header line (10 KiB). The walk is linear in the key, so the trie
adds no cap of its own. Consecutive ``#`` words in a pattern are one ``#`` (``#.#`` matches
what ``#`` matches), so ``#.#.#...`` costs no more than ``#``.
"""

from __future__ import annotations

from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T", bound=Hashable)

_CACHE_LIMIT = 4096
# Keys longer than this are matched but not cached: a cache of 4096 64 KiB MQTT topics would
# hold 256 MiB. Such keys are rare and their walk is linear anyway.
_CACHE_KEY_MAX = 256


class _Node(Generic[T]):
    __slots__ = ("children", "values", "star", "hash", "loop")

    def __init__(self, loop: bool = False) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: dict[T, int] = {}  # value -> how many bindings with this pattern hold it
        self.star: _Node[T] | None = None  # children["*"], kept apart for the walk
        self.hash: _Node[T] | None = None  # children["#"]
        self.loop = loop  # reached through a '#': stays in the state set on any word


def _pattern_words(pattern: str, sep: str) -> list[str]:
    if not pattern:
        return []  # RabbitMQ: the empty key has no words (so '*' does not match it)
    words = pattern.split(sep)
    if "#" not in words:
        return words
    out: list[str] = []
    for w in words:
        if w == "#" and out and out[-1] == "#":
            continue
        out.append(w)
    return out


class TopicTrie(Generic[T]):
    """Maps patterns to values; ``match(key)`` returns the values whose pattern matches."""

    def __init__(self, separator: str = ".") -> None:
        self._root: _Node[T] = _Node()
        self._sep = separator
        self._cache: dict[str, frozenset[T]] = {}
        # Keys for which this is true match nothing (``Exchange.hide_keys``); asked only when
        # a key's result is computed, so the cached hot path pays nothing for it.
        self.unreadable: Callable[[str], bool] | None = None

    def add(self, pattern: str, value: T) -> None:
        node = self._root
        for word in _pattern_words(pattern, self._sep):
            nxt = node.children.get(word)
            if nxt is None:
                nxt = node.children[word] = _Node(word == "#")
                if word == "*":
                    node.star = nxt
                elif word == "#":
                    node.hash = nxt
            node = nxt
        node.values[value] = node.values.get(value, 0) + 1
        self._cache.clear()

    def remove(self, pattern: str, value: T) -> bool:
        """Remove one binding of value under pattern; False when there was none."""
        path = [self._root]
        words = _pattern_words(pattern, self._sep)
        for word in words:
            nxt = path[-1].children.get(word)
            if nxt is None:
                return False
            path.append(nxt)
        leaf = path[-1]
        count = leaf.values.get(value)
        if count is None:
            return False
        if count > 1:
            leaf.values[value] = count - 1
        else:
            del leaf.values[value]
        for i in range(len(words), 0, -1):  # prune empty nodes bottom-up
            node = path[i]
            if node.values or node.children:
                break
            parent, word = path[i - 1], words[i - 1]
            del parent.children[word]
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
        self._cache.clear()
        return True

    def match(self, key: str) -> frozenset[T]:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if self.unreadable is not None and self.unreadable(key):
            result: frozenset[T] = frozenset()  # a topic no one may read (auth's topic rules)
        else:
            result = frozenset(self._match(key.split(self._sep) if key else []))
        if len(key) <= _CACHE_KEY_MAX:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = result
        return result

    def _match(self, words: list[str]) -> set[T]:
        # States are a list: a node other than a '#' node has one parent and one edge from
        # it, so it can join a step's list only once; a '#' node can join twice (its self-loop
        # and its parent's closure), so those are checked against ``hashes``.
        # Fast path: a plain dictionary walk while the trie has no wildcard where we are.
        node = self._root
        i, n = 0, len(words)
        while node.star is None and node.hash is None and not node.loop:
            if i == n:
                return set(node.values)
            word = words[i]
            child = node.children.get(word) if word != "*" and word != "#" else None
            if child is None:
                return set()
            node = child
            i += 1
        states: list[_Node[T]] = [node]
        h = node.hash
        while h is not None:  # '#' matches zero words
            states.append(h)
            h = h.hash
        for word in words[i:] if i else words:
            nxt: list[_Node[T]] = []
            hashes: set[_Node[T]] | None = None
            literal = word != "*" and word != "#"  # a wildcard word takes only the wildcard edges
            for node in states:
                if node.loop:  # '#' takes this word and stays
                    if hashes is None:
                        hashes = {node}
                        nxt.append(node)
                    elif node not in hashes:
                        hashes.add(node)
                        nxt.append(node)
                # The word's own child, then the ``*`` child, each with the ``#`` chain below
                # it: written out twice, as a loop over the two costs a fifth more per match.
                child = node.children.get(word) if literal else None
                if child is not None:
                    nxt.append(child)
                    h = child.hash
                    while h is not None:
                        if hashes is None:
                            hashes = {h}
                        elif h in hashes:
                            break
                        else:
                            hashes.add(h)
                        nxt.append(h)
                        h = h.hash
                child = node.star
                if child is not None:
                    nxt.append(child)
                    h = child.hash
                    while h is not None:
                        if hashes is None:
                            hashes = {h}
                        elif h in hashes:
                            break
                        else:
                            hashes.add(h)
                        nxt.append(h)
                        h = h.hash
            if not nxt:
                return set()
            states = nxt
        out: set[T] = set()
        for node in states:
            if node.values:
                out.update(node.values)
        return out

    def __bool__(self) -> bool:
        return bool(self._root.children or self._root.values)
