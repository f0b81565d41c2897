"""`report.html` (self-contained: figures embedded as base64) and `report.md` for a run or an experiment."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.contracts.errors import InputError, WarmbenchError
from harness.metrics import ALL_MODELS, CLIENT_LAG_LIMIT_S, by_start_kind
from harness.report import capacity_table, figures
from harness.report.load import RunInfo, load_runs, missing_runs, points, read_experiment, summary_frame, systems
from harness.report.table import fmt, markdown_table, seeds_text
from harness.store import EXPERIMENT_FILE

#: Per-model columns in the report's detail table.
MODEL_METRICS: tuple[str, ...] = ("requests", "failed", "mean_ttft_s", "p90_ttft_s", "p95_ttft_s", "p99_ttft_s",
                                  "p99_ttft_paper_s", "p99_tpot_s", "p99_e2e_s", "slo_attainment", "start_cold",
                                  "start_prewarmed")


@dataclass
class Report:
    html_path: Path
    md_path: Path
    figures: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def default_baseline(path: Path, runs: list[RunInfo]) -> str | None:
    """The experiment's `baseline` if it names one that ran, else the first system."""
    names = systems(runs)
    chosen = ((read_experiment(Path(path)) or {}).get("config") or {}).get("baseline")
    if chosen in names:
        return chosen
    return names[0] if names else None


def warnings_for(runs: list[RunInfo], memory_empty: dict[str, bool]) -> list[str]:
    """What a reader must know before trusting the numbers."""
    out = []
    for run in runs:
        s = run.summary.get(ALL_MODELS, {})
        name = f"{run.run_id}"
        own = [str(w) for w in run.manifest.get("warnings", [])]  # what the run itself noticed (live side)
        out += [f"{name}: {w}" for w in own]
        said = " ".join(own).lower()
        if run.manifest.get("status") == "failed":
            out.append(f"{name}: run failed ({run.manifest.get('error', 'no error recorded')}); left out of tables and figures")
            continue
        if not run.complete:
            out.append(f"{name}: run incomplete (status {run.manifest.get('status', 'unknown')}); "
                       "numbers cover only what was recorded")
        lag = s.get("p99_send_lag_s", math.nan)
        if isinstance(lag, float) and lag > CLIENT_LAG_LIMIT_S and "client overloaded" not in said:
            out.append(f"{name}: client overloaded: P99 send lag {fmt('x_s', lag)} > {fmt('x_s', CLIENT_LAG_LIMIT_S)}; "
                       "TTFT still counts from the scheduled time")
        if s.get("requests", 0) and math.isnan(s.get("p50_ttft_s", math.nan)) and s.get("ok", 0):
            out.append(f"{name}: TTFT unavailable (no first-token times: non-streaming backend?)")
        if s.get("failed", 0):
            out.append(f"{name}: {s['failed']:.0f} of {s['requests']:.0f} requests failed or unfinished "
                       "(counted in attainment; 999 s in the paper view)")
        if memory_empty.get(run.run_id) and "gpu memory" not in said:
            out.append(f"{name}: GPU memory not measured")
    return out


def build(path: str | Path, baseline: str | None = None, memory_run: str | None = None) -> Report:
    """Write figures/, report.html and report.md into `path` (a run or an experiment directory).

    Runs of the grid missing on disk, failed or incomplete are listed in the warnings; a directory
    that cannot be written is bad input (InputError naming the file), not a traceback.
    """
    try:
        return _build(Path(path), baseline, memory_run)
    except OSError as exc:
        raise InputError(f"cannot write the report ({exc.strerror or exc})",
                         file=str(exc.filename or path)) from None


def _build(root: Path, baseline: str | None, memory_run: str | None) -> Report:
    every = load_runs(root)
    runs = [r for r in every if r.manifest.get("status") != "failed"]
    if not runs:
        raise WarmbenchError(f"every run under {root} failed; nothing to report (see their manifest.json)")
    frame = summary_frame(runs)
    baseline = baseline or default_baseline(root, runs)
    results = {r.run_id: r.result() for r in runs}
    memory_empty = {k: v.memory.empty for k, v in results.items()}
    pts = points(runs)
    last = pts[-1]
    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    made: dict[str, tuple[Path, str]] = {}

    def add(name: str, fig: Figure, caption: str) -> None:
        tight = name not in ("ttft_timeline", "gpu_memory")  # many axes, margins set by hand
        made[name] = (figures.save(fig, fig_dir / f"{name}.png", tight), caption)

    add("ttft_cdf", figures.ttft_cdf(runs, {k: v.requests for k, v in results.items()}),
        "TTFT CDF per system (log x) over all requests; a curve ending below 1 means requests never got a token.")
    x = figures.rate_key(runs)
    if x:
        add("rate_curves", figures.rate_curves(frame, x, runs), f"P99 TTFT and SLO attainment against {x}.")
    at_last = list({r.system: r for r in reversed([r for r in runs if r.label == last])}.values())[::-1]
    add("ttft_timeline", figures.ttft_timeline(at_last, {r.run_id: (results[r.run_id].requests, results[r.run_id].events)
                                                         for r in at_last}),
        f"TTFT over time at {last or 'this run'}, with cold starts, prewarms and evictions marked.")
    mem_choice = _memory_run(runs, results, memory_run, last)
    if mem_choice is not None:
        end = results[mem_choice.run_id].requests["end_s"].max()
        add("gpu_memory", figures.memory_stack(results[mem_choice.run_id].memory,
                                               f"GPU memory: {mem_choice.system} {mem_choice.label}",
                                               float(end) if pd.notna(end) else None),
            f"GPU memory per GPU over time for {mem_choice.run_id} (stacked: weights, KV, prewarmed, free).")
    add("model_p99_ttft", figures.model_p99_bars(frame, last, runs), f"Per-model P99 TTFT at {last or 'this run'}.")
    kinds = _start_kind_frame(at_last, results)
    warnings = [f"{i}: missing (in {EXPERIMENT_FILE}, no run on disk); left out of tables and figures"
                for i in missing_runs(root, every)] + warnings_for(every, memory_empty)
    title = f"warmbench report: {root.name}"
    html_path, md_path = root / "report.html", root / "report.md"
    cap, view = capacity_table.read(root), _manifest_view(root, runs)  # read once for both documents
    html_path.write_text(_html(title, cap, view, runs, frame, baseline, made, warnings, kinds, last))
    md_path.write_text(_markdown(title, cap, view, runs, frame, baseline, made, warnings, kinds, last))
    return Report(html_path, md_path, {k: v[0] for k, v in made.items()}, warnings)


def _memory_run(runs: list[RunInfo], results: dict, chosen: str | None, last: str) -> RunInfo | None:
    with_memory = [r for r in runs if not results[r.run_id].memory.empty]
    if chosen:
        run = next((r for r in runs if r.run_id == chosen), None)
        if run is None:
            raise WarmbenchError(f"--memory-run {chosen!r}: no such run; runs: {', '.join(r.run_id for r in runs)}")
        if results[run.run_id].memory.empty:
            raise WarmbenchError(f"--memory-run {chosen!r}: that run recorded no GPU memory")
        return run
    at_last = [r for r in with_memory if r.label == last] or with_memory
    preferred = [r for r in at_last if r.system == "warmserve"]
    busiest = sorted(at_last, key=lambda r: -len(results[r.run_id].memory))  # most memory changes: most to see
    candidates = preferred or busiest
    return candidates[0] if candidates else None


def _model_frame(frame: pd.DataFrame, point: str) -> pd.DataFrame:
    data = frame[frame["point"] == point]
    table = data.groupby(["system", "model"], sort=False, as_index=False)[[m for m in MODEL_METRICS if m in data]].mean()
    for metric in MODEL_METRICS:
        if metric in table:
            table[metric] = [fmt(metric, v) for v in table[metric]]
    return table


def _start_kind_frame(runs: list[RunInfo], results: dict) -> pd.DataFrame:
    """TTFT split by how the serving instance was obtained, per system (formatted for tables)."""
    parts = []
    for run in runs:
        table = by_start_kind(results[run.run_id].requests)
        table.insert(0, "system", run.system)
        parts.append(table)
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    for col in out.columns[2:]:
        metric = "slo_attainment" if col == "share" else ("requests" if col == "requests" else col)
        out[col] = [fmt(metric, v) for v in out[col]]
    return out


def _manifest_view(root: Path, runs: list[RunInfo]) -> dict:
    exp = read_experiment(root)
    if exp is not None:
        first = runs[0].manifest if runs else {}
        return {"experiment": exp, "environment": {k: first.get(k) for k in ("versions", "git", "host")}}
    return runs[0].manifest if len(runs) == 1 else {r.run_id: r.manifest for r in runs}


def _html(title: str, cap: dict | None, view: dict, runs: list[RunInfo], frame: pd.DataFrame, baseline: str | None,
          made: dict[str, tuple[Path, str]], warnings: list[str], kinds: pd.DataFrame, last: str) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{esc(title)}</h1>",
             f"<p>{len(runs)} run(s), systems: {esc(', '.join(systems(runs)))}; baseline: {esc(str(baseline))}. "
             f"Metrics as defined in warmbench's docs/design.md (TTFT from the scheduled send time).</p>"]
    if warnings:
        parts.append("<div class='warn'><h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings)
                     + "</ul></div>")
    if cap is not None:  # a capacity search: its answer first, the probes' tables below
        parts.append(capacity_table.to_html(cap))
    parts.append("<h2>Key metrics</h2>")
    for point in points(runs):
        seeds = seeds_text(runs, point)
        parts.append(f"<h3>{esc(point or 'run')}</h3>" + (f"<p>{esc(seeds)}</p>" if seeds else "")
                     + _md_to_html_table(markdown_table(runs, point, baseline)))
    parts.append("<h2>Figures</h2>")
    for name, (path, caption) in made.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    if len(kinds):
        parts.append(f"<h2>TTFT by start kind ({esc(last or 'this run')})</h2><p>How each request's instance was "
                     "obtained (warm / prewarmed / cold / queued) and where its TTFT went.</p>"
                     + kinds.to_html(index=False, border=0))
    parts.append("<h2>Per model</h2>")
    for point in points(runs):
        parts.append(f"<h3>{esc(point or 'run')}</h3>" + _model_frame(frame, point).to_html(index=False, border=0))
    parts.append("<h2>Manifest</h2><details open><summary>config, versions, git revision, host</summary><pre>"
                 + esc(json.dumps(view, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_to_html_table(md: str) -> str:
    rows = [line.strip("|").split(" | ") for line in md.splitlines()]
    head, body = rows[0], rows[2:]
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h.strip())}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in body:
        out.append("<tr>" + "".join(f"<td>{_bold(c.strip())}</td>" for c in row) + "</tr>")
    return "".join(out) + "</tbody></table>"


def _bold(text: str) -> str:
    if text.startswith("**"):
        end = text.index("**", 2)
        return f"<b>{html.escape(text[2:end])}</b>{html.escape(text[end + 2:])}"
    return html.escape(text)


def _markdown(title: str, cap: dict | None, view: dict, runs: list[RunInfo], frame: pd.DataFrame, baseline: str | None,
              made: dict[str, tuple[Path, str]], warnings: list[str], kinds: pd.DataFrame, last: str) -> str:
    lines = [f"# {title}", "", f"{len(runs)} run(s), systems: {', '.join(systems(runs))}; baseline: {baseline}. "
             "Best value per column in bold; (×r) = ratio to the baseline.", ""]
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    if cap is not None:
        lines += capacity_table.markdown(cap)
    lines += ["## Key metrics", ""]
    for point in points(runs):
        seeds = seeds_text(runs, point)
        lines += [f"### {point or 'run'}", "", *([seeds, ""] if seeds else []), markdown_table(runs, point, baseline), ""]
    lines += ["## Figures", ""]
    for name, (path, caption) in made.items():
        lines += [f"![{name}](figures/{path.name})", "", caption, ""]
    if len(kinds):
        lines += [f"## TTFT by start kind ({last or 'this run'})", "", _md_frame(kinds), ""]
    lines += ["## Per model", ""]
    for point in points(runs):
        lines += [f"### {point or 'run'}", "", _md_frame(_model_frame(frame, point)), ""]
    lines += ["## Manifest", "", "```json", json.dumps(view, indent=2, sort_keys=True, default=str),
              "```", ""]
    return "\n".join(lines)


def _md_frame(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right}th:first-child,td:first-child{text-align:left}b{color:#17803d}.warn{background:#fff4e5;
border-left:4px solid #f0a030;padding:.2em 1em}figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;
font-size:13px}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}"""
