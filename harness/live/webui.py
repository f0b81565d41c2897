"""Live TTFT / E2E in locust's web UI while a replay runs (`replay --web-ui HOST:PORT`).

Each finished request is logged into locust's statistics twice: as `TTFT <model>` (from the
scheduled send time; only when a first token was seen) and `E2E <model>`; failures are logged
with their error. Importing this module imports locust, which monkey-patches the process for
gevent: the CLI imports it only when the flag is given.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import locust  # noqa: F401  (monkey-patches; must come before the rest)

# isort: split
from locust.env import Environment


def start_web_ui(host: str, port: int) -> tuple[Environment, Callable[[dict[str, Any]], None]]:
    """Start the web UI; returns the environment and the per-record callback to feed it."""
    env = Environment(user_classes=[])
    env.create_local_runner()
    argv, sys.argv = sys.argv, sys.argv[:1]  # locust's web UI parses sys.argv as its own flags
    try:
        env.create_web_ui(host=host, port=port)
    finally:
        sys.argv = argv

    def on_record(record: dict[str, Any]) -> None:
        failure = None if record["status"] == "ok" else Exception(record["error"] or record["status"])
        tokens = int(record.get("received_tokens") or 0)
        ttft_s = record["first_token_s"] - record["scheduled_s"]
        if not math.isnan(ttft_s):
            env.events.request.fire(request_type="TTFT", name=record["model"], response_time=ttft_s * 1000,
                                    response_length=tokens, exception=failure, context={})
        e2e_s = record["end_s"] - record["scheduled_s"]
        env.events.request.fire(request_type="E2E", name=record["model"],
                                response_time=0.0 if math.isnan(e2e_s) else e2e_s * 1000,
                                response_length=tokens, exception=failure, context={})

    return env, on_record
