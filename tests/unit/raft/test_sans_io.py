"""The Raft member, its records, codec, storage and simulation import with trio refused (only
``runtime`` is trio's); checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(30)

SANS_IO = ["mqemu.ha.raft.messages", "mqemu.ha.raft.records", "mqemu.ha.raft.member", "mqemu.ha.raft.codec",
           "mqemu.ha.raft.storage", "mqemu.ha.raft.sim"]

_CHILD = r"""
import importlib, json, sys

class RefuseTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio" or name.startswith("trio."):
            raise ImportError(name)
        return None

sys.meta_path.insert(0, RefuseTrio())
failed = []
for name in json.loads(sys.argv[1]) + ["mqemu.ha.raft.runtime"]:
    try:
        importlib.import_module(name)
    except ImportError:
        failed.append(name)
print(json.dumps(failed))
"""


def test_only_the_runtime_needs_trio():
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(SANS_IO)], capture_output=True, text=True,
                         timeout=25, check=True).stdout
    assert json.loads(out) == ["mqemu.ha.raft.runtime"]   # the refusal works, and only it fails
