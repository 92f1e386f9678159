"""Shared fixtures: the mqemu pytest plugin is installed with the package (entry point
``pytest11``), so ``mqemu_server``, ``mqemu_node`` and ``mqemu_start`` are available here."""

import compileall
import logging
import sys

import pytest

import mqemu.broker
import mqemu.ha
import mqemu.protocols


def pytest_configure(config):
    """Where the environment sets PYTHONDONTWRITEBYTECODE (this machine does), no process
    keeps what it compiled, so every node process a test starts (``mqemu serve`` for each
    topology, cluster member, restart and CLI call: hundreds per run) compiled mqemu's ~160
    modules again: 0.3 s of CPU each, a fifth of a cluster test's CPU. Compile them once
    here, into their ``__pycache__`` (ignored by git; Python checks each against its source,
    so a stale one is never used): the node processes read them, as they would without that
    variable."""
    if not sys.dont_write_bytecode:
        return
    for package in (mqemu.broker, mqemu.protocols, mqemu.ha):
        for path in package.__path__:
            try:
                compileall.compile_dir(path, quiet=2)
            except OSError:  # a read-only tree: the processes compile as before
                pass


@pytest.fixture(autouse=True)
def _mqemu_logging_restored():
    """A test that runs the CLI in this process (``main([...])``) sets up mqemu's logging for
    a command line: its own handler, no propagation. Undo that after each test, so caplog in
    later tests still sees mqemu's records."""
    logger = logging.getLogger("mqemu")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])
