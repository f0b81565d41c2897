"""`warmbench nightly`: the nightly recipe in one command (what `make nightly` and the CI job call).

1. `run nightly` into RESULTS/nightly/: the code that changed since the last night reruns, and the
   older runs move to RESULTS/nightly/.history/<code-key>/ (the results store keeps them by revision);
2. `history RESULTS/nightly` writes RESULTS/nightly/history.html (+ history.json);
3. `compare` of the previous revision's complete runs (harness.nightly) against the current ones,
   with the statistical gate and the --fail-if bounds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from harness import experiment, nightly
from harness.argtypes import path_arg, positive_int
from harness.contracts.errors import EXIT_INCONCLUSIVE
from harness.nightly import DEFAULT_BOUNDS
from harness.report.compare import known_metrics, parse_bound

EPILOG = """\
exit codes: 0 = the gate holds, or is inconclusive (the seeds cannot decide: a note, not a
failure), or this is the first revision (nothing to compare yet); 1 = a decided regression, or the
gate cannot pass (a run failed, is incomplete or mostly failed, a run is missing: see compare);
2 = bad input; 130 = interrupted (rerun to resume)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("nightly", help="run the nightly preset, write its history page, gate against the "
                              "previous revision; exit 1 only on a decided regression", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="nightly", help="experiment TOML file or preset (default: nightly)")
    p.add_argument("--results", type=path_arg, default=experiment.DEFAULT_RESULTS,
                   help="results root (default: results/); the runs go to RESULTS/<experiment>/")
    p.add_argument("--quick", action="store_true", help="the experiment's quick variant")
    p.add_argument("--fail-if", action="append", metavar="METRIC:+PCT",
                   help=f"gate bound (repeatable; default: {' '.join(DEFAULT_BOUNDS)})".replace("%", "%%"))
    p.add_argument("--jobs", type=positive_int, help="runs in parallel (as `run --jobs`)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="as `run --executor`")
    p.add_argument("--address", help="as `run --address` (with --executor ray)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from harness.cli import main

    console = Console()
    for text in args.fail_if or ():  # bad input before a single run, not after the whole preset
        parse_bound(text, known_metrics([]))
    config, _ = experiment.load(args.experiment, quick=args.quick)
    exp_dir = args.results / config.name
    run_argv = ["run", args.experiment, "--results", str(args.results), "--executor", args.executor]
    run_argv += ["--quick"] * args.quick + ["--jobs", str(args.jobs)] * bool(args.jobs)
    run_argv += ["--address", args.address] if args.address else []
    ran = main(run_argv)
    if ran in (2, 130) or not exp_dir.is_dir():  # bad input or Ctrl-C: nothing to judge
        return ran
    console.rule("history")
    drawn = main(["history", str(exp_dir)])
    console.rule("gate")
    previous = nightly.previous_revision(exp_dir)
    if previous is None:
        console.print(f"no earlier revision under {exp_dir / '.history'}: this revision is the first reference, "
                      "nothing to compare", highlight=False, soft_wrap=True)
        return ran or drawn
    console.print(f"previous revision {previous.key} ({len(previous.runs)} complete runs, from "
                  f"{previous.started_at}) vs the current runs in {exp_dir}", highlight=False, soft_wrap=True)
    with tempfile.TemporaryDirectory(prefix="warmbench-nightly-") as tmp:
        base = nightly.gather(previous, Path(tmp) / previous.key)
        bounds = [x for b in (args.fail_if or DEFAULT_BOUNDS) for x in ("--fail-if", b)]
        gate = main(["compare", str(base), str(exp_dir), *bounds])
    if gate == EXIT_INCONCLUSIVE:
        console.print("[yellow]gate inconclusive[/]: the seeds cannot decide a bound (more seeds would); "
                      "not a failure of the nightly", highlight=False)
        gate = 0
    return gate or (2 if drawn == 2 else ran)
