"""`warmbench replay`: replay a workload against live endpoints (open loop) and write the run.

One machine: `replay --workload W --system S ... --out DIR`. Across machines, with locust's
master/worker mode: the master runs `replay ... --master --expect-workers N --out DIR` and each
worker `replay --worker --master-host HOST`; the master brings the system up, deals out shards
with the endpoints and a common start time (keep clocks NTP-synced), and merges the records
into one run.

Credentials: `--api-key VALUE` (sent as `Authorization: Bearer VALUE`) and `--header NAME=VALUE`
(repeatable) go with every request, the probe and the /metrics scrape; `env:NAME` reads the value
from the environment. No file the run writes holds them (see harness.contracts.redact).

Exit codes: 0 the run completed and most requests were ok; 1 the run failed, was cut short, or
more than half of its requests failed (`mostly_failed` in the manifest); 2 bad input (nothing is
created); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from harness.argtypes import non_negative_float, path_arg, positive_float, positive_int
from harness.contracts.errors import WarmbenchError
from harness.contracts.redact import redact_text

if TYPE_CHECKING:
    from harness.contracts.result import RunResult
    from workloads.workload import Workload


def _pairs(values: list[str], flag: str, what: str = "MODEL=VALUE", secret: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            if secret:  # a header's value is never echoed, nor anything after a curl-style `Name: value` colon
                name = key.split(":", 1)[0].strip()[:40] if ":" in key else ""  # a bare word may be the key
                raise WarmbenchError(f"{flag} {name!r} (value hidden): expected {what}, e.g. 'Authorization=Bearer KEY'")
            raise WarmbenchError(f"{flag} {value!r}: expected {what}")
        if key in out:
            raise WarmbenchError(f"{flag}: {key!r} given twice")
        out[key] = rest
    return out


def _is_bare_url(value: str) -> bool:
    """`--endpoint URL` rather than `MODEL=URL`: it starts with a scheme, so an `=` in its query
    string (`?api_key=...`) does not split it into a "model" and a "URL" (which also echoed the key)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) is not None or "=" not in value


def _model_endpoints(values: list[str]) -> list[str]:
    return [v for v in values if not _is_bare_url(v)]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("replay", help="replay a workload against live endpoints (locust, open loop)",
                              description=__doc__)
    p.add_argument("--workload", help="preset name, trace file, canonical CSV/Parquet or recipe TOML")
    p.add_argument("--system", choices=["openai", "vllm", "warmserve", "serverlessllm"], default="openai")
    p.add_argument("--endpoint", action="append", default=[], metavar="MODEL=URL",
                   help="base URL per model (openai, warmserve, serverlessllm); a bare URL serves every model")
    p.add_argument("--model", action="append", default=[], metavar="MODEL=PATH",
                   help="local model directory per model (vllm)")
    p.add_argument("--served-name", action="append", default=[], metavar="MODEL=NAME",
                   help="name sent in request bodies for a workload model (e.g. WarmServe's model id)")
    p.add_argument("--mode", choices=["dedicated", "ondemand", "sleep"], default="dedicated",
                   help="vllm: all up front, start on first request / stop when idle, or sleep/wake (GPU)")
    p.add_argument("--gpus", action="append", default=[], metavar="MODEL=0,1",
                   help="vllm: CUDA_VISIBLE_DEVICES for a model's server")
    p.add_argument("--idle-s", type=float, default=30.0, help="vllm ondemand/sleep: idle time before stop/sleep")
    p.add_argument("--vllm-python", help="interpreter with vLLM installed (default $WARMBENCH_VLLM_PYTHON)")
    p.add_argument("--token-ids", choices=["auto", "yes", "no"], default="auto",
                   help="openai: token-id prompts for exact input lengths; auto probes each endpoint once; "
                        "serverlessllm: input_tokens (auto = yes)")
    p.add_argument("--api", choices=["completions", "chat"], default="completions",
                   help="openai, vllm: /v1/completions (default) or /v1/chat/completions (text prompts)")
    p.add_argument("--ignore-eos", choices=["auto", "yes", "no"], default="auto",
                   help="openai: vLLM's ignore_eos + min_tokens for exact output lengths; auto drops "
                        "them where the probe is refused; serverlessllm: auto = yes")
    p.add_argument("--vocab-size", type=int, default=32000,
                   help="openai, serverlessllm --token-ids: ids drawn below this")
    p.add_argument("--max-model-len", type=positive_int,
                   help="warmserve (default 2048, its engines' limit), serverlessllm (default: no cap): "
                        "cap prompt + output tokens to this; capped lengths are recorded")
    p.add_argument("--request-id-offset", metavar="N|auto", default="auto",
                   help="warmserve: added to request ids (the manager counts an id once in its life); "
                        "auto (default): a new offset per run")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply arrival times by X (0.5 replays twice as fast)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per-request time limit")
    p.add_argument("--drain-s", type=float, default=30.0, help="after Ctrl-C, wait this long for in-flight requests")
    p.add_argument("--overload-threshold-ms", type=float, default=10.0,
                   help="flag the run 'client overloaded' when P99 send lag exceeds this")
    p.add_argument("--duration-s", type=positive_float,
                   help="replay only the requests that arrive in the trace's first DURATION_S seconds "
                        "(before --time-scale), as sim --duration-s")
    p.add_argument("--api-key", metavar="KEY",
                   help="sent as 'Authorization: Bearer KEY' to every endpoint; env:NAME reads $NAME")
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="HTTP header for every request, probe and scrape (repeatable); VALUE env:NAME "
                        "reads $NAME. Values are never written to the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--web-ui", metavar="HOST:PORT",
                   help="show live TTFT / E2E per model in locust's web UI at this address")
    p.add_argument("--out", type=path_arg, help="run directory to create")
    dist = p.add_argument_group("distributed (locust master/worker)")
    dist.add_argument("--master", action="store_true", help="deal shards to workers and merge their records")
    dist.add_argument("--worker", action="store_true", help="replay the shard a master sends")
    dist.add_argument("--master-host", default="127.0.0.1", help="worker: master's address")
    dist.add_argument("--master-port", type=int, default=5557, help="master's locust port")
    dist.add_argument("--master-bind-host", default="*", help="master: interface to listen on")
    dist.add_argument("--expect-workers", type=positive_int, default=1, help="master: workers to wait for")
    dist.add_argument("--start-delay-s", type=non_negative_float, default=3.0,
                      help="master: common start this long after the shards are sent")
    p.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace) -> dict:
    """The `run_live` options dict the flags describe."""
    opts: dict = {"time_scale": args.time_scale, "timeout_s": args.timeout_s, "drain_s": args.drain_s,
                  "overload_threshold_ms": args.overload_threshold_ms,
                  "served_names": _pairs(args.served_name, "--served-name")}
    headers = _pairs(args.header, "--header", "NAME=VALUE", secret=True)
    if headers:
        opts["headers"] = headers
    if args.api_key is not None:
        opts["api_key"] = args.api_key
    endpoints = _model_endpoints(args.endpoint)
    bare = [e for e in args.endpoint if _is_bare_url(e)]
    if len(bare) > 1:
        raise WarmbenchError(f"--endpoint: give MODEL=URL pairs or one bare URL for all, not {redact_text(str(bare))}")
    if args.system == "vllm":
        if not args.model:
            raise WarmbenchError("--system vllm needs --model MODEL=PATH for each workload model")
        opts.update(models=_pairs(args.model, "--model"), mode=args.mode, idle_s=args.idle_s,
                    gpus=_pairs(args.gpus, "--gpus"), api=args.api)
        if args.vllm_python:
            opts["python"] = args.vllm_python
    elif args.system == "openai":
        if not args.endpoint:
            raise WarmbenchError("--system openai needs --endpoint MODEL=URL (or one URL for all)")
        choice = {"auto": "auto", "yes": True, "no": False}
        opts.update(endpoints=_pairs(endpoints, "--endpoint"), token_ids=choice[args.token_ids],
                    ignore_eos=choice[args.ignore_eos], vocab_size=args.vocab_size, api=args.api)
        if bare:
            opts["url"] = bare[0]
    else:  # warmserve, serverlessllm: MODEL=URL routes per model, a bare URL serves the rest
        opts["endpoints"] = _pairs(endpoints, "--endpoint")
        if bare:
            opts["url"] = bare[0]
        if args.max_model_len is not None:
            opts["max_model_len"] = args.max_model_len
        if args.system == "warmserve":
            offset = args.request_id_offset
            if offset != "auto":
                if not offset.isdigit():
                    raise WarmbenchError(f"--request-id-offset {offset!r}: expected a non-negative integer or 'auto'")
                offset = int(offset)
            opts["request_id_offset"] = offset
        else:
            opts.update(token_ids=args.token_ids != "no", ignore_eos=args.ignore_eos != "no",
                        vocab_size=args.vocab_size)
    return opts


def load_workload(spec: str) -> Workload:
    """Resolve a workload through workloads.resolve (presets, trace files, recipes)."""
    try:
        from workloads import resolve
    except ImportError as exc:
        raise WarmbenchError(f"workloads.resolve is not available yet ({exc})") from None
    return resolve(spec)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if args.worker:
        from harness.live.distributed import run_worker

        return run_worker(args.master_host, args.master_port)
    if not args.workload or not args.out:
        raise WarmbenchError("replay needs --workload and --out")
    workload = _checked_inputs(args)
    options = args.options
    if args.master:
        from harness.live.distributed import run_master

        result = run_master(workload, args.system, options, args.out, seed=args.seed,
                            bind_host=args.master_bind_host, port=args.master_port,
                            expect_workers=args.expect_workers, start_delay_s=args.start_delay_s)
    elif args.web_ui:
        from harness.live.webui import start_web_ui

        host, _, port = args.web_ui.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise WarmbenchError(f"--web-ui {args.web_ui!r}: expected HOST:PORT, e.g. 127.0.0.1:8089")
        env, on_record = start_web_ui(host or "127.0.0.1", int(port))
        console.print(f"live view: http://{host or '127.0.0.1'}:{port}", highlight=False)
        from harness.live import run_live

        try:
            result = run_live(workload, args.system, options, args.out, seed=args.seed, on_record=on_record)
        finally:
            if env.web_ui is not None:  # start_web_ui made it
                env.web_ui.stop()
    else:
        from harness.live import run_live

        result = run_live(workload, args.system, options, args.out, seed=args.seed)
    _summary(result, args.out, console)
    if result.manifest.get("interrupted"):  # Ctrl-C: the run is kept, incomplete
        return 130
    return 0 if result.manifest.get("status") == "complete" and not mostly_failed(result.manifest) else 1


def mostly_failed(manifest: dict) -> bool:
    """The manifest's `mostly_failed` (more than half of the requests not ok, or none)."""
    from harness.store import is_mostly_failed

    if "mostly_failed" in manifest:
        return bool(manifest["mostly_failed"])
    return is_mostly_failed(manifest.get("requests_summary"))


def _checked_inputs(args: argparse.Namespace) -> Workload:
    """Every flag, the options, the output folder and the workload checked before anything is
    created or started; returns the workload to replay."""
    from harness.live.run import check_out_dir
    from systems.live.registry import parse_options

    if not 0 < args.master_port < 65536:
        raise WarmbenchError(f"--master-port must be a TCP port (1-65535), got {args.master_port}")
    if args.web_ui is not None:
        port = args.web_ui.rpartition(":")[2]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise WarmbenchError(f"--web-ui {args.web_ui!r}: expected HOST:PORT, e.g. 127.0.0.1:8089")
    options = options_from_args(args)
    args.options = options
    parse_options(args.system, options)  # bounds, URLs, env: values
    check_out_dir(args.out)
    if (args.out / "manifest.json").exists():
        raise WarmbenchError(f"--out {args.out} already holds a run (manifest.json); choose a new --out")
    workload = load_workload(args.workload)
    known = set(workload.models)
    for flag, values in (("--endpoint", _model_endpoints(args.endpoint)), ("--model", args.model),
                         ("--served-name", args.served_name), ("--gpus", args.gpus)):
        unknown = sorted({v.partition("=")[0] for v in values} - known)
        if unknown:
            raise WarmbenchError(f"{flag}: models {unknown} are not in the workload (its models: {sorted(known)})")
    if args.duration_s is not None:
        from workloads.transform import select_window

        workload = select_window(workload, 0.0, args.duration_s)
        if not len(workload):
            raise WarmbenchError(f"--duration-s {args.duration_s:g}: no request arrives in that window")
    return workload


def _summary(result: RunResult, out: Path, console: Console) -> None:
    from harness.report.terminal import run_summary, ttft_line
    from harness.store import read_summary, requests_summary

    req = result.requests
    ok = req[req["status"] == "ok"]
    client = result.manifest.get("client", {})
    counts = result.manifest.get("requests_summary") or requests_summary(req)  # as the manifest counts them
    console.print(f"[bold]{result.manifest.get('status')}[/]: {counts['total']} requests, {counts['ok']} ok, "
                  f"{counts['failed']} failed, {counts['unfinished']} unfinished -> {out}", highlight=False)
    # the figures summary.json holds (harness.metrics), so the screen and the record agree
    console.print(ttft_line(run_summary(read_summary(out))), highlight=False)
    if client.get("send_lag_p99_ms") is not None:
        console.print(f"client: send lag P99 {client['send_lag_p99_ms']:.2f} ms, "
                      f"CPU {client.get('cpu_percent') or 0:.0f}%", highlight=False)
    for warning in result.manifest.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if mostly_failed(result.manifest):
        errors = req.loc[req["status"] != "ok", "error"].astype(str)
        first = errors[errors != ""].iloc[0] if (errors != "").any() else "no error recorded"
        console.print(f"[bold red]most requests failed[/] ({len(req) - len(ok)} of {len(req)}); "
                      f"first error: {escape(redact_text(first))}", highlight=False, soft_wrap=True)
