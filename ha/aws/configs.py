"""Broker configurations: their default data, AWS's sanitization of ActiveMQ XML, and what
a node can use of a configuration now.

ActiveMQ configurations are ``<broker>`` XML (base64 on the wire). Amazon MQ keeps only the
elements its schema permits (the "Elements permitted in Amazon MQ for ActiveMQ
configurations" page; network transports, storage, management and authentication are its
own) and removes the rest, answering UpdateConfiguration with one ``SanitizationWarning``
(``DISALLOWED_ELEMENT_REMOVED``) per element removed, and attributes holding Spring
expressions (``${...}``, ``#{...}``) with ``INVALID_ATTRIBUTE_VALUE_REMOVED``. RabbitMQ
configurations are ``rabbitmq.conf`` text (``key = value`` lines), stored as given.

Applied at reboot by the nodes: ActiveMQ's XML whole (``mqemu serve --activemq-xml``, see
``broker/activemq_xml.py``), RabbitMQ's conf (``mqemu serve --rabbitmq-conf``, see
``broker/rabbitmq_conf.py``: consumer_timeout and heartbeat; Amazon MQ's other keys are
logged as ignored). UpdateConfiguration refuses data they could not apply (``sanitize`` for
a rabbitmq.conf, ``check_applicable`` for XML).
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from typing import Any

from mqemu.broker.activemq_xml import parse_activemq_xml
from mqemu.broker.config import ConfigError
from mqemu.broker.rabbitmq_conf import parse_rabbitmq_conf
from .model import bad_request

# The elements the permitted-elements page lists, and the collection elements that hold them.
PERMITTED = frozenset("""
abortSlowAckConsumerStrategy abortSlowConsumerStrategy authorizationEntry authorizationMap authorizationPlugin
broker cachedMessageGroupMapFactory compositeQueue compositeTopic constantPendingMessageLimitStrategy discarding
discardingDLQBrokerPlugin fileCursor fileDurableSubscriberCursor fileQueueCursor filteredDestination
fixedCountSubscriptionRecoveryPolicy fixedSizedSubscriptionRecoveryPolicy forcePersistencyModeBrokerPlugin
individualDeadLetterStrategy lastImageSubscriptionRecoveryPolicy messageGroupHashBucketFactory mirroredQueue
noSubscriptionRecoveryPolicy oldestMessageEvictionStrategy oldestMessageWithLowestPriorityEvictionStrategy
policyEntry policyMap prefetchRatePendingMessageLimitStrategy priorityDispatchPolicy priorityNetworkDispatchPolicy
queryBasedSubscriptionRecoveryPolicy queue redeliveryPlugin redeliveryPolicy redeliveryPolicyMap
retainedMessageSubscriptionRecoveryPolicy roundRobinDispatchPolicy sharedDeadLetterStrategy simpleDispatchPolicy
simpleMessageGroupMapFactory statisticsBrokerPlugin storeCursor storeDurableSubscriberCursor
strictOrderDispatchPolicy tempDestinationAuthorizationEntry tempQueue tempTopic timedSubscriptionRecoveryPolicy
timeStampingBrokerPlugin topic uniquePropertyMessageEvictionStrategy virtualDestinationInterceptor virtualTopic
vmCursor vmDurableCursor vmQueueCursor networkConnector kahaDB systemUsage
authorizationEntries defaultEntry deadLetterStrategy destinationInterceptors destinationPolicy destinations
dispatchPolicy map messageEvictionStrategy messageGroupMapFactory networkConnectors pendingDurableSubscriberPolicy
pendingMessageLimitStrategy pendingQueuePolicy pendingSubscriberPolicy persistenceAdapter plugins policyEntries
redeliveryPolicyEntries slowConsumerStrategy staticallyIncludedDestinations excludedDestinations
dynamicallyIncludedDestinations subscriptionRecoveryPolicy tempDestinationAuthorizationEntry
virtualDestinations forwardTo
""".split())

DEFAULT_ACTIVEMQ = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<broker xmlns="http://activemq.apache.org/schema/core">
  <!-- mqemu's default Amazon MQ configuration: add policies and authorization entries here -->
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry topic="&gt;" gcInactiveDestinations="true" inactiveTimoutBeforeGC="600000"/>
        <policyEntry queue="&gt;" gcInactiveDestinations="true" inactiveTimoutBeforeGC="600000"/>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
  <plugins>
  </plugins>
</broker>
"""

DEFAULT_RABBITMQ = """# mqemu's default Amazon MQ configuration for RabbitMQ (rabbitmq.conf)
# how long a delivery may stay unacknowledged, in milliseconds (30 minutes)
consumer_timeout = 1800000
"""


def default_data(engine: str) -> str:
    """A new configuration's first revision, base64 as on the wire."""
    text = DEFAULT_ACTIVEMQ if engine == "ACTIVEMQ" else DEFAULT_RABBITMQ
    return base64.b64encode(text.encode()).decode()


def decode(data: str) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The configuration data must be base64-encoded UTF-8 text.", "data") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def sanitize(engine: str, data: str) -> tuple[str, list[dict[str, Any]]]:
    """The data Amazon MQ keeps (base64) and its warnings, for UpdateConfiguration."""
    text = decode(data)
    if engine != "ACTIVEMQ":  # kept as given, once the nodes' loader accepts it
        try:
            parse_rabbitmq_conf(text, amazon_mq=True)
        except ConfigError as e:
            raise bad_request(f"The configuration data is not in rabbitmq.conf format: {e}.", "data") from None
        return data, []
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise bad_request(f"The configuration data is not well-formed XML: {e}.", "data") from None
    if _local(root.tag) != "broker":
        raise bad_request("The configuration's root element must be <broker>.", "data")
    warnings: list[dict[str, Any]] = []
    _sanitize_element(root, warnings)
    if not warnings:
        return data, []
    ET.register_namespace("", "http://activemq.apache.org/schema/core")
    kept = ET.tostring(root, encoding="unicode")
    return base64.b64encode(('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + kept).encode()).decode(), \
        warnings


def _sanitize_element(element: ET.Element, warnings: list[dict[str, Any]]) -> None:
    name = _local(element.tag)
    for attr, value in list(element.attrib.items()):
        if "${" in value or "#{" in value:
            del element.attrib[attr]
            warnings.append({"ElementName": name, "AttributeName": attr, "Reason": "INVALID_ATTRIBUTE_VALUE_REMOVED"})
    for child in list(element):
        if not isinstance(child.tag, str):
            continue  # a comment or processing instruction
        if _local(child.tag) not in PERMITTED:
            element.remove(child)
            warnings.append({"ElementName": _local(child.tag), "Reason": "DISALLOWED_ELEMENT_REMOVED"})
        else:
            _sanitize_element(child, warnings)


def check_applicable(engine: str, data: str) -> None:
    """Refuse (400) sanitized ActiveMQ XML the nodes could not apply at reboot (a value
    ``activemq_xml`` cannot use), naming the element and why. (A rabbitmq.conf went through
    ``rabbitmq_conf``'s parser in ``sanitize`` already.)"""
    if engine != "ACTIVEMQ":
        return
    try:
        parse_activemq_xml(decode(data))
    except ConfigError as e:
        raise bad_request(f"The configuration data cannot be applied: {e}.", "data") from None
