"""Codecs and sessions are sans-IO: every one of them imports with trio made unimportable.

Only ``protocols/transport.py`` and each protocol's ``server.py`` (the trio adapter) may
import trio. The imports run in a fresh interpreter whose import system refuses ``trio``, so
a session that starts importing something that imports trio at module level (``broker.core``,
the stores) fails here, naming the chain of imports.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import mqemu.protocols

ADAPTERS = {"mqemu.protocols.transport", "mqemu.protocols.tls", "mqemu.protocols.websocket"}  # and every .server

# Imported by sessions inside functions (so importing the session alone does not reach them).
LAZY = ["mqemu.broker.queue", "mqemu.broker.selector"]

_CHILD = r"""
import importlib, json, sys, traceback

class RefuseTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio" or name.startswith("trio."):
            raise ImportError(f"trio is not importable here ({name})")
        return None

sys.meta_path.insert(0, RefuseTrio())
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ImportError:
        failed[name] = [f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(sys.exc_info()[2])
                        if "importlib" not in f.filename]
try:
    importlib.import_module("mqemu.protocols.transport")
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({"failed": failed, "transport_refused": blocked,
                  "trio_loaded": sorted(m for m in sys.modules if m == "trio" or m.startswith("trio."))}))
"""


def sans_io_modules() -> list[str]:
    """Every module under mqemu.protocols except the trio adapters."""
    names = []
    for info in pkgutil.walk_packages(mqemu.protocols.__path__, "mqemu.protocols."):
        if info.ispkg or info.name in ADAPTERS or info.name.endswith(".server"):
            continue
        names.append(info.name)
    return sorted(names)


def test_the_module_list_has_every_codec_and_session():
    names = set(sans_io_modules())
    for protocol in ("amqp091", "stomp", "mqtt"):
        assert f"mqemu.protocols.{protocol}.codec" in names
        assert f"mqemu.protocols.{protocol}.session" in names
        assert f"mqemu.protocols.{protocol}.server" not in names
    assert "mqemu.protocols.session_base" in names
    assert "mqemu.protocols.transport" not in names


def test_codecs_and_sessions_import_without_trio():
    names = sans_io_modules() + LAZY
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(names)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["transport_refused"], "the child did not refuse trio: this test checks nothing"
    assert result["failed"] == {}, "\n".join(f"{m}: {' -> '.join(chain)}" for m, chain in result["failed"].items())
    assert result["trio_loaded"] == []
