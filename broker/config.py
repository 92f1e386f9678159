"""Broker settings, from defaults or a TOML config file.

Example::

    engine = "rabbitmq"            # or "activemq"
    memory_high_watermark = 0.4    # fraction of RAM, or bytes when > 1
    loopback_users = ["guest"]

    [store]
    memory_budget = "256MB"        # bodies kept in memory by all queues; past it they page
                                   # to disk ("off": never; default 25 % of the watermark)

    [stomp]
    connect_timeout = 10           # seconds from accept to CONNECTED (default: the engine's)

    [[users]]
    name = "app"
    password = "secret"
    tags = ["administrator"]

    [[vhosts]]
    name = "staging"

    [[permissions]]
    user = "app"
    vhost = "staging"
    configure = ".*"
    write = ".*"
    read = ".*"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .auth import AuthRegistry, Permission, User

ENGINES = ("rabbitmq", "activemq")
# Timeouts in seconds a protocol section may set; each defaults to the emulated engine's.
TIMEOUT_KEYS = (
    ("amqp", "handshake_timeout"),  # header to connection.open-ok (RabbitMQ: 10 s)
    ("stomp", "connect_timeout"),  # accept to CONNECTED (RabbitMQ: 10 s, ActiveMQ: 30 s)
    ("mqtt", "connect_timeout"),  # accept to CONNACK (RabbitMQ: 10 s, ActiveMQ: 30 s)
)


class ConfigError(ValueError):
    """A config file that cannot be used; the text says which key and why."""


@dataclass(slots=True)
class BrokerConfig:
    engine: str = "rabbitmq"
    vhosts: list[str] = field(default_factory=lambda: ["/"])
    auth: AuthRegistry = field(default_factory=AuthRegistry.default)
    memory_high_watermark: int = 0  # bytes of queued message bodies; 0 = 40 % of RAM
    extra: dict[str, Any] = field(default_factory=dict)  # protocol sections ([amqp], [mqtt], ...)
    # bytes of ready bodies queues keep in memory before paging; None = 25 % of the
    # watermark, -1 = never page
    memory_budget: int | None = None

    def watermark_bytes(self) -> int:
        if self.memory_high_watermark:
            return self.memory_high_watermark
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = 8 << 30
        return int(total * 0.4)

    def seconds(self, section: str, key: str, default: float) -> float:
        """A timeout from a protocol section (``[stomp] connect_timeout``), or ``default``.
        Checked at load (``TIMEOUT_KEYS``)."""
        value = self.extra.get(section, {}).get(key)
        return default if value is None else float(value)

    def memory_budget_bytes(self) -> int | None:
        """The paging budget in bytes, None when paging is off."""
        if self.memory_budget is None:
            return self.watermark_bytes() // 4
        return None if self.memory_budget < 0 else self.memory_budget


def load_config(path: str | None, engine: str | None = None) -> BrokerConfig:
    """Read a TOML config file (or none). Raises ConfigError naming the bad key."""
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    cfg = BrokerConfig()
    cfg.engine = engine or data.get("engine", "rabbitmq")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {cfg.engine!r}")
    wm = data.get("memory_high_watermark")
    if wm is not None:
        if not isinstance(wm, (int, float)) or wm <= 0:
            raise ConfigError("memory_high_watermark must be a fraction of RAM (0-1) or a byte count")
        cfg.memory_high_watermark = int(wm * _ram()) if wm <= 1 else int(wm)
    if "users" in data:
        cfg.auth.users.clear()
        cfg.auth.permissions.clear()
        for u in data["users"]:
            try:
                cfg.auth.users[u["name"]] = User(u["name"], u["password"], tuple(u.get("tags", ())))
            except (KeyError, TypeError) as e:
                raise ConfigError(f"each [[users]] entry needs name and password: {u!r}") from e
    for v in data.get("vhosts", []):
        name = v["name"] if isinstance(v, dict) else v
        if name not in cfg.vhosts:
            cfg.vhosts.append(name)
    for p in data.get("permissions", []):
        if p.get("user") not in cfg.auth.users:
            raise ConfigError(f"permission for unknown user {p.get('user')!r}")
        cfg.auth.permissions[(p["user"], p.get("vhost", "/"))] = Permission(
            p.get("configure", ".*"), p.get("write", ".*"), p.get("read", ".*")
        )
    if "users" in data and "permissions" not in data:
        for name in cfg.auth.users:
            cfg.auth.permissions[(name, "/")] = Permission()
    if "loopback_users" in data:
        cfg.auth.loopback_users = set(data["loopback_users"])
    cfg.extra = {k: v for k, v in data.items() if isinstance(v, dict)}
    for section, key in TIMEOUT_KEYS:
        value = cfg.extra.get(section, {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"[{section}] {key} must be a number of seconds above 0, not {value!r}")
    budget = cfg.extra.get("store", {}).get("memory_budget")
    if budget is not None:
        cfg.memory_budget = parse_budget(budget)
    return cfg


_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def parse_budget(value: Any) -> int:
    """``[store] memory_budget``: bytes (an integer), a size ("256MB", "1GiB") or "off" (-1).
    Raises ConfigError."""
    if isinstance(value, bool):
        if not value:
            return -1
    elif isinstance(value, int) and value >= 0:
        return value
    elif isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        if text in ("OFF", "NONE"):
            return -1
        number = text.rstrip("KMGIB")
        unit = text[len(number):]
        if number and unit in _UNITS:
            try:
                return int(float(number) * _UNITS[unit])
            except ValueError:
                pass
    raise ConfigError(f'[store] memory_budget must be a byte count, a size such as "256MB" or "off", not {value!r}')


def _ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30
