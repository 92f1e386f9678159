"""What the control plane keeps: brokers, their users, configurations with revisions, and
tags, as plain JSON-able dicts keyed by the model's member names, saved to
``<data-dir>/state.json`` (replaced whole on every change) when there is a data dir.

Also the records' own rules: IDs and ARNs, user names and passwords as Amazon MQ checks
them, pagination tokens, and the timing profiles of the state transitions.

No password is kept in plain text: a user record holds ``PasswordHash`` and
``HashingAlgorithm`` (RabbitMQ's salted SHA-256, the format its definitions and mqemu's
``[[users]] password_hash`` take), made once when the password arrives; a state file written
before that (with ``Password``) is converted when it is read.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

from mqemu.broker.auth import DEFAULT_HASHING, hash_password

from .model import bad_request

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds a broker stays in CREATION_IN_PROGRESS, REBOOT_IN_PROGRESS and
    DELETION_IN_PROGRESS beyond what its nodes take."""

    create: float = 0.0
    reboot: float = 0.0
    delete: float = 0.0


# ``aws``: about what Amazon MQ takes (a broker is created in about 15 minutes, rebooted in
# about 5 and deleted in about 10).
TIMINGS = {"fast": Timing(), "aws": Timing(900.0, 300.0, 600.0)}


def parse_timing(text: str) -> Timing:
    """``fast``, ``aws`` or ``create=S,reboot=S,delete=S`` (seconds; missing ones are 0)."""
    if text in TIMINGS:
        return TIMINGS[text]
    fields: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("create", "reboot", "delete"):
            raise ValueError(f"timing is fast, aws or create=S,reboot=S,delete=S, not {text!r}")
        fields[key.strip()] = float(value)
    return Timing(**fields)


def new_broker_id() -> str:
    return f"b-{uuid.uuid4()}"


def new_configuration_id() -> str:
    return f"c-{uuid.uuid4()}"


USERNAME = re.compile(r"^[A-Za-z0-9_.~-]{2,100}$")


def check_user(username: str, password: str | None, attribute_prefix: str = "") -> None:
    """Amazon MQ's rules for a user name and password."""
    if not USERNAME.match(username):
        raise bad_request("Username must be 2-100 characters long and contain only letters, digits, "
                          "hyphens, periods, underscores and tildes.", f"{attribute_prefix}username")
    if password is None:
        return
    if len(password) < 12 or len(password) > 250:
        raise bad_request("Password must be 12-250 characters long.", f"{attribute_prefix}password")
    if len(set(password)) < 4:
        raise bad_request("Password must contain at least 4 unique characters.", f"{attribute_prefix}password")
    if any(c in password for c in ",:="):
        raise bad_request("Password must not contain commas, colons or equal signs.", f"{attribute_prefix}password")


def hashed(password: str) -> dict[str, str]:
    """A user record's password fields: a salted hash, never the password."""
    return {"PasswordHash": hash_password(password), "HashingAlgorithm": DEFAULT_HASHING}


def _hash_plain(brokers: dict[str, Any]) -> bool:
    """Replace the plain passwords of an older state file by hashes; True if any was."""
    changed = False
    for broker in brokers.values():
        for user in broker.get("Users", {}).values():
            for record in (user.get("Current"), user.get("Pending")):
                if record and "Password" in record:
                    record.update(hashed(record.pop("Password")))
                    changed = True
    return changed


def page(items: list[Any], max_results: int | None, token: str | None, default: int = 100) -> tuple[list[Any], str | None]:
    """One page of ``items`` and the token of the next (None on the last page)."""
    start = 0
    if token is not None:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("mqemu:"))
        except ValueError:
            raise bad_request("The NextToken is not valid.", "nextToken") from None
        if start < 0 or start > len(items):
            raise bad_request("The NextToken is not valid.", "nextToken")
    end = start + (max_results or default)
    nxt = base64.urlsafe_b64encode(f"mqemu:{end}".encode()).decode() if end < len(items) else None
    return items[start:end], nxt


class State:
    """The records, and their file when there is a data dir."""

    def __init__(self, data_dir: str | None) -> None:
        self.data_dir = data_dir
        self.brokers: dict[str, dict[str, Any]] = {}
        self.configurations: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, str]] = {}  # ARN -> tags

    def load(self) -> None:
        if not self.data_dir:
            return
        path = os.path.join(self.data_dir, STATE_FILE)
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return
        self.brokers = doc.get("brokers", {})
        self.configurations = doc.get("configurations", {})
        self.tags = doc.get("tags", {})
        if _hash_plain(self.brokers):
            self.save()

    def save(self) -> None:
        if not self.data_dir:
            return
        os.makedirs(self.data_dir, exist_ok=True)
        path = os.path.join(self.data_dir, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"version": STATE_VERSION, "brokers": self.brokers, "configurations": self.configurations,
                       "tags": self.tags}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def broker_by_name(self, name: str) -> dict[str, Any] | None:
        for broker in self.brokers.values():
            if broker["BrokerName"] == name:
                return broker
        return None
