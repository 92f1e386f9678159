"""``mqemu serve --activemq-xml FILE``: an ActiveMQ ``activemq.xml`` as the node's config.

Accepted forms: the Spring ``<beans>`` file ActiveMQ ships (its ``<broker>`` in the ActiveMQ
namespace) and Amazon MQ's bare ``<broker xmlns="http://activemq.apache.org/schema/core">``.
Element and attribute names are ActiveMQ 5.17/5.18's (``activemq-core.xsd``). Applied:

- ``broker@schedulerSupport``;
- ``destinations``: ``queue`` / ``topic`` ``physicalName``, made at start (queues durable);
- ``plugins/simpleAuthenticationPlugin``: ``users/authenticationUser`` (username, password,
  groups) and ``anonymousAccessAllowed``, ``anonymousUser``, ``anonymousGroup``;
- ``plugins/authorizationPlugin/map/authorizationMap``: ``authorizationEntries/authorizationEntry``
  (queue or topic, read, write, admin) and ``tempDestinationAuthorizationEntry``;
- ``plugins/redeliveryPlugin/redeliveryPolicyMap/redeliveryPolicyMap``: ``defaultEntry`` and
  ``redeliveryPolicyEntries`` ``redeliveryPolicy@maximumRedeliveries`` (per queue pattern);
- ``destinationPolicy/policyMap/policyEntries/policyEntry@queue`` with
  ``deadLetterStrategy``: ``sharedDeadLetterStrategy`` (``deadLetterQueue/queue``),
  ``individualDeadLetterStrategy`` (queuePrefix, queueSuffix) or ``discarding``, each with
  processExpired and processNonPersistent.

Everything else (elements and attributes) is returned in ``ActiveMQXml.ignored`` as element
paths (``broker/persistenceAdapter``, ``.../redeliveryPolicy@redeliveryDelay``), and
``transportConnectors`` are reported (ports come from the command line). A file with a DTD,
not well-formed, or with a value the node cannot use is refused whole (``ConfigError`` naming
the element path and why) before anything is applied.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .activemq import DeadLetterStrategy, DestinationPolicy
from .auth import AuthorizationEntry, Permission, User
from .config import BrokerConfig, ConfigError

AMQ_NS = "http://activemq.apache.org/schema/core"
_SKIP_ATTRS = re.compile(r"\{http://www\.w3\.org/2001/XMLSchema-instance\}|xmlns")
_PLACEHOLDER = re.compile(r"\$\{|#\{")


@dataclass(slots=True)
class ActiveMQXml:
    """What a file sets; None or empty: the file does not say."""

    users: dict[str, User] | None = None  # None: no simpleAuthenticationPlugin
    anonymous_access: bool = False
    anonymous_user: str = "anonymous"
    anonymous_group: str = "anonymous"
    authorization: list[AuthorizationEntry] | None = None
    temp_authorization: AuthorizationEntry | None = None
    scheduler_support: bool | None = None
    maximum_redeliveries: int | None = None  # redeliveryPlugin's defaultEntry
    policies: list[DestinationPolicy] = field(default_factory=list)
    destinations: list[tuple[str, str]] = field(default_factory=list)
    connectors: list[tuple[str, str]] = field(default_factory=list)  # (name, uri), not used
    ignored: list[str] = field(default_factory=list)


class _Walk:
    """Handlers mark the elements and attributes they apply; the rest is listed as ignored."""

    def __init__(self) -> None:
        self.used: dict[int, set[str]] = {}
        self.paths: dict[int, str] = {}

    def use(self, e: ET.Element, *attrs: str) -> ET.Element:
        self.used.setdefault(id(e), set()).update(attrs)
        return e

    def children(self, e: ET.Element, name: str | None = None) -> list[ET.Element]:
        """Child elements (named ``name``), each with its path (``[n]`` among namesakes)."""
        kids = [c for c in e if isinstance(c.tag, str)]
        counts: dict[str, int] = {}
        for c in kids:
            counts[_local(c.tag)] = counts.get(_local(c.tag), 0) + 1
        seen: dict[str, int] = {}
        base = self.paths[id(e)]
        for c in kids:
            n = _local(c.tag)
            seen[n] = seen.get(n, 0) + 1
            self.paths[id(c)] = f"{base}/{n}" + (f"[{seen[n]}]" if counts[n] > 1 else "")
        return [c for c in kids if name is None or _local(c.tag) == name]

    def path(self, e: ET.Element, attr: str | None = None) -> str:
        return self.paths[id(e)] + (f"@{attr}" if attr else "")

    def error(self, e: ET.Element, why: str, attr: str | None = None) -> ConfigError:
        return ConfigError(f"activemq.xml: {self.path(e, attr)}: {why}")

    # -- values ---------------------------------------------------------------------------
    def text(self, e: ET.Element, attr: str, default: str | None = None, required: bool = False) -> str | None:
        value = e.attrib.get(attr)
        if value is None:
            if required:
                raise self.error(e, f"the attribute {attr} is required")
            return default
        self.use(e, attr)
        if _PLACEHOLDER.search(value):
            raise self.error(e, f"{value!r}: property placeholders are not resolved (mqemu reads no "
                             "properties files)", attr)
        return value

    def boolean(self, e: ET.Element, attr: str, default: bool) -> bool:
        value = self.text(e, attr)
        if value is None:
            return default
        if value.strip().lower() not in ("true", "false"):
            raise self.error(e, f"{value!r} is not true or false", attr)
        return value.strip().lower() == "true"

    def integer(self, e: ET.Element, attr: str) -> int | None:
        value = self.text(e, attr)
        if value is None:
            return None
        try:
            return int(value.strip())
        except ValueError:
            raise self.error(e, f"{value!r} is not an integer", attr) from None

    def groups(self, e: ET.Element, attr: str) -> frozenset[str]:
        return frozenset(g.strip() for g in (self.text(e, attr) or "").split(",") if g.strip())

    def ignored(self, root: ET.Element) -> list[str]:
        out: list[str] = []

        def visit(e: ET.Element) -> None:
            used = self.used.get(id(e))
            if used is None:
                out.append(self.path(e))
                return
            out.extend(self.path(e, a) for a in e.attrib if a not in used and not _SKIP_ATTRS.match(a))
            for c in self.children(e):
                visit(c)

        visit(root)
        return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def load_activemq_xml(path: str) -> ActiveMQXml:
    """Read and parse ``path``. Raises ConfigError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read --activemq-xml file {path}: {e.strerror}") from e
    return parse_activemq_xml(data)


def parse_activemq_xml(data: bytes | str) -> ActiveMQXml:
    """The settings of an activemq.xml text. Raises ConfigError naming the first problem."""
    raw = data.encode() if isinstance(data, str) else data
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise ConfigError("activemq.xml: a DOCTYPE or entity declaration is not accepted")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        raise ConfigError(f"activemq.xml: not well-formed XML: {e}") from None
    w = _Walk()
    out = ActiveMQXml()
    w.paths[id(root)] = _local(root.tag)
    if _local(root.tag) == "beans":
        brokers = w.children(w.use(root), "broker")
        if len(brokers) != 1:
            raise w.error(root, f"a <beans> file needs one <broker> of {AMQ_NS}, not {len(brokers)}")
        broker = brokers[0]
    elif _local(root.tag) == "broker":
        broker = root
    else:
        raise w.error(root, "the root element must be <broker> (Amazon MQ) or Spring's <beans>")
    if "}" in broker.tag and broker.tag[1:].split("}")[0] != AMQ_NS:
        raise w.error(broker, f"<broker> must be in the namespace {AMQ_NS}")
    w.use(broker)
    scheduler = w.text(broker, "schedulerSupport")
    if scheduler is not None:
        out.scheduler_support = w.boolean(broker, "schedulerSupport", True)
    for section in w.children(broker):
        name = _local(section.tag)
        if name == "destinations":
            _destinations(w, w.use(section), out)
        elif name == "plugins":
            _plugins(w, w.use(section), out)
        elif name == "destinationPolicy":
            _destination_policy(w, w.use(section), out)
        elif name == "transportConnectors":
            for c in w.children(section, "transportConnector"):
                out.connectors.append((c.attrib.get("name", ""), c.attrib.get("uri", "")))
    out.ignored = w.ignored(root)
    return out


def _destinations(w: _Walk, section: ET.Element, out: ActiveMQXml) -> None:
    for d in w.children(section):
        kind = _local(d.tag)
        if kind in ("queue", "topic"):
            name = w.text(w.use(d), "physicalName", required=True)
            if not name:
                raise w.error(d, "physicalName is empty", "physicalName")
            out.destinations.append((kind, name))


def _plugins(w: _Walk, section: ET.Element, out: ActiveMQXml) -> None:
    for plugin in w.children(section):
        name = _local(plugin.tag)
        if name == "simpleAuthenticationPlugin":
            _authentication(w, w.use(plugin), out)
        elif name == "authorizationPlugin":
            _authorization(w, w.use(plugin), out)
        elif name == "redeliveryPlugin":
            _redelivery(w, w.use(plugin), out)


def _authentication(w: _Walk, plugin: ET.Element, out: ActiveMQXml) -> None:
    out.anonymous_access = w.boolean(plugin, "anonymousAccessAllowed", False)
    out.anonymous_user = w.text(plugin, "anonymousUser", "anonymous") or "anonymous"
    out.anonymous_group = w.text(plugin, "anonymousGroup", "anonymous") or "anonymous"
    users: dict[str, User] = {}
    for holder in w.children(plugin, "users"):
        for u in w.children(w.use(holder), "authenticationUser"):
            w.use(u)
            name = w.text(u, "username", required=True) or ""
            password = w.text(u, "password", required=True) or ""
            if name in users:
                raise w.error(u, f"the user {name!r} is listed twice", "username")
            users[name] = User(name, password, (), w.groups(u, "groups"))
    out.users = users


def _entry(w: _Walk, e: ET.Element, kind: str | None) -> AuthorizationEntry:
    w.use(e)
    if kind is None:
        kinds = [k for k in ("queue", "topic") if k in e.attrib]
        if len(kinds) != 1:
            raise w.error(e, "an authorizationEntry names one queue or one topic pattern")
        kind = kinds[0]
        pattern = w.text(e, kind) or ""
        if not pattern:
            raise w.error(e, "the pattern is empty", kind)
    else:
        pattern = ""
    return AuthorizationEntry(kind, pattern, w.groups(e, "read"), w.groups(e, "write"), w.groups(e, "admin"))


def _authorization(w: _Walk, plugin: ET.Element, out: ActiveMQXml) -> None:
    out.authorization = []
    for holder in w.children(plugin, "map"):
        for amap in w.children(w.use(holder), "authorizationMap"):
            for part in w.children(w.use(amap)):
                name = _local(part.tag)
                if name == "authorizationEntries":
                    for e in w.children(w.use(part), "authorizationEntry"):
                        out.authorization.append(_entry(w, e, None))
                elif name == "tempDestinationAuthorizationEntry":
                    for e in w.children(w.use(part), "tempDestinationAuthorizationEntry"):
                        out.temp_authorization = _entry(w, e, "temp")


def _redelivery(w: _Walk, plugin: ET.Element, out: ActiveMQXml) -> None:
    for outer in w.children(plugin, "redeliveryPolicyMap"):
        for rmap in w.children(w.use(outer), "redeliveryPolicyMap"):
            for part in w.children(w.use(rmap)):
                name = _local(part.tag)
                if name not in ("defaultEntry", "redeliveryPolicyEntries"):
                    continue
                for policy in w.children(w.use(part), "redeliveryPolicy"):
                    w.use(policy)
                    limit = w.integer(policy, "maximumRedeliveries")
                    limit = 6 if limit is None else limit  # RedeliveryPolicy's default
                    if name == "defaultEntry":
                        out.maximum_redeliveries = limit
                        continue
                    kind, pattern = _kind_pattern(w, policy, "redeliveryPolicy")
                    if kind == "queue":
                        out.policies.append(DestinationPolicy(kind, pattern, maximum_redeliveries=limit))
                    else:  # topics are not redelivered to: their subscriptions are the queues
                        w.used[id(policy)].discard("maximumRedeliveries")


def _kind_pattern(w: _Walk, e: ET.Element, what: str) -> tuple[str, str]:
    kinds = [k for k in ("queue", "topic") if k in e.attrib]
    if len(kinds) != 1:
        raise w.error(e, f"a {what} entry names one queue or one topic pattern")
    pattern = w.text(e, kinds[0]) or ""
    if not pattern:
        raise w.error(e, "the pattern is empty", kinds[0])
    return kinds[0], pattern


def _destination_policy(w: _Walk, section: ET.Element, out: ActiveMQXml) -> None:
    for pmap in w.children(section, "policyMap"):
        for entries in w.children(w.use(pmap), "policyEntries"):
            for entry in w.children(w.use(entries), "policyEntry"):
                kinds = [k for k in ("queue", "topic") if k in entry.attrib]
                strategies = w.children(entry, "deadLetterStrategy")
                if kinds != ["queue"] or not strategies:
                    continue  # only a queue's dead-letter strategy has a counterpart
                w.use(entry)
                _, pattern = _kind_pattern(w, entry, "policyEntry")
                for holder in strategies:
                    for s in w.children(w.use(holder)):
                        strategy = _dead_letter_strategy(w, s)
                        if strategy is not None:
                            out.policies.append(DestinationPolicy("queue", pattern, dead_letter=strategy))


def _dead_letter_strategy(w: _Walk, s: ET.Element) -> DeadLetterStrategy | None:
    name = _local(s.tag)
    if name not in ("sharedDeadLetterStrategy", "individualDeadLetterStrategy", "discarding"):
        return None
    w.use(s)
    expired = w.boolean(s, "processExpired", True)
    non_persistent = w.boolean(s, "processNonPersistent", False)
    if name == "discarding":
        return DeadLetterStrategy(discard=True, process_expired=expired, process_non_persistent=non_persistent)
    if name == "individualDeadLetterStrategy":
        if not w.boolean(s, "useQueueForQueueMessages", True):
            raise w.error(s, "a dead-letter topic for queue messages is not emulated",
                          "useQueueForQueueMessages")
        return DeadLetterStrategy(queue_prefix=w.text(s, "queuePrefix", "ActiveMQ.DLQ.Queue."),
                                  queue_suffix=w.text(s, "queueSuffix", "") or "",
                                  process_expired=expired, process_non_persistent=non_persistent)
    shared = "ActiveMQ.DLQ"
    for holder in w.children(s, "deadLetterQueue"):
        for q in w.children(w.use(holder)):
            if _local(q.tag) != "queue":
                raise w.error(q, "the shared dead-letter destination must be a <queue>")
            shared = w.text(w.use(q), "physicalName", required=True) or shared
    return DeadLetterStrategy(shared_queue=shared, process_expired=expired, process_non_persistent=non_persistent)


def apply_activemq_xml(cfg: BrokerConfig, xml: ActiveMQXml) -> None:
    """Put what the file sets into ``cfg`` (after its TOML config): the file's users and
    authorization entries replace the TOML's when it has those plugins."""
    if cfg.engine != "activemq":
        raise ConfigError("--activemq-xml needs the ActiveMQ engine (--engine activemq)")
    auth = cfg.auth
    if xml.users is not None:
        auth.users = dict(xml.users)
        auth.users_configured = True
        auth.permissions = {(name, "/"): Permission() for name in auth.users}
        auth.anonymous_access = xml.anonymous_access
        auth.anonymous_user, auth.anonymous_group = xml.anonymous_user, xml.anonymous_group
    if xml.authorization is not None:
        auth.authorization = list(xml.authorization)
        auth.temp_authorization = xml.temp_authorization
    section = cfg.extra.setdefault("activemq", {})
    if xml.scheduler_support is not None:
        section["scheduler_support"] = xml.scheduler_support
    if xml.maximum_redeliveries is not None:
        section["maximum_redeliveries"] = xml.maximum_redeliveries
    cfg.activemq_policies = tuple(xml.policies)
    cfg.destinations = list(xml.destinations)


def summary(xml: ActiveMQXml) -> list[str]:
    """The log lines a node writes at start: what was ignored, the connectors not used."""
    lines = []
    if xml.ignored:
        lines.append("activemq.xml: ignored: " + ", ".join(xml.ignored))
    if xml.connectors:
        lines.append("activemq.xml: transport connectors not opened (ports come from the command line): "
                     + ", ".join(f"{n or '?'} {u}" for n, u in xml.connectors))
    return lines
