"""REPRODUCTION.md and reproduction.html: the claim table, the paper's figures, assumptions, sensitivity."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.reproduce import claims as C
from harness.reproduce import verdicts as V
from harness.reproduce.sensitivity import Effect, Study

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MD_FILE, HTML_FILE = "REPRODUCTION.md", "reproduction.html"
COLUMNS = ("claim", "paper", "ours", "ratio", "verdict", "why")


def table_rows(rows: list[V.Row]) -> list[list[str]]:
    return [[r.claim, r.paper, r.ours, r.ratio, r.verdict, r.why] for r in rows]


def _md_table(header: list[str], body: list[list[str]]) -> str:
    clean = [[str(c).replace("|", "/").replace("\n", " ") for c in row] for row in body]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in clean])


def figures(rows: list[V.Row], dirs: dict[str, Path], sens: list[tuple[Study, float | None, list[Effect]]],
            out: Path) -> list[tuple[str, Path]]:
    """The paper's figures from our runs; each is skipped when its runs are missing."""
    from harness.report import figures as F
    from harness.report.load import summary_frame

    out.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Path]] = []
    for trace in C.TRACES:
        name = f"repro-headline-{C._short(trace)}"
        runs = V.complete_runs(dirs.get(name))
        if not runs:
            continue
        key = F.rate_key(runs)
        if key:
            made.append((f"P99 TTFT and SLO attainment per system and rate, {trace}",
                         F.save(F.rate_curves(summary_frame(runs), key, runs), out / f"p99-rate-{C._short(trace)}.png")))
        base = [r for r in runs if V.param(r, "total_rps") == 15.0 and V.param(r, "alpha") == 0.5]
        if base:
            requests = {r.run_id: r.result().requests for r in base}
            for r in base:
                r.label = "15 req/s, alpha 0.5"
            made.append((f"TTFT CDF at 15 req/s, alpha 0.5, {trace}",
                         F.save(F.ttft_cdf(base, requests), out / f"ttft-cdf-{C._short(trace)}.png")))
    import matplotlib.pyplot as plt

    cap = next((r for r in rows if r.claim == "capacity-muxserve"), None)
    results = (cap.extra.get("capacity") or {}).get("results", []) if cap else []
    if results:
        fig, ax = plt.subplots(figsize=(4.5, 3))
        ax.bar([r["system"] for r in results], [r["capacity"] or 0 for r in results], color=["#4c72b0", "#dd8452"])
        ax.set_ylabel("highest rate within SLO (req/s)")
        made.append(("Throughput at SLO (capacity search)", F.save(fig, out / "capacity.png")))
    abl = [r for r in rows if r.claim.startswith("ablation:")]
    if abl and any(r.ours_value is not None for r in abl):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        xs = range(len(abl))
        ax.bar([x - 0.2 for x in xs], [r.paper_value or 0 for r in abl], 0.4, label="paper", color="#bbbbbb")
        ax.bar([x + 0.2 for x in xs], [r.ours_value or 0 for r in abl], 0.4, label="ours", color="#4c72b0")
        ax.set_xticks(list(xs), [r.claim.split(": ", 1)[1] for r in abl], rotation=20, fontsize=7)
        ax.set_ylabel("% TTFT < 100 ms")
        ax.legend(fontsize=7)
        made.append(("Ablation: share of TTFT < 100 ms, paper and ours", F.save(fig, out / "ablation.png")))
    win = next((r for r in rows if r.claim == "window"), None)
    tables = (win.extra.get("tables") or {}) if win else {}
    if any(tables.values()):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for trace, table in tables.items():
            if table:
                ws = sorted(table)
                ax.errorbar([w / 60 for w in ws], [table[w][0] for w in ws],
                            yerr=[[table[w][0] - table[w][1] for w in ws], [table[w][2] - table[w][0] for w in ws]],
                            marker="o", capsize=3, label=trace)
        ax.set_xscale("log")
        ax.set_xlabel("forecast window (min)")
        ax.set_ylabel("% TTFT < 100 ms (seed range)")
        ax.legend(fontsize=7)
        made.append(("Forecast window sweep", F.save(fig, out / "window.png")))
    for study, base_value, found in sens:
        if base_value is None:
            continue
        fig = tornado(study, base_value, found)
        made.append((f"Sensitivity ({study.name}): {study.number}", F.save(fig, out / f"tornado-{study.name}.png")))
    return made


def tornado(study: Study, base: float, found: list[Effect]) -> Figure:
    """One bar per assumption from its lowest to its highest outcome, around the base value."""
    import matplotlib.pyplot as plt

    spans = []
    for e in found:
        vals = [n for _, n in e.points if n is not None and math.isfinite(n)]
        if vals:
            spans.append((e.assumption.label, min(vals + [base]), max(vals + [base])))
    spans.sort(key=lambda s: s[2] - s[1])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(spans) + 1.2))
    for i, (_label, lo, hi) in enumerate(spans):
        ax.barh(i, hi - lo, left=lo, color="#4c72b0")
    ax.set_yticks(range(len(spans)), [s[0] for s in spans], fontsize=7)
    ax.axvline(base, color="black", lw=1, label=f"base {base:.2f}")
    ax.axvline(study.paper, color="tab:red", lw=1, ls="--", label=f"paper {study.paper:g}")
    ax.set_xlabel(study.number)
    ax.legend(fontsize=7)
    return fig


def sensitivity_table(study: Study, base: float | None, found: list[Effect]) -> list[list[str]]:
    out = []
    for e in found:
        for v, n in e.points:
            delta = "n/a" if n is None or base is None else f"{n - base:+.2f}"
            out.append([e.assumption.label, e.assumption.base, str(v), "n/a" if n is None else f"{n:.2f}", delta,
                        "yes" if n is not None and study.closes(n) else "no", e.assumption.source])
    return out


SENS_HEADER = ["assumption", "base", "value", "ours", "change", "in reproduced band", "range from"]


def write(root: Path, rows: list[V.Row], dirs: dict[str, Path],
          sens: list[tuple[Study, float | None, list[Effect]]], notes: list[str]) -> tuple[Path, Path]:
    """Write REPRODUCTION.md (+ figures/) and reproduction.html (figures embedded) into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    made = figures(rows, dirs, sens, root / "figures")
    rules = [f"ratio claims: **reproduced** when ours is within {V.REPRODUCED_FACTOR:g}x of the paper's, "
             "**same direction** when WarmServe is better (ratio > 1) as in the paper, else **not reproduced**",
             f"share claims (ablation): **reproduced** within {V.SHARE_TOLERANCE_PP:g} percentage points, "
             f"**same direction** when the variant sits at least {V.MIN_DROP_PP:g} pp below full WarmServe, as in the paper",
             "window: **reproduced** when 5 min has the highest share on both traces, **same direction** when it "
             "beats both 3 and 40 min",
             "**not checkable**: the paper's value is not readable"]
    md = ["# Reproducing the WarmServe paper", "", *notes, "", "## Claims", "",
          _md_table(["claim", "paper", "ours (seed spread)", "ratio ours/paper", "verdict", "why"], table_rows(rows)),
          "", "Verdict rules:", "", *[f"- {r}" for r in rules], "", "## Assumptions", "",
          *[f"- **{k}**: {v}" for k, v in C.ASSUMPTIONS], ""]
    md += ["## Sensitivity", "", "One assumption at a time around the base point: the claim's setup on the conversation "
           "week, with the claim's seeds (the quick variant: one seed, a shorter replay, each range's ends only); "
           "`in reproduced band` applies the claim's reproduced rule to that value.", ""]
    for study, base, found in sens:
        md += [f"### {study.name}: {study.number} (base {'n/a' if base is None else f'{base:.2f}'}, "
               f"paper {study.paper:g}{study.unit})", "", _md_table(SENS_HEADER, sensitivity_table(study, base, found)),
               "", f"Gap: {_closing(study, base, found)}", ""]
    md += ["## Figures", ""] + [f"![{cap}](figures/{p.name})\n\n{cap}\n" for cap, p in made]
    md_path = root / MD_FILE
    md_path.write_text("\n".join(md) + "\n")
    html_path = root / HTML_FILE
    html_path.write_text(_html(rows, rules, sens, made, notes))
    return md_path, html_path


def _closing(study: Study, base: float | None, found: list[Effect]) -> str:
    from harness.reproduce.sensitivity import closing

    return closing(study, base, found)


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _html(rows: list[V.Row], rules: list[str], sens: list[Any], made: list[tuple[str, Path]], notes: list[str]) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>WarmServe reproduction</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}</style>",
             "<h1>Reproducing the WarmServe paper</h1>", *[f"<p>{html.escape(n)}</p>" for n in notes],
             "<h2>Claims</h2>", _html_table(["claim", "paper", "ours (seed spread)", "ratio ours/paper", "verdict",
                                             "why"], table_rows(rows)),
             "<ul>" + "".join(f"<li>{html.escape(r.replace('**', ''))}</li>" for r in rules) + "</ul>",
             "<h2>Assumptions</h2><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                                 for k, v in C.ASSUMPTIONS) + "</ul>", "<h2>Sensitivity</h2>"]
    for study, base, found in sens:
        parts += [f"<h3>{html.escape(study.name)}: {html.escape(study.number)}</h3>",
                  _html_table(SENS_HEADER, sensitivity_table(study, base, found)),
                  f"<p>Gap: {html.escape(_closing(study, base, found))}</p>"]
    parts.append("<h2>Figures</h2>")
    for cap, path in made:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<figure><img src='data:image/png;base64,{data}'><figcaption>{html.escape(cap)}"
                     "</figcaption></figure>")
    return "\n".join(parts)
