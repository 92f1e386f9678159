"""``mqemu serve --rabbitmq-conf FILE``: a RabbitMQ ``rabbitmq.conf`` as the node's config.

The format is RabbitMQ's "new style" (sysctl-like) file: one ``key = value`` per line, ``#``
starts a comment line, blank lines are skipped; a later line for the same key wins. Keys are
dotted names (``management.restrictions.operator_policy_changes.disabled``).

Applied (RabbitMQ engine, AMQP 0-9-1), over the TOML config's ``[amqp]`` section:

- ``consumer_timeout``: milliseconds a delivery may stay unacknowledged before its channel is
  closed (406); 0 turns it off (Amazon MQ: "infinite"); at most 2,147,483,647 (Amazon MQ's
  range). RabbitMQ and Amazon MQ default to 1,800,000 (30 minutes); mqemu keeps it off
  unless a file or the TOML sets it, so that a plain ``mqemu serve`` runs no timer per
  channel. Amazon MQ's default configuration (``mqemu aws``) sets the 30 minutes.
- ``heartbeat``: the heartbeat in seconds the server proposes in ``connection.tune``
  (0-65535; 0: none: RabbitMQ itself accepts any short). Amazon MQ allows 60-3600: the
  control plane parses with ``amazon_mq=True``, which refuses a value outside that range.

Known but ignored (said in the node's log): the other keys Amazon MQ lets users set
(``KNOWN_IGNORED`` and the prefixes of its OAuth 2.0, LDAP, HTTP, SSL and resource-limit
settings), where mqemu has no such feature. Any other key is ignored too, reported apart as
not one of Amazon MQ's configurable keys. A line without ``=``, an empty key or value, or a
value an applied key cannot use is refused whole (``ConfigError`` naming the line).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import BrokerConfig, ConfigError

CONSUMER_TIMEOUT_MAX = 2_147_483_647  # ms, Amazon MQ's upper bound (a signed 32-bit int)
HEARTBEAT_MAX = 65_535  # connection.tune's heartbeat is a short
AMAZON_MQ_HEARTBEAT = (60, 3600)  # s, Amazon MQ's "Configurable values for RabbitMQ"

# Amazon MQ's "Configurable values for RabbitMQ" that mqemu has no feature for.
KNOWN_IGNORED = frozenset((
    "management.restrictions.operator_policy_changes.disabled",
    "quorum_queue.property_equivalence.relaxed_checks_on_redeclaration",
    "secure.management.http.headers.enabled",
    # resource limits (RabbitMQ 4 on Amazon MQ)
    "connection_max", "channel_max_per_node", "cluster_queue_limit", "vhost_max",
    "runtime_parameters.limits.shovel", "cluster_exchange_limit", "consumer_max_per_channel",
    "max_message_size",
))
# The families of keys Amazon MQ's OAuth 2.0, LDAP, HTTP, SSL, mTLS and ARN pages document.
KNOWN_IGNORED_PREFIXES = ("auth_backends.", "auth_oauth2.", "auth_ldap.", "auth_http.", "management.oauth_",
                          "management.ssl.", "ssl_options.", "auth_mechanisms.", "aws.arns.")


@dataclass(slots=True)
class RabbitMQConf:
    """What a file sets; None: the file does not say."""

    consumer_timeout: int | None = None  # ms, 0: off
    heartbeat: int | None = None  # s
    ignored: list[str] = field(default_factory=list)  # Amazon MQ's keys mqemu has no feature for
    unknown: list[str] = field(default_factory=list)  # keys Amazon MQ does not let users set


def load_rabbitmq_conf(path: str) -> RabbitMQConf:
    """Read and parse ``path``. Raises ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read --rabbitmq-conf file {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise ConfigError(f"--rabbitmq-conf file {path} is not UTF-8 text") from None
    return parse_rabbitmq_conf(text)


def _integer(n: int, key: str, value: str, low: int, high: int, unit: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not (value.isascii() and value.isdigit()) or not low <= number <= high:
        raise ConfigError(f"rabbitmq.conf line {n}: {key} must be a whole number of {unit} from {low} "
                          f"to {high}, not {value!r}")
    return number


def parse_rabbitmq_conf(text: str, amazon_mq: bool = False) -> RabbitMQConf:
    """The settings of a rabbitmq.conf text. Raises ConfigError naming the first bad line.
    ``amazon_mq``: check the ranges Amazon MQ allows, where narrower than RabbitMQ's."""
    heartbeat_low, heartbeat_high = AMAZON_MQ_HEARTBEAT if amazon_mq else (0, HEARTBEAT_MAX)
    conf = RabbitMQConf()
    seen: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ConfigError(f"rabbitmq.conf line {n}: {line!r} is not a key = value setting")
        if not key or " " in key or "\t" in key:
            raise ConfigError(f"rabbitmq.conf line {n}: {key!r} is not a setting's name")
        if not value:
            raise ConfigError(f"rabbitmq.conf line {n}: {key} has no value")
        if key == "consumer_timeout":
            conf.consumer_timeout = _integer(n, key, value, 0, CONSUMER_TIMEOUT_MAX, "milliseconds")
        elif key == "heartbeat":
            conf.heartbeat = _integer(n, key, value, heartbeat_low, heartbeat_high, "seconds")
        elif key in seen:
            continue
        elif key in KNOWN_IGNORED or key.startswith(KNOWN_IGNORED_PREFIXES):
            conf.ignored.append(key)
        else:
            conf.unknown.append(key)
        seen.add(key)
    return conf


def apply_rabbitmq_conf(cfg: BrokerConfig, conf: RabbitMQConf) -> None:
    """Put what the file sets into ``cfg`` (over the TOML config's ``[amqp]`` section)."""
    if cfg.engine != "rabbitmq":
        raise ConfigError("--rabbitmq-conf needs the RabbitMQ engine (--engine rabbitmq)")
    amqp = cfg.extra.setdefault("amqp", {})
    if conf.consumer_timeout is not None:
        amqp["consumer_timeout"] = conf.consumer_timeout
    if conf.heartbeat is not None:
        amqp["heartbeat"] = conf.heartbeat


def summary(conf: RabbitMQConf) -> list[str]:
    """The log lines a node writes at start: what it applied and what it ignored."""
    applied = [f"{k} = {v}" for k, v in (("consumer_timeout", conf.consumer_timeout),
                                         ("heartbeat", conf.heartbeat)) if v is not None]
    lines = ["rabbitmq.conf: applied: " + (", ".join(applied) or "nothing")]
    if conf.ignored:
        lines.append("rabbitmq.conf: ignored (mqemu has no such feature): " + ", ".join(conf.ignored))
    if conf.unknown:
        lines.append("rabbitmq.conf: ignored (not among Amazon MQ's configurable keys): "
                     + ", ".join(conf.unknown))
    return lines
