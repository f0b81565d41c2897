"""The history page: a trend figure and the per-revision tables, as one self-contained HTML file.

The figure is embedded as a base64 PNG and the style is the report's, so the page opens from the
results folder alone, with no server and nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from harness.contracts.errors import InputError
from harness.report import figures  # also selects matplotlib's Agg backend before any figure is drawn
from harness.report.changepoints import METHOD, Series
from harness.report.document import _CSS as REPORT_CSS
from harness.report.history import History
from harness.report.table import fmt


def trend_figure(history: History) -> Figure:
    """One panel per metric: each series' mean per revision with its 95% interval, change points marked."""
    names = list(dict.fromkeys(s.name(history.several_experiments) for s in history.series))
    colors = figures.palette(names)
    keys = [r.key for r in history.revisions]
    x_of = {k: i for i, k in enumerate(keys)}
    fig, axes = plt.subplots(len(history.metrics), 1, figsize=(max(7.0, 0.55 * len(keys) + 4), 2.6 * len(history.metrics) + 1),
                             squeeze=False, sharex=True)
    for ax, metric in zip(axes[:, 0], history.metrics):
        shown = [s for s in history.series if s.metric == metric]
        for s in shown:
            name = s.name(history.several_experiments)
            xs = [x_of[k] for k in s.cells]
            ys = [c.mean for c in s.cells.values()]
            err = [[c.mean - c.ci[0] if c.ci else 0.0 for c in s.cells.values()],
                   [c.ci[1] - c.mean if c.ci else 0.0 for c in s.cells.values()]]
            ax.errorbar(xs, ys, yerr=err, color=colors[name], marker="o", ms=4, capsize=3, lw=1.4, label=name)
            for cp in s.change_points:
                ax.axvline(x_of[cp.revision] - 0.5, color=colors[name], ls="--", lw=1, alpha=0.8)
                ax.annotate(cp.size, (x_of[cp.revision], cp.after), xytext=(4, 4), textcoords="offset points",
                            fontsize=7, color="tab:red" if cp.worse else "tab:green")
        values = [c.mean for s in shown for c in s.cells.values() if c.mean > 0]
        if metric.endswith("_s") and values and max(values) / min(values) > 20:
            ax.set_yscale("log")
            figures._plain_log_ticks(ax)
        elif fmt(metric, 0.5).endswith("%"):  # a share: its whole range, as the report draws attainment
            ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(metric, fontsize=8)
    figures._legend(fig, axes[0, 0])
    axes[-1, 0].set_xticks(range(len(keys)))
    axes[-1, 0].set_xticklabels([f"{r.key.split('+')[0][:8]}{'*' if r.dirty else ''}\n{r.first_started[5:10]}"
                                 for r in history.revisions], fontsize=7, rotation=45 if len(keys) > 12 else 0)
    axes[-1, 0].set_xlabel("revision (date order; * = uncommitted changes), dashed = change point")
    fig.subplots_adjust(hspace=0.3)
    return fig


def png_base64(fig: Figure) -> str:
    """The figure as a base64 PNG (110 dpi, as the report's figures), and closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(history: History, path: Path) -> Path:
    """Write the page; a place that cannot be written is bad input naming it."""
    try:
        path.write_text(to_html(history), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the history page ({exc.strerror or exc})", file=str(path)) from None
    return path


def to_html(history: History) -> str:
    esc = html.escape
    title = "warmbench history: " + ", ".join(Path(p).name or p for p in history.inputs)
    many = history.several_experiments
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
              f"<style>{REPORT_CSS}</style></head><body><h1>{esc(title)}</h1>"),
             (f"<p>{len(history.revisions)} revision(s) in date order, model {esc(history.model)}; each value is the "
              "mean over seeds ± the half-width of its 95% t interval (none with one seed).</p>"),
             f"<p>Change points: {esc(METHOD)}; minimum effect {history.min_effect * 100:g}%.</p>"]
    notes = history.notes + [f"{s.name(many)} {s.metric}: {u}" for s in history.series for u in s.unconfirmed]
    if notes:
        parts.append("<div class='warn'><h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul></div>")
    label = {r.key: r for r in history.revisions}
    parts.append("<h2>Change points</h2>")
    if history.change_points:
        rows = "".join(
            f"<tr><td>{esc(c.metric)}</td><td>{esc(' '.join(x for x in (c.experiment if many else '', c.system, c.point) if x))}"
            f"</td><td>{esc(label[c.revision].label)}</td><td>{esc(label[c.revision].date)}</td>"
            f"<td>{esc(fmt(c.metric, c.before))} → {esc(fmt(c.metric, c.after))}</td>"
            f"<td>{'<b style=color:#c0392b>' if c.worse else '<b>'}{esc(c.size)}</b> "
            f"{'worse' if c.worse else 'better'}</td><td>{esc(c.evidence)}</td></tr>"
            for c in history.change_points)
        parts.append("<table><thead><tr><th>metric</th><th>series</th><th>first revision after</th><th>date</th>"
                     f"<th>before → after</th><th>size</th><th>evidence</th></tr></thead><tbody>{rows}</tbody></table>")
    else:
        parts.append("<p>None: no step of at least the minimum effect with evidence over seeds.</p>")
    parts.append("<h2>Trend</h2><figure><img alt='trend' src='data:image/png;base64,"
                 f"{png_base64(trend_figure(history))}'><figcaption>Mean over seeds per revision with its 95% "
                 "interval; dashed lines mark change points (size in red when worse).</figcaption></figure>")
    for metric in history.metrics:
        parts.append(f"<h2>{esc(metric)}</h2>" + _metric_table(history, [s for s in history.series if s.metric == metric]))
    parts.append("<h2>Revisions</h2><table><thead><tr><th>revision</th><th>commit</th><th>uncommitted changes "
                 "(diff sha256)</th><th>first run</th><th>last run</th><th>runs</th><th>folders</th></tr></thead><tbody>"
                 + "".join(f"<tr><td>{esc(r.label)}</td><td>{esc(r.revision or 'n/a')}</td>"
                           f"<td>{esc(r.diff_sha256 or ('none' if r.dirty is False else 'n/a'))}</td>"
                           f"<td>{esc(r.first_started)}</td><td>{esc(r.last_started)}</td><td>{r.runs}</td>"
                           f"<td>{esc(', '.join(r.folders))}</td></tr>" for r in history.revisions)
                 + "</tbody></table></body></html>")
    return "\n".join(parts)


def _metric_table(history: History, series: list[Series]) -> str:
    esc = html.escape
    many = history.several_experiments
    head = "".join(f"<th>{esc(s.name(many))}</th>" for s in series)
    rows = []
    for r in history.revisions:
        cells = []
        for s in series:
            cell = s.cells.get(r.key)
            mark = next((("▲" if c.after > c.before else "▼", c.worse) for c in s.change_points if c.revision == r.key), None)
            text = esc(cell.text(s.metric)) if cell else "n/a"
            if mark:
                text = f"<b{' style=color:#c0392b' if mark[1] else ''}>{mark[0]} {text}</b>"
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><td>{esc(r.label)}</td><td>{esc(r.date)}</td>{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>revision</th><th>date</th>{head}</tr></thead><tbody>{''.join(rows)}"
            "</tbody></table><p>▲ / ▼: a change point at this revision (red when worse).</p>")
