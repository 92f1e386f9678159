"""Broker settings, from defaults or a TOML config file.

Example::

    engine = "rabbitmq"            # or "activemq"
    engine_version = "4.2"         # rabbitmq: 4.2, 3.13, 3.10; activemq: 5.18, 5.17 (default: newest)
    default_queue_type = "quorum"  # RabbitMQ: durable queues declared without x-queue-type
                                   # (default: quorum on 4.2, as Amazon MQ; classic on 3.x)
    memory_high_watermark = 0.4    # fraction of RAM, or bytes when > 1
    loopback_users = ["guest"]

    [store]
    memory_budget = "256MB"        # bodies kept in memory by all queues; past it they page
                                   # to disk ("off": never; default 25 % of the watermark)

    [amqp]
    consumer_timeout = 1800000     # ms a delivery may stay unacknowledged (RabbitMQ's
                                   # consumer_timeout; default off); also --rabbitmq-conf
    heartbeat = 60                 # s, proposed in connection.tune (RabbitMQ's default)

    [stomp]
    connect_timeout = 10           # seconds from accept to CONNECTED (default: the engine's)

    [[users]]
    name = "app"
    password = "secret"            # or password_hash (RabbitMQ's salted SHA-256, base64) and
                                   # hashing_algorithm: no plain text in the file
    tags = ["administrator"]       # RabbitMQ
    groups = ["admins", "users"]   # ActiveMQ: simpleAuthenticationPlugin's groups

    anonymous_access = false       # ActiveMQ: anonymousAccessAllowed (with anonymous_user,
                                   # anonymous_group)

    [[authorization]]              # ActiveMQ: authorizationEntries (read/write/admin groups,
    queue = ">"                    # a list or "a,b"; "*" is any group)
    read = ["users"]
    write = ["users"]
    admin = ["admins"]

    [temp_authorization]           # ActiveMQ: tempDestinationAuthorizationEntry
    read = "*"

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

from .auth import DEFAULT_HASHING, HASHING_ALGORITHMS, AuthorizationEntry, AuthRegistry, Permission, User

from .profile import VERSIONS, simple_authentication

ENGINES = tuple(VERSIONS)
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
    engine_version: str | None = None  # None: the newest version of the engine (``profile``)
    default_queue_type: str | None = None  # None: the version's (``profile``)
    vhosts: list[str] = field(default_factory=lambda: ["/"])
    auth: AuthRegistry = field(default_factory=AuthRegistry.default)
    memory_high_watermark: int = 0  # bytes of queued message bodies; 0 = 40 % of RAM
    extra: dict[str, Any] = field(default_factory=dict)  # protocol sections ([amqp], [mqtt], ...)
    # bytes of ready bodies queues keep in memory before paging; None = 25 % of the
    # watermark, -1 = never page
    memory_budget: int | None = None
    # From ``--activemq-xml`` (``activemq_xml``): per-destination ActiveMQ policies
    # (``activemq.DestinationPolicy``) and the destinations made at start, (kind, name).
    activemq_policies: tuple[Any, ...] = ()
    destinations: list[tuple[str, str]] = field(default_factory=list)

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


def load_config(path: str | None, engine: str | None = None, engine_version: str | None = None) -> BrokerConfig:
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
    # A version given with --engine-version wins. The file's version belongs to the file's
    # engine: with another engine on the command line it is not used.
    version = engine_version or data.get("engine_version")
    if version is not None:
        if not isinstance(version, str):  # a TOML number would turn 3.10 into 3.1
            raise ConfigError(f'engine_version must be a string such as "3.13", not {version!r}')
        if version not in VERSIONS[cfg.engine] and not (engine and engine_version is None):
            raise ConfigError(f"engine_version for {cfg.engine} must be one of "
                              f"{', '.join(VERSIONS[cfg.engine])}, not {version!r}")
        cfg.engine_version = version if version in VERSIONS[cfg.engine] else None
    queue_type = data.get("default_queue_type")
    if queue_type is not None:
        if queue_type not in ("classic", "quorum"):
            raise ConfigError(f'default_queue_type must be "classic" or "quorum", not {queue_type!r}')
        cfg.default_queue_type = queue_type
    wm = data.get("memory_high_watermark")
    if wm is not None:
        if not isinstance(wm, (int, float)) or wm <= 0:
            raise ConfigError("memory_high_watermark must be a fraction of RAM (0-1) or a byte count")
        cfg.memory_high_watermark = int(wm * _ram()) if wm <= 1 else int(wm)
    cfg.auth.simple = simple_authentication(cfg.engine)
    if "users" in data:
        cfg.auth.users.clear()
        cfg.auth.permissions.clear()
        cfg.auth.users_configured = True
        for u in data["users"]:
            try:
                hashed = u.get("password_hash")  # RabbitMQ's format (``auth.hash_password``), no plain text
                if u.get("hashing_algorithm", DEFAULT_HASHING) not in HASHING_ALGORITHMS:
                    raise ConfigError(f"[[users]] hashing_algorithm is one of {', '.join(HASHING_ALGORITHMS)}")
                cfg.auth.users[u["name"]] = User(u["name"], "" if hashed else u["password"], tuple(u.get("tags", ())),
                                                 _groups(u.get("groups", ()), "[[users]] groups"),
                                                 password_hash=hashed,
                                                 hashing_algorithm=u.get("hashing_algorithm", DEFAULT_HASHING))
            except (KeyError, TypeError) as e:
                raise ConfigError(f"each [[users]] entry needs name and password (or password_hash): {u!r}") from e
    _load_activemq_auth(cfg, data)
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
    amqp = cfg.extra.get("amqp", {})
    for key, high in (("consumer_timeout", 2_147_483_647), ("heartbeat", 65_535)):
        value = amqp.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high):
            raise ConfigError(f"[amqp] {key} must be a whole number from 0 to {high}, not {value!r}")
    mqtt = cfg.extra.get("mqtt", {})
    cfg.auth.deny_publish = _topic_rules(mqtt.get("deny_publish", ()), "deny_publish")
    cfg.auth.deny_subscribe = _topic_rules(mqtt.get("deny_subscribe", ()), "deny_subscribe")
    budget = cfg.extra.get("store", {}).get("memory_budget")
    if budget is not None:
        cfg.memory_budget = parse_budget(budget)
    return cfg


def _groups(value: Any, where: str) -> frozenset[str]:
    """Groups as a list or as ActiveMQ writes them, "admins,users"."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(g, str) for g in value):
        raise ConfigError(f"{where} must be a list of group names or a comma-separated string, not {value!r}")
    return frozenset(g.strip() for g in value if g.strip())


def _load_activemq_auth(cfg: BrokerConfig, data: dict[str, Any]) -> None:
    """ActiveMQ's simpleAuthenticationPlugin options and authorizationPlugin entries."""
    auth = cfg.auth
    auth.anonymous_access = bool(data.get("anonymous_access", False))
    auth.anonymous_user = str(data.get("anonymous_user", "anonymous"))
    auth.anonymous_group = str(data.get("anonymous_group", "anonymous"))
    entries = data.get("authorization")
    if entries is not None:
        if not isinstance(entries, list):
            raise ConfigError("[[authorization]] must be an array of tables")
        auth.authorization = []
        for e in entries:
            kinds = [k for k in ("queue", "topic") if k in e] if isinstance(e, dict) else []
            if len(kinds) != 1 or not isinstance(e[kinds[0]], str) or not e[kinds[0]]:
                raise ConfigError(f"each [[authorization]] entry needs one of queue or topic: {e!r}")
            auth.authorization.append(AuthorizationEntry(
                kinds[0], e[kinds[0]], *(_groups(e.get(op, ()), f"[[authorization]] {op}")
                                         for op in ("read", "write", "admin"))))
    temp = data.get("temp_authorization")
    if temp is not None:
        if not isinstance(temp, dict):
            raise ConfigError("[temp_authorization] must be a table")
        auth.temp_authorization = AuthorizationEntry(
            "temp", "", *(_groups(temp.get(op, ()), f"[temp_authorization] {op}")
                          for op in ("read", "write", "admin")))


def _topic_rules(filters: Any, key: str) -> tuple[str, ...]:
    """``[mqtt] deny_publish`` / ``deny_subscribe`` (MQTT filters) as routing-key filters on
    amq.topic, as MQTT topics become routing keys: ``/`` and ``.`` swapped, ``+`` is ``*``."""
    if isinstance(filters, str):
        filters = [filters]
    if not isinstance(filters, (list, tuple)):
        raise ConfigError(f"[mqtt] {key} must be a list of topic filters")
    out = []
    for f in filters:
        if isinstance(f, str) and f:
            out.append(".".join("*" if w == "+" else w.replace(".", "/") for w in f.split("/")))
    return tuple(out)


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
