"""TopicTrie.match micro-benchmark: the common case (few bindings, short keys) cached and
uncached, a trie of many bindings, and the hostile shapes issue 9 names.

    .venv/bin/python bench/bench_topic.py

Prints microseconds per match (best of 5 repeats). The hostile shapes run only when the
trie is the bounded-time one (the old recursive walk took seconds to hours on them).
"""

from __future__ import annotations

import sys
import timeit

from mqemu.broker.topic import TopicTrie


def per_call(stmt, number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def common() -> None:
    trie: TopicTrie[str] = TopicTrie()
    for p in ("stock.usd.nyse", "stock.*.nyse", "stock.#", "*.eur.*", "weather.#.rain", "logs.error"):
        trie.add(p, p)
    keys = ["stock.usd.nyse", "stock.eur.lse", "weather.uk.london.rain", "logs.info", "a.b.c.d.e"]
    print(f"few bindings, cached:          {per_call(lambda: [trie.match(k) for k in keys], 20000) / len(keys):7.2f} us")

    def uncached() -> None:
        for k in keys:
            trie._cache.clear()
            trie.match(k)
    print(f"few bindings, uncached:        {per_call(uncached, 20000) / len(keys):7.2f} us")

    big: TopicTrie[int] = TopicTrie()
    for i in range(2000):
        big.add(f"dev.{i}.#" if i % 3 == 0 else f"dev.{i}.*.temp" if i % 3 == 1 else f"dev.{i}.x.y", i)
    bkeys = [f"dev.{i}.x.temp" for i in range(0, 2000, 97)]

    def big_uncached() -> None:
        for k in bkeys:
            big._cache.clear()
            big.match(k)
    print(f"2000 bindings, uncached:       {per_call(big_uncached, 2000) / len(bkeys):7.2f} us")


def hostile() -> None:
    t: TopicTrie[str] = TopicTrie()
    t.add("#.#.#.#.#.#.#", "h")
    key = ".".join(["w"] * 40)
    print(f"'#.#.#.#.#.#.#' x 40 words:    {per_call(lambda: (t._cache.clear(), t.match(key)), 200):7.2f} us")
    t2: TopicTrie[str] = TopicTrie()
    t2.add(".".join(["*"] * 23), "s")
    key2 = ".".join(["*"] * 23)
    print(f"23 x '*' filter, '*' key:      {per_call(lambda: (t2._cache.clear(), t2.match(key2)), 200):7.2f} us")
    t3: TopicTrie[str] = TopicTrie()
    t3.add(".".join(["#", "a"] * 64), "alt")
    key3 = ".".join(["a"] * 128)
    print(f"'#.a' x 64, 128-word key:      {per_call(lambda: (t3._cache.clear(), t3.match(key3)), 20):7.2f} us")


if __name__ == "__main__":
    common()
    if "--hostile" in sys.argv:
        hostile()
