"""The core's login per engine, ActiveMQ's authorization entries and the topic rules."""

import pytest

from mqemu.broker.auth import (
    AuthorizationEntry,
    AuthRegistry,
    User,
    _entry_matches,
    _pattern_covers,
)
from mqemu.broker.config import ConfigError, load_config
from mqemu.broker.errors import AccessRefused, AuthenticationFailed


def write(tmp_path, text):
    path = tmp_path / "mqemu.toml"
    path.write_text(text)
    return str(path)


ACTIVEMQ = """
engine = "activemq"
[[users]]
name = "admin"
password = "pw"
groups = "admins, users"
[[users]]
name = "guest"
password = "guest"
groups = ["guests"]
[[authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"
[[authorization]]
queue = "orders.>"
read = ["guests"]
write = "*"
[[authorization]]
topic = "news.*"
read = "guests"
write = "guests"
admin = "guests"
[temp_authorization]
read = "admins"
write = "admins"
admin = "admins"
[mqtt]
deny_subscribe = ["secret/#", "a.b/+"]
deny_publish = "ro/+"
"""


@pytest.fixture
def amq(tmp_path) -> AuthRegistry:
    return load_config(write(tmp_path, ACTIVEMQ)).auth


def test_config_reads_groups_entries_temp_entry_and_topic_rules(amq):
    assert amq.simple and amq.users_configured
    assert amq.users["admin"].groups == frozenset({"admins", "users"})
    assert amq.authorization[1] == AuthorizationEntry("queue", "orders.>", frozenset({"guests"}),
                                                      frozenset({"*"}), frozenset())
    assert amq.temp_authorization.admin == frozenset({"admins"})
    # MQTT filters become routing-key filters: "/" and "." swapped, "+" is "*"
    assert amq.deny_subscribe == ("secret.#", "a/b.*") and amq.deny_publish == ("ro.*",)


@pytest.mark.parametrize("text, words", [
    ("[[authorization]]\nread = 'x'\n", "needs one of queue or topic"),
    ("[[authorization]]\nqueue = 'a'\ntopic = 'b'\n", "needs one of queue or topic"),
    ("[[authorization]]\nqueue = 'a'\nread = 3\n", "[[authorization]] read must be a list"),
    ("[[users]]\nname = 'u'\npassword = 'p'\ngroups = 1\n", "[[users]] groups must be"),
    ("temp_authorization = 1\n", "[temp_authorization] must be a table"),
])
def test_bad_auth_config_names_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert words in str(e.value)


def test_activemq_login_as_simple_authentication_plugin(amq):
    assert amq.login("admin", "pw", "10.0.0.5").name == "admin"
    assert amq.login("guest", "guest", "10.0.0.5").name == "guest"  # no loopback rule on ActiveMQ
    for user, password, shown in (("admin", "bad", "admin"), ("nobody", "x", "nobody"),
                                  (None, None, "null"), ("admin", None, "admin")):
        with pytest.raises(AuthenticationFailed) as e:
            amq.login(user, password, "127.0.0.1")
        assert e.value.text == f"User name [{shown}] or password is invalid."
        assert e.value.not_authorized
    amq.anonymous_access = True
    anon = amq.login(None, None, "127.0.0.1")
    assert anon.name == "anonymous" and anon.groups == frozenset({"anonymous"})


def test_activemq_without_users_lets_everyone_in():
    reg = AuthRegistry.default()
    reg.simple = True  # the ActiveMQ engine's model
    assert reg.open and reg.login("anyone", "anything", "10.0.0.5") is None
    reg.check_destination(None, "write", "queue", "x", exists=False)  # nothing is authorised


def test_rabbitmq_login_default_user_and_loopback():
    reg = AuthRegistry.default()
    assert not reg.open
    assert reg.login(None, None, "127.0.0.1", default=("guest", "guest")).name == "guest"
    with pytest.raises(AuthenticationFailed) as e:
        reg.login(None, None, "127.0.0.1", default=None)
    assert e.value.not_authorized
    with pytest.raises(AuthenticationFailed) as e:
        reg.login("guest", "guest", "10.0.0.5")
    assert e.value.text == "User 'guest' can only connect via localhost" and not e.value.not_authorized


def test_destination_authorization(amq):
    admin, guest = amq.users["admin"], amq.users["guest"]
    amq.check_destination(admin, "write", "queue", "anything", exists=False)
    amq.check_destination(guest, "read", "queue", "orders.1")
    amq.check_destination(guest, "write", "queue", "orders.1")  # write = "*": any group
    with pytest.raises(AccessRefused, match=r"- User guest is not authorized to create: queue://orders\.1"):
        amq.check_destination(guest, "write", "queue", "orders.1", exists=False)
    with pytest.raises(AccessRefused, match=r"- User guest is not authorized to read from: queue://payroll"):
        amq.check_destination(guest, "read", "queue", "payroll")
    with pytest.raises(AccessRefused, match=r"- User guest is not authorized to write to: temp-queue://ID:x:1"):
        amq.check_destination(guest, "write", "queue", "ID:x:1", temporary=True)
    amq.temp_authorization = None  # no temp entry: temporary destinations are open
    amq.check_destination(guest, "write", "queue", "ID:x:1", exists=False, temporary=True)


def test_topic_rules_and_activemq_topic_entries(amq):
    guest = amq.users["guest"]
    amq.deny_subscribe = amq.deny_publish = ()
    amq.check_topic(guest, "/", "read", "news.today")
    amq.check_topic(guest, "/", "read", "news.#")  # news.*'s "*" takes the word ">" (ActiveMQ's lookup)
    with pytest.raises(AccessRefused, match="- User guest is not authorized to read from: topic://>"):
        amq.check_topic(guest, "/", "read", "#")
    with pytest.raises(AccessRefused, match="not authorized to write to: topic://news.a.b"):
        amq.check_topic(guest, "/", "write", "news.a.b")
    # A new topic needs admin once; then it exists.
    amq.authorization.append(AuthorizationEntry("topic", "open.>", frozenset({"guests"}), frozenset({"guests"})))
    with pytest.raises(AccessRefused, match="not authorized to create: topic://open.x"):
        amq.check_topic(guest, "/", "write", "open.x")
    amq._created_topics.add("open.x")  # as if someone with admin had used it
    amq.check_topic(guest, "/", "write", "open.x")
    amq.check_topic(guest, "/", "read", "open.*")  # a wildcard creates nothing: no admin needed


def test_deny_rules_on_both_engines():
    reg = AuthRegistry.default()
    reg.deny_subscribe, reg.deny_publish = ("secret.#",), ("ro.*",)
    user = reg.users["guest"]
    for key in ("secret.#", "secret.*", "secret.pw", "secret"):  # inside the denied area
        with pytest.raises(AccessRefused) as e:
            reg.check_topic(user, "/", "read", key)
        assert e.value.text == f"access to topic '{key}' in exchange 'amq.topic' in vhost '/' refused for user 'guest'"
    for key in ("#", "*.pw", "news.#", "*"):  # wider or elsewhere: granted...
        reg.check_topic(user, "/", "read", key)
    # ... and a denied topic is routed to no one
    assert reg.topic_unreadable("secret.pw") and reg.topic_unreadable("secret")
    assert not reg.topic_unreadable("news.pw") and not reg.topic_unreadable("secretary")
    reg.check_topic(user, "/", "write", "ro.x.y")
    with pytest.raises(AccessRefused):
        reg.check_topic(user, "/", "write", "ro.x")


def test_amq_topic_routes_unreadable_topics_nowhere(tmp_path):
    from mqemu.broker.core import Broker
    from mqemu.broker.message import Message

    broker = Broker(load_config(write(tmp_path, '[mqtt]\ndeny_subscribe = ["secret/#"]\n')))
    vh = broker.vhosts["/"]
    vh.declare_queue("all", False, None, False, {})
    vh.bind("amq.topic", "all", "#")
    assert vh.publish("amq.topic", "secret.pw", Message("amq.topic", "secret.pw", b"x", {}))[0] == 0
    assert vh.publish("amq.topic", "news.pw", Message("amq.topic", "news.pw", b"y", {}))[0] == 1
    assert [e.message.body for e in vh.queues["all"].ready] == [b"y"]


@pytest.mark.parametrize("rule, topic_filter, expected", [
    ("secret.#", "secret.#", True), ("secret.#", "secret.*", True), ("secret.#", "secret", True),
    ("secret.#", "#", False), ("secret.#", "*.pw", False), ("secret.*", "secret.#", False),
    ("secret.*", "secret.*", True), ("a.#", "a.#.b", True), ("a.*", "a", False),
])
def test_pattern_covers(rule, topic_filter, expected):
    assert _pattern_covers(rule, topic_filter) is expected


@pytest.mark.parametrize("rule, key, expected", [
    ("secret.#", "secret.pw", True), ("secret.#", "secret", True), ("secret.*", "secret", False),
    ("secret.#", "x.pw", False), ("ro.*", "ro.#", False), ("ro.x", "ro.*", False),
])
def test_covers_keys(rule, key, expected):
    assert _pattern_covers(rule, key) is expected


@pytest.mark.parametrize("pattern, name, expected", [
    (">", "anything.at.all", True), ("news.>", "news", True), ("news.>", "news.a.b", True),
    ("news.>", ">", False), ("news.>", "*.today", True), ("news.>", "news.>", True),
    ("news.*", "news.a.b", False), ("news.*", "news.*", True), ("*.x", "a.x", True),
    ("news.*", "news.>", True), ("news.*", ">", False),
])
def test_entry_matches_as_activemq_looks_acls_up(pattern, name, expected):
    assert _entry_matches(pattern, name) is expected


def test_user_groups_default_empty():
    assert User("u", "p").groups == frozenset()
