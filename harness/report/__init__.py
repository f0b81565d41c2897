"""Reports: terminal tables, seaborn figures, a self-contained HTML page and Markdown, compare."""

from harness.report.load import RunInfo, load_runs, summary_frame

__all__ = ["RunInfo", "load_runs", "summary_frame"]
