"""Users, virtual-host permissions and the loopback rule.

As on RabbitMQ, a permission is three regular expressions over resource names, for
``configure`` (declare, delete), ``write`` (publish, bind to a queue) and ``read`` (consume,
get, bind from an exchange). ``guest`` may log in from loopback only unless the config says
otherwise (RabbitMQ's ``loopback_users``).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass, field

from .errors import AccessRefused, AuthenticationFailed


@dataclass(slots=True)
class User:
    name: str
    password: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


@dataclass(slots=True)
class AuthRegistry:
    users: dict[str, User] = field(default_factory=dict)
    permissions: dict[tuple[str, str], Permission] = field(default_factory=dict)
    loopback_users: set[str] = field(default_factory=lambda: {"guest"})
    _compiled: dict[str, re.Pattern] = field(default_factory=dict)

    @classmethod
    def default(cls) -> "AuthRegistry":
        reg = cls()
        reg.users["guest"] = User("guest", "guest", ("administrator",))
        reg.permissions[("guest", "/")] = Permission()
        return reg

    def authenticate(self, username: str, password: str, peer_host: str | None) -> User:
        """Raises AuthenticationFailed for an unknown user, a wrong password, or a loopback-only
        user connecting from elsewhere."""
        user = self.users.get(username)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            raise AuthenticationFailed(
                "Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
            )
        if username in self.loopback_users and peer_host is not None and not _is_loopback(peer_host):
            raise AuthenticationFailed(
                f"User '{username}' can only connect via localhost"
            )
        return user

    def check_vhost(self, user: User, vhost: str) -> None:
        if (user.name, vhost) not in self.permissions:
            raise AccessRefused(f"access to vhost '{vhost}' refused for user '{user.name}'")

    def check(self, user: User | None, vhost: str, what: str, kind: str, name: str) -> None:
        """Raises AccessRefused unless user may do ``what`` (configure/write/read) to name."""
        if user is None:
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


def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or addr).is_loopback
