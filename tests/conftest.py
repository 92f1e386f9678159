"""Shared fixtures: the mqemu pytest plugin is installed with the package (entry point
``pytest11``), so ``mqemu_server``, ``mqemu_node`` and ``mqemu_start`` are available here."""

import logging

import pytest


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
