"""Users, permissions and the one login call every protocol's CONNECT makes, per engine.

RabbitMQ engine: a permission is three regular expressions over resource names, for
``configure`` (declare, delete), ``write`` (publish, bind to a queue) and ``read`` (consume,
get, bind from an exchange). ``guest`` may log in from loopback only unless the config says
otherwise (RabbitMQ's ``loopback_users``).

ActiveMQ engine: the model of ActiveMQ's ``simpleAuthenticationPlugin`` (users with
passwords and groups, optional anonymous access) and ``authorizationPlugin``
(``authorizationEntries``: a queue or topic pattern with ActiveMQ wildcards and the groups
that may ``read``, ``write`` and ``admin`` it, plus one entry for temporary destinations).
Without users in the config file the engine is stock ActiveMQ without an authentication
plugin: every login is accepted and nothing is authorised (``AuthRegistry.open``). Without
``[[authorization]]`` entries there is only authentication (ActiveMQ with the authentication
plugin alone).

Both engines: ``deny_publish`` / ``deny_subscribe`` (the ``[mqtt]`` section's keys) are topic
rules on ``amq.topic`` for every user and every protocol (``check_topic``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .errors import AccessRefused, AuthenticationFailed


# RabbitMQ's password hashing modules -> hashlib's name (rabbit_password_hashing_*).
HASHING_ALGORITHMS = {
    "rabbit_password_hashing_sha256": "sha256",
    "rabbit_password_hashing_sha512": "sha512",
    "rabbit_password_hashing_md5": "md5",
}
DEFAULT_HASHING = "rabbit_password_hashing_sha256"


def hash_password(password: str, algorithm: str = DEFAULT_HASHING, salt: bytes | None = None) -> str:
    """RabbitMQ's password hash: base64 of a 4-byte salt followed by H(salt + password)."""
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.new(HASHING_ALGORITHMS[algorithm], salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password_hash(password_hash: str, algorithm: str, password: str) -> bool:
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) < 5 or algorithm not in HASHING_ALGORITHMS:
        return False
    return hmac.compare_digest(hash_password(password, algorithm, raw[:4]).encode(), password_hash.encode())


@dataclass(slots=True)
class User:
    name: str
    password: str
    tags: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()  # ActiveMQ: the user's groups
    # RabbitMQ definitions: a user known by its password hash only (``password`` unused);
    # an empty hash means no password login (RabbitMQ's passwordless users).
    password_hash: str | None = None
    hashing_algorithm: str = DEFAULT_HASHING

    def password_matches(self, password: str) -> bool:
        if self.password_hash is not None:
            return bool(self.password_hash) and check_password_hash(self.password_hash, self.hashing_algorithm,
                                                                    password)
        return hmac.compare_digest(self.password.encode(), password.encode())


@dataclass(frozen=True, slots=True)
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


@dataclass(frozen=True, slots=True)
class AuthorizationEntry:
    """ActiveMQ's ``authorizationEntry``: ``kind`` is "queue", "topic" or "temp" (the
    ``tempDestinationAuthorizationEntry``, no pattern); each operation lists groups, "*" any."""

    kind: str
    pattern: str
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    admin: frozenset[str] = frozenset()

    def groups(self, op: str) -> frozenset[str]:
        return self.read if op == "read" else self.write if op == "write" else self.admin


# RFC 4514's short names of the attributes a certificate's subject usually has
_DN_KEYS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
            "localityName": "L", "stateOrProvinceName": "ST", "streetAddress": "STREET", "domainComponent": "DC",
            "userId": "UID"}


def _dn_escape(value: str) -> str:
    """RFC 4514's escapes in an attribute value."""
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


# ActiveMQ's SecurityException texts (AuthorizationBroker.addConsumer / send / addDestination).
_VERBS = {"read": "read from", "write": "write to", "admin": "create"}


@dataclass(slots=True)
class AuthRegistry:
    users: dict[str, User] = field(default_factory=dict)
    permissions: dict[tuple[str, str], Permission] = field(default_factory=dict)
    loopback_users: set[str] = field(default_factory=lambda: {"guest"})
    simple: bool = False  # ActiveMQ's model (the engine profile's simple_authentication)
    # True when the config file lists users (ActiveMQ: the authentication plugin is on).
    users_configured: bool = False
    # ActiveMQ: simpleAuthenticationPlugin's anonymousAccessAllowed, anonymousUser/Group.
    anonymous_access: bool = False
    anonymous_user: str = "anonymous"
    anonymous_group: str = "anonymous"
    # ActiveMQ: authorizationEntries (None: no authorization plugin) and the temp entry.
    authorization: list[AuthorizationEntry] | None = None
    temp_authorization: AuthorizationEntry | None = None
    # Topic rules on amq.topic for everyone: routing-key filters (``.`` words, ``*``, ``#``).
    deny_publish: tuple[str, ...] = ()
    deny_subscribe: tuple[str, ...] = ()
    _compiled: dict[str, re.Pattern] = field(default_factory=dict)
    _created_topics: set[str] = field(default_factory=set)
    # Sessions that remember granted checks per connection (``forget_grants()``): told
    # when users or permissions change, so a revoked permission refuses the next publish,
    # as RabbitMQ 3.10 refuses it on the same channel.
    grant_holders: "weakref.WeakSet[Any]" = field(default_factory=weakref.WeakSet)
    # RabbitMQ's auth_mechanisms (``--auth-mechanisms``): EXTERNAL (rabbitmq_auth_mechanism_ssl)
    # is off by default; with it, AMQP offers EXTERNAL on a TLS connection with a verified
    # client certificate, and STOMP and MQTT clients without a login there are the
    # certificate's user (their plugins' ssl_cert_login).
    mechanisms: tuple[str, ...] = ("PLAIN", "AMQPLAIN")
    # ssl_cert_login_from: which part of the certificate's subject names the user,
    # ``common_name`` (the CN) or ``distinguished_name`` (RFC 4514's string of the subject)
    cert_login_from: str = "common_name"

    @classmethod
    def default(cls) -> "AuthRegistry":
        reg = cls()
        reg.users["guest"] = User("guest", "guest", ("administrator",))
        reg.permissions[("guest", "/")] = Permission()
        return reg

    # -- authentication -------------------------------------------------------------------
    @property
    def open(self) -> bool:
        """ActiveMQ without users in the config: stock ActiveMQ without an authentication
        plugin, which lets everyone in."""
        return self.simple and not self.users_configured

    @property
    def guards_topics(self) -> bool:
        """Whether ``check_topic`` can refuse anything (a publish path tests this first)."""
        return bool(self.deny_publish or self.deny_subscribe
                    or (self.simple and self.authorization is not None))

    @property
    def external(self) -> bool:
        return "EXTERNAL" in self.mechanisms

    def certificate_name(self, subject: tuple) -> str:
        """The user name a certificate's subject (the ssl module's form) gives, as
        ``cert_login_from`` says: its common name, or its distinguished name as RFC 4514
        writes it (the last RDN first, ``CN=alice,O=example``)."""
        if self.cert_login_from == "distinguished_name":
            return ",".join("+".join(f"{_DN_KEYS.get(k, k)}={_dn_escape(str(v))}" for k, v in rdn)
                            for rdn in reversed(subject))
        for rdn in subject:
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return ""

    def certificate_login(self, subject: tuple, peer_host: str | None) -> User:
        """EXTERNAL: the user named by a verified client certificate's subject
        (``certificate_name``), with no password; the loopback rule still applies. Raises
        AuthenticationFailed."""
        name = self.certificate_name(subject)
        user = self.users.get(name)
        if user is None or self.simple:
            raise AuthenticationFailed(
                "Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile.")
        if name in self.loopback_users and peer_host is not None and not _is_loopback(peer_host):
            raise AuthenticationFailed(f"User '{name}' can only connect via localhost")
        return user

    def login(self, username: str | None, password: str | None, peer_host: str | None,
              default: tuple[str, str] | None = None, certificate: tuple | None = None) -> User | None:
        """The login of a STOMP or MQTT CONNECT, as the engine checks it. Returns the user,
        or None when everyone is let in (ActiveMQ without users). Raises AuthenticationFailed.

        RabbitMQ: no user name means the protocol plugin's default user (``default``; None:
        anonymous logins are refused), then ``authenticate``. ActiveMQ:
        SimpleAuthenticationBroker.authenticate: anonymous access when allowed and neither a
        name nor a password came, else the password must match (no loopback rule).
        ``certificate``: the subject of the connection's verified client certificate, which
        names the user of a RabbitMQ login without a name when EXTERNAL is on
        (``ssl_cert_login``)."""
        if self.simple:
            if not self.users_configured:
                return None
            if self.anonymous_access and username is None and password is None:
                return User(self.anonymous_user, "", (), frozenset((self.anonymous_group,)))
            user = self.users.get(username) if username is not None else None
            if user is None or password is None or not user.password_matches(password):
                # ActiveMQ: SimpleAuthenticationBroker.authenticate's SecurityException (Java
                # writes a missing name as "null").
                shown = "null" if username is None else username
                raise AuthenticationFailed(f"User name [{shown}] or password is invalid.",
                                           not_authorized=True)
            return user
        if username is None and certificate is not None and "EXTERNAL" in self.mechanisms:
            return self.certificate_login(certificate, peer_host)  # ssl_cert_login
        if username is None:
            if default is None:
                raise AuthenticationFailed("anonymous connections are not allowed", not_authorized=True)
            username, password = default
        return self.authenticate(username, password or "", peer_host)

    def authenticate(self, username: str, password: str, peer_host: str | None) -> User:
        """Raises AuthenticationFailed for an unknown user, a wrong password, or a loopback-only
        user connecting from elsewhere (RabbitMQ; AMQP's login, and ``login``'s)."""
        user = self.users.get(username)
        if user is None or not user.password_matches(password):
            raise AuthenticationFailed(
                "Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
            )
        if username in self.loopback_users and peer_host is not None and not _is_loopback(peer_host):
            raise AuthenticationFailed(
                f"User '{username}' can only connect via localhost"
            )
        return user

    def revoke_grants(self) -> None:
        """Users or permissions changed: every session forgets the checks it remembered."""
        for holder in list(self.grant_holders):
            holder.forget_grants()

    # -- RabbitMQ permissions ---------------------------------------------------------------
    def check_vhost(self, user: User | None, vhost: str) -> None:
        if user is None or self.simple:
            return
        if (user.name, vhost) not in self.permissions:
            raise AccessRefused(f"access to vhost '{vhost}' refused for user '{user.name}'")

    def check(self, user: User | None, vhost: str, what: str, kind: str, name: str) -> None:
        """Raises AccessRefused unless user may do ``what`` (configure/write/read) to name.
        RabbitMQ's permissions; the ActiveMQ engine authorises destinations instead
        (``check_destination``, ``check_topic``)."""
        if user is None or self.simple:
            return
        perm = self.permissions.get((user.name, vhost))
        pattern = getattr(perm, what) if perm is not None else ""
        if pattern == ".*":
            return
        rx = self._compiled.get(pattern)
        if rx is None:
            rx = self._compiled[pattern] = re.compile(pattern)
        if not pattern or not rx.match(name):
            raise AccessRefused(
                f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user.name}'"
            )

    # -- ActiveMQ authorization -------------------------------------------------------------
    def check_destination(self, user: User | None, op: str, kind: str, name: str,
                          exists: bool = True, temporary: bool = False) -> None:
        """ActiveMQ's AuthorizationBroker for ``op`` (read/write) on ``kind`` ("queue" or
        "topic", ActiveMQ's name and wildcards), then ``admin`` when the destination does
        not exist yet (creating it). Raises AccessRefused with ActiveMQ's text. Nothing
        is checked on the RabbitMQ engine, without users, or without authorization entries."""
        if user is None or self.authorization is None or not self.simple:
            return
        # ActiveMQ: the AuthorizationBroker checks the consumer or the send first; the
        # region then creates a missing destination, which addDestination checks (admin).
        self._authorize(user, op, kind, name, temporary)
        if not exists:
            self._authorize(user, "admin", kind, name, temporary)

    def _authorize(self, user: User, op: str, kind: str, name: str, temporary: bool) -> None:
        if temporary:
            entry = self.temp_authorization
            if entry is None:  # no tempDestinationAuthorizationEntry: temp destinations are open
                return
            allowed = entry.groups(op)
        else:
            allowed = frozenset().union(*(e.groups(op) for e in self.authorization  # type: ignore[union-attr]
                                          if e.kind == kind and _entry_matches(e.pattern, name)))
        if "*" in allowed or not allowed.isdisjoint(user.groups):
            return
        shown = ("temp-queue" if kind == "queue" else "temp-topic") if temporary else kind
        raise AccessRefused(f"User {user.name} is not authorized to {_VERBS[op]}: {shown}://{name}")

    # -- topics on amq.topic (both engines) -------------------------------------------------
    def check_topic(self, user: User | None, vhost: str, what: str, key: str) -> None:
        """May ``user`` publish to (``write``) or bind/subscribe with (``read``) routing key
        ``key`` on ``amq.topic``? The one check for MQTT topics, STOMP ``/topic/`` and AMQP
        publishes and bindings to amq.topic. Raises AccessRefused.

        ``deny_publish`` refuses a publish whose key a rule matches. ``deny_subscribe``
        refuses a binding whose every topic a rule covers (``secret.#``, ``secret.*``,
        ``secret.pw`` against ``secret.#``): as RabbitMQ's topic permissions, the check is
        made once, on the filter, when the binding is made. A wider filter (``#``,
        ``*.pw``) is granted, and unlike on RabbitMQ (whose ``#`` subscriber receives the
        topics its read permission denies) it never receives a denied topic, live or
        retained: amq.topic routes a topic no one may read to no one
        (``topic_unreadable``, asked once per key and cached by the exchange's trie, so
        publishing pays nothing per message for it). On the ActiveMQ engine the
        authorization entries for ``topic://<key>`` apply too (``admin`` when the topic is
        new, as ActiveMQ creates it)."""
        if what == "write":
            refused = any(_pattern_covers(rule, key) for rule in self.deny_publish)
        else:
            refused = any(_pattern_covers(rule, key) for rule in self.deny_subscribe)
        if refused:
            raise AccessRefused(self._topic_refusal(user, vhost, what, key))
        if self.simple and user is not None and self.authorization is not None:
            name = key.replace("#", ">")
            words = name.split(".")
            exists = "*" in words or ">" in words or name in self._created_topics
            self.check_destination(user, what, "topic", name, exists)
            if not exists and len(self._created_topics) < 100_000:
                self._created_topics.add(name)

    def topic_unreadable(self, key: str) -> bool:
        """A ``deny_subscribe`` rule covers this routing key: amq.topic routes it nowhere
        and no retained message is kept or given for it."""
        return any(_pattern_covers(rule, key) for rule in self.deny_subscribe)

    def _topic_refusal(self, user: User | None, vhost: str, what: str, key: str) -> str:
        if self.simple:
            return (f"User {user.name if user else 'anonymous'} is not authorized to {_VERBS[what]}: "
                    f"topic://{key.replace('#', '>')}")
        # RabbitMQ 3.10's topic permission refusal (the same text for read and write).
        return (f"access to topic '{key}' in exchange 'amq.topic' in vhost '{vhost}' "
                f"refused for user '{user.name if user else 'guest'}'")


@lru_cache(maxsize=4096)
def _pattern_covers(rule: str, topic_filter: str) -> bool:
    """Does the filter ``rule`` (``*`` one word, ``#`` zero or more) match every key the
    filter (or plain routing key) ``topic_filter`` can match?"""
    return _pcover(tuple(rule.split(".")), tuple(topic_filter.split(".")))


def _pcover(r: tuple[str, ...], f: tuple[str, ...]) -> bool:
    if r and r[0] == "#":  # zero words or more of whatever the filter has
        return any(_pcover(r[1:], f[k:]) for k in range(len(f) + 1))
    if not r or not f:
        return not r and not f
    if f[0] == "#":  # the filter reaches keys of any length here; the rule does not
        return False
    if r[0] == "*" or (r[0] == f[0] and f[0] != "*"):
        return _pcover(r[1:], f[1:])
    return False


@lru_cache(maxsize=4096)
def _entry_matches(pattern: str, name: str) -> bool:
    """Does an authorization entry's pattern apply to destination ``name``? As ActiveMQ's
    DestinationMap looks ACLs up (checked against ActiveMQ 5.17): the pattern's ``*`` is one
    word and ``>`` the rest (zero words or more); in a wildcard name, ``*`` stands for any
    word (the union of every entry under it) but ``>`` is only a word, so a ``>`` subscriber
    needs an entry that covers everything (``>``) and ``news.>`` needs one for ``news.>``."""
    return _entry_match(tuple(pattern.split(".")), tuple(name.split(".")))


def _entry_match(p: tuple[str, ...], k: tuple[str, ...]) -> bool:
    if p and p[0] == ">":
        return True
    if not p or not k:
        return not p and not k
    if p[0] == k[0] or p[0] == "*" or k[0] == "*":
        return _entry_match(p[1:], k[1:])
    return False


def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or addr).is_loopback
