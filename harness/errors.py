"""Temporary (issue 16): the old path of harness.contracts.errors while systems/sim is rewritten."""

from harness.contracts.errors import EXIT_INCONCLUSIVE, InputError, WarmbenchError  # noqa: F401
