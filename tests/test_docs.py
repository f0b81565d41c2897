"""The repository is self-contained: the documents the code cites are in it, the files the docs
name exist, and docs/design.md names the run record as harness/contracts/result.py and
harness/store.py define it (a column or manifest field added without a word in the docs fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"


def _sources() -> list[Path]:
    """Code, experiment presets and the README: everything that may cite a document."""
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "run.py"]
    for package in ("harness", "systems", "workloads"):
        files += [p for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".toml", ".md")]
    return [f for f in files if f.exists()]


def test_nothing_cites_a_document_outside_the_repository() -> None:
    """PAPER.md / DESIGN.md / ANCHORS.md lived beside the checkout; docs/ holds what the code uses."""
    outside = re.compile(r"\b(PAPER|DESIGN|ANCHORS)\.md\b")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in _sources()
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert offenders == []


def test_every_cited_doc_exists() -> None:
    ours = re.compile(r"(?<!its )\bdocs/([\w-]+\.md)")  # "its docs/x.md": another project's docs
    cited = {name for path in _sources() for name in ours.findall(path.read_text(encoding="utf-8"))}
    assert {"paper.md", "design.md", "architecture.md"} <= cited  # the README and the code point at all three
    assert sorted(c for c in cited if not (DOCS / c).is_file()) == []


@pytest.mark.parametrize("doc", ["paper.md", "design.md", "architecture.md"])
def test_the_files_a_doc_names_exist(doc: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:harness|systems|workloads|tests)/[\w/.-]+?)/?`", text))
    assert named, doc
    assert sorted(n for n in named if not (ROOT / n).exists()) == []


def test_design_names_every_record_column_status_and_manifest_field() -> None:
    from harness.contracts import result
    from harness.store import Manifest

    text = (DOCS / "design.md").read_text(encoding="utf-8")
    names = [*result.REQUEST_COLUMNS, *result.EVENT_COLUMNS, *result.MEMORY_COLUMNS, *result.STATUSES,
             *filter(None, result.START_KINDS), *Manifest.model_fields]
    assert sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", text)) == []
