"""The rabbitmq.conf loader (``broker/rabbitmq_conf.py``): the values it applies, the keys it
lists as ignored, the lines it refuses, and how it lands in the broker config."""

from __future__ import annotations

import pytest

from mqemu.broker.config import BrokerConfig, ConfigError, load_config
from mqemu.broker.rabbitmq_conf import apply_rabbitmq_conf, load_rabbitmq_conf, parse_rabbitmq_conf, summary
from mqemu.ha.aws.configs import DEFAULT_RABBITMQ

pytestmark = pytest.mark.timeout(10)

FULL = """# Amazon MQ's configurable keys
consumer_timeout = 500
heartbeat=30
  # an indented comment

management.restrictions.operator_policy_changes.disabled = false
quorum_queue.property_equivalence.relaxed_checks_on_redeclaration = true
secure.management.http.headers.enabled = true
auth_backends.1 = ldap
auth_ldap.servers.1 = ldap.example.com
cluster_queue_limit = 500
vm_memory_high_watermark.relative = 0.6
listeners.tcp.default = 5672
"""


def test_values_ignored_and_unknown_keys():
    conf = parse_rabbitmq_conf(FULL)
    assert (conf.consumer_timeout, conf.heartbeat) == (500, 30)
    assert conf.ignored == ["management.restrictions.operator_policy_changes.disabled",
                            "quorum_queue.property_equivalence.relaxed_checks_on_redeclaration",
                            "secure.management.http.headers.enabled", "auth_backends.1", "auth_ldap.servers.1",
                            "cluster_queue_limit"]
    assert conf.unknown == ["vm_memory_high_watermark.relative", "listeners.tcp.default"]
    assert summary(conf) == [
        "rabbitmq.conf: applied: consumer_timeout = 500, heartbeat = 30",
        "rabbitmq.conf: ignored (mqemu has no such feature): management.restrictions.operator_policy_changes."
        "disabled, quorum_queue.property_equivalence.relaxed_checks_on_redeclaration, "
        "secure.management.http.headers.enabled, auth_backends.1, auth_ldap.servers.1, cluster_queue_limit",
        "rabbitmq.conf: ignored (not among Amazon MQ's configurable keys): vm_memory_high_watermark.relative, "
        "listeners.tcp.default",
    ]


def test_the_last_line_for_a_key_wins_and_zero_is_accepted():
    conf = parse_rabbitmq_conf("consumer_timeout = 500\nconsumer_timeout = 0\nheartbeat = 0\nheartbeat = 0\n"
                               "vhost_max = 1\nvhost_max = 2\n")
    assert (conf.consumer_timeout, conf.heartbeat, conf.ignored) == (0, 0, ["vhost_max"])


def test_an_empty_file_sets_nothing():
    conf = parse_rabbitmq_conf("# nothing\n\n")
    assert conf.consumer_timeout is None and conf.heartbeat is None and not conf.ignored and not conf.unknown
    assert summary(conf) == ["rabbitmq.conf: applied: nothing"]


def test_amazon_mq_s_default_configuration_sets_thirty_minutes():
    assert parse_rabbitmq_conf(DEFAULT_RABBITMQ).consumer_timeout == 1_800_000


@pytest.mark.parametrize("text, error", [
    ("heartbeat = 30\nconsumer_timeout\n", "rabbitmq.conf line 2: 'consumer_timeout' is not a key = value setting"),
    ("= 5\n", "rabbitmq.conf line 1: '' is not a setting's name"),
    ("consumer timeout = 5\n", "rabbitmq.conf line 1: 'consumer timeout' is not a setting's name"),
    ("\n\nheartbeat =\n", "rabbitmq.conf line 3: heartbeat has no value"),
    ("consumer_timeout = 30s\n", "rabbitmq.conf line 1: consumer_timeout must be a whole number of milliseconds "
                                 "from 0 to 2147483647, not '30s'"),
    ("consumer_timeout = -1\n", "rabbitmq.conf line 1: consumer_timeout must be a whole number of milliseconds "
                                "from 0 to 2147483647, not '-1'"),
    ("consumer_timeout = 2147483648\n", "rabbitmq.conf line 1: consumer_timeout must be a whole number of "
                                        "milliseconds from 0 to 2147483647, not '2147483648'"),
    ("heartbeat = 65536\n", "rabbitmq.conf line 1: heartbeat must be a whole number of seconds from 0 to 65535, "
                            "not '65536'"),
    ("heartbeat = 1.5\n", "rabbitmq.conf line 1: heartbeat must be a whole number of seconds from 0 to 65535, "
                          "not '1.5'"),
])
def test_bad_lines_are_refused_naming_the_line(text, error):
    with pytest.raises(ConfigError) as e:
        parse_rabbitmq_conf(text)
    assert str(e.value) == error


def test_load_reports_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^cannot read --rabbitmq-conf file .*missing\.conf: "):
        load_rabbitmq_conf(str(tmp_path / "missing.conf"))
    path = tmp_path / "r.conf"
    path.write_text("heartbeat = 15\n")
    assert load_rabbitmq_conf(str(path)).heartbeat == 15


def test_apply_puts_the_values_in_the_amqp_section_over_the_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[amqp]\nheartbeat = 10\nconsumer_timeout = 9000\nhandshake_timeout = 5\n")
    cfg = load_config(str(toml))
    apply_rabbitmq_conf(cfg, parse_rabbitmq_conf("consumer_timeout = 500\n"))
    assert cfg.extra["amqp"] == {"heartbeat": 10, "consumer_timeout": 500, "handshake_timeout": 5}


def test_apply_needs_the_rabbitmq_engine():
    with pytest.raises(ConfigError, match=r"^--rabbitmq-conf needs the RabbitMQ engine"):
        apply_rabbitmq_conf(BrokerConfig(engine="activemq"), parse_rabbitmq_conf("heartbeat = 5\n"))


@pytest.mark.parametrize("line", ["consumer_timeout = -5", "consumer_timeout = 1.5", "heartbeat = 70000",
                                  "heartbeat = true", 'heartbeat = "60"'])
def test_the_toml_amqp_section_is_checked_too(tmp_path, line):
    toml = tmp_path / "c.toml"
    toml.write_text(f"[amqp]\n{line}\n")
    with pytest.raises(ConfigError, match=r"^\[amqp\] (consumer_timeout|heartbeat) must be a whole number"):
        load_config(str(toml))


def test_update_configuration_refuses_what_the_nodes_could_not_parse():
    import base64

    from mqemu.ha.aws import configs
    from mqemu.ha.aws.model import ApiError

    good = base64.b64encode(FULL.replace("heartbeat=30", "heartbeat=60").encode()).decode()
    assert configs.sanitize("RABBITMQ", good) == (good, [])
    with pytest.raises(ApiError) as e:
        configs.sanitize("RABBITMQ", base64.b64encode(b"heartbeat = 1m\n").decode())
    assert e.value.code == "BadRequestException" and e.value.attribute == "data" and e.value.message == (
        "The configuration data is not in rabbitmq.conf format: rabbitmq.conf line 1: heartbeat must be a whole "
        "number of seconds from 60 to 3600, not '1m'.")


@pytest.mark.parametrize("seconds, taken", [("59", False), ("60", True), ("3600", True), ("3601", False),
                                            ("0", False)])
def test_amazon_mq_allows_a_heartbeat_of_60_to_3600_seconds(seconds, taken):
    import base64

    from mqemu.ha.aws import configs
    from mqemu.ha.aws.model import ApiError

    assert parse_rabbitmq_conf(f"heartbeat = {seconds}\n").heartbeat == int(seconds)  # RabbitMQ's own range
    data = base64.b64encode(f"heartbeat = {seconds}\n".encode()).decode()
    if taken:
        assert configs.sanitize("RABBITMQ", data) == (data, [])
        return
    with pytest.raises(ApiError) as e:
        configs.sanitize("RABBITMQ", data)
    assert e.value.code == "BadRequestException" and e.value.message.endswith(
        f"heartbeat must be a whole number of seconds from 60 to 3600, not '{seconds}'.")
