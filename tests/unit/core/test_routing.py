"""Core routing: exchange types, exchange-to-exchange, alternate exchanges, CC/BCC, errors."""

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.errors import AccessRefused, NotFound, PreconditionFailed
from mqemu.broker.message import Message
from mqemu.broker.topic import TopicTrie


@pytest.fixture
def vh():
    return Broker().vhosts["/"]


def publish(vh, exchange, key, headers=None):
    props = {"headers": headers} if headers else {}
    return vh.publish(exchange, key, Message(exchange, key, b"x", props))


def ready(vh, *names):
    return [len(vh.queues[n].ready) for n in names]


@pytest.mark.parametrize("pattern, key, hit", [
    ("a.b.c", "a.b.c", True), ("a.*.c", "a.b.c", True), ("a.*.c", "a.c", False),
    ("a.#", "a", True), ("a.#", "a.b.c", True), ("#", "", True), ("#", "x.y", True),
    ("*", "", False), ("", "", True), ("", "a", False), ("#.*.#", "", False), ("*", "a.b", False), ("#.c", "c", True), ("#.c", "a.b.c", True),
    ("a.#.c", "a.c", True), ("a.#.c", "a.x.y.c", True), ("a.#.c", "a.x.y", False),
    ("*.*", "a", False), ("#.#", "a.b", True),
])
def test_topic_trie_matches_like_amqp_topic_exchange(pattern, key, hit):
    trie = TopicTrie()
    trie.add(pattern, "q")
    assert (trie.match(key) == {"q"}) is hit


def test_topic_trie_remove_prunes_and_counts_duplicates():
    trie = TopicTrie()
    trie.add("a.*", "q")
    trie.add("a.*", "q")
    assert trie.remove("a.*", "q")
    assert trie.match("a.b") == {"q"}
    assert trie.remove("a.*", "q")
    assert trie.match("a.b") == frozenset()
    assert not trie
    assert not trie.remove("a.*", "q")


def test_direct_fanout_topic_and_default(vh):
    for q in ("d", "f1", "f2", "t"):
        vh.declare_queue(q)
    vh.bind("amq.direct", "d", "k")
    vh.bind("amq.fanout", "f1", "")
    vh.bind("amq.fanout", "f2", "ignored")
    vh.bind("amq.topic", "t", "logs.*.error")
    assert publish(vh, "amq.direct", "k") == (1, False)
    assert publish(vh, "amq.direct", "other") == (0, False)
    assert publish(vh, "amq.fanout", "any") == (2, False)
    assert publish(vh, "amq.topic", "logs.app.error") == (1, False)
    assert publish(vh, "", "d") == (1, False)
    assert ready(vh, "d", "f1", "f2", "t") == [2, 1, 1, 1]


@pytest.mark.parametrize("x_match, headers, hit", [
    ("all", {"a": 1, "b": "x"}, True),
    ("all", {"a": 1}, False),
    ("any", {"a": 1}, True),
    ("any", {"c": 1}, False),
    ("all", {"a": 1, "b": "x", "x-extra": 1}, True),
])
def test_headers_exchange(vh, x_match, headers, hit):
    vh.declare_queue("h")
    vh.bind("amq.headers", "h", "", {"x-match": x_match, "a": 1, "b": "x"})
    assert publish(vh, "amq.headers", "", headers)[0] == int(hit)


def test_headers_exchange_refuses_bad_x_match(vh):
    vh.declare_queue("h")
    with pytest.raises(PreconditionFailed):
        vh.bind("amq.headers", "h", "", {"x-match": "some"})


def test_exchange_to_exchange_and_cycles(vh):
    vh.declare_exchange("e1", "fanout")
    vh.declare_exchange("e2", "direct")
    vh.declare_queue("q")
    vh.bind("e1", "e2", "", destination_kind="exchange")
    vh.bind("e2", "e1", "k", destination_kind="exchange")  # a cycle must not loop
    vh.bind("e2", "q", "k")
    assert publish(vh, "e1", "k") == (1, False)
    assert ready(vh, "q") == [1]


def test_alternate_exchange_takes_unroutable(vh):
    vh.declare_exchange("ae", "fanout")
    vh.declare_queue("unrouted")
    vh.bind("ae", "unrouted", "")
    vh.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    assert publish(vh, "main", "nobody") == (1, False)
    assert ready(vh, "unrouted") == [1]


def test_cc_and_bcc_headers_add_routing_keys_and_bcc_is_removed(vh):
    for q in ("a", "b", "c"):
        vh.declare_queue(q)
        vh.bind("amq.direct", q, q)
    msg = Message("amq.direct", "a", b"x", {"headers": {"CC": ["b"], "BCC": ["c"]}})
    assert vh.publish("amq.direct", "a", msg) == (3, False)
    delivered = vh.queues["c"].ready[0].message
    assert "BCC" not in delivered.headers and delivered.headers["CC"] == ["b"]


@pytest.mark.parametrize("headers, reached", [
    (None, [1, 0, 0]),
    ({"x": "y"}, [1, 0, 0]),  # headers without CC or BCC: the named queue only
    ({"CC": ["b"]}, [1, 1, 0]),
    ({"BCC": ["c"]}, [1, 0, 1]),
    ({"x": "y", "CC": ["b"], "BCC": ["c", "nowhere"]}, [1, 1, 1]),
])
def test_default_exchange_takes_cc_and_bcc_too(vh, headers, reached):
    for q in ("a", "b", "c"):
        vh.declare_queue(q)
    assert publish(vh, "", "a", headers) == (sum(reached), False)
    assert ready(vh, "a", "b", "c") == reached
    assert "BCC" not in vh.queues["a"].ready[0].message.headers


def test_publish_errors(vh):
    with pytest.raises(NotFound, match="no exchange 'nope' in vhost '/'"):
        publish(vh, "nope", "k")
    vh.declare_exchange("hidden", "fanout", internal=True)
    with pytest.raises(AccessRefused):
        publish(vh, "hidden", "k")


def test_declare_checks(vh):
    with pytest.raises(AccessRefused, match="reserved prefix"):
        vh.declare_exchange("amq.custom", "direct")
    with pytest.raises(PreconditionFailed, match="unknown exchange type 'nonsense'"):  # RabbitMQ 4.x
        vh.declare_exchange("x", "nonsense")
    vh.declare_exchange("x", "direct", durable=True)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'type'"):
        vh.declare_exchange("x", "fanout", durable=True)
    with pytest.raises(NotFound):
        vh.declare_exchange("missing", "direct", passive=True)
    with pytest.raises(AccessRefused):
        vh.declare_queue("amq.q")
    vh.declare_queue("q", durable=True)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable'"):
        vh.declare_queue("q", durable=False)
    with pytest.raises(AccessRefused):
        vh.bind("", "q", "q")


def test_auto_delete_exchange_goes_with_its_last_binding(vh):
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.declare_queue("q")
    vh.bind("ad", "q", "")
    vh.unbind("ad", "q", "")
    assert "ad" not in vh.exchanges


def test_deleting_a_queue_removes_its_bindings(vh):
    vh.declare_queue("q")
    vh.bind("amq.topic", "q", "#")
    vh.delete_queue("q")
    assert publish(vh, "amq.topic", "a") == (0, False)
    assert not vh.exchanges["amq.topic"].bindings


def test_a_lone_key_is_matched_once_on_its_exchange(vh, monkeypatch):
    """One key meeting one binding to a queue takes the short way (``VirtualHost._route``);
    one binding to an exchange, or several, walk; either way the first exchange matches the
    key once."""
    from mqemu.broker.exchange import Exchange
    calls = []
    real = Exchange.route

    def route(self, msg, key):
        calls.append((self.name, key))
        return real(self, msg, key)

    monkeypatch.setattr(Exchange, "route", route)
    vh.declare_exchange("t", "topic")
    vh.declare_exchange("inner", "fanout")
    for q in ("one", "a", "b", "behind"):
        vh.declare_queue(q)
    vh.bind("t", "one", "one.*")
    vh.bind("t", "a", "many.*")
    vh.bind("t", "b", "many.k")
    vh.bind("t", "inner", "ex.*", destination_kind="exchange")
    vh.bind("inner", "behind", "")
    assert publish(vh, "t", "one.k") == (1, False)
    assert publish(vh, "t", "many.k") == (2, False)
    assert publish(vh, "t", "ex.k") == (1, False)
    assert publish(vh, "t", "none.k") == (0, False)
    assert ready(vh, "one", "a", "b", "behind") == [1, 1, 1, 1]
    assert calls == [("t", "one.k"), ("t", "many.k"), ("t", "ex.k"), ("inner", "ex.k"), ("t", "none.k")]
