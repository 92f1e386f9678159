"""A token trie for topic bindings, with a bounded cache of match results.

Patterns are dot-separated words where ``*`` stands for exactly one word and ``#`` for zero
or more words (AMQP 0-9-1 §3.1.3.3, the topic exchange). MQTT's ``+``/``#`` and ActiveMQ's
``*``/``>`` are translated to this form by their sessions before they reach the core.
Matching walks the trie once per routing key; it never scans every binding.
"""

from __future__ import annotations

from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T", bound=Hashable)

_CACHE_LIMIT = 4096


class _Node(Generic[T]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: dict[T, int] = {}  # value -> how many bindings with this pattern hold it


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
        for word in pattern.split(self._sep):
            nxt = node.children.get(word)
            if nxt is None:
                nxt = node.children[word] = _Node()
            node = nxt
        node.values[value] = node.values.get(value, 0) + 1
        self._cache.clear()

    def remove(self, pattern: str, value: T) -> bool:
        """Remove one binding of value under pattern; False when there was none."""
        path = [self._root]
        words = pattern.split(self._sep)
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
            del path[i - 1].children[words[i - 1]]
        self._cache.clear()
        return True

    def match(self, key: str) -> frozenset[T]:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        out: set[T] = set()
        if self.unreadable is None or not self.unreadable(key):
            self._walk(self._root, key.split(self._sep), 0, out)
        result = frozenset(out)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _walk(self, node: _Node[T], words: list[str], i: int, out: set[T]) -> None:
        children = node.children
        if i == len(words):
            out.update(node.values)
            hash_node = children.get("#")
            if hash_node is not None:  # '#' also matches zero words at the end
                self._walk(hash_node, words, i, out)
            return
        exact = children.get(words[i])
        if exact is not None:
            self._walk(exact, words, i + 1, out)
        star = children.get("*")
        if star is not None:
            self._walk(star, words, i + 1, out)
        hash_node = children.get("#")
        if hash_node is not None:
            for j in range(i, len(words) + 1):
                self._walk(hash_node, words, j, out)

    def __bool__(self) -> bool:
        return bool(self._root.children or self._root.values)
