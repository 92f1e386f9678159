"""Errors the core raises. Each protocol session maps them to its own wire error.

Every error carries a short ``text`` meant for the client: what was wrong, with the
resource's name. The kinds mirror the AMQP 0-9-1 reply codes the RabbitMQ engine uses, because
those are the richest set; STOMP and MQTT sessions fold them into their own forms.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error the core raises on a client's request.

    ``soft`` errors concern one channel or request (the AMQP channel closes); the others
    concern the whole connection.
    """

    code = 541  # INTERNAL_ERROR
    name = "INTERNAL_ERROR"
    soft = False

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"{self.name} - {self.text}"


class NotFound(BrokerError):
    code, name, soft = 404, "NOT_FOUND", True


class AccessRefused(BrokerError):
    code, name, soft = 403, "ACCESS_REFUSED", True


class ResourceLocked(BrokerError):
    code, name, soft = 405, "RESOURCE_LOCKED", True


class PreconditionFailed(BrokerError):
    code, name, soft = 406, "PRECONDITION_FAILED", True


class InvalidSelector(PreconditionFailed):
    """A JMS message selector that does not parse (JMS 1.1 §3.8.1; InvalidSelectorException).

    ActiveMQ: the exception's message is the selector text itself and the parse error is
    its cause; ``text`` is the selector, ``reason`` the parse error.
    """

    def __init__(self, selector: str, reason: str = "") -> None:
        super().__init__(selector)
        self.selector = selector
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.name} - Invalid selector '{self.selector}': {self.reason}"


class ResourceError(BrokerError):
    """The broker lacks the resources (memory, a limit was reached) to do what was asked."""

    code, name, soft = 506, "RESOURCE_ERROR", False


class NotAllowed(BrokerError):
    code, name, soft = 530, "NOT_ALLOWED", False


class CommandInvalid(BrokerError):
    code, name, soft = 503, "COMMAND_INVALID", False


class NotImplementedByBroker(BrokerError):
    code, name, soft = 540, "NOT_IMPLEMENTED", False


class InternalError(BrokerError):
    code, name, soft = 541, "INTERNAL_ERROR", False


class AuthenticationFailed(BrokerError):
    """Wrong user name or password, or a user that may not log in from where it is.

    ``not_authorized``: the engine refuses it as a security failure rather than as bad
    credentials (ActiveMQ's SecurityException; MQTT says "not authorized" for it)."""

    code, name, soft = 403, "ACCESS_REFUSED", False

    def __init__(self, text: str, not_authorized: bool = False) -> None:
        super().__init__(text)
        self.not_authorized = not_authorized
