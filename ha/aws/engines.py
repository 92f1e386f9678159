"""What Amazon MQ offers, as mqemu answers for it: engine versions (and the mqemu engine
version each runs as), host instance types, deployment modes, and the checks CreateBroker
and UpdateBroker make with them.

Engine versions are given as AWS lists them now (major.minor, patched automatically) and
accepted with a patch level too ("5.17.6"). A version AWS no longer offers, or one mqemu does
not emulate, is refused with AWS's message.
"""

from __future__ import annotations

from .model import bad_request

# AWS engine type -> {AWS version: mqemu --engine-version}, newest first (the first is the default).
ENGINE_VERSIONS: dict[str, dict[str, str]] = {
    "ACTIVEMQ": {"5.18": "5.18", "5.17": "5.17"},
    "RABBITMQ": {"4.2": "4.2", "3.13": "3.13"},
}
MQEMU_ENGINE = {"ACTIVEMQ": "activemq", "RABBITMQ": "rabbitmq"}
# The engine type as DescribeBroker and DescribeConfiguration give it back.
ENGINE_DISPLAY = {"ACTIVEMQ": "ActiveMQ", "RABBITMQ": "RabbitMQ"}
DEPLOYMENT_MODES = {
    "ACTIVEMQ": ("SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ"),
    "RABBITMQ": ("SINGLE_INSTANCE", "CLUSTER_MULTI_AZ"),
}
# host instance type -> (engines, deployment modes it may run)
INSTANCE_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mq.t2.micro": (("ACTIVEMQ",), ("SINGLE_INSTANCE",)),
    "mq.t3.micro": (("ACTIVEMQ", "RABBITMQ"), ("SINGLE_INSTANCE",)),
    "mq.m5.large": (("ACTIVEMQ", "RABBITMQ"), ("SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ", "CLUSTER_MULTI_AZ")),
    "mq.m5.xlarge": (("ACTIVEMQ", "RABBITMQ"), ("SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ", "CLUSTER_MULTI_AZ")),
    "mq.m5.2xlarge": (("ACTIVEMQ", "RABBITMQ"), ("SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ", "CLUSTER_MULTI_AZ")),
    "mq.m5.4xlarge": (("ACTIVEMQ", "RABBITMQ"), ("SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ", "CLUSTER_MULTI_AZ")),
    "mq.m7g.medium": (("RABBITMQ",), ("SINGLE_INSTANCE",)),
    "mq.m7g.large": (("RABBITMQ",), ("SINGLE_INSTANCE", "CLUSTER_MULTI_AZ")),
    "mq.m7g.xlarge": (("RABBITMQ",), ("SINGLE_INSTANCE", "CLUSTER_MULTI_AZ")),
}
STORAGE_TYPES = {"ACTIVEMQ": ("EFS", "EBS"), "RABBITMQ": ("EBS",)}
AVAILABILITY_ZONES = ("a", "b", "c")


def engine_version(engine: str, version: str | None) -> str:
    """The AWS version a broker runs (the engine's newest when none is asked for);
    refuses one AWS does not offer for the engine."""
    versions = ENGINE_VERSIONS[engine]
    if version is None:
        return next(iter(versions))
    parts = version.split(".")
    short = ".".join(parts[:2])
    if short in versions and len(parts) <= 3 and all(p.isdigit() for p in parts):
        return short
    raise bad_request(f"Broker engine version [{version}] is not supported for engine type [{engine}]. "
                      f"Supported versions: {', '.join(versions)}.", "engineVersion")


def check_placement(engine: str, mode: str, instance_type: str, storage: str | None) -> None:
    """Refuse a deployment mode, instance type or storage type the engine cannot have."""
    if mode not in DEPLOYMENT_MODES[engine]:
        raise bad_request(f"Broker deployment mode [{mode}] is not supported for engine type [{engine}].",
                          "deploymentMode")
    engines_modes = INSTANCE_TYPES.get(instance_type)
    if engines_modes is None or engine not in engines_modes[0]:
        raise bad_request(f"Broker instance type [{instance_type}] is not supported for engine type "
                          f"[{engine}].", "hostInstanceType")
    if mode not in engines_modes[1]:
        raise bad_request(f"Broker instance type [{instance_type}] is not supported for deployment mode "
                          f"[{mode}].", "hostInstanceType")
    if storage is not None and storage not in STORAGE_TYPES[engine]:
        raise bad_request(f"Storage type [{storage}] is not supported for engine type [{engine}].", "storageType")
    if storage == "EBS" and engine == "ACTIVEMQ" and mode != "SINGLE_INSTANCE":
        raise bad_request("Storage type [EBS] is only supported for deployment mode [SINGLE_INSTANCE].",
                          "storageType")


def engine_types(engine: str | None) -> list[dict]:
    """DescribeBrokerEngineTypes' entries."""
    return [{"EngineType": e, "EngineVersions": [{"Name": v} for v in versions]}
            for e, versions in ENGINE_VERSIONS.items() if engine is None or engine.upper() == e]


def instance_options(region: str, engine: str | None, instance_type: str | None,
                     storage: str | None) -> list[dict]:
    """DescribeBrokerInstanceOptions' entries: one per engine, instance type and storage type."""
    out = []
    for itype, (engines, modes) in INSTANCE_TYPES.items():
        if instance_type is not None and instance_type != itype:
            continue
        for e in engines:
            if engine is not None and engine.upper() != e:
                continue
            for st in STORAGE_TYPES[e]:
                if storage is not None and storage.upper() != st:
                    continue
                st_modes = [m for m in modes if m in DEPLOYMENT_MODES[e]
                            and not (st == "EBS" and e == "ACTIVEMQ" and m != "SINGLE_INSTANCE")]
                out.append({"AvailabilityZones": [{"Name": f"{region}{z}"} for z in AVAILABILITY_ZONES],
                            "EngineType": e, "HostInstanceType": itype, "StorageType": st,
                            "SupportedDeploymentModes": st_modes,
                            "SupportedEngineVersions": list(ENGINE_VERSIONS[e])})
    return out
