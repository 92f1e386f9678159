"""The broker users' operations (CreateUser, DescribeUser, UpdateUser, DeleteUser,
ListUsers) and the users CreateBroker takes.

As on Amazon MQ: an ActiveMQ broker's users are its simple-authentication users (with their
groups and ConsoleAccess); CreateBroker's users exist at once, later changes wait for a
reboot, shown as ``PendingChange`` (CREATE, UPDATE, DELETE) and ``Pending``. A password is
kept only as its salted hash (``state.hashed``), which is also what the nodes are given. A RabbitMQ
broker takes exactly one user, its administrator, at creation; Amazon MQ neither lists nor
manages RabbitMQ users afterwards (that is RabbitMQ's own management API).
"""

from __future__ import annotations

from typing import Any

from .model import bad_request, conflict, not_found
from .state import State, check_user, hashed, page

MAX_USERS = 250


class Users:
    state: State

    def _broker(self, broker_id: str) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _require_state(broker: dict[str, Any], action: str, allowed: tuple[str, ...] = ("RUNNING",),
                       code: str = "BadRequestException") -> None:
        raise NotImplementedError

    @staticmethod
    def _user_record(u: dict[str, Any]) -> dict[str, Any]:
        return {"Username": u["Username"], **hashed(u["Password"]), "Groups": list(u.get("Groups") or []),
                "ConsoleAccess": bool(u.get("ConsoleAccess", False)),
                "ReplicationUser": bool(u.get("ReplicationUser", False))}

    def _check_new_users(self, engine: str, users: list[dict[str, Any]]) -> None:
        if engine == "RABBITMQ" and len(users) != 1:
            raise bad_request("Specify exactly one user for engine type [RABBITMQ].", "users")
        if engine == "ACTIVEMQ" and not users:
            raise bad_request("Specify at least one user for engine type [ACTIVEMQ] with authentication "
                              "strategy [SIMPLE].", "users")
        if len(users) > MAX_USERS:
            raise bad_request(f"A broker can have at most {MAX_USERS} users.", "users")
        seen = set()
        for u in users:
            check_user(u["Username"], u["Password"], "users.")
            if u["Username"] in seen:
                raise bad_request(f"User [{u['Username']}] is given twice.", "users")
            seen.add(u["Username"])
            if engine == "RABBITMQ" and (u.get("Groups") or u.get("ConsoleAccess")):
                raise bad_request("Groups and ConsoleAccess are not supported for engine type [RABBITMQ].", "users")

    def _user_summaries(self, b: dict[str, Any]) -> list[dict[str, Any]]:
        if b["EngineType"] == "RABBITMQ":
            return []  # Amazon MQ does not give RabbitMQ's users back
        return [{"Username": name, **({"PendingChange": u["PendingChange"]} if u.get("PendingChange") else {})}
                for name, u in sorted(b["Users"].items())]

    def _activemq_broker(self, broker_id: str) -> dict[str, Any]:
        b = self._broker(broker_id)
        if b["EngineType"] == "RABBITMQ":
            raise bad_request("Users of engine type [RABBITMQ] are managed with RabbitMQ's own management API, "
                              "not with Amazon MQ's.", "broker-id")
        self._require_state(b, "changed", ("RUNNING", "REBOOT_IN_PROGRESS", "CREATION_IN_PROGRESS"))
        return b

    @staticmethod
    def _user(b: dict[str, Any], username: str) -> dict[str, Any]:
        user = b["Users"].get(username)
        if user is None:
            raise not_found(f"Can't find requested user [{username}]. Make sure your user exists.", "username")
        return user

    async def CreateUser(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._activemq_broker(p["BrokerId"])
        check_user(p["Username"], p["Password"])
        if p["Username"] in b["Users"]:
            raise conflict(f"User [{p['Username']}] already exists.", "username")
        if len(b["Users"]) >= MAX_USERS:
            raise bad_request(f"A broker can have at most {MAX_USERS} users.", "username")
        b["Users"][p["Username"]] = {"Current": None, "PendingChange": "CREATE", "Pending": self._user_record(p)}
        self.state.save()
        return {}

    async def UpdateUser(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._activemq_broker(p["BrokerId"])
        user = self._user(b, p["Username"])
        if user.get("PendingChange") == "DELETE":
            raise conflict(f"User [{p['Username']}] is pending deletion.", "username")
        check_user(p["Username"], p.get("Password"))
        base = user.get("Pending") or user.get("Current") or {}
        changed: dict[str, Any] = {k: p[k] for k in ("Groups", "ConsoleAccess", "ReplicationUser") if k in p}
        if "Password" in p:
            changed.update(hashed(p["Password"]))
        user["Pending"] = {**base, **changed}
        if user.get("PendingChange") != "CREATE":
            user["PendingChange"] = "UPDATE"
        self.state.save()
        return {}

    async def DeleteUser(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._activemq_broker(p["BrokerId"])
        user = self._user(b, p["Username"])
        if user.get("PendingChange") == "CREATE":
            del b["Users"][p["Username"]]  # never applied: nothing to remove at reboot
        else:
            user["PendingChange"] = "DELETE"
            user.pop("Pending", None)
        self.state.save()
        return {}

    async def DescribeUser(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        if b["EngineType"] == "RABBITMQ":
            raise not_found(f"Can't find requested user [{p['Username']}]: Amazon MQ does not manage users of "
                            "engine type [RABBITMQ].", "username")
        user = self._user(b, p["Username"])
        current = user.get("Current") or {}
        out: dict[str, Any] = {"BrokerId": b["BrokerId"], "Username": p["Username"],
                               "ConsoleAccess": current.get("ConsoleAccess", False),
                               "Groups": list(current.get("Groups") or []),
                               "ReplicationUser": current.get("ReplicationUser", False)}
        if user.get("PendingChange"):
            pending = user.get("Pending") or {}
            out["Pending"] = {"PendingChange": user["PendingChange"],
                              **({"ConsoleAccess": pending.get("ConsoleAccess", False),
                                  "Groups": list(pending.get("Groups") or [])} if pending else {})}
        return out

    async def ListUsers(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        summaries = self._user_summaries(b)
        shown, token = page(summaries, p.get("MaxResults"), p.get("NextToken"))
        return {"BrokerId": b["BrokerId"], "MaxResults": p.get("MaxResults"), "NextToken": token, "Users": shown}
