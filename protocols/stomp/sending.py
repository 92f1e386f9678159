"""SEND (STOMP 1.2, "SEND"), mixed into the session: a frame's destination resolved to the
core's (exchange, routing key) targets, its headers mapped to message properties as the
engine's flavour maps them, the write checks, and the publish.

RabbitMQ's plugin resolves (and declares) a destination and checks the write permission
once per connection; a destination whose checks all passed is kept in the session's
``send_checked``, and the next SENDs to it go straight to the property mapping and the
publish: the per-message path does no per-destination work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mqemu.broker.errors import PreconditionFailed
from mqemu.broker.message import Message
from mqemu.broker.promise import both

from .codec import Frame
from .errors import StompError
from .mapping import TEXT_FIELDS, activemq_properties, rabbit_properties

if TYPE_CHECKING:
    from mqemu.broker.promise import Promise


class SendMixin:
    def _on_send(self, f: Frame) -> bool:
        """Publish a SEND (or keep it for its transaction's COMMIT); True when its receipt
        will come later (once safe: on disk)."""
        h = f.headers
        if "transaction" in h:
            self._transaction(h["transaction"]).append(f)
            # RabbitMQ: its receipt comes at COMMIT, once published (none after ABORT);
            # ActiveMQ: now.
            return self.flavour.TX_SEND_RECEIPT_AT_COMMIT
        return self._receipt_when(f, self._publish(f))

    def _publish(self, f: Frame) -> "Promise | None":
        """Route a SEND's message; returns the core's promise of when it is safe (None: at
        once), which its receipt waits for.

        A destination this connection already sent to (``send_checked``: RabbitMQ resolves
        and checks it once per connection) skips its resolution and write checks; the
        first SEND to it, and any SEND with a ``message-id`` header, take every check, in
        the order the engine makes them."""
        h = f.headers
        dest = h.get("destination")
        checked = self.send_checked.get(dest)  # None (no destination) is never a key
        if checked is None or "message-id" in h:
            targets = self._send_targets(dest, h)
        else:
            targets = checked
        reply_to = h.get("reply-to")
        if reply_to is not None:
            rewritten = self.destinations.rewrite_reply_to(reply_to)
            if rewritten != reply_to:
                h = dict(h, **{"reply-to": rewritten})
        amqp_form = self.amqp_form  # RabbitMQ's mapping; else ActiveMQ's
        if amqp_form:
            props = rabbit_properties(h)
            user_id = props.get("user_id")
            if user_id is not None and user_id != self.user.name:
                raise PreconditionFailed(f"user_id property set to '{user_id}' but authenticated "
                                         f"user was '{self.user.name}'")
        else:
            props = activemq_properties(h, int(self.wallclock() * 1000))
        self.published = True
        if checked is None:
            self._check_send(dest, targets)
        fields = None if amqp_form or "content-length" in h else TEXT_FIELDS
        vhost = self.vhost
        body = f.body
        if len(targets) == 1:
            exchange, key = targets[0]
            return vhost.publish_safe(exchange, key, Message(exchange, key, body, props, None, fields))[2]
        safe = None
        for exchange, key in targets:
            kept = vhost.publish_safe(exchange, key, Message(exchange, key, body, dict(props), None, fields))[2]
            if kept is not None:
                safe = both(safe, kept)
        return safe

    def _send_targets(self, dest: str | None, h: dict[str, str]) -> list[tuple[str, str]]:
        """The (exchange, routing key) pairs a SEND to ``dest`` goes to (may declare them)."""
        if dest is None:
            raise self.flavour.refusal(StompError("Missing destination",
                                                  "SEND must include a 'destination' header\n"),
                                       "SEND received without a Destination specified!")
        flavour = self.flavour
        if flavour.SEND_REFUSES_MESSAGE_ID and "message-id" in h:
            raise StompError("Invalid header", "'message-id' is not allowed on 'SEND'.\n")
        targets = self.send_routes.get(dest)
        if targets is None:
            targets = self.destinations.send_targets(dest, h)
            if flavour.CACHES_SEND_ROUTES:  # RabbitMQ resolves (and declares) it once per connection
                self.send_routes[dest] = targets
        return targets

    def _check_send(self, dest: str | None, targets: list[tuple[str, str]]) -> None:
        """The user may write to every target, or this raises. Passed checks are remembered
        per connection (RabbitMQ caches permission checks per connection too; ActiveMQ its
        authorised write destinations); a cached route whose checks are all remembered goes
        to ``send_checked``."""
        allowed = self.write_allowed
        for exchange, _key in targets:
            if exchange not in allowed:
                self.check("write", "exchange", exchange or "amq.default")
                allowed.add(exchange)
        if self.topic_guard:
            # Topic rules, checked for every target before any is published to.
            for exchange, key in targets:
                if exchange == "amq.topic" and (exchange, key) not in allowed:
                    self.check_topic("write", key)
                    if len(allowed) < 1024:
                        allowed.add((exchange, key))
            if any(exchange == "amq.topic" and (exchange, key) not in allowed for exchange, key in targets):
                return  # a key past the remembered ones: checked again next time
        if self.send_routes.get(dest) is targets:
            self.send_checked[dest] = targets
