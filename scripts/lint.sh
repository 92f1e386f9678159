#!/usr/bin/env bash
# ruff on the whole tree, mypy on the public packages (mqemu.broker, mqemu.protocols,
# mqemu.ha); their settings are in pyproject.toml. Usage: scripts/lint.sh [PYTHON]
# (default python3; it needs the `lint` extra: pip install -e '.[lint]').
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"

# The packages live in broker/, protocols/ and ha/ and are installed as mqemu.* through
# setuptools' package-dir, which mypy cannot follow: give it a tree of links named mqemu/.
mkdir -p build/typecheck/mqemu
for d in broker protocols ha; do ln -sfn "../../../$d" "build/typecheck/mqemu/$d"; done

start=$SECONDS
"$PY" -m ruff check .
echo "ruff: $((SECONDS - start)) s"
start=$SECONDS
MYPYPATH=build/typecheck "$PY" -m mypy --cache-dir build/mypy-cache -p mqemu.broker -p mqemu.protocols -p mqemu.ha
echo "mypy: $((SECONDS - start)) s"
