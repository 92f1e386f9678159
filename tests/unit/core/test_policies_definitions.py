"""Policies (which one applies, how it combines with arguments), RabbitMQ's password hashes
and definitions import (all or nothing), on a broker with no protocol."""

import pytest

from mqemu.broker import definitions, policies
from mqemu.broker.auth import User, check_password_hash, hash_password
from mqemu.broker.core import Broker
from mqemu.broker.errors import AuthenticationFailed, PreconditionFailed
from mqemu.broker.message import Message


def _broker():
    return Broker()


def test_the_highest_priority_matching_policy_applies_alone():
    vh = _broker().vhosts["/"]
    q = vh.declare_queue("orders.eu")
    policies.set_policy(vh, policies.make_policy("/", "wide", {"pattern": "^orders", "priority": 1,
                                                               "definition": {"message-ttl": 1000}}))
    policies.set_policy(vh, policies.make_policy("/", "narrow", {"pattern": r"\.eu$", "priority": 5,
                                                                 "definition": {"max-length": 3}}))
    assert q.settings.max_length == 3 and q.settings.message_ttl is None  # never a merge
    policies.clear_policy(vh, "narrow")
    assert q.settings.max_length is None and q.settings.message_ttl == 1000
    policies.set_policy(vh, policies.make_policy("/", "ex", {"pattern": ".*", "priority": 9, "apply-to": "exchanges",
                                                             "definition": {"max-length": 1}}))
    assert q.settings.message_ttl == 1000  # an exchange policy is not a queue's


def test_arguments_and_policy_combine_as_rabbitmq_does():
    vh = _broker().vhosts["/"]
    q = vh.declare_queue("q", arguments={"x-max-length": 5, "x-message-ttl": 100, "x-overflow": "reject-publish",
                                         "x-dead-letter-exchange": "mine"})
    policies.set_policy(vh, policies.make_policy("/", "p", {"pattern": "q", "definition": {
        "max-length": 2, "message-ttl": 500, "overflow": "drop-head", "dead-letter-exchange": "theirs",
        "expires": 60000}}))
    s = q.settings
    assert (s.max_length, s.message_ttl) == (2, 100)  # the lower value wins
    assert (s.overflow, s.dead_letter_exchange) == ("reject-publish", "mine")  # the argument wins
    assert s.expires == 60000  # only the policy has it


def test_a_new_queue_gets_the_policy_and_limits_apply_at_once():
    vh = _broker().vhosts["/"]
    vh.declare_queue("dlq")
    q = vh.declare_queue("work")
    for i in range(5):
        vh.publish("", "work", Message("", "work", b"%d" % i))
    policies.set_policy(vh, policies.make_policy("/", "cap", {"pattern": "^work$", "definition": {
        "max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "dlq"}}))
    assert [e.message.body for e in q.ready] == [b"3", b"4"]
    assert len(vh.queues["dlq"].ready) == 3
    later = vh.declare_queue("work2")
    assert later.settings.max_length is None
    policies.set_policy(vh, policies.make_policy("/", "cap", {"pattern": "^work", "definition": {"max-length": 1}}))
    assert later.settings.max_length == 1 and vh.queue_policies["work2"].name == "cap"


@pytest.mark.parametrize("body", [
    {"pattern": "(", "definition": {"max-length": 1}},
    {"pattern": "x", "definition": {}},
    {"pattern": "x", "definition": {"message-ttl": -5}},
    {"pattern": "x", "definition": {"overflow": "sideways"}},
    {"pattern": "x", "definition": {"max-length": 1}, "apply-to": "nothing"},
    {"definition": {"max-length": 1}},
])
def test_bad_policies_are_refused(body):
    with pytest.raises(PreconditionFailed):
        policies.make_policy("/", "p", body)


@pytest.mark.parametrize("algorithm", ["rabbit_password_hashing_sha256", "rabbit_password_hashing_sha512",
                                       "rabbit_password_hashing_md5"])
def test_hashed_users_log_in(algorithm):
    h = hash_password("pw", algorithm)
    assert check_password_hash(h, algorithm, "pw") and not check_password_hash(h, algorithm, "pW")
    b = _broker()
    b.auth.users["h"] = User("h", "", password_hash=h, hashing_algorithm=algorithm)
    assert b.auth.authenticate("h", "pw", "127.0.0.1").name == "h"
    with pytest.raises(AuthenticationFailed):
        b.auth.authenticate("h", "", "127.0.0.1")


def test_rabbitmqs_own_hash_of_guest():
    # RabbitMQ 3.10's export of the default user guest/guest
    assert check_password_hash("dKwsXxdYfKHdxh1GoeAPPRxmoKqdo0x6DWxreY//HuxWPveG",
                               "rabbit_password_hashing_sha256", "guest")


def test_import_is_all_or_nothing_and_names_the_first_error():
    b = _broker()
    good = {"vhosts": [{"name": "v"}], "users": [{"name": "u", "password": "p", "tags": "management"}],
            "permissions": [{"user": "u", "vhost": "v", "configure": ".*", "write": ".*", "read": ".*"}],
            "exchanges": [{"name": "x", "vhost": "v", "type": "fanout", "durable": True}],
            "queues": [{"name": "q", "vhost": "v", "durable": True, "arguments": {"x-max-length": 4}}],
            "bindings": [{"source": "x", "vhost": "v", "destination": "q", "destination_type": "queue",
                          "routing_key": "", "arguments": {}}]}
    for section, bad_item, text in [
        ("queues", {"name": "q2", "vhost": "v", "arguments": {"x-max-length": "many"}}, "x-max-length"),
        ("bindings", {"source": "nope", "vhost": "v", "destination": "q", "destination_type": "queue"}, "no such source"),
        ("users", {"name": "w", "password_hash": "xx", "hashing_algorithm": "rabbit_password_hashing_sha3"},
         "unknown hashing_algorithm"),
        ("permissions", {"user": "ghost", "vhost": "v", "configure": "", "write": "", "read": ""}, "no such user"),
        ("exchanges", {"name": "y", "vhost": "v", "type": "x-delayed"}, "unknown exchange type"),
    ]:
        bad = dict(good, **{section: good.get(section, []) + [bad_item]})
        with pytest.raises(definitions.DefinitionsError, match=text):
            definitions.import_definitions(b, bad)
        assert "v" not in b.vhosts and "u" not in b.auth.users  # nothing half applied
    definitions.import_definitions(b, good)
    vh = b.vhosts["v"]
    assert vh.queues["q"].settings.max_length == 4 and vh.exchanges["x"].type == "fanout"
    assert [bd.destination for bd in vh.bindings()] == ["q"]
    out = definitions.export_definitions(b)
    assert {q["name"] for q in out["queues"]} == {"q"} and out["users"][-1]["name"] == "u"
    assert out["users"][-1]["password_hash"] == definitions.export_definitions(b)["users"][-1]["password_hash"]


def test_an_exchange_policy_gives_an_alternate_exchange_its_argument_overrides():
    vh = _broker().vhosts["/"]
    vh.declare_queue("unrouted")
    vh.declare_exchange("ae", "fanout")
    vh.bind("ae", "unrouted", "")
    plain = vh.declare_exchange("plain", "direct")
    own = vh.declare_exchange("own", "direct", arguments={"alternate-exchange": "elsewhere"})
    policies.set_policy(vh, policies.make_policy("/", "ae", {"pattern": ".*", "apply-to": "exchanges",
                                                             "definition": {"alternate-exchange": "ae"}}))
    assert (plain.alternate_exchange, own.alternate_exchange) == ("ae", "elsewhere")
    assert vh.publish("plain", "nowhere", Message("plain", "nowhere", b"x")) == (1, False)
    assert vh.declare_exchange("later", "topic").alternate_exchange == "ae"
    policies.clear_policy(vh, "ae")
    assert plain.alternate_exchange is None
