"""Temporary (issue 16): the old path of harness.contracts.result while systems/sim is rewritten."""

from harness.contracts.result import *  # noqa: F401,F403
