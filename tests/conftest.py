"""Shared fixtures: the mqemu pytest plugin is installed with the package (entry point
``pytest11``), so ``mqemu_server``, ``mqemu_node`` and ``mqemu_start`` are available here."""
