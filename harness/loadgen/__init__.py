"""Open-loop load generator on locust's gevent stack: replays a workload against live endpoints."""

from harness.loadgen.replay import Clock, ReplayConfig, ReplayStats, Router, StaticRouter, replay

__all__ = ["Clock", "ReplayConfig", "ReplayStats", "Router", "StaticRouter", "replay"]
