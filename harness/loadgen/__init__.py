"""Open-loop load generator on locust's gevent stack: replays a workload against live endpoints."""

from harness.loadgen.bodies import PROTOCOLS, Endpoint
from harness.loadgen.replay import Clock, ReplayConfig, ReplayStats, Router, StaticRouter, Unavailable, replay

__all__ = ["PROTOCOLS", "Clock", "Endpoint", "ReplayConfig", "ReplayStats", "Router", "StaticRouter",
           "Unavailable", "replay"]
