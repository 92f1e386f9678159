"""The configuration operations (CreateConfiguration, DescribeConfiguration,
UpdateConfiguration, ListConfigurations, DeleteConfiguration, DescribeConfigurationRevision,
ListConfigurationRevisions): configurations with their revisions, base64 data as on the
wire (ActiveMQ XML sanitized as Amazon MQ does, see ``configs``), tags kept by ARN.
"""

from __future__ import annotations

import re
import time
from typing import Any

from . import configs, engines
from .model import bad_request, conflict, not_found
from .state import State, new_configuration_id, page


class Configurations:
    state: State

    def _arn(self, kind: str, name: str) -> str:
        raise NotImplementedError

    def _configuration(self, config_id: str, attribute: str = "configuration-id") -> dict[str, Any]:
        config = self.state.configurations.get(config_id)
        if config is None:
            raise not_found(f"Can't find requested configuration [{config_id}]. Make sure your configuration "
                            "exists.", attribute)
        return config

    def _new_configuration(self, name: str, engine: str, version: str, strategy: str,
                           tags: dict[str, str] | None) -> dict[str, Any]:
        config_id = new_configuration_id()
        now = time.time()
        description = f"Auto-generated default for {name} on {engines.ENGINE_DISPLAY[engine]} {version}"
        config: dict[str, Any] = {
            "Id": config_id, "Arn": self._arn("configuration", config_id), "Name": name, "EngineType": engine,
            "EngineVersion": version, "AuthenticationStrategy": strategy, "Created": now, "Description": description,
            "Revisions": [{"Revision": 1, "Created": now, "Data": configs.default_data(engine),
                           "Description": description}]}
        self.state.configurations[config_id] = config
        if tags:
            self.state.tags[config["Arn"]] = dict(tags)
        return config

    @staticmethod
    def _revision(config: dict[str, Any], revision: Any, attribute: str) -> dict[str, Any]:
        try:
            number = int(revision)
        except (TypeError, ValueError):
            raise bad_request(f"Configuration revision [{revision}] is not a number.", attribute) from None
        if not 1 <= number <= len(config["Revisions"]):
            raise not_found(f"Can't find requested configuration revision [{revision}] of configuration "
                            f"[{config['Id']}].", attribute)
        return config["Revisions"][number - 1]

    @staticmethod
    def _latest(config: dict[str, Any]) -> dict[str, Any]:
        rev = config["Revisions"][-1]
        return {"Created": rev["Created"], "Description": rev.get("Description"), "Revision": rev["Revision"]}

    def _configuration_out(self, c: dict[str, Any]) -> dict[str, Any]:
        return {"Arn": c["Arn"], "AuthenticationStrategy": c["AuthenticationStrategy"], "Created": c["Created"],
                "Description": c.get("Description") or "", "EngineType": engines.ENGINE_DISPLAY[c["EngineType"]],
                "EngineVersion": c["EngineVersion"], "Id": c["Id"], "LatestRevision": self._latest(c),
                "Name": c["Name"], "Tags": dict(self.state.tags.get(c["Arn"], {}))}

    async def CreateConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if not re.match(r"^[A-Za-z0-9_-]{1,150}$", p["Name"]):
            raise bad_request("Configuration name must be 1-150 characters long and contain only letters, "
                              "digits, hyphens and underscores.", "name")
        if any(c["Name"] == p["Name"] for c in self.state.configurations.values()):
            raise conflict(f"Configuration with name [{p['Name']}] already exists.", "name")
        engine = p["EngineType"]
        version = engines.engine_version(engine, p.get("EngineVersion"))
        strategy = p.get("AuthenticationStrategy", "SIMPLE")
        c = self._new_configuration(p["Name"], engine, version, strategy, p.get("Tags"))
        self.state.save()
        return {"Arn": c["Arn"], "AuthenticationStrategy": strategy, "Created": c["Created"], "Id": c["Id"],
                "LatestRevision": self._latest(c), "Name": c["Name"]}

    async def DescribeConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return self._configuration_out(self._configuration(p["ConfigurationId"]))

    async def ListConfigurations(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        items = sorted(self.state.configurations.values(), key=lambda c: c["Created"])
        shown, token = page(items, p.get("MaxResults"), p.get("NextToken"))
        return {"Configurations": [self._configuration_out(c) for c in shown], "MaxResults": p.get("MaxResults"),
                "NextToken": token}

    async def UpdateConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        c = self._configuration(p["ConfigurationId"])
        data, warnings = configs.sanitize(c["EngineType"], p["Data"])
        configs.check_applicable(c["EngineType"], data)
        rev = {"Revision": len(c["Revisions"]) + 1, "Created": time.time(), "Data": data,
               "Description": p.get("Description")}
        c["Revisions"].append(rev)
        self.state.save()
        return {"Arn": c["Arn"], "Created": c["Created"], "Id": c["Id"], "LatestRevision": self._latest(c),
                "Name": c["Name"], "Warnings": warnings}

    async def DeleteConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        c = self._configuration(p["ConfigurationId"])
        for b in self.state.brokers.values():
            refs = [b["Configurations"].get("Current"), b["Configurations"].get("Pending")]
            if any(r and r["Id"] == c["Id"] for r in refs):
                raise conflict(f"Configuration [{c['Id']}] is in use by broker [{b['BrokerId']}].",
                               "configuration-id")
        del self.state.configurations[c["Id"]]
        self.state.tags.pop(c["Arn"], None)
        self.state.save()
        return {"ConfigurationId": c["Id"]}

    async def DescribeConfigurationRevision(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        c = self._configuration(p["ConfigurationId"])
        rev = self._revision(c, p["ConfigurationRevision"], "configuration-revision")
        return {"ConfigurationId": c["Id"], "Created": rev["Created"], "Data": rev["Data"],
                "Description": rev.get("Description")}

    async def ListConfigurationRevisions(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        c = self._configuration(p["ConfigurationId"])
        shown, token = page(c["Revisions"], p.get("MaxResults"), p.get("NextToken"))
        return {"ConfigurationId": c["Id"], "MaxResults": p.get("MaxResults"), "NextToken": token,
                "Revisions": [{"Created": r["Created"], "Description": r.get("Description"),
                               "Revision": r["Revision"]} for r in shown]}
