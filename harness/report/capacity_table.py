"""The report's "Capacity" section, from an experiment's `capacity.json` (written by harness.capacity)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from harness.store import CAPACITY_FILE

COLUMNS: tuple[str, ...] = ("system", "point", "capacity", "passed", "failed", "probes", "ratio")


def read(root: Path) -> dict[str, Any] | None:
    """capacity.json of an experiment directory, or None (no search, or unreadable: the runs still report)."""
    try:
        data = json.loads((Path(root) / CAPACITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("results"), list) else None


def intro(doc: dict[str, Any]) -> str:
    slo = doc.get("slo") or {}
    rule = "on every seed" if doc.get("rule") == "every_seed" else "on the mean over seeds"
    text = (f"Highest {doc.get('param')} in [{doc.get('low'):g}, {doc.get('high'):g}] at which at least "
            f"{doc.get('attainment', 0):.1%} of all requests are ok within TTFT {slo.get('ttft_s')} s and TPOT "
            f"{slo.get('tpot_s')} s, {rule} (seeds {doc.get('seeds')}); bisection to {doc.get('tolerance', 0):.0%}. "
            f"Ratio against {doc.get('baseline')}.")
    return text if doc.get("complete") else text + " The search was cut short: rerun to finish it."


def rows(doc: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in doc["results"]:
        point = ", ".join(f"{k}={v}" for k, v in (r.get("point") or {}).items()) or "-"
        out.append([str(r.get("system")), point, str(r.get("capacity_text")),
                    "-" if r.get("passed") is None else f"{r['passed']:g}",
                    "-" if r.get("failed") is None else f"{r['failed']:g}",
                    str(len(r.get("probes") or [])), str(r.get("ratio_text"))])
    return out


def markdown(doc: dict[str, Any]) -> list[str]:
    lines = ["## Capacity", "", intro(doc), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows(doc)] + [""]


def to_html(doc: dict[str, Any]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows(doc))
    return f"<h2>Capacity</h2><p>{esc(intro(doc))}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
