"""Change points of a series of per-revision means: where a metric stepped, by how much, on what evidence.

Binary segmentation (least squares): the split of the revisions that leaves the smallest sum of
squared deviations around the two segments' means, then each side again. A split is kept only when
it is (1) big enough: the mean after differs from the mean before by at least `min_effect`
(relative), and (2) evidenced: the 95% paired t interval over seeds of after / before
(`metrics.paired_ratio_ci`, the report's and the gate's interval; on the paired differences with
`metrics.mean_ci` when a value is zero) excludes "no change", or, with fewer than two seeds, the
95% intervals (`metrics.mean_ci`) of the revision means of the two segments do not overlap (two
revisions a side needed). A step big enough that cannot be tested is listed as unconfirmed, not
as a change point. Once found, each change point is re-measured between its neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.metrics import lower_is_better, mean_ci, paired_ratio_ci
from harness.report.table import fmt

METHOD = ("binary segmentation of the per-revision means (least squares); a split is kept when the step is at "
          "least the minimum effect and the 95% paired t interval over seeds of after/before excludes no change "
          "(with one seed: the 95% intervals of the revision means of the two segments do not overlap)")


@dataclass
class Cell:
    """A series at one revision: the mean over seeds and its 95% interval (None with one seed)."""

    mean: float
    ci: tuple[float, float] | None
    seeds: dict[str, float]

    def text(self, metric: str) -> str:
        """`24.4s ±2%`: the mean and the half-width of its 95% interval."""
        if self.ci is None or not math.isfinite(self.mean):
            return fmt(metric, self.mean)
        half = (self.ci[1] - self.ci[0]) / 2
        if fmt(metric, self.mean).endswith("%"):  # a share: its interval in percentage points
            return f"{fmt(metric, self.mean)} ±{half * 100:.1f}pp"
        if self.mean != 0:
            pct = abs(half / self.mean) * 100
            return f"{fmt(metric, self.mean)} ±{'<1' if 0 < pct < 1 else f'{pct:.0f}'}%"
        return f"{fmt(metric, self.mean)} ±{fmt(metric, half)}"


@dataclass
class ChangePoint:
    """Where a series stepped: the first revision after the step, its size and the evidence."""

    experiment: str
    system: str
    point: str
    metric: str
    revision: str  # Revision.key of the first revision after the step
    previous: str  # Revision.key of the last one before it
    before: float  # mean of the revision means between the previous change point and this one
    after: float
    ratio: float  # after / before (inf from 0)
    worse: bool
    test: str  # ratio | difference | segments
    ci: tuple[float, float]
    seeds: int
    evidence: str

    @property
    def size(self) -> str:
        """`+52%` (or `0 -> 3` from zero)."""
        if math.isinf(self.ratio) or self.before == 0:
            return f"{fmt(self.metric, self.before)} -> {fmt(self.metric, self.after)}"
        return f"{(self.ratio - 1) * 100:+.1f}%"


@dataclass
class Series:
    experiment: str
    system: str
    point: str
    metric: str
    cells: dict[str, Cell]  # Revision.key -> Cell (revisions where it ran)
    change_points: list[ChangePoint] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)

    def name(self, with_experiment: bool) -> str:
        parts = ([self.experiment] if with_experiment else []) + [self.system] + ([self.point] if self.point else [])
        return " ".join(parts)




@dataclass
class _Test:
    before: float
    after: float
    ratio: float
    big: bool
    significant: bool | None  # None: cannot be tested (one seed and a segment of one revision)
    test: str = ""
    ci: tuple[float, float] = (math.nan, math.nan)
    seeds: int = 0
    evidence: str = ""


def detect(series: Series, min_effect: float) -> None:
    """Fill `series.change_points` / `.unconfirmed` (METHOD in the module docstring)."""
    keys = list(series.cells)
    means = [series.cells[k].mean for k in keys]
    found: list[int] = []
    unconfirmed: list[int] = []

    def split(lo: int, hi: int) -> None:
        if hi - lo < 2:
            return
        k = min(range(lo + 1, hi), key=lambda j: (_sse(means[lo:j]) + _sse(means[j:hi]), j))
        test = _test(series, keys[lo:k], keys[k:hi], min_effect)
        if test.big and test.significant:
            split(lo, k)
            found.append(k)
            split(k, hi)
        elif test.big and test.significant is None:
            unconfirmed.append(k)

    split(0, len(keys))
    bounds = [0, *sorted(found), len(keys)]
    for i, k in enumerate(bounds[1:-1], start=1):  # re-measure between the neighbouring change points
        test = _test(series, keys[bounds[i - 1]:k], keys[k:bounds[i + 1]], min_effect)
        if test.big and test.significant:
            series.change_points.append(ChangePoint(
                series.experiment, series.system, series.point, series.metric, keys[k], keys[k - 1], test.before,
                test.after, test.ratio, (test.after > test.before) == lower_is_better(series.metric), test.test,
                test.ci, test.seeds, test.evidence))
    series.unconfirmed = [f"{keys[k]}: a {_pct(_test(series, keys[:k], keys[k:], min_effect).ratio)} step that "
                          "cannot be tested (one seed and a segment of one revision): run two or more seeds"
                          for k in unconfirmed]


def _sse(values: list[float]) -> float:
    return float(((np.asarray(values) - np.mean(values)) ** 2).sum()) if values else 0.0


def _pct(ratio: float) -> str:
    return "from-zero" if math.isinf(ratio) else f"{(ratio - 1) * 100:+.1f}%"


def _test(series: Series, before: list[str], after: list[str], min_effect: float) -> _Test:
    """Is the step between two runs of revisions big enough, and evidenced (see METHOD)?"""
    metric = series.metric
    b_mean = float(np.mean([series.cells[k].mean for k in before]))
    a_mean = float(np.mean([series.cells[k].mean for k in after]))
    ratio = a_mean / b_mean if b_mean != 0 else (1.0 if a_mean == 0 else math.inf)
    out = _Test(b_mean, a_mean, ratio, big=abs(ratio - 1) >= min_effect, significant=None)
    b_seeds, a_seeds = _seed_means(series, before), _seed_means(series, after)
    common = [s for s in b_seeds if s in a_seeds]
    if len(common) >= 2:
        b, a = [b_seeds[s] for s in common], [a_seeds[s] for s in common]
        ci = paired_ratio_ci(a, b)
        out.seeds = len(common)
        if ci is not None:
            out.test, out.ci, out.significant = "ratio", ci, ci[0] > 1 or ci[1] < 1
            out.evidence = (f"paired over {len(common)} seeds: after/before ×{ratio:.3g}, 95% CI "
                            f"×{ci[0]:.3g}..×{ci[1]:.3g}" + (" (excludes ×1)" if out.significant else " (holds ×1)"))
        else:  # a zero somewhere: no log ratio, so the interval is on the paired differences
            diff = mean_ci([x - y for x, y in zip(a, b)])
            if diff is not None:
                out.test, out.ci, out.significant = "difference", diff, diff[0] > 0 or diff[1] < 0
                out.evidence = (f"paired over {len(common)} seeds: after-before 95% CI {fmt(metric, diff[0])}.."
                                f"{fmt(metric, diff[1])}" + (" (excludes 0)" if out.significant else " (holds 0)"))
        return out
    cb = mean_ci([series.cells[k].mean for k in before])
    ca = mean_ci([series.cells[k].mean for k in after])
    if cb is not None and ca is not None:
        out.test, out.ci, out.seeds = "segments", ca, len(common)
        out.significant = ca[0] > cb[1] or ca[1] < cb[0]
        out.evidence = (f"revision means (one seed): before {fmt(metric, cb[0])}..{fmt(metric, cb[1])}, after "
                        f"{fmt(metric, ca[0])}..{fmt(metric, ca[1])}: 95% intervals "
                        + ("do not overlap" if out.significant else "overlap"))
    return out


def _seed_means(series: Series, keys: list[str]) -> dict[str, float]:
    """Seed -> its mean over the revisions in `keys` where it ran (the pairs of the paired test)."""
    values: dict[str, list[float]] = {}
    for key in keys:
        for seed, value in series.cells[key].seeds.items():
            values.setdefault(seed, []).append(value)
    return {s: float(np.mean(v)) for s, v in values.items()}
