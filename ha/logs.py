"""Structured, quiet logging: one line per event, fields as key=value (or JSON)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

# The name of the node whose task is logging (set in ``Node.run``; trio tasks and worker
# threads inherit it), so two nodes in one process are told apart in the log.
node_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("mqemu_node", default=None)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime", "taskName"}


class NodeNameFilter(logging.Filter):
    """Adds ``node=<name>`` to every record logged inside a node's tasks."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = node_name.get()
        if name is not None and not hasattr(record, "node"):
            record.node = name
        return True


class KeyValueFormatter(logging.Formatter):
    def __init__(self, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage()
        if self.as_json:
            out = {"ts": ts, "level": record.levelname.lower(), "logger": record.name, "msg": msg, **fields}
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
            return json.dumps(out, default=str)
        parts = [ts, record.levelname.lower(), record.name, msg]
        parts += [f"{k}={v}" for k, v in fields.items()]
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(fmt == "json"))
    handler.addFilter(NodeNameFilter())
    root = logging.getLogger("mqemu")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
