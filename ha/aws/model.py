"""The Amazon MQ API as botocore's service model describes it (``mq`` 2017-11-27, restJson1).

The model that botocore installs is the specification read here, not a copy: each
operation's method, URI template and status code, where each input member comes from (URI,
query string, header or JSON body, under its ``locationName``), the output's wire names,
the enums, and the error shapes with their status codes. ``ServiceModel.parse`` turns a
request's parts into a dict keyed by the model's member names (``BrokerName``, as boto3
shows them), checking required members, types, ranges and enums (matched in any case, given
back as the model spells them); ``ServiceModel.render`` turns an operation's result, keyed
the same way, into the JSON body AWS sends. The HTTP itself is the ASGI server's
(``server.py``); nothing here reads bytes off a socket.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

API_VERSION = "2017-11-27"


class ApiError(Exception):
    """An error as the API sends it: the model's error shape (``BadRequestException``...),
    its status code, the attribute at fault (camelCase, as on the wire) and a message."""

    def __init__(self, code: str, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.attribute = attribute


def bad_request(message: str, attribute: str | None = None) -> ApiError:
    return ApiError("BadRequestException", message, attribute)


def not_found(message: str, attribute: str | None = None) -> ApiError:
    return ApiError("NotFoundException", message, attribute)


def conflict(message: str, attribute: str | None = None) -> ApiError:
    return ApiError("ConflictException", message, attribute)


@dataclass(slots=True)
class Operation:
    name: str
    method: str
    uri: str  # the model's template, e.g. /v1/brokers/{broker-id}
    status: int
    input: str | None
    output: str | None
    errors: tuple[str, ...]


def load_model() -> dict[str, Any]:
    """botocore's ``mq`` service model, as installed with boto3/botocore."""
    from botocore.loaders import Loader  # type: ignore[import-untyped]

    return Loader().load_service_model("mq", "service-2", api_version=API_VERSION)


class ServiceModel:
    def __init__(self, model: dict[str, Any] | None = None) -> None:
        self.model = model or load_model()
        self.shapes: dict[str, Any] = self.model["shapes"]
        self.operations: dict[str, Operation] = {}
        for name, op in self.model["operations"].items():
            http = op["http"]
            self.operations[name] = Operation(
                name, http["method"], http["requestUri"], int(http.get("responseCode", 200)),
                op.get("input", {}).get("shape"), op.get("output", {}).get("shape"),
                tuple(e["shape"] for e in op.get("errors", ())))

    def status_of(self, error_code: str) -> int:
        shape = self.shapes.get(error_code, {})
        return int(shape.get("error", {}).get("httpStatusCode", 500))

    def enum(self, shape: str) -> list[str]:
        return list(self.shapes[shape]["enum"])

    # -- requests --------------------------------------------------------------------------
    def parse(self, op: Operation, path: dict[str, str], query: Any, headers: Any, body: bytes) -> dict[str, Any]:
        """The operation's input, keyed by member name. ``query`` and ``headers`` are
        multi-dicts (``getlist``/``get``); raises ApiError (400) for what the model refuses."""
        if op.input is None:
            return {}
        shape = self.shapes[op.input]
        doc: Any = {}
        if body.strip():
            try:
                doc = json.loads(body)
            except ValueError:
                raise bad_request("The request body is not valid JSON.") from None
            if not isinstance(doc, dict):
                raise bad_request("The request body must be a JSON object.")
        out: dict[str, Any] = {}
        for name, member in shape["members"].items():
            where = member.get("location")
            wire = member.get("locationName", name)
            if where == "uri":
                value: Any = path.get(wire.replace("-", "_"))
            elif where == "querystring":
                target = self.shapes[member["shape"]]
                if target["type"] == "list":
                    value = query.getlist(wire) or None
                else:
                    value = query.get(wire)
                    if value is not None and target["type"] in ("integer", "long"):
                        try:
                            value = int(value)
                        except ValueError:
                            raise bad_request(f"{wire} must be a number.", wire) from None
            elif where == "header":
                value = headers.get(wire)
            else:
                value = doc.get(wire)
                if value is not None:
                    value = self._from_wire(member["shape"], value, wire)
            if value is not None:
                self._check_range(member["shape"], value, wire)
                out[name] = value
        self._check_required(op.input, out, "")
        return out

    def _check_required(self, shape_name: str, value: dict[str, Any], prefix: str) -> None:
        shape = self.shapes[shape_name]
        for req in shape.get("required", ()):
            if value.get(req) is None:
                wire = shape["members"][req].get("locationName", req)
                raise bad_request(f"The request is missing the required parameter {prefix}{wire}.", f"{prefix}{wire}")

    def _check_range(self, shape_name: str, value: Any, wire: str) -> None:
        shape = self.shapes[shape_name]
        if shape["type"] in ("integer", "long") and isinstance(value, int):
            low, high = shape.get("min"), shape.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                raise bad_request(f"{wire} must be between {low} and {high}, not {value}.", wire)

    def _from_wire(self, shape_name: str, value: Any, wire: str) -> Any:
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            if not isinstance(value, dict):
                raise bad_request(f"{wire} must be an object.", wire)
            out = {}
            for name, member in shape["members"].items():
                key = member.get("locationName", name)
                if value.get(key) is not None:
                    out[name] = self._from_wire(member["shape"], value[key], key)
            self._check_required(shape_name, out, f"{wire}.")
            return out
        if kind == "list":
            if not isinstance(value, list):
                raise bad_request(f"{wire} must be a list.", wire)
            return [self._from_wire(shape["member"]["shape"], v, wire) for v in value]
        if kind == "map":
            if not isinstance(value, dict):
                raise bad_request(f"{wire} must be an object.", wire)
            return {str(k): self._from_wire(shape["value"]["shape"], v, wire) for k, v in value.items()}
        if kind == "string":
            if not isinstance(value, str):
                raise bad_request(f"{wire} must be a string.", wire)
            if "enum" in shape:
                for allowed in shape["enum"]:
                    if allowed.lower() == value.lower():
                        return allowed
                raise bad_request(f"{wire} must be one of {', '.join(shape['enum'])}, not {value!r}.", wire)
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise bad_request(f"{wire} must be true or false.", wire)
            return value
        if kind in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad_request(f"{wire} must be an integer.", wire)
            return value
        if kind == "double":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad_request(f"{wire} must be a number.", wire)
            return float(value)
        return value

    # -- responses -------------------------------------------------------------------------
    def render(self, op: Operation, result: dict[str, Any] | None) -> bytes:
        """The response body for ``result`` (member names), with the wire names."""
        if op.output is None:
            return b""
        return json.dumps(self._to_wire(op.output, result or {})).encode()

    def _to_wire(self, shape_name: str, value: Any) -> Any:
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            out = {}
            for name, member in shape["members"].items():
                v = value.get(name)
                if v is not None:
                    out[member.get("locationName", name)] = self._to_wire(member["shape"], v)
            return out
        if kind == "list":
            return [self._to_wire(shape["member"]["shape"], v) for v in value]
        if kind == "map":
            return {k: self._to_wire(shape["value"]["shape"], v) for k, v in value.items()}
        if kind == "timestamp":
            return format_timestamp(value, shape.get("timestampFormat", "iso8601"))
        return value

    def error_body(self, error: ApiError) -> bytes:
        body: dict[str, Any] = {"message": error.message}
        if error.attribute:
            body = {"errorAttribute": error.attribute, **body}
        return json.dumps(body).encode()


def format_timestamp(value: float, fmt: str) -> Any:
    """A time in seconds since the epoch as the model's format gives it (AWS: milliseconds, Z)."""
    if fmt == "unixTimestamp":
        return value
    when = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
