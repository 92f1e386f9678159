"""The Amazon MQ operations, one method per operation of the model (named as the model names
it), each taking the parsed input (member names) and returning the output: brokers, tags and
what Amazon MQ offers here; users in ``users.py``, configurations in ``configurations.py``.

Brokers move through their states as Amazon MQ's do: CREATION_IN_PROGRESS while their nodes
start (plus the timing's delay), RUNNING, REBOOT_IN_PROGRESS while pending changes are
applied and the nodes restart, DELETION_IN_PROGRESS while they stop and their data goes; the
background work runs in the control plane's nursery. Operations a broker's state forbids
are refused (``_require_state``). User, configuration, engine version and instance type
changes wait for a reboot, shown in the ``Pending*`` fields as AWS shows them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import trio

from . import configs, engines
from .brokers import PLAIN, TOPOLOGY_MODES, BrokerNodes, EndpointStyle, node_config
from .configurations import Configurations
from .model import ApiError, bad_request, conflict, not_found
from .state import State, Timing, check_user, new_broker_id, page
from .users import Users

log = logging.getLogger("mqemu.ha.aws")

NAME = r"^[A-Za-z0-9_-]{1,50}$"


class Service(Users, Configurations):
    def __init__(self, state: State, timing: Timing, workdir: str, region: str = "us-east-1",
                 account: str = "123456789012", style: EndpointStyle = PLAIN) -> None:
        self.state = state
        self.style = style  # TLS endpoints (the control plane's certificate) or plain ones
        self.timing = timing
        self.workdir = workdir  # each broker's nodes keep their data and logs under it
        self.region = region
        self.account = account
        self.nodes: dict[str, BrokerNodes] = {}
        self.nursery: trio.Nursery | None = None

    # -- the control plane's life --------------------------------------------------------
    async def resume(self, nursery: trio.Nursery) -> None:
        """Start the brokers the saved state has (each with its own data), finish deletions."""
        self.nursery = nursery
        for broker in list(self.state.brokers.values()):
            if broker["BrokerState"] == "DELETION_IN_PROGRESS":
                nursery.start_soon(self._delete, broker)
            elif broker["BrokerState"] != "CREATION_FAILED":
                if broker["BrokerState"] != "CREATION_IN_PROGRESS":
                    broker["BrokerState"] = "REBOOT_IN_PROGRESS"  # its nodes start again
                nursery.start_soon(self._create, broker)

    async def close(self) -> None:
        for nodes in list(self.nodes.values()):
            await nodes.stop()

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self.nursery is not None, "the service runs inside the control plane"
        self.nursery.start_soon(fn, *args)

    def _nodes_of(self, broker: dict[str, Any]) -> BrokerNodes:
        nodes = self.nodes.get(broker["BrokerId"])
        if nodes is None:
            nodes = BrokerNodes(os.path.join(self.workdir, "brokers", broker["BrokerId"]), broker["DeploymentMode"],
                                engines.MQEMU_ENGINE[broker["EngineType"]], broker.setdefault("ListenPorts", {}),
                                self.style)
            self.nodes[broker["BrokerId"]] = nodes
        return nodes

    def _write_node_config(self, broker: dict[str, Any]) -> None:
        engine = broker["EngineType"]
        users = [u["Current"] for u in broker["Users"].values() if u.get("Current")]
        current = broker["Configurations"].get("Current")
        data = None
        if current:
            config = self.state.configurations.get(current["Id"])
            if config:
                data = config["Revisions"][current["Revision"] - 1]["Data"]
        # the nodes apply it (--activemq-xml, --rabbitmq-conf)
        text = configs.decode(data or configs.default_data(engine))
        xml, conf = (text, None) if engine == "ACTIVEMQ" else (None, text)
        self._nodes_of(broker).write_config(node_config(
            engines.MQEMU_ENGINE[engine], engines.ENGINE_VERSIONS[engine][broker["EngineVersion"]], users,
            None), xml, conf)

    async def _create(self, broker: dict[str, Any]) -> None:
        began = time.monotonic()
        nodes = self._nodes_of(broker)
        self._write_node_config(broker)
        try:
            assert self.nursery is not None
            await nodes.start(self.nursery)
        except Exception as e:  # a node that cannot start: the broker failed, as on AWS
            log.error("broker %s could not start: %s", broker["BrokerId"], e)
            broker["BrokerState"] = "CREATION_FAILED"
            self.state.save()
            return
        if broker["BrokerId"] not in self.state.brokers:  # pragma: no cover - deletion waits for RUNNING
            await nodes.stop()
            return
        self.state.save()  # the proxies' ports
        await trio.sleep(max(0.0, self.timing.create - (time.monotonic() - began)))
        if broker["BrokerState"] in ("CREATION_IN_PROGRESS", "REBOOT_IN_PROGRESS", "RUNNING"):
            broker["BrokerState"] = "RUNNING"
            self.state.save()

    async def _reboot(self, broker: dict[str, Any]) -> None:
        began = time.monotonic()
        self._apply_pending(broker)
        self._write_node_config(broker)
        self.state.save()
        try:
            await self._nodes_of(broker).reboot()
        except Exception as e:
            log.error("broker %s: reboot failed: %s", broker["BrokerId"], e)
        await trio.sleep(max(0.0, self.timing.reboot - (time.monotonic() - began)))
        broker["BrokerState"] = "RUNNING"
        self.state.save()

    async def _delete(self, broker: dict[str, Any]) -> None:
        began = time.monotonic()
        nodes = self._nodes_of(broker)
        await nodes.stop()
        nodes.remove_data()
        await trio.sleep(max(0.0, self.timing.delete - (time.monotonic() - began)))
        self.nodes.pop(broker["BrokerId"], None)
        self.state.brokers.pop(broker["BrokerId"], None)
        self.state.tags.pop(broker["BrokerArn"], None)
        self.state.save()

    def _apply_pending(self, broker: dict[str, Any]) -> None:
        """What a reboot applies: user changes, the pending configuration, engine version,
        instance type, security groups and authentication strategy."""
        for name, user in list(broker["Users"].items()):
            change = user.pop("PendingChange", None)
            pending = user.pop("Pending", None)
            if change == "DELETE":
                del broker["Users"][name]
            elif change in ("CREATE", "UPDATE") and pending:
                user["Current"] = {**(user.get("Current") or {}), **pending}
        configurations = broker["Configurations"]
        pending_config = configurations.pop("Pending", None)
        if pending_config:
            configurations.setdefault("History", []).append(configurations["Current"])
            configurations["Current"] = pending_config
        for field in ("EngineVersion", "HostInstanceType", "SecurityGroups", "AuthenticationStrategy"):
            value = broker.pop(f"Pending{field}", None)
            if value is not None:
                broker[field] = value

    # -- lookups -------------------------------------------------------------------------
    def _broker(self, broker_id: str) -> dict[str, Any]:
        broker = self.state.brokers.get(broker_id)
        if broker is None:
            raise not_found(f"Can't find requested broker [{broker_id}]. Make sure your broker exists.", "broker-id")
        return broker

    @staticmethod
    def _require_state(broker: dict[str, Any], action: str, allowed: tuple[str, ...] = ("RUNNING",),
                       code: str = "BadRequestException") -> None:
        if broker["BrokerState"] not in allowed:
            raise ApiError(code, f"Broker [{broker['BrokerId']}] is in state [{broker['BrokerState']}]: "
                           f"it can be {action} only in state {' or '.join(allowed)}.", "broker-id")

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:mq:{self.region}:{self.account}:{kind}:{name}"

    # -- brokers -------------------------------------------------------------------------
    async def CreateBroker(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 (the model's names)
        name, engine, mode = p["BrokerName"], p["EngineType"], p["DeploymentMode"]
        if not re.match(NAME, name):
            raise bad_request("Broker name must be 1-50 characters long and contain only letters, digits, "
                              "hyphens and underscores.", "brokerName")
        token = p.get("CreatorRequestId")  # boto3 fills it in: a retried call gets the same broker
        for existing in self.state.brokers.values():
            if token and existing.get("CreatorRequestId") == token:
                return {"BrokerArn": existing["BrokerArn"], "BrokerId": existing["BrokerId"]}
        if self.state.broker_by_name(name) is not None:
            raise conflict(f"Broker with name [{name}] already exists.", "brokerName")
        version = engines.engine_version(engine, p.get("EngineVersion"))
        engines.check_placement(engine, mode, p["HostInstanceType"], p.get("StorageType"))
        strategy = p.get("AuthenticationStrategy", "SIMPLE")
        if strategy == "LDAP":
            raise bad_request("mqemu: LDAP authentication is not emulated; use SIMPLE.", "authenticationStrategy")
        users = p.get("Users") or []
        self._check_new_users(engine, users)
        config_ref = p.get("Configuration")
        broker_id = new_broker_id()
        if config_ref:
            config = self.state.configurations.get(config_ref["Id"])
            if config is None:  # CreateBroker's errors have no NotFoundException
                raise bad_request(f"Configuration [{config_ref['Id']}] does not exist.", "configuration")
            if config["EngineType"] != engine:
                raise bad_request(f"Configuration [{config_ref['Id']}] is for engine type [{config['EngineType']}], "
                                  f"not [{engine}].", "configuration")
            revision = config_ref.get("Revision") or len(config["Revisions"])
            self._revision(config, revision, "configuration")
            current = {"Id": config["Id"], "Revision": revision}
        else:
            config = self._new_configuration(f"{name}-configuration", engine, version, strategy, None)
            current = {"Id": config["Id"], "Revision": 1}
        arn = self._arn("broker", f"{name}:{broker_id}")
        broker = {
            "BrokerId": broker_id, "BrokerName": name, "BrokerArn": arn, "Created": time.time(),
            "BrokerState": "CREATION_IN_PROGRESS", "DeploymentMode": mode, "EngineType": engine,
            "EngineVersion": version, "HostInstanceType": p["HostInstanceType"],
            "PubliclyAccessible": p["PubliclyAccessible"], "AutoMinorVersionUpgrade": p.get("AutoMinorVersionUpgrade", True),
            "AuthenticationStrategy": strategy,
            "StorageType": p.get("StorageType") or ("EFS" if engine == "ACTIVEMQ" else "EBS"),
            "SecurityGroups": p.get("SecurityGroups"), "SubnetIds": p.get("SubnetIds"),
            "EncryptionOptions": p.get("EncryptionOptions") or {"UseAwsOwnedKey": True},
            "Logs": p.get("Logs") or {"General": False, **({"Audit": False} if engine == "ACTIVEMQ" else {})},
            "MaintenanceWindowStartTime": p.get("MaintenanceWindowStartTime")
            or {"DayOfWeek": "SUNDAY", "TimeOfDay": "02:00", "TimeZone": "UTC"},
            "DataReplicationMode": p.get("DataReplicationMode") or "NONE",
            "Configurations": {"Current": current, "History": []},
            "Users": {u["Username"]: {"Current": self._user_record(u)} for u in users},
            "ListenPorts": {}, "CreatorRequestId": token,
        }
        self.state.brokers[broker_id] = broker
        if p.get("Tags"):
            self.state.tags[arn] = dict(p["Tags"])
        self.state.save()
        self._spawn(self._create, broker)
        return {"BrokerArn": arn, "BrokerId": broker_id}

    async def DescribeBroker(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        engine = b["EngineType"]
        out = {k: b.get(k) for k in (
            "BrokerArn", "BrokerId", "BrokerName", "BrokerState", "Created", "DeploymentMode", "EngineVersion",
            "HostInstanceType", "PubliclyAccessible", "AutoMinorVersionUpgrade", "StorageType", "SecurityGroups",
            "SubnetIds", "EncryptionOptions", "MaintenanceWindowStartTime", "DataReplicationMode",
            "PendingEngineVersion", "PendingHostInstanceType", "PendingSecurityGroups")}
        out["EngineType"] = engines.ENGINE_DISPLAY[engine]
        out["AuthenticationStrategy"] = b["AuthenticationStrategy"].lower()  # AWS answers "simple"
        if b.get("PendingAuthenticationStrategy"):
            out["PendingAuthenticationStrategy"] = b["PendingAuthenticationStrategy"].lower()
        out["Configurations"] = {k: v for k, v in b["Configurations"].items() if v is not None}
        logs = b["Logs"]
        summary: dict[str, Any] = {"General": bool(logs.get("General")),
                                   "GeneralLogGroup": f"/aws/amazonmq/broker/{b['BrokerId']}/general"}
        if engine == "ACTIVEMQ":
            summary.update(Audit=bool(logs.get("Audit")), AuditLogGroup=f"/aws/amazonmq/broker/{b['BrokerId']}/audit")
        out["Logs"] = summary
        out["Tags"] = dict(self.state.tags.get(b["BrokerArn"], {}))
        out["Users"] = self._user_summaries(b)
        out["ActionsRequired"] = []
        nodes = self.nodes.get(b["BrokerId"])
        out["BrokerInstances"] = nodes.instances() if nodes is not None and b["BrokerState"] != "CREATION_IN_PROGRESS" \
            else []
        out["DataReplicationMetadata"] = None
        return out

    def mqemu_broker(self, broker_id: str) -> dict[str, Any]:
        """``GET /mqemu/brokers/{broker-id}`` (mqemu's own, not AWS's): the CA file the TLS
        endpoints are verified with, and every node with its role and its own endpoints."""
        b = self._broker(broker_id)
        nodes = self.nodes.get(broker_id)
        return {"broker_id": broker_id, "state": b["BrokerState"], "deployment_mode": b["DeploymentMode"],
                "ca": self.style.tls.ca_file if self.style.tls else None,
                "nodes": nodes.nodes() if nodes is not None else []}

    async def ListBrokers(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        brokers = sorted(self.state.brokers.values(), key=lambda b: b["Created"])
        items, token = page(brokers, p.get("MaxResults"), p.get("NextToken"))
        return {"BrokerSummaries": [{
            "BrokerArn": b["BrokerArn"], "BrokerId": b["BrokerId"], "BrokerName": b["BrokerName"],
            "BrokerState": b["BrokerState"], "Created": b["Created"], "DeploymentMode": b["DeploymentMode"],
            "EngineType": engines.ENGINE_DISPLAY[b["EngineType"]], "HostInstanceType": b["HostInstanceType"],
        } for b in items], "NextToken": token}

    async def UpdateBroker(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        self._require_state(b, "updated", code="ConflictException")
        engine = b["EngineType"]
        out: dict[str, Any] = {"BrokerId": b["BrokerId"]}
        if "EngineVersion" in p:
            version = engines.engine_version(engine, p["EngineVersion"])
            order = list(engines.ENGINE_VERSIONS[engine])
            if order.index(version) > order.index(b["EngineVersion"]):
                raise bad_request(f"Broker engine version [{p['EngineVersion']}] is older than the broker's "
                                  f"[{b['EngineVersion']}]: downgrades are not supported.", "engineVersion")
            if version != b["EngineVersion"]:
                b["PendingEngineVersion"] = version
            out["EngineVersion"] = version
        if "HostInstanceType" in p:
            engines.check_placement(engine, b["DeploymentMode"], p["HostInstanceType"], None)
            if p["HostInstanceType"] != b["HostInstanceType"]:
                b["PendingHostInstanceType"] = p["HostInstanceType"]
            out["HostInstanceType"] = p["HostInstanceType"]
        if "Configuration" in p:
            ref = p["Configuration"]
            config = self._configuration(ref["Id"], "configuration")
            if config["EngineType"] != engine:
                raise bad_request(f"Configuration [{ref['Id']}] is for engine type [{config['EngineType']}], "
                                  f"not [{engine}].", "configuration")
            revision = ref.get("Revision") or len(config["Revisions"])
            self._revision(config, revision, "configuration")
            b["Configurations"]["Pending"] = {"Id": ref["Id"], "Revision": revision}
            out["Configuration"] = {"Id": ref["Id"], "Revision": revision}
        if "SecurityGroups" in p:
            b["PendingSecurityGroups"] = p["SecurityGroups"]
            out["SecurityGroups"] = p["SecurityGroups"]
        if "AuthenticationStrategy" in p:
            if p["AuthenticationStrategy"] == "LDAP":
                raise bad_request("mqemu: LDAP authentication is not emulated; use SIMPLE.", "authenticationStrategy")
            if p["AuthenticationStrategy"] != b["AuthenticationStrategy"]:
                b["PendingAuthenticationStrategy"] = p["AuthenticationStrategy"]
            out["AuthenticationStrategy"] = p["AuthenticationStrategy"]
        for field in ("AutoMinorVersionUpgrade", "MaintenanceWindowStartTime", "Logs"):
            if field in p:
                b[field] = p[field]
                out[field] = p[field]
        if "DataReplicationMode" in p:
            if p["DataReplicationMode"] != "NONE":
                raise bad_request("mqemu: cross-region data replication (CRDR) is not emulated.",
                                  "dataReplicationMode")
            out["DataReplicationMode"] = "NONE"
        self.state.save()
        return out

    async def DeleteBroker(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        self._require_state(b, "deleted", ("RUNNING", "CREATION_FAILED", "CRITICAL_ACTION_REQUIRED"))
        b["BrokerState"] = "DELETION_IN_PROGRESS"
        self.state.save()
        self._spawn(self._delete, b)
        return {"BrokerId": b["BrokerId"]}

    async def RebootBroker(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        self._require_state(b, "rebooted")
        b["BrokerState"] = "REBOOT_IN_PROGRESS"
        self.state.save()
        self._spawn(self._reboot, b)
        return {}

    async def Promote(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        b = self._broker(p["BrokerId"])
        if b.get("DataReplicationMode", "NONE") == "NONE":
            raise bad_request(f"Broker [{b['BrokerId']}] is not a data replication (CRDR) replica: there is "
                              "nothing to promote.", "broker-id")
        return {"BrokerId": b["BrokerId"]}  # pragma: no cover - CRDR brokers are refused at creation

    # -- tags ----------------------------------------------------------------------------
    def _resource(self, arn: str) -> str:
        known = {b["BrokerArn"] for b in self.state.brokers.values()} | \
                {c["Arn"] for c in self.state.configurations.values()}
        if arn not in known:
            raise not_found(f"Can't find requested resource [{arn}].", "resource-arn")
        return arn

    async def CreateTags(self, p: dict[str, Any]) -> None:  # noqa: N802
        arn = self._resource(p["ResourceArn"])
        self.state.tags.setdefault(arn, {}).update(p.get("Tags") or {})
        self.state.save()

    async def DeleteTags(self, p: dict[str, Any]) -> None:  # noqa: N802
        arn = self._resource(p["ResourceArn"])
        tags = self.state.tags.get(arn, {})
        for key in p["TagKeys"]:
            tags.pop(key, None)
        self.state.save()

    async def ListTags(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"Tags": dict(self.state.tags.get(self._resource(p["ResourceArn"]), {}))}

    # -- what Amazon MQ offers -----------------------------------------------------------
    async def DescribeBrokerEngineTypes(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        items, token = page(engines.engine_types(p.get("EngineType")), p.get("MaxResults"), p.get("NextToken"))
        return {"BrokerEngineTypes": items, "MaxResults": p.get("MaxResults"), "NextToken": token}

    async def DescribeBrokerInstanceOptions(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        options = engines.instance_options(self.region, p.get("EngineType"), p.get("HostInstanceType"),
                                           p.get("StorageType"))
        items, token = page(options, p.get("MaxResults"), p.get("NextToken"))
        return {"BrokerInstanceOptions": items, "MaxResults": p.get("MaxResults"), "NextToken": token}


__all__ = ["Service", "TOPOLOGY_MODES", "check_user"]
