"""What every management API handler shares: the request's user and its tags, vhost names
from the path (``%2F`` for ``/``), JSON bodies and RabbitMQ's error bodies and codes.

RabbitMQ's management plugin answers an error with ``{"error": ..., "reason": ...}``: 401
``not_authorized`` / ``not_authorised`` (login failed, missing tag, no access to a vhost),
404 ``Object Not Found``, 400 ``bad_request`` (bad JSON, inequivalent declare), 405 with an
``allow`` header and no body, 413 for a body over the limit.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mqemu.broker.auth import User
from mqemu.broker.errors import AuthenticationFailed, BrokerError, NotFound

# The largest request body the API takes (RabbitMQ's management.http_max_body_size: 20 MiB).
MAX_BODY = 20 * 1024 * 1024
REALM = 'Basic realm="RabbitMQ Management"'
MANAGEMENT_TAGS = ("management", "policymaker", "monitoring", "administrator")


class HttpError(Exception):
    """An error answered as RabbitMQ does: status, ``error`` and ``reason``."""

    def __init__(self, status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.headers = status, error, reason, headers

    def response(self) -> Response:
        if not self.error:  # no credentials at all: RabbitMQ sends the challenge and no body
            return Response(status_code=self.status, headers=self.headers)
        return JSONResponse({"error": self.error, "reason": self.reason}, self.status, headers=self.headers)


def not_found() -> HttpError:
    return HttpError(404, "Object Not Found", "Not Found")


def bad_request(reason: str) -> HttpError:
    return HttpError(400, "bad_request", reason)


def not_authorised(reason: str) -> HttpError:
    return HttpError(401, "not_authorised", reason)


def from_broker_error(e: BrokerError) -> HttpError:
    """A core error met while doing what a request asked (RabbitMQ: 400 with its text,
    404 for what is not there)."""
    if isinstance(e, NotFound):
        return not_found()
    return bad_request(e.text)


def ok(data: Any = None, status: int = 200) -> Response:
    return JSONResponse(data, status) if data is not None else Response(status_code=status)


class JsonList:
    """A list answer built and encoded in slices of ``SLICE`` objects, the node's loop running
    between them (``mgmt`` streams it): listing thousands of queues never holds message
    traffic for the whole listing. ``objects`` is taken whole first (references only), so
    the broker may change while it is rendered; ``render`` makes each one's JSON."""

    SLICE = 100

    def __init__(self, objects: list[Any], render: Any = None) -> None:
        self.objects = objects
        self.render = render

    def slices(self) -> Any:
        render = self.render
        for i in range(0, len(self.objects), self.SLICE):
            part = self.objects[i:i + self.SLICE]
            yield [render(o) for o in part] if render is not None else part


def no_content() -> Response:
    return Response(status_code=204)


def created_or_updated(created: bool) -> Response:
    return Response(status_code=201 if created else 204)


def segment(request: Request, name: str) -> str:
    """A path parameter, percent-decoded (the router sees the raw path, so ``%2F`` stays in
    its segment)."""
    return unquote(request.path_params[name])


class Ctx:
    """One request's view: the node, the broker and the authenticated user."""

    def __init__(self, request: Request, node: Any, user: User) -> None:
        self.request = request
        self.node = node
        self.broker = node.broker
        self.user = user

    @property
    def tags(self) -> tuple[str, ...]:
        return self.user.tags

    def is_admin(self) -> bool:
        return "administrator" in self.user.tags

    def is_monitor(self) -> bool:
        return "administrator" in self.user.tags or "monitoring" in self.user.tags

    def is_policymaker(self) -> bool:
        return "administrator" in self.user.tags or "policymaker" in self.user.tags

    def need_admin(self) -> None:
        if not self.is_admin():
            raise not_authorised("Not administrator user")

    def need_monitor(self) -> None:
        if not self.is_monitor():
            raise not_authorised("Not monitor user")

    def need_policymaker(self) -> None:
        if not self.is_policymaker():
            raise not_authorised("Not policymaker user")

    def can_see_vhost(self, name: str) -> bool:
        return self.is_monitor() or (self.user.name, name) in self.broker.auth.permissions

    def visible_vhosts(self) -> list[Any]:
        return [vh for name, vh in self.broker.vhosts.items() if self.can_see_vhost(name)]

    def vhost(self, name: str, *, missing: HttpError | None = None) -> Any:
        """The vhost named in the path: 404 when absent, 401 when the user has no access
        (administrators and monitoring users see every vhost, as on RabbitMQ)."""
        vh = self.broker.vhosts.get(name)
        if vh is None:
            raise missing or not_found()
        if not self.is_admin() and (self.user.name, name) not in self.broker.auth.permissions:
            raise not_authorised("User not authorised to access virtual host")
        return vh

    def vhosts_from_path(self) -> list[Any]:
        """Every vhost the user sees, or the one named by ``vhost`` in the path."""
        if "vhost" in self.request.path_params:
            name = segment(self.request, "vhost")
            vh = self.broker.vhosts.get(name)
            if vh is None:
                raise not_found()
            if not self.can_see_vhost(name):
                raise not_authorised("User not authorised to access virtual host")
            return [vh]
        return self.visible_vhosts()

    def check(self, vhost: str, what: str, kind: str, name: str) -> None:
        """RabbitMQ's permission check for an object operation (401 when refused)."""
        try:
            self.broker.auth.check(self.user, vhost, what, kind, name)
        except BrokerError:
            raise not_authorised("User not authorised to access object") from None

    async def body(self) -> dict[str, Any]:
        """The request's JSON object (400 ``not_json`` when it is not one; an empty body is
        ``{}``)."""
        raw = await read_body(self.request)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise bad_request("not_json") from None
        if not isinstance(data, dict):
            raise bad_request("not_json")
        return data


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 past MAX_BODY (counted as it arrives)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise HttpError(413, "bad_request", "payload_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(413, "bad_request", "payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def authenticate(request: Request, broker: Any) -> User:
    """Basic auth against the node's users (their passwords or password hashes), then a
    management tag. 401 with RabbitMQ's bodies otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise HttpError(401, "", "", headers={"www-authenticate": REALM})
    try:
        username, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise HttpError(401, "not_authorized", "Login failed", headers={"www-authenticate": REALM}) from None
    try:
        peer = request.client.host if request.client else None
        user = broker.auth.authenticate(username, password, peer)
    except AuthenticationFailed:
        raise HttpError(401, "not_authorized", "Login failed", headers={"www-authenticate": REALM}) from None
    if not any(t in MANAGEMENT_TAGS for t in user.tags):
        raise not_authorised("Not management user")
    return user


def flag(value: Any, default: bool = False) -> bool:
    """A JSON boolean as rabbitmqadmin and pyrabbit2 send it (true, "true")."""
    if value is None:
        return default
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)
