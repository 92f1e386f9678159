"""The activemq.xml loader (``broker/activemq_xml.py``): what it applies, what it lists as
ignored, what it refuses, and the per-queue policies it gives the core."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mqemu.broker.activemq import DeadLetterStrategy, DestinationPolicy
from mqemu.broker.activemq_xml import apply_activemq_xml, load_activemq_xml, parse_activemq_xml, summary
from mqemu.broker.auth import AuthorizationEntry, User
from mqemu.broker.config import BrokerConfig, ConfigError, load_config

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[3]

# Amazon MQ's default configuration for a new ActiveMQ 5.17 broker (its comments shortened).
AMAZON_MQ_DEFAULT = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<broker xmlns="http://activemq.apache.org/schema/core">
  <!--
  A configuration contains all of the settings for your ActiveMQ broker, in XML format.
  -->
  <!--
  <plugins>
    <authorizationPlugin>
      <map>
        <authorizationMap>
          <authorizationEntries>
            <authorizationEntry admin="admins,activemq-webconsole" queue="&gt;" read="admins" write="admins"/>
          </authorizationEntries>
        </authorizationMap>
      </map>
    </authorizationPlugin>
  </plugins>
  -->
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry topic="&gt;">
          <pendingMessageLimitStrategy>
            <constantPendingMessageLimitStrategy limit="3000"/>
          </pendingMessageLimitStrategy>
        </policyEntry>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
  <plugins>
  </plugins>
</broker>
"""

# The shared reference ActiveMQ's own activemq.xml (/tmp/mqemu-ref/activemq/conf).
REFERENCE = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="mqemu-ref" dataDirectory="/tmp/mqemu-ref/activemq/data">
    <persistenceAdapter><kahaDB directory="/tmp/mqemu-ref/activemq/data/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:61626"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:61633"/>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:1913"/>
    </transportConnectors>
  </broker>
</beans>
"""

# Every element the loader applies, with a few it ignores beside them.
FULL = """<beans xmlns="http://www.springframework.org/schema/beans">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="full" schedulerSupport="false">
    <destinationPolicy>
      <policyMap>
        <policyEntries>
          <policyEntry queue="&gt;" producerFlowControl="true">
            <deadLetterStrategy>
              <individualDeadLetterStrategy queuePrefix="DLQ." queueSuffix=".dead" processExpired="false"
                                            processNonPersistent="true"/>
            </deadLetterStrategy>
          </policyEntry>
          <policyEntry queue="billing.&gt;">
            <deadLetterStrategy>
              <sharedDeadLetterStrategy>
                <deadLetterQueue><queue physicalName="billing.DLQ"/></deadLetterQueue>
              </sharedDeadLetterStrategy>
            </deadLetterStrategy>
          </policyEntry>
          <policyEntry queue="noise.*">
            <deadLetterStrategy><discarding/></deadLetterStrategy>
          </policyEntry>
          <policyEntry topic="&gt;" topicPrefetch="100"/>
        </policyEntries>
      </policyMap>
    </destinationPolicy>
    <destinations>
      <queue physicalName="orders.incoming"/>
      <topic physicalName="news.daily"/>
    </destinations>
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="true" anonymousUser="guest" anonymousGroup="guests">
        <users>
          <authenticationUser username="admin" password="adminpw" groups="admins,users"/>
          <authenticationUser username="app" password="apppw" groups="users"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry queue="&gt;" read="admins" write="admins" admin="admins"/>
              <authorizationEntry queue="orders.&gt;" read="users" write="users"/>
              <authorizationEntry topic="news.*" read="*" write="admins" admin="admins"/>
            </authorizationEntries>
            <tempDestinationAuthorizationEntry>
              <tempDestinationAuthorizationEntry read="users" write="users" admin="users"/>
            </tempDestinationAuthorizationEntry>
          </authorizationMap>
        </map>
      </authorizationPlugin>
      <redeliveryPlugin fallbackToDeadLetter="true" sendToDlqIfMaxRetriesExceeded="true">
        <redeliveryPolicyMap>
          <redeliveryPolicyMap>
            <redeliveryPolicyEntries>
              <redeliveryPolicy queue="orders.&gt;" maximumRedeliveries="2" redeliveryDelay="10000"/>
            </redeliveryPolicyEntries>
            <defaultEntry>
              <redeliveryPolicy maximumRedeliveries="4" initialRedeliveryDelay="5000"/>
            </defaultEntry>
          </redeliveryPolicyMap>
        </redeliveryPolicyMap>
      </redeliveryPlugin>
      <statisticsBrokerPlugin/>
    </plugins>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://0.0.0.0:61613"/>
    </transportConnectors>
  </broker>
</beans>
"""


def test_amazon_mq_default_configuration_applies_nothing_and_says_so():
    x = parse_activemq_xml(AMAZON_MQ_DEFAULT)
    assert x.ignored == ["broker/destinationPolicy/policyMap/policyEntries/policyEntry"]
    assert x.users is None and x.authorization is None and x.policies == [] and x.destinations == []
    assert summary(x) == ["activemq.xml: ignored: broker/destinationPolicy/policyMap/policyEntries/policyEntry"]


def test_the_reference_broker_s_file():
    x = parse_activemq_xml(REFERENCE)
    assert x.ignored == ["beans/broker@useJmx", "beans/broker@brokerName", "beans/broker@dataDirectory",
                         "beans/broker/persistenceAdapter", "beans/broker/transportConnectors"]
    assert x.connectors == [("openwire", "tcp://127.0.0.1:61626"), ("stomp", "stomp://127.0.0.1:61633"),
                            ("mqtt", "mqtt://127.0.0.1:1913")]
    assert summary(x)[1] == ("activemq.xml: transport connectors not opened (ports come from the command "
                             "line): openwire tcp://127.0.0.1:61626, stomp stomp://127.0.0.1:61633, "
                             "mqtt mqtt://127.0.0.1:1913")
    live = Path("/tmp/mqemu-ref/activemq/conf/activemq.xml")
    if live.exists():  # the running reference's file, when this machine has it
        assert load_activemq_xml(str(live)).ignored == x.ignored


def test_every_supported_element():
    x = parse_activemq_xml(FULL)
    assert x.users == {"admin": User("admin", "adminpw", (), frozenset({"admins", "users"})),
                       "app": User("app", "apppw", (), frozenset({"users"}))}
    assert (x.anonymous_access, x.anonymous_user, x.anonymous_group) == (True, "guest", "guests")
    assert x.authorization == [
        AuthorizationEntry("queue", ">", frozenset({"admins"}), frozenset({"admins"}), frozenset({"admins"})),
        AuthorizationEntry("queue", "orders.>", frozenset({"users"}), frozenset({"users"}), frozenset()),
        AuthorizationEntry("topic", "news.*", frozenset({"*"}), frozenset({"admins"}), frozenset({"admins"}))]
    assert x.temp_authorization == AuthorizationEntry("temp", "", *[frozenset({"users"})] * 3)
    assert x.scheduler_support is False and x.maximum_redeliveries == 4
    assert x.policies == [
        DestinationPolicy("queue", ">", dead_letter=DeadLetterStrategy(
            queue_prefix="DLQ.", queue_suffix=".dead", process_expired=False, process_non_persistent=True)),
        DestinationPolicy("queue", "billing.>", dead_letter=DeadLetterStrategy(shared_queue="billing.DLQ")),
        DestinationPolicy("queue", "noise.*", dead_letter=DeadLetterStrategy(discard=True)),
        DestinationPolicy("queue", "orders.>", maximum_redeliveries=2)]
    assert x.destinations == [("queue", "orders.incoming"), ("topic", "news.daily")]
    assert x.connectors == [("stomp", "stomp://0.0.0.0:61613")]
    broker = "beans/broker"
    entries = f"{broker}/destinationPolicy/policyMap/policyEntries"
    rmap = f"{broker}/plugins/redeliveryPlugin/redeliveryPolicyMap/redeliveryPolicyMap"
    assert x.ignored == [
        "beans/bean", f"{broker}@brokerName", f"{entries}/policyEntry[1]@producerFlowControl",
        f"{entries}/policyEntry[4]", f"{broker}/plugins/redeliveryPlugin@fallbackToDeadLetter",
        f"{broker}/plugins/redeliveryPlugin@sendToDlqIfMaxRetriesExceeded",
        f"{rmap}/redeliveryPolicyEntries/redeliveryPolicy@redeliveryDelay",
        f"{rmap}/defaultEntry/redeliveryPolicy@initialRedeliveryDelay",
        f"{broker}/plugins/statisticsBrokerPlugin", f"{broker}/transportConnectors"]


def test_applied_over_a_toml_config(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text('engine = "activemq"\n[[users]]\nname = "old"\npassword = "x"\n'
                    '[activemq]\nmax_repeat_allowed = 5\n')
    cfg = load_config(str(toml))
    apply_activemq_xml(cfg, parse_activemq_xml(FULL))
    assert sorted(cfg.auth.users) == ["admin", "app"] and cfg.auth.users_configured
    assert cfg.auth.anonymous_access and len(cfg.auth.authorization or ()) == 3
    assert cfg.extra["activemq"] == {"max_repeat_allowed": 5, "scheduler_support": False,
                                     "maximum_redeliveries": 4}
    assert cfg.destinations == [("queue", "orders.incoming"), ("topic", "news.daily")]
    # A file without the plugins keeps the TOML's users and entries.
    cfg = load_config(str(toml))
    apply_activemq_xml(cfg, parse_activemq_xml(AMAZON_MQ_DEFAULT))
    assert list(cfg.auth.users) == ["old"] and cfg.auth.authorization is None


def test_refused_on_the_rabbitmq_engine():
    with pytest.raises(ConfigError, match=r"^--activemq-xml needs the ActiveMQ engine"):
        apply_activemq_xml(BrokerConfig(), parse_activemq_xml(AMAZON_MQ_DEFAULT))


def _broker(body: str) -> str:
    return f'<broker xmlns="http://activemq.apache.org/schema/core">{body}</broker>'


AUTH = "<plugins><simpleAuthenticationPlugin><users>{}</users></simpleAuthenticationPlugin></plugins>"


@pytest.mark.parametrize("text, message", [
    ('<?xml version="1.0"?><!DOCTYPE broker [<!ENTITY x "y">]><broker/>',
     "activemq.xml: a DOCTYPE or entity declaration is not accepted"),
    ("<broker><plugins></broker>", "activemq.xml: not well-formed XML: mismatched tag: line 1, column 19"),
    ("<config/>", "activemq.xml: config: the root element must be <broker> (Amazon MQ) or Spring's <beans>"),
    ('<beans xmlns="http://www.springframework.org/schema/beans"><bean/></beans>',
     "activemq.xml: beans: a <beans> file needs one <broker> of http://activemq.apache.org/schema/core, not 0"),
    ('<broker xmlns="http://example.com/other"/>',
     "activemq.xml: broker: <broker> must be in the namespace http://activemq.apache.org/schema/core"),
    (_broker(AUTH.format('<authenticationUser username="a" groups="g"/>')),
     "activemq.xml: broker/plugins/simpleAuthenticationPlugin/users/authenticationUser: "
     "the attribute password is required"),
    (_broker(AUTH.format('<authenticationUser username="a" password="${activemq.password}"/>')),
     "activemq.xml: broker/plugins/simpleAuthenticationPlugin/users/authenticationUser@password: "
     "'${activemq.password}': property placeholders are not resolved (mqemu reads no properties files)"),
    (_broker(AUTH.format('<authenticationUser username="a" password="1"/>'
                         '<authenticationUser username="a" password="2"/>')),
     "activemq.xml: broker/plugins/simpleAuthenticationPlugin/users/authenticationUser[2]@username: "
     "the user 'a' is listed twice"),
    (_broker('<plugins><simpleAuthenticationPlugin anonymousAccessAllowed="yes"/></plugins>'),
     "activemq.xml: broker/plugins/simpleAuthenticationPlugin@anonymousAccessAllowed: 'yes' is not true or false"),
    (_broker('<plugins><authorizationPlugin><map><authorizationMap><authorizationEntries>'
             '<authorizationEntry read="a"/></authorizationEntries></authorizationMap></map>'
             '</authorizationPlugin></plugins>'),
     "activemq.xml: broker/plugins/authorizationPlugin/map/authorizationMap/authorizationEntries/"
     "authorizationEntry: an authorizationEntry names one queue or one topic pattern"),
    (_broker('<plugins><redeliveryPlugin><redeliveryPolicyMap><redeliveryPolicyMap><defaultEntry>'
             '<redeliveryPolicy maximumRedeliveries="three"/></defaultEntry></redeliveryPolicyMap>'
             '</redeliveryPolicyMap></redeliveryPlugin></plugins>'),
     "activemq.xml: broker/plugins/redeliveryPlugin/redeliveryPolicyMap/redeliveryPolicyMap/defaultEntry/"
     "redeliveryPolicy@maximumRedeliveries: 'three' is not an integer"),
    (_broker('<destinationPolicy><policyMap><policyEntries><policyEntry queue="&gt;"><deadLetterStrategy>'
             '<individualDeadLetterStrategy useQueueForQueueMessages="false"/></deadLetterStrategy>'
             '</policyEntry></policyEntries></policyMap></destinationPolicy>'),
     "activemq.xml: broker/destinationPolicy/policyMap/policyEntries/policyEntry/deadLetterStrategy/"
     "individualDeadLetterStrategy@useQueueForQueueMessages: a dead-letter topic for queue messages is not emulated"),
    (_broker('<destinations><queue/></destinations>'),
     "activemq.xml: broker/destinations/queue: the attribute physicalName is required"),
])
def test_an_invalid_file_is_refused_with_the_first_error(text, message):
    with pytest.raises(ConfigError) as e:
        parse_activemq_xml(text)
    assert str(e.value) == message


def test_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^cannot read --activemq-xml file .*absent.xml: No such file"):
        load_activemq_xml(str(tmp_path / "absent.xml"))


def test_the_auth_reference_script_s_file_is_the_differential_test_s_config():
    """scripts/ref_activemq_auth.sh's activemq.xml, loaded, gives the users and entries of
    tests/differential/test_auth_differential.py's TOML CONFIG."""
    script = (ROOT / "scripts" / "ref_activemq_auth.sh").read_text()
    xml = re.search(r"<<CONF\n(.*?)\nCONF\n", script, re.S).group(1)  # type: ignore[union-attr]
    xml = re.sub(r"\$\w+", "1", xml)
    x = parse_activemq_xml(xml)
    toml = re.search(r'^CONFIG = """(.*?)"""', (ROOT / "tests" / "differential" / "test_auth_differential.py")
                     .read_text(), re.S | re.M).group(1)  # type: ignore[union-attr]
    cfg = load_config(None, "activemq")
    apply_activemq_xml(cfg, x)
    import tomllib

    data = tomllib.loads(toml)
    assert {u.name: (u.password, u.groups) for u in cfg.auth.users.values()} == {
        u["name"]: (u["password"], frozenset(u["groups"])) for u in data["users"]}
    assert [(e.kind, e.pattern, e.read, e.write, e.admin) for e in cfg.auth.authorization or ()] == [
        (k, e[k], *(frozenset(g for g in e.get(op, "").split(",") if g) for op in ("read", "write", "admin")))
        for e in data["authorization"] for k in ("queue", "topic") if k in e]


# -- the policies in the core ---------------------------------------------------------------
def test_queues_resolve_the_most_specific_policy():
    cfg = load_config(None, "activemq")
    apply_activemq_xml(cfg, parse_activemq_xml(FULL))
    from mqemu.broker.activemq import ActiveMQSettings

    s = ActiveMQSettings.from_config(cfg)
    orders = s.for_queue("orders.new")
    assert orders.maximum_redeliveries == 2 and orders.dead_letter_name("orders.new") == "DLQ.orders.new.dead"
    assert not orders.process_expired and orders.process_non_persistent
    assert s.for_queue("plain").maximum_redeliveries == 4  # the redelivery plugin's default entry
    billing = s.for_queue("billing.eu")
    assert billing.dead_letter_name("billing.eu") == "billing.DLQ" and billing.process_expired
    assert s.for_queue("noise.x").discard_dead_letters and not s.for_queue("noise.x.y").discard_dead_letters
    assert s.for_queue("DLQ.orders.new.dead").is_dead_letter_queue("DLQ.orders.new.dead")
    assert s.for_queue("orders.new") is orders  # resolved once
    assert ActiveMQSettings().for_queue("q") == ActiveMQSettings()  # no policies: the settings themselves


@pytest.mark.parametrize("pattern", [">", "orders.>", "orders.*", "*.eu", "a.*.c", "a.b", "we.ird+(x)"])
def test_policy_patterns_match_as_the_authorization_entries_do(pattern):
    """A policy's pattern matches the queue names an authorization entry's would."""
    from mqemu.broker.activemq import _matchers
    from mqemu.broker.auth import _entry_matches

    ((_, rx),) = _matchers((DestinationPolicy("queue", pattern, maximum_redeliveries=1),))
    for name in ("orders", "orders.new", "orders.new.eu", "x.eu", "eu", "a.b.c", "a.b", "a.x.c", "a.x.y.c",
                 "we.ird+(x)", "weXird+(x)", "a.bc"):
        assert bool(rx.fullmatch(name)) == _entry_matches(pattern, name), name
