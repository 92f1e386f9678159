"""RabbitMQ's definitions format: export a node's topology, import one (``mqemu serve
--definitions FILE`` at start, as RabbitMQ's ``load_definitions``; the management API's
``/api/definitions``).

Import is all or nothing: every entry is checked against the node and the rest of the file
first (users and their password hashes, vhosts, permissions, policies, exchanges, queues and
their arguments, bindings and their ends), and the first error is raised, naming the entry,
before anything changes. ``topic_permissions``, ``parameters`` and ``global_parameters`` are
kept and exported again; mqemu does not act on them (they are listed by ``ignored``).

Exported as RabbitMQ 3.10 does: users with ``password_hash`` and ``hashing_algorithm`` (a
user made with a plain password gets a SHA-256 hash once, kept from then on), vhosts,
permissions, policies, the exchanges except the default and ``amq.*`` ones, the queues that
are not exclusive, durable or not, and the bindings from exchanges other than the default
one. A per-vhost export has no ``vhost`` keys but in its policies.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

from .auth import DEFAULT_HASHING, HASHING_ALGORITHMS, Permission, User, hash_password
from .errors import BrokerError, PreconditionFailed
from .exchange import EXCHANGE_TYPES
from .policies import make_policy, set_policy
from .queue_args import QueueSettings

log = logging.getLogger("mqemu.broker.definitions")

SECTIONS = ("users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters", "policies",
            "queues", "exchanges", "bindings")
_KEPT = ("topic_permissions", "parameters", "global_parameters")
_EQUIVALENT_ARGS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
                    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority", "x-queue-type",
                    "x-single-active-consumer", "x-delivery-limit")


class DefinitionsError(Exception):
    """A definitions file that cannot be applied; the text names the first bad entry."""


# -- users ----------------------------------------------------------------------------
def user_tags(value: Any) -> tuple[str, ...]:
    """Tags as RabbitMQ takes them: a comma-separated string or a list."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise PreconditionFailed(f"tags must be a string or a list of strings, not {value!r}")


def make_user(name: str, body: dict[str, Any], current: User | None = None) -> User:
    """A user from its JSON (the API's PUT body or a definitions entry): ``password``, or
    ``password_hash`` with ``hashing_algorithm``; neither keeps the current password (or
    makes a user that cannot log in with one). Raises PreconditionFailed."""
    tags = user_tags(body.get("tags"))
    algorithm = body.get("hashing_algorithm") or DEFAULT_HASHING
    if algorithm not in HASHING_ALGORITHMS:
        raise PreconditionFailed(f"unknown hashing_algorithm '{algorithm}' for user '{name}'")
    if "password" in body and body["password"] is not None:
        if not isinstance(body["password"], str):
            raise PreconditionFailed(f"password of user '{name}' must be a string")
        return User(name, body["password"], tags)
    if "password_hash" in body and body["password_hash"] is not None:
        h = body["password_hash"]
        if not isinstance(h, str):
            raise PreconditionFailed(f"password_hash of user '{name}' must be a string")
        if h:
            try:
                raw = base64.b64decode(h, validate=True)
            except (binascii.Error, ValueError):
                raise PreconditionFailed(f"password_hash of user '{name}' is not base64") from None
            if len(raw) < 5:
                raise PreconditionFailed(f"password_hash of user '{name}' is too short")
        return User(name, "", tags, password_hash=h, hashing_algorithm=algorithm)
    if current is not None:
        return User(name, current.password, tags, current.groups, current.password_hash, current.hashing_algorithm)
    return User(name, "", tags, password_hash="")  # no password: cannot log in with one


def user_json(user: User) -> dict[str, Any]:
    if user.password_hash is None:  # hashed once, kept: exports agree with each other
        user.password_hash, user.hashing_algorithm = hash_password(user.password), DEFAULT_HASHING
    return {"name": user.name, "password_hash": user.password_hash, "hashing_algorithm": user.hashing_algorithm,
            "tags": list(user.tags), "limits": {}}


# -- vhosts ---------------------------------------------------------------------------
def add_vhost(broker: Any, name: str, body: dict[str, Any]) -> None:
    broker.add_vhost(name)
    meta = {k: body[k] for k in ("description", "tags", "default_queue_type") if body.get(k) is not None}
    if isinstance(meta.get("tags"), str):
        meta["tags"] = [t for t in meta["tags"].split(",") if t]
    if meta:
        broker.vhost_metadata[name] = meta


def delete_vhost(broker: Any, name: str) -> None:
    """Delete a vhost with everything in it (its queues' messages too) and its permissions."""
    vh = broker.vhosts.get(name)
    if vh is None:
        return
    for qname in list(vh.queues):
        vh.delete_queue(qname, internal=True)
    for xname in [x for x in vh.exchanges if x and not x.startswith("amq.")]:
        vh.delete_exchange(xname)
    del broker.vhosts[name]
    broker.vhost_metadata.pop(name, None)
    for key in [k for k in broker.auth.permissions if k[1] == name]:
        del broker.auth.permissions[key]


# -- export ---------------------------------------------------------------------------
def export_definitions(broker: Any, vhost: str | None = None) -> dict[str, Any]:
    """The node's definitions in RabbitMQ's format (one vhost's, without users, vhosts and
    permissions, when ``vhost`` is given)."""
    release = broker.profile.release
    names = [vhost] if vhost is not None else list(broker.vhosts)
    queues, exchanges, bindings, policies = [], [], [], []
    for name in names:
        vh = broker.vhosts[name]
        tag = {} if vhost is not None else {"vhost": name}
        for p in vh.policies.values():
            policies.append(p.to_json())
        for q in vh.queues.values():
            if q.exclusive_owner is None:
                queues.append({"name": q.name, **tag, "durable": q.durable, "auto_delete": q.auto_delete,
                               "arguments": _plain(q.arguments)})
        for ex in vh.exchanges.values():
            if ex.name and not ex.name.startswith("amq."):
                exchanges.append({"name": ex.name, **tag, "type": ex.type, "durable": ex.durable,
                                  "auto_delete": ex.auto_delete, "internal": ex.internal,
                                  "arguments": _plain(ex.arguments)})
        for b in vh.bindings():
            dest = vh.queues.get(b.destination) if b.destination_kind == "queue" else None
            if dest is None or dest.exclusive_owner is None:
                bindings.append({"source": b.source, **tag, "destination": b.destination,
                                 "destination_type": b.destination_kind, "routing_key": b.routing_key,
                                 "arguments": _plain(b.args)})
    if vhost is not None:
        return {"rabbit_version": release, "parameters": [p for p in broker.parameters if p.get("vhost") == vhost],
                "policies": policies, "queues": queues, "exchanges": exchanges, "bindings": bindings}
    auth = broker.auth
    return {
        "rabbit_version": release, "rabbitmq_version": release, "product_name": broker.profile.product,
        "product_version": release,
        "users": [user_json(u) for u in auth.users.values()],
        "vhosts": [{"name": n, **_vhost_meta(broker, n)} for n in broker.vhosts],
        "permissions": [{"user": u, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read}
                        for (u, v), p in auth.permissions.items()],
        "topic_permissions": list(broker.topic_permissions), "parameters": list(broker.parameters),
        "global_parameters": list(broker.global_parameters), "policies": policies, "queues": queues,
        "exchanges": exchanges, "bindings": bindings,
    }


def _vhost_meta(broker: Any, name: str) -> dict[str, Any]:
    meta = broker.vhost_metadata.get(name)
    return {} if not meta else {"metadata": dict(meta), **{k: v for k, v in meta.items() if k != "default_queue_type"}}


def _plain(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# -- import ---------------------------------------------------------------------------
def ignored(data: dict[str, Any]) -> list[str]:
    """What a file holds that mqemu keeps but does not act on, for the log."""
    return [f"{len(data[k])} {k}" for k in _KEPT if data.get(k)]


def import_definitions(broker: Any, data: dict[str, Any], vhost: str | None = None) -> None:
    """Apply a definitions file, all or nothing. ``vhost``: a per-vhost file (its entries
    carry no vhost). Raises DefinitionsError naming the first bad entry."""
    plan = _Plan(broker, data, vhost)
    try:
        plan.check()
    except BrokerError as e:
        raise DefinitionsError(e.text) from None
    plan.apply()
    for what in ignored(data):
        log.info("definitions: kept but not acted on: %s", what)


class _Plan:
    def __init__(self, broker: Any, data: Any, vhost: str | None) -> None:
        self.broker, self.data, self.vhost = broker, data, vhost
        self.users: list[User] = []
        self.vhosts: list[tuple[str, dict[str, Any]]] = []
        self.permissions: list[tuple[str, str, Permission]] = []
        self.policies: list[Any] = []
        self.exchanges: list[dict[str, Any]] = []
        self.queues: list[dict[str, Any]] = []
        self.bindings: list[dict[str, Any]] = []

    def section(self, name: str) -> list[dict[str, Any]]:
        items = self.data.get(name) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise PreconditionFailed(f"'{name}' must be a list of objects")
        return items

    def vhost_of(self, item: dict[str, Any], what: str) -> str:
        name = self.vhost if self.vhost is not None else item.get("vhost")
        if not isinstance(name, str):
            raise PreconditionFailed(f"{what}: no vhost")
        if name not in self.broker.vhosts and name not in self.new_vhosts:
            raise PreconditionFailed(f"{what}: vhost '{name}' does not exist")
        return name

    def check(self) -> None:
        if not isinstance(self.data, dict):
            raise PreconditionFailed("definitions must be a JSON object")
        for name in SECTIONS:
            self.section(name)
        if self.vhost is None:
            for item in self.section("users"):
                name = _name(item, "user")
                self.users.append(make_user(name, item))
            for item in self.section("vhosts"):
                self.vhosts.append((_name(item, "vhost"), item))
        self.new_vhosts = {n for n, _ in self.vhosts}
        users = set(self.broker.auth.users) | {u.name for u in self.users}
        if self.vhost is None:
            for item in self.section("permissions"):
                what = f"permission of user '{item.get('user')}'"
                vh = self.vhost_of(item, what)
                if item.get("user") not in users:
                    raise PreconditionFailed(f"{what} in vhost '{vh}': no such user")
                regexes = [item.get(k) for k in ("configure", "write", "read")]
                for rx in regexes:
                    if not isinstance(rx, str):
                        raise PreconditionFailed(f"{what} in vhost '{vh}': configure, write and read must be strings")
                    try:
                        re.compile(rx)
                    except re.error as e:
                        raise PreconditionFailed(f"{what} in vhost '{vh}': invalid regular expression {rx!r}: {e}") \
                            from None
                self.permissions.append((item["user"], vh, Permission(str(regexes[0]), str(regexes[1]), str(regexes[2]))))
        for item in self.section("policies"):
            name = _name(item, "policy")
            vh = self.vhost_of(item, f"policy '{name}'")
            try:
                self.policies.append(make_policy(vh, name, item))
            except PreconditionFailed as e:
                raise PreconditionFailed(f"policy '{name}' in vhost '{vh}': {e.text}") from None
        exchanges: dict[tuple[str, str], str] = {}
        for item in self.section("exchanges"):
            name = _name(item, "exchange")
            vh = self.vhost_of(item, f"exchange '{name}'")
            xtype = item.get("type")
            if xtype not in EXCHANGE_TYPES:
                raise PreconditionFailed(f"exchange '{name}' in vhost '{vh}': unknown exchange type '{xtype}'")
            if name == "" or name.startswith("amq."):
                raise PreconditionFailed(f"exchange '{name}' in vhost '{vh}': reserved name")
            current = self.broker.vhosts[vh].exchanges.get(name) if vh in self.broker.vhosts else None
            if current is not None and (current.type, current.durable) != (xtype, bool(item.get("durable", False))):
                raise PreconditionFailed(f"exchange '{name}' in vhost '{vh}': inequivalent to the existing one")
            exchanges[(vh, name)] = xtype
            self.exchanges.append({**item, "vhost": vh})
        queues: set[tuple[str, str]] = set()
        for item in self.section("queues"):
            name = _name(item, "queue")
            vh = self.vhost_of(item, f"queue '{name}'")
            args = item.get("arguments") or {}
            if not isinstance(args, dict):
                raise PreconditionFailed(f"queue '{name}' in vhost '{vh}': arguments must be an object")
            QueueSettings.parse(name, vh, args)
            if name.startswith("amq."):
                raise PreconditionFailed(f"queue '{name}' in vhost '{vh}': reserved name")
            current = self.broker.vhosts[vh].queues.get(name) if vh in self.broker.vhosts else None
            if current is not None:
                same = current.durable == bool(item.get("durable", False)) and current.auto_delete == bool(
                    item.get("auto_delete", False)) and all(
                    current.arguments.get(k) == args.get(k) for k in _EQUIVALENT_ARGS
                    # as a declare: no type matches any type (RabbitMQ's default_queue_type)
                    if not (k == "x-queue-type" and (k not in args or k not in current.arguments)))
                if not same:
                    raise PreconditionFailed(f"queue '{name}' in vhost '{vh}': inequivalent to the existing one")
            queues.add((vh, name))
            self.queues.append({**item, "vhost": vh, "arguments": args})
        for item in self.section("bindings"):
            vh = self.vhost_of(item, "binding")
            source, dest, kind = item.get("source"), item.get("destination"), item.get("destination_type")
            what = f"binding from '{source}' to {kind} '{dest}' in vhost '{vh}'"
            if kind not in ("queue", "exchange"):
                raise PreconditionFailed(f"{what}: destination_type must be queue or exchange")
            have = self.broker.vhosts.get(vh)
            if not isinstance(source, str) or not (source and ((vh, source) in exchanges or (
                    have is not None and source in have.exchanges))):
                raise PreconditionFailed(f"{what}: no such source exchange")
            if kind == "queue":
                found = (vh, dest) in queues or (have is not None and dest in have.queues)
            else:
                found = (vh, dest) in exchanges or (have is not None and dest in have.exchanges)
            if not isinstance(dest, str) or not found:
                raise PreconditionFailed(f"{what}: no such destination")
            self.bindings.append({**item, "vhost": vh})

    def apply(self) -> None:
        broker, auth = self.broker, self.broker.auth
        for name, item in self.vhosts:
            add_vhost(broker, name, item)
        for user in self.users:
            auth.users[user.name] = user
        for u, v, p in self.permissions:
            auth.permissions[(u, v)] = p
        if self.vhost is None:
            broker.topic_permissions.extend(self.section("topic_permissions"))
            broker.global_parameters.extend(self.section("global_parameters"))
        for item in self.section("parameters"):
            broker.parameters.append(item if self.vhost is None else {**item, "vhost": self.vhost})
        for policy in self.policies:
            set_policy(broker.vhosts[policy.vhost], policy)
        for x in self.exchanges:
            broker.vhosts[x["vhost"]].declare_exchange(x["name"], x["type"], durable=bool(x.get("durable", False)),
                                                       auto_delete=bool(x.get("auto_delete", False)),
                                                       internal=bool(x.get("internal", False)),
                                                       arguments=x.get("arguments") or {})
        for q in self.queues:
            broker.vhosts[q["vhost"]].declare_queue(q["name"], durable=bool(q.get("durable", False)),
                                                    auto_delete=bool(q.get("auto_delete", False)),
                                                    arguments=q["arguments"])
        for b in self.bindings:
            broker.vhosts[b["vhost"]].bind(b["source"], b["destination"], str(b.get("routing_key", "")),
                                           b.get("arguments") or {}, destination_kind=b["destination_type"])


def _name(item: dict[str, Any], what: str) -> str:
    name = item.get("name")
    if not isinstance(name, str):
        raise PreconditionFailed(f"a {what} without a name")
    return name


def read_file(path: str) -> Any:
    """A definitions file's JSON (``--definitions FILE``). Raises DefinitionsError."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise DefinitionsError(f"cannot read definitions file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise DefinitionsError(f"definitions file {path} is not JSON: {e}") from None


def load_file(broker: Any, path: str) -> None:
    """Read and apply a definitions file. Raises DefinitionsError naming the file and the
    first error (nothing is applied then)."""
    try:
        import_definitions(broker, read_file(path))
    except DefinitionsError as e:
        raise DefinitionsError(f"definitions file {path} rejected, nothing applied: {e}") from None


# -- kept in the store ----------------------------------------------------------------
# Users, vhosts, permissions, policies and the kept extras live in one store record, rewritten
# after each change through the API or a definitions import (queues, exchanges and bindings
# are the store's own rows). A node with a data directory restores them at start: vhosts
# before recovery (their queues come back), the rest after it (policies apply to recovered
# queues). The record is the truth for users and permissions once written; without one the
# config file's (or the default guest) stand.
RECORDS = "definitions"
_ACCESS = ("users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters", "policies")


def save_access(broker: Any) -> None:
    """Users, vhosts, permissions or policies changed: keep them, and make every session
    check its permissions again."""
    import json

    broker.auth.revoke_grants()
    data = export_definitions(broker)
    access = {k: data[k] for k in _ACCESS}
    hook = getattr(broker, "definitions_hook", None)
    if hook is not None:  # a cluster member: the change is replicated (or refused and undone)
        hook.changing(None, "access", access)
    broker.store.put_record(RECORDS, "access", json.dumps(access).encode())


def restore_vhosts(broker: Any, records: dict[str, dict[str, bytes]]) -> dict[str, Any] | None:
    """Before recovery: the saved record's vhosts exist. Returns the record (None: none)."""
    import json

    raw = records.get(RECORDS, {}).get("access")
    if not raw:
        return None
    try:
        data = json.loads(raw)
        for item in data.get("vhosts", []):
            add_vhost(broker, item["name"], item)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.error("the stored users, vhosts and policies cannot be read (%s): the config's stand", e)
        return None
    return data


def restore_access(broker: Any, data: dict[str, Any]) -> None:
    """After recovery: users, permissions, extras and policies from the saved record."""
    auth = broker.auth
    try:
        users = {u["name"]: make_user(u["name"], u) for u in data.get("users", [])}
        permissions = {(p["user"], p["vhost"]): Permission(p["configure"], p["write"], p["read"])
                       for p in data.get("permissions", []) if p.get("vhost") in broker.vhosts}
        rules = [make_policy(p["vhost"], p["name"], p) for p in data.get("policies", [])
                 if p.get("vhost") in broker.vhosts]
    except (BrokerError, KeyError, TypeError) as e:
        log.error("the stored users, permissions and policies cannot be read (%s): the config's stand", e)
        return
    auth.users.clear()
    auth.users.update(users)
    auth.permissions.clear()
    auth.permissions.update(permissions)
    broker.topic_permissions[:] = data.get("topic_permissions", [])
    broker.parameters[:] = data.get("parameters", [])
    broker.global_parameters[:] = data.get("global_parameters", [])
    for policy in rules:
        set_policy(broker.vhosts[policy.vhost], policy)
