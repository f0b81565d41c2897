"""Calibrate the perf model from a validation table: published (or a lab's own) measurements.

For one GPU, the table's `serving` rows are re-simulated (systems/sim/fidelity/serving.py) and
two multipliers of that GPU's coefficients are fitted by least relative squared error:
`prefill_scale` (iterations that prefill) and `decode_scale` (decode steps). A row's requests all
arrive together, so its simulated value is exactly `prefill_scale * P + decode_scale * D`, with P
and D read off two simulations; when the rows cannot tell the two apart (one row, or rows of one
shape, e.g. only end-to-end latencies) one shared scale is fitted. Each row is also predicted by
the fit on the *other* rows (leave-one-out): that error is what to expect on setups the table
lacks. Other engines' rows are never used (they measure another engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.contracts.errors import WarmbenchError
from systems.sim.calibrate_live import cluster_body
from systems.sim.fidelity.serving import RowValue, unsupported
from systems.sim.fidelity.table import NotSimulated, Row
from systems.sim.specs import GPUS

#: Two fitted columns whose |cosine| exceeds this are treated as one (a shared scale is fitted).
COLLINEAR_COS = 0.999


@dataclass
class TableFit:
    """The fitted scales, per-row values before / after / left out, and the leave-one-out error."""

    gpu: str
    prefill_scale: float
    decode_scale: float
    shared: bool                 # one scale for both: the rows do not separate prefill from decode
    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)   # row id -> why it was not used

    @property
    def loo_errors(self) -> list[float]:
        return [abs(r["loo_ratio"] - 1.0) for r in self.rows if r["loo_ratio"] is not None]

    def to_json(self) -> dict[str, Any]:
        errs = self.loo_errors
        return {"gpu": self.gpu, "prefill_scale": self.prefill_scale, "decode_scale": self.decode_scale,
                "shared_scale": self.shared, "source": self.source, "rows": self.rows, "skipped": self.skipped,
                "leave_one_out": {"rows": len(errs),
                                  "median_abs_error": float(np.median(errs)) if errs else None,
                                  "worst_abs_error": float(max(errs)) if errs else None}}


def _solve(p: np.ndarray, d: np.ndarray, y: np.ndarray) -> tuple[float, float, bool]:
    """(prefill_scale, decode_scale, shared) minimising sum(((ps p + ds d) / y - 1)^2)."""
    a, b = p / y, d / y
    cos = float(a @ b / math.sqrt((a @ a) * (b @ b))) if (a @ a) > 0 and (b @ b) > 0 else 1.0
    if len(y) >= 2 and abs(cos) < COLLINEAR_COS:
        (ps, ds), *_ = np.linalg.lstsq(np.stack([a, b], axis=1), np.ones(len(y)), rcond=None)
        if ps > 0 and ds > 0:
            return float(ps), float(ds), False
    r = a + b
    s = float(r.sum() / (r @ r))
    return s, s, True


def fit_table(rows: list[Row], gpu: str, value: RowValue, source: str = "") -> TableFit:
    """Fit prefill_scale / decode_scale of `gpu` to the table's simulatable serving rows on it;
    `value` simulates a row (harness.bench.fidelity.serving_value)."""
    if gpu not in GPUS:
        raise WarmbenchError(f"unknown GPU {gpu!r}; presets: {', '.join(GPUS)}")
    gpu = GPUS[gpu].name
    used: list[Row] = []
    skipped: dict[str, str] = {}
    for row in rows:
        if row.group != "serving" or GPUS.get(row.gpu, None) is None or GPUS[row.gpu].name != gpu:
            continue
        why = unsupported(row)
        if why:
            skipped[row.id] = why
        else:
            used.append(row)
    if not used:
        gpus = sorted({r.gpu for r in rows if r.group == "serving"})
        raise WarmbenchError(f"{source or 'the table'} has no simulatable serving rows on {gpu}"
                             + (f" (serving rows are on: {', '.join(gpus)})" if gpus else " (it has no serving rows)"))

    def sim(row: Row, ps: float, ds: float) -> float:
        return value(row, ((gpu, "prefill_scale", ps), (gpu, "decode_scale", ds)))

    base, p, d, y = [], [], [], []
    kept: list[Row] = []
    for row in used:
        try:
            v11, v21 = sim(row, 1.0, 1.0), sim(row, 2.0, 1.0)
        except NotSimulated as exc:
            skipped[row.id] = exc.reason
            continue
        kept.append(row)
        base.append(v11)
        p.append(v21 - v11)
        d.append(2.0 * v11 - v21)
        y.append(row.value)
    if not kept:
        raise WarmbenchError(f"no serving row on {gpu} could be simulated: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items()))
    pa, da, ya = np.array(p), np.array(d), np.array(y)
    ps, ds, shared = _solve(pa, da, ya)
    ps, ds = float(f"{ps:.4g}"), float(f"{ds:.4g}")
    out_rows = []
    for i, row in enumerate(kept):
        others = [j for j in range(len(kept)) if j != i]
        loo = None
        if others:
            lps, lds, _ = _solve(pa[others], da[others], ya[others])
            loo = lps * pa[i] + lds * da[i]
        after = sim(row, ps, ds)
        out_rows.append({"id": row.id, "metric": row.metric, "unit": row.unit, "published": row.value,
                         "before": base[i], "after": after, "ratio_before": base[i] / row.value,
                         "ratio_after": after / row.value,
                         "loo": loo, "loo_ratio": None if loo is None else loo / row.value})
    return TableFit(gpu, ps, ds, shared, source, out_rows, skipped)


def cluster_toml(fit: TableFit, nodes: int = 1, gpus_per_node: int = 8) -> str:
    """A cluster TOML of `nodes` nodes of the fitted GPU carrying the fitted scales."""
    j = fit.to_json()["leave_one_out"]
    lines = [f"# Calibrated from the validation table {fit.source or ''}: {len(fit.rows)} serving rows on {fit.gpu}"
             + (" (one shared scale: the rows do not separate prefill from decode)." if fit.shared else "."),
             "# simulated / published after the fit:"]
    lines += [f"#   {r['id']} ({r['metric']}): {r['ratio_after']:.3f} (before {r['ratio_before']:.3f})" for r in fit.rows]
    if j["rows"]:
        lines.append(f"# Leave-one-out |error|: median {j['median_abs_error']:.1%}, worst {j['worst_abs_error']:.1%} "
                     f"over {j['rows']} rows.")
    lines += cluster_body(fit.gpu, nodes, gpus_per_node, repr(fit.prefill_scale), repr(fit.decode_scale))
    return "\n".join(lines)
