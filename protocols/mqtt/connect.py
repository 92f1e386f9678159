"""CONNECT and the session it opens: authentication, permissions, taking over, resuming or
starting a session (MQTT 5.0 4.1, 3.1.1 4.1), the CONNACK, and leaving the session again
when the connection closes (a clean session ends, a persistent one waits for its expiry).

Permissions (RabbitMQ flavour) follow RabbitMQ's MQTT plugin: a publish needs ``write`` on
the ``amq.topic`` exchange; a subscription needs ``read`` on that exchange and
``configure``, ``write`` and ``read`` on the queue that serves it (the session queue, or a
shared subscription's group queue). RabbitMQ's topic permissions (per routing key) are not
modelled; ``[mqtt] deny_publish`` / ``deny_subscribe`` are the core's topic rules on
amq.topic (``AuthRegistry.check_topic``), which also hold the ActiveMQ flavour's
authorization entries for topics.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import Any

from mqemu.broker.errors import AccessRefused, AuthenticationFailed, BrokerError
from mqemu.protocols.session_base import ClosedReason

from .inbound import ProtocolViolation
from .mapping import PUBLISHER
from .packets import Connack, Connect, encode
from .persist import save_session
from .sessions import (
    NEVER_EXPIRES,
    SessionState,
    end_session,
    expiry_due,
    publish_will,
    registry,
    will_due,
)

log = logging.getLogger("mqemu.protocols.mqtt")

MAX_PACKET_SIZE = 268435455  # the largest the Remaining Length allows (5.0 1.5.5)

# Reason codes used here (5.0 Table 2-6).
PROTOCOL_ERROR = 0x82
CLIENT_ID_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
BAD_AUTHENTICATION_METHOD = 0x8C


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


def settings(broker: Any) -> dict[str, Any]:
    """The config file's ``[mqtt]`` section."""
    section = broker.config.extra.get("mqtt", {})
    return section if isinstance(section, dict) else {}


class ConnectMixin:
    """Mixed into ``MqttConnection``."""

    # -- CONNECT ------------------------------------------------------------------------
    def _on_connect(self, p: Any) -> None:
        if p.__class__ is not Connect:
            raise ProtocolViolation(PROTOCOL_ERROR, "first packet is not CONNECT")  # [MQTT-3.1.0-1]
        self.level = level = p.protocol_level
        props = p.properties
        if "authentication_method" in props:
            # mqemu offers no enhanced authentication (5.0 4.12).
            return self._refuse(BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported")
        client_id = p.client_id
        assigned = None
        if not client_id:
            if level < 5 and (level == 3 or not p.clean_start):
                # [MQTT-3.1.3-8]: an empty id needs clean session 1 (3.1 needs 1-23 chars).
                return self._refuse(CLIENT_ID_NOT_VALID, "empty client identifier")
            client_id = assigned = "mqemu-" + os.urandom(9).hex()  # [MQTT-3.1.3-6]
        vhost = self._login(p)
        if vhost is None:
            return
        self.vhost, self.client_id = vhost, client_id
        self.publisher_fields = PUBLISHER.add(None, client_id)
        self.keep_alive = p.keep_alive
        server_ka = None
        if level >= 5 and self.server_keep_alive and p.keep_alive > self.server_keep_alive:
            self.keep_alive = server_ka = self.server_keep_alive  # [MQTT-3.2.2-21]
        if level >= 5:
            self.prefetch = props.get("receive_maximum", 65535)
            self.max_out = props.get("maximum_packet_size", MAX_PACKET_SIZE)
            self.alias_out_max = props.get("topic_alias_maximum", 0)
            expiry = props.get("session_expiry_interval", 0)
        else:
            expiry = 0 if p.clean_start else NEVER_EXPIRES
        self.connect_expiry = expiry
        if not self._may_take(client_id):
            # RabbitMQ 3.10 answers 3, server unavailable (5.0: 0x88), as its queue declare
            # fails; it has already closed a connected owner by then, mqemu keeps it (a
            # DELIBERATE difference: a user who may not have the session cannot end it).
            return self._refuse(SERVER_UNAVAILABLE, f"access to the session of client id '{client_id}' "
                                f"refused for user '{self.user.name}'")
        present = self._take_session(client_id, p.clean_start, expiry)
        will = p.will  # a will is a publish too
        if will is not None and (self.publish_refused or (self.topic_guard and not self._may_publish(will.topic))):
            will = None
        self.will = will
        self.state = State.CONNECTED
        self.deadline = None
        self.decoder.max_packet_size = self.max_packet_size
        self.send(encode(Connack(present, 0, self._connack_props(props, assigned, server_ka)), level))
        if self.broker.memory_alarm:
            self.on_alarm(True)
        self._attach()

    def _login(self, p: Connect) -> Any:
        """Authenticate as the engine does (``AuthRegistry.login``) and open vhost "/".
        None after refusing the CONNECT. RabbitMQ: an anonymous client logs in as the
        plugin's default user (``[mqtt] allow_anonymous``, ``default_user``,
        ``default_pass``); bad credentials get 0x86 (3.x: 4). ActiveMQ: its authentication
        plugin's SecurityException, which its MQTT converter answers with "not authorized"
        (3.x: 5, 5.0: 0x87; MQTTProtocolConverter.onMQTTConnect in 5.17)."""
        broker = self.broker
        cfg = settings(broker)
        default = ((cfg.get("default_user", "guest"), cfg.get("default_pass", "guest"))
                   if cfg.get("allow_anonymous", True) else None)
        password = None if p.password is None else p.password.decode("utf-8", "replace")
        try:
            self.user = user = broker.auth.login(p.username, password, self.peer, default)
            vhost = broker.open_vhost(user, "/")
            self.publish_refused = not self.allowed("write", "exchange", "amq.topic")
            return vhost
        except AuthenticationFailed as e:
            self._refuse(NOT_AUTHORIZED if e.not_authorized else BAD_USER_NAME_OR_PASSWORD, e.text)
        except BrokerError as e:
            self._refuse(NOT_AUTHORIZED, e.text)
        return None

    def _may_take(self, client_id: str) -> bool:
        """May this user take over (or clean) the session the client id already has? As on
        RabbitMQ, whose MQTT plugin redeclares (or, clean, deletes) the session's queue as
        the connecting user: any user may, given configure, write and read on that queue
        (``mqtt-subscription-<client id>qos1``), whoever opened the session. On the ActiveMQ
        flavour there are no queue permissions: the new user takes it (ActiveMQ's link
        stealing) and each resumed subscription is authorised again (``_take_session``)."""
        old = registry(self.broker).get((self.vhost.name, client_id))
        if old is None or old.ended or self.user is None:
            return True
        return self._may_subscribe(old.queue_name)

    def _take_session(self, client_id: str, clean_start: bool, expiry: int) -> bool:
        """Take over, resume or start the client's session; True when one is resumed."""
        reg = registry(self.broker)
        key = (self.vhost.name, client_id)
        old = reg.get(key)
        if old is not None and old.connection is not None:
            old.connection.taken_over(clean_start)
        if old is not None and old.pending_will is not None:
            will, cid = old.pending_will
            old.pending_will = None
            if clean_start:  # the old session ends now, so its delayed will is due [MQTT-3.1.3-9]
                publish_will(self.broker, self.vhost, will, cid)
        present = old is not None and not clean_start and not old.ended
        if present:
            state = old
            if self.topic_guard:
                self._authorize_resumed(state)
        else:
            if old is not None:
                old.end()
            state = SessionState(client_id, self.vhost, expiry)
            state.registry = reg
            reg[key] = state
        state.expiry = expiry
        state.generation += 1
        state.connection = self
        self.session = state
        save_session(state)
        return present

    def _authorize_resumed(self, state: SessionState) -> None:
        """Resumed subscriptions are authorised again for the connecting user, as ActiveMQ
        restores an MQTT client's durable subscriptions (each a new consumer the
        authorization broker checks): one refused is dropped, with what it had queued."""
        for text, sub in list(state.subs.items()):
            if not self._may_read(sub.binding):
                del state.subs[text]
                state.unbind(sub.binding)
        for text, sub in list(state.shared.items()):
            if not self._may_read(sub.binding):
                del state.shared[text]
                state.leave_group(sub)

    def allowed(self, what: str, kind: str, name: str) -> bool:
        """RabbitMQ's configure/write/read check for the connection's user (see the module
        docstring); always True on the ActiveMQ flavour."""
        try:
            self.broker.auth.check(self.user, self.vhost.name if self.vhost else "/", what, kind, name)
        except AccessRefused as e:
            log.info("%s", e.text, extra={"conn": self.conn_id})
            return False
        return True

    def _connack_props(self, req: dict[str, Any], assigned: str | None, server_ka: int | None) -> dict[str, Any]:
        if self.level < 5:
            return {}
        props: dict[str, Any] = {}
        if assigned is not None:
            props["assigned_client_identifier"] = assigned
        if server_ka is not None:
            props["server_keep_alive"] = server_ka
        if self.receive_maximum < 65535:
            props["receive_maximum"] = self.receive_maximum
        if self.max_packet_size < MAX_PACKET_SIZE:
            props["maximum_packet_size"] = self.max_packet_size
        props["topic_alias_maximum"] = self.alias_in_max
        props["retain_available"] = 1
        props["wildcard_subscription_available"] = 1
        props["subscription_identifier_available"] = 1
        props["shared_subscription_available"] = 1
        if req.get("request_response_information"):
            props["response_information"] = "response/" + self.client_id
        return props

    def _attach(self) -> None:
        """Resume deliveries: unacknowledged ones first, then the queues' consumers."""
        state = self.session
        self.resend_inflight()
        for sub in state.shared.values():
            self._subscribe_shared(sub, None)
        if state.queue_name in self.vhost.queues:
            self._refresh_session_consumer()

    def _refuse(self, code: int, text: str) -> None:
        """CONNACK with a refusal, then close [MQTT-3.2.2-5] (3.x: the nearest return code)."""
        log.info("CONNECT refused: %s", text, extra={"conn": self.conn_id, "reason_code": code})
        props = {"reason_string": text} if self.level >= 5 else {}
        self.send(encode(Connack(False, code, props), self.level))
        self._close(ClosedReason.AUTH_FAILED if code in (0x86, 0x87) else ClosedReason.PROTOCOL_ERROR,
                    will=False, linger=True)

    def _detach(self, send_will: bool) -> None:
        """Leave the session: drop consumers, then end it or let it wait for its expiry."""
        state = self.session
        for q, c in list(self.consumers.items()):
            if c is not self.session_consumer:
                self._release_shared(q, c)
            q.remove_consumer(c)
        self.consumers.clear()
        self.session_consumer = None
        if state.connection is not self:
            return  # taken over: the session is the new connection's now
        state.connection = None
        will = self.will if send_will else None
        broker, vhost = self.broker, self.vhost
        if will is not None:
            delay = min(will.properties.get("will_delay_interval", 0), state.expiry)
            if delay == 0:
                publish_will(broker, vhost, will, self.client_id)
            else:
                state.pending_will = (will, self.client_id)
                gen = state.generation
                vhost.timers.call_at(vhost.clock() + delay, lambda now: will_due(broker, state, gen))
        if state.expiry == 0:
            end_session(broker, state)
            return
        save_session(state, disconnected=True)
        if state.expiry != NEVER_EXPIRES:
            gen = state.generation
            vhost.timers.call_at(vhost.clock() + state.expiry, lambda now: expiry_due(broker, state, gen))
