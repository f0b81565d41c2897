"""Small scenarios for the system policies: a periodic bursty workload with its own history."""

from __future__ import annotations

import numpy as np

from systems.sim.specs import GPUS, ClusterSpec, NodeSpec
from workloads.concurrency import history_frame
from workloads.workload import Workload, canonical_frame

DAY_S = 86_400.0
WINDOW_S = 300.0


def cluster(gpus: int = 4, nodes: int = 1, gpu: str = "A100-80GB") -> ClusterSpec:
    return ClusterSpec(f"test-{nodes}x{gpus}", (NodeSpec(GPUS[gpu], gpus_per_node=gpus),) * nodes)


def _day(rng: np.random.Generator, offset_s: float, duration_s: float, bursts: list[float], burst_size: int,
         background_rps: float, burst_len_s: float = 1.0) -> np.ndarray:
    """Arrival times of one day's replay span: Poisson background plus bursts of `burst_size` within `burst_len_s`."""
    n_bg = rng.poisson(background_rps * duration_s)
    times = [rng.uniform(0.0, duration_s, n_bg)]
    for b in bursts:
        times.append(b + rng.uniform(0.0, burst_len_s, burst_size))
    return np.sort(np.concatenate(times)) + offset_s


def periodic_bursty(models: tuple[str, ...] = ("llama-2-7b", "llama-2-7b#1"), *, duration_s: float = 900.0,
                    burst_every_s: float = 300.0, burst_size: int = 48, background_rps: float = 0.05,
                    history_days: int = 3, input_tokens: int = 128, output_tokens: int = 64,
                    shift_s: float = 60.0, burst_len_s: float = 1.0,
                    first_burst_s: float = 100.0, seed: int = 0) -> Workload:
    """Each model bursts at the same times every day (model i shifted by `shift_s` * i); earlier days
    become the history, measured with the reference's per-request durations."""
    rng = np.random.default_rng(seed)
    arrivals, names, per_model = [], [], {}
    for i, m in enumerate(models):
        bursts = list(np.arange(first_burst_s + shift_s * i, duration_s - 50.0, burst_every_s))
        past = [_day(rng, -d * DAY_S, duration_s, bursts, burst_size, background_rps, burst_len_s) for d in range(history_days, 0, -1)]
        past_t = np.concatenate(past)
        per_model[m] = (past_t, np.full(len(past_t), output_tokens))
        today = _day(rng, 0.0, duration_s, bursts, burst_size, background_rps, burst_len_s)
        arrivals.append(today)
        names += [m] * len(today)
    arrival = np.concatenate(arrivals)
    n = len(arrival)
    frame = canonical_frame(arrival, np.asarray(names, dtype=object), np.full(n, input_tokens), np.full(n, output_tokens))
    history = history_frame(per_model, -history_days * DAY_S, 0.0, WINDOW_S)
    return Workload(frame, {"source": "test-periodic-bursty", "window_s": WINDOW_S}, history)


def ttft(result) -> np.ndarray:
    q = result.requests
    return (q["first_token_s"] - q["scheduled_s"]).to_numpy()
