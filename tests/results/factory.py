"""Hand-made RunResults for the results/report tests (no simulator needed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.contracts.result import REQUEST_COLUMNS, RunResult

NAN = math.nan


def requests(rows: list[dict]) -> pd.DataFrame:
    """A request table from partial rows; unspecified columns get honest defaults."""
    full = []
    for i, row in enumerate(rows):
        base = {
            "request_id": i, "model": "m", "scheduled_s": 0.0, "sent_s": NAN, "first_token_s": NAN,
            "end_s": NAN, "input_tokens": 10, "output_tokens": 5, "received_tokens": NAN,
            "status": "ok", "error": "", "start_kind": "", "queue_s": NAN, "load_s": NAN, "prefill_s": NAN,
        }
        base.update(row)
        if math.isnan(base["sent_s"]):
            base["sent_s"] = base["scheduled_s"]
        full.append(base)
    frame = pd.DataFrame(full, columns=list(REQUEST_COLUMNS) + [c for r in rows for c in r if c not in REQUEST_COLUMNS])
    frame = frame.loc[:, ~frame.columns.duplicated()]
    if not rows:
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in REQUEST_COLUMNS})
        frame["model"] = frame["model"].astype(object)
        frame["status"] = frame["status"].astype(object)
    return frame


def synthetic_result(system: str = "a", n: int = 200, base_ttft_s: float = 0.05, seed: int = 0,
                     rate: float = 5.0, models: tuple[str, ...] = ("llama-2-7b", "llama-2-13b"),
                     with_memory: bool = True) -> RunResult:
    """A plausible run: Poisson arrivals, lognormal TTFT, a few cold starts with events and memory."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, n))
    model = np.array(models)[rng.integers(0, len(models), n)]
    cold = rng.random(n) < 0.05
    ttft = base_ttft_s * rng.lognormal(0, 0.5, n) + np.where(cold, 8.0, 0.0)
    out_tokens = rng.integers(2, 200, n)
    tpot = 0.02 * rng.lognormal(0, 0.2, n)
    first = arrivals + ttft
    end = first + tpot * (out_tokens - 1)
    status = np.where(rng.random(n) < 0.01, "error", "ok")
    req = pd.DataFrame({
        "request_id": np.arange(n, dtype=np.int64), "model": model, "scheduled_s": arrivals,
        "sent_s": arrivals, "first_token_s": np.where(status == "ok", first, np.nan),
        "end_s": np.where(status == "ok", end, np.nan), "input_tokens": rng.integers(10, 1000, n),
        "output_tokens": out_tokens, "received_tokens": np.where(status == "ok", out_tokens, 0),
        "status": status, "error": np.where(status == "ok", "", "boom"),
        "start_kind": np.where(cold, "cold", "warm"), "queue_s": np.nan, "load_s": np.where(cold, 8.0, 0.0),
        "prefill_s": np.nan,
    })
    ev_t = arrivals[cold]
    events = pd.DataFrame({
        "time_s": np.concatenate([ev_t, ev_t + 8.0, [arrivals[n // 2]]]),
        "kind": ["instance_start"] * len(ev_t) + ["instance_ready"] * len(ev_t) + ["evict"],
        "model": list(model[cold]) * 2 + [models[0]], "node": 0, "gpus": "0", "detail": "",
    })
    if with_memory:
        gib = 2**30
        rows = []
        for gpu in range(2):  # full snapshots per (time, gpu), as the simulator writes them
            mine, other = models[gpu % len(models)], models[(gpu + 1) % len(models)]
            rows += [
                (0.0, 0, gpu, "weights", mine, 14 * gib), (0.0, 0, gpu, "kv", mine, 50 * gib),
                (0.0, 0, gpu, "free", "", 16 * gib),
                (arrivals[n // 3], 0, gpu, "weights", mine, 14 * gib), (arrivals[n // 3], 0, gpu, "kv", mine, 50 * gib),
                (arrivals[n // 3], 0, gpu, "prewarmed", other, 10 * gib), (arrivals[n // 3], 0, gpu, "free", "", 6 * gib),
            ]
        memory = pd.DataFrame(rows, columns=["time_s", "node", "gpu", "category", "model", "bytes"])
    else:
        memory = pd.DataFrame({c: pd.Series(dtype="object") for c in ["time_s", "node", "gpu", "category", "model", "bytes"]})
    manifest = {"system": system, "seed": seed, "backend": "sim", "status": "complete",
                "config": {"system": system, "workload": {"params": {"total_rps": rate}}}}
    return RunResult(requests=req, events=events, memory=memory, manifest=manifest)


def write_experiment(root, systems=("a", "b"), rates=(2.0, 5.0), seed: int = 0, slow: dict | None = None,
                     seeds: tuple[int, ...] | None = None):
    """An experiment directory of hand-made runs, as the runner lays it out; `slow` scales a system's TTFT."""
    import json
    from pathlib import Path

    from harness.store import write_run

    root = Path(root)
    ids = []
    for rate in rates:
        for i, system in enumerate(systems):
            for s in seeds or (seed,):
                result = synthetic_result(system, base_ttft_s=0.05 * (slow or {}).get(system, 1.0) * (1 + i) * rate / 2,
                                          seed=s + i, rate=rate, with_memory=(system == systems[-1]))
                run_id = f"{system}_total_rps-{rate:g}_seed-{s}"
                result.manifest["point"] = {"system": system, "total_rps": rate, "seed": s}
                write_run(result, root / run_id)
                ids.append(run_id)
    (root / "experiment.json").write_text(json.dumps({"config": {"name": root.name, "baseline": systems[0]}, "runs": ids}))
    return root
