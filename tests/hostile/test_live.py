"""Hostile inputs for live replays: credentials that must never reach the disk, servers whose
streams contradict their own counts, runs where (nearly) every request failed, and bad input
that must be one line, exit 2, and leave nothing behind.

Servers: the stand-in (`python -m harness.loadgen.standin`, a separate process that follows
vLLM's OpenAI protocol) and small raw HTTP servers in this process for what no honest server does.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from gevent.server import StreamServer

from harness.contracts.redact import MASK, redact, redact_frame, redact_text, register_secret
from harness.loadgen.protocols import StreamReader, prompt_token_ids, trusted_tokens
from harness.store import read_run
from tests.conftest import ROOT
from tests.hostile.conftest import cli_result as cli
from tests.live.conftest import free_port
from tests.rawhttp import read_request
from workloads.workload import canonical_frame


def secret(tag: str) -> str:
    """A fresh value per test: what one test registers never hides another's leak."""
    return f"{tag}{uuid.uuid4().hex[:16]}"


def leaks(root: Path, *secrets: str) -> list[str]:
    """Every file under `root` (binary Parquet included: its bytes) holding one of `secrets`."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {s}" for s in secrets if s.encode() in data]
    return found


class RawServer:
    """An HTTP/1.1 server in this process whose `respond(method, path, headers, payload)` returns
    (status, body bytes) or (200, [SSE event bytes...]) streamed chunked; it keeps what it saw."""

    def __init__(self, respond: Callable[..., tuple[int, bytes | list[bytes]]]) -> None:
        self.respond, self.seen = respond, []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.hostport = f"127.0.0.1:{self.server.server_port}"

    def _handle(self, sock, _addr) -> None:
        buf = b""
        try:
            while (got := read_request(sock, buf)) is not None:
                request, buf = got
                method, path, headers, body = request.method, request.path, request.headers, request.body
                self.seen.append((method, path, headers))
                status, out = self.respond(method, path, headers, json.loads(body) if body else {})
                if isinstance(out, list):
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    for event in out:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                    sock.sendall(b"0\r\n\r\n")
                else:
                    sock.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (status, len(out), out))
        except OSError:
            return
        finally:
            sock.close()

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(respond) -> RawServer:
        servers.append(RawServer(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def token_event(text: str = " a") -> bytes:
    return b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":%s}]}\n\n' % json.dumps(text).encode()


def usage_event(completion: object, prompt: int = 8) -> bytes:
    return b'data: {"id":"c","choices":[],"usage":%s}\n\n' % json.dumps(
        {"prompt_tokens": prompt, "completion_tokens": completion}).encode()


@pytest.fixture
def workload_csv(tmp_path: Path) -> Path:
    path = tmp_path / "w.csv"
    canonical_frame(np.linspace(0, 0.5, 12), ["a", "b"] * 6, np.full(12, 8), np.full(12, 4)).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ secrets never written

def echo_headers(method: str, path: str, headers: dict, payload: dict) -> tuple[int, bytes]:
    """A hostile server: quotes every header it got in its errors and its metric labels."""
    quoted = "; ".join(f"{k}: {v}" for k, v in headers.items())
    if method == "GET":
        return 200, f'echo_headers{{got="{quoted}"}} 1\n'.encode()
    return 500, json.dumps({"error": {"message": f"refused, you sent {quoted}"}}).encode()


@pytest.mark.contract
def test_url_credentials_and_headers_are_sent_but_never_written(
        standin, raw_server, workload_csv: Path, tmp_path: Path, monkeypatch) -> None:
    user, password, token, header = "bench", secret("pw"), secret("tok"), secret("hdr")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    monkeypatch.setenv("WB_TEAM_HEADER", header)
    a = standin("--ttft-ms", "5", "--gap-ms", "1", "--require-header", f"Authorization=Basic {basic}",
                "--require-header", f"X-Team={header}")
    echo = raw_server(echo_headers)
    out = tmp_path / "results" / "run"
    proc = cli("replay", "--workload", str(workload_csv), "--endpoint", f"a=http://{user}:{password}@{a}",
               "--endpoint", f"b=http://{token}@{echo.hostport}", "--header", "X-Team=env:WB_TEAM_HEADER",
               "--out", str(out))
    run = read_run(out)
    req = run.requests.set_index("model")
    # the feature works: the stand-in answers 401 without Basic auth and the header
    assert (req.loc["a", "status"] == "ok").all(), req.loc["a", "error"].tolist()
    assert any(h.get("x-team") == header and h.get("authorization", "").startswith("Basic ")
               for m, _, h in echo.seen if m == "GET"), "the /metrics scrape carried no credentials"
    # the hostile server's answers quoted them: they were recorded, masked
    assert (req.loc["b", "status"] == "error").all() and req.loc["b", "error"].str.contains(MASK, regex=False).all()
    assert proc.returncode == 0, proc.stderr  # half ok: not "mostly failed"
    assert cli("report", str(out)).returncode == 0
    assert {"report.html", "manifest.json", "requests.parquet", "requests.jsonl", "metrics.parquet",
            "events.parquet"} <= {p.name for p in out.rglob("*")}
    assert leaks(tmp_path / "results", password, token, header, basic,
                 base64.b64encode(f"{token}:".encode()).decode()) == []
    assert "X-Team" in json.dumps(run.manifest)  # the header's name is recorded


@pytest.mark.contract
def test_api_key_and_header_on_the_command_line_never_reach_the_manifest(
        standin, workload_csv: Path, tmp_path: Path) -> None:
    key, header, password = secret("sk-"), secret("h"), secret("pw")
    a = standin("--ttft-ms", "5", "--gap-ms", "1", "--require-header", f"Authorization=Bearer {key}",
                "--require-header", f"X-Org={header}")
    out = tmp_path / "results" / "run"
    proc = subprocess.run([sys.executable, "run.py", "replay", "--workload", str(workload_csv),
                           "--endpoint", f"http://me:{password}@{a}", "--api-key", key, f"--header=X-Org={header}",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "--api-key" in manifest["argv"]  # the command line is kept, its secrets masked
    assert leaks(tmp_path / "results", key, header, password) == []  # the api key won over the URL's


def test_live_experiment_with_vllm_env_token_and_env_api_key(standin, tmp_path: Path, monkeypatch) -> None:
    """An experiment TOML with backend = "live": the vLLM adapter's env (HF_TOKEN), printed by
    the server into its log, and an api key from the environment appear in no file."""
    hf, key = secret("hf_"), secret("sk-")
    monkeypatch.setenv("WB_EXP_KEY", key)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"vocab_size": 1000}')
    fake = tmp_path / "fake-vllm-python"  # stands in for vLLM's interpreter: logs its env, serves the stand-in
    fake.write_text(f"""#!/bin/sh
echo "starting with HF_TOKEN=$HF_TOKEN and $*"
while [ "$1" != "--port" ]; do shift; done
cd {ROOT}
exec {sys.executable} -m harness.loadgen.standin --port "$2" --ttft-ms 5 --gap-ms 1 \\
    --require-header "Authorization=Bearer $WB_EXP_KEY"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    toml = tmp_path / "live.toml"
    toml.write_text(f"""
name = "live-secrets"
backend = "live"
models = ["llama-2-7b"]
[[systems]]
name = "vllm"
[systems.options]
models = {{"llama-2-7b" = "{model_dir}"}}
python = "{fake}"
env = {{HF_TOKEN = "{hf}"}}
api_key = "env:WB_EXP_KEY"
timeout_s = 10
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 4.0
duration_s = 3.0
history_days = 0
""")
    results = tmp_path / "results"
    proc = cli("run", str(toml), "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p.parent for p in results.rglob("requests.parquet")]
    req = read_run(run_dir).requests
    assert len(req) and (req["status"] == "ok").all(), req["error"].tolist()  # the key was sent
    logs = list(run_dir.rglob("*.log"))
    assert logs and "HF_TOKEN=" + MASK in logs[0].read_text()  # the server did print it
    assert leaks(results, hf, key) == []


def test_missing_env_variable_is_bad_input_naming_it(workload_csv: Path, tmp_path: Path) -> None:
    for flags in (["--api-key", "env:WB_SURELY_UNSET"], ["--header", "X-K=env:WB_SURELY_UNSET"]):
        proc = cli("replay", "--workload", str(workload_csv), "--endpoint", "http://127.0.0.1:9",
                   "--out", str(tmp_path / "run"), *flags)
        assert proc.returncode == 2 and "WB_SURELY_UNSET" in proc.stderr
        assert not (tmp_path / "run").exists()


def test_redact_masks_by_pattern_key_and_registered_value() -> None:
    value = secret("v")
    register_secret(value)
    obj = {"url": "https://me:pw123@host:1/x?api_key=abc&n=2", "HF_TOKEN": "hf_x", "token_ids": "auto",
           "env": {"PATH": "/bin", "X": "env:Y"}, "headers": {"X-A": "zz"}, "max_tokens": 5,
           "argv": ["replay", "--api-key", "k1", "--header", "X-B=k2", "--header=X-C=k3", "--seed", "1"],
           "error": f"HTTP 401: Bearer abcdef is wrong, {value} too", "nested": [{"password": "p"}]}
    out = redact(obj)
    assert out["url"] == f"https://{MASK}@host:1/x?api_key={MASK}&n=2"
    assert out["HF_TOKEN"] == MASK and out["token_ids"] == "auto" and out["max_tokens"] == 5
    assert out["env"] == {"PATH": MASK, "X": "env:Y"} and out["headers"] == {"X-A": MASK}
    assert out["argv"] == ["replay", "--api-key", MASK, "--header", f"X-B={MASK}", f"--header=X-C={MASK}", "--seed", "1"]
    assert value not in out["error"] and "abcdef" not in out["error"] and out["nested"] == [{"password": MASK}]
    assert redact_text("basic settings, Basic mode") == "basic settings, Basic mode"  # prose is left alone
    register_secret("Token " + value[::-1])
    assert redact_text(f"server log: token={value[::-1]}") == f"server log: token={MASK}"  # the token alone too


def test_redact_changes_nothing_in_an_ordinary_run(tmp_path: Path) -> None:
    from tests.results.factory import synthetic_result

    result = synthetic_result()
    assert redact(json.loads(json.dumps(result.manifest, default=str))) == json.loads(
        json.dumps(result.manifest, default=str))
    assert redact_frame(result.requests) is result.requests


# ------------------------------------------------------------------ trusting the server less

@pytest.mark.parametrize("streamed, claimed, asked, expect", [
    (42, 9999, 50, (42, True)),     # more than asked: impossible
    (42, 9999, 20000, (42, True)),  # 238 tokens per event: contradicted by the stream
    (10, 3, 10, (10, True)),        # fewer tokens than token events
    (10, 20, 20, (20, False)),      # 2 tokens per event (speculative decoding): plausible
    (10, 9, 10, (9, False)),        # a last event without a token
    (5, None, 5, (5, False)),       # no claim: what was streamed
    (0, -3, 5, (0, True)),
])
def test_claimed_token_counts_are_checked_against_the_stream(streamed, claimed, asked, expect) -> None:
    assert trusted_tokens(streamed, claimed, asked) == expect


MALFORMED = [token_event(), b"data: {not json\n\n", token_event(), b"data: [1, 2]\n\n", b'data: {"foo": 1}\n\n',
             b"hello there\n\n", b'data: {"choices": ["x"]}\n\n', token_event(),
             usage_event("lots"), b"data: [DONE]\n\n"]


def test_malformed_events_are_counted_whatever_the_split() -> None:
    wire = b"".join(MALFORMED)
    for cut in range(1, len(wire)):
        reader = StreamReader("openai")
        events = reader.feed(wire[:cut]) + reader.feed(wire[cut:])
        reader.finish()
        assert (events, reader.bad_events, reader.usage_tokens, reader.done) == (3, 6, None, True), cut


def test_absurd_counts_from_the_server_are_malformed_not_a_crash() -> None:
    reader = StreamReader("openai")
    reader.feed(token_event() + usage_event(10**30, prompt=-1) + b"data: [DONE]\n\n")
    assert (reader.usage_tokens, reader.prompt_tokens, reader.bad_events) == (None, None, 1)
    warm = StreamReader("warmserve")
    warm.feed(b"hi")
    warm.feed(b"#" + b"9" * 30)
    warm.finish()
    assert (warm.usage_tokens, warm.bad_events, warm.error) == (None, 1, None)


def test_a_line_that_never_ends_is_dropped_not_kept() -> None:
    reader = StreamReader("openai")
    for _ in range(40):
        reader.feed(b"x" * 65536)  # 2.5 MiB without a newline
    assert len(reader.pending) <= (1 << 20) and reader.bad_events >= 1
    assert reader.feed(b"\n" + token_event()) == 1  # the stream goes on being read


def test_lying_and_malformed_streams_are_flagged_on_the_record(raw_server, tmp_path: Path) -> None:
    from harness.live import run_live
    from workloads.workload import Workload

    def respond(method, path, headers, payload):
        if method == "GET":
            return 200, b""
        if payload["model"] == "liar":
            return 200, [token_event()] * 42 + [usage_event(9999), b"data: [DONE]\n\n"]
        return 200, MALFORMED

    server = raw_server(respond)
    frame = canonical_frame(np.array([0.0, 0.05, 0.1, 0.15]), ["liar", "messy"] * 2, np.full(4, 8), np.full(4, 50))
    result = run_live(Workload(frame, {"name": "t"}), "openai", {"url": f"http://{server.hostport}", "token_ids": False,
                                                                 "ignore_eos": False}, tmp_path / "run")
    req = read_run(tmp_path / "run").requests.set_index("model")
    liar, messy = req.loc["liar"], req.loc["messy"]
    assert (liar["status"] == "ok").all() and (liar["tokens_mismatch"]).all()
    assert (liar["received_tokens"] == 42).all() and (liar["claimed_tokens"] == 9999).all()
    assert (messy["bad_events"] == 6).all() and (messy["received_tokens"] == 3).all()
    assert not messy["tokens_mismatch"].any()
    warnings = " ".join(result.manifest["warnings"])
    assert "2 requests: the server's token count contradicts" in warnings and "12 malformed stream events" in warnings


def test_an_endless_error_body_is_cut_short(tmp_path: Path) -> None:
    from harness.live import run_live
    from workloads.workload import Workload

    sent = []

    def endless(sock, _addr) -> None:
        try:
            sock.recv(65536)
            sock.sendall(b"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n")
            block = b"%x\r\n%s\r\n" % (65536, b"e" * 65536)
            for _ in range(100_000):  # 6.5 GB unless the client stops reading
                sock.sendall(block)
                sent.append(1)
        except OSError:
            pass
        finally:
            sock.close()

    server = StreamServer(("127.0.0.1", 0), endless)
    server.start()
    try:
        frame = canonical_frame(np.array([0.0]), ["m"], np.full(1, 8), np.full(1, 4))
        result = run_live(Workload(frame, {"name": "t"}), "openai",
                          {"url": f"http://127.0.0.1:{server.server_port}", "token_ids": False, "ignore_eos": False,
                           "timeout_s": 60, "metrics": False}, tmp_path / "run")
    finally:
        server.stop()
    (row,) = result.requests.itertuples()
    assert row.status == "error" and row.error.startswith("HTTP 500: eee"), row.error
    assert row.end_s - row.sent_s < 10 and len(sent) < 1000


# ------------------------------------------------------------------ (nearly) every request failed

@pytest.mark.contract
def test_token_ids_beyond_the_vocabulary_fail_the_probe_not_the_run(standin, workload_csv: Path,
                                                                    tmp_path: Path) -> None:
    # a vocabulary the old probe's three random ids fit in, the run's ids mostly do not
    vocab = max(prompt_token_ids(0, 3, 32000, 0)) + 1
    url = "http://" + standin("--ttft-ms", "5", "--gap-ms", "1", "--vocab-size", str(vocab))
    proc = cli("replay", "--workload", str(workload_csv), "--endpoint", url, "--out", str(tmp_path / "auto"))
    assert proc.returncode == 0, proc.stderr
    run = read_run(tmp_path / "auto")
    assert (run.requests["status"] == "ok").all()
    assert "text prompts" in " ".join(run.events.loc[run.events["kind"] == "probe", "detail"])
    # told to send ids anyway: every request refused -> exit 1, marked in the manifest
    proc = cli("replay", "--workload", str(workload_csv), "--endpoint", url, "--token-ids", "yes",
               "--vocab-size", "32000", "--out", str(tmp_path / "yes"))
    assert proc.returncode == 1, proc.stderr
    assert "most requests failed" in proc.stderr and "out of vocabulary" in proc.stderr
    assert json.loads((tmp_path / "yes" / "manifest.json").read_text())["mostly_failed"] is True


def test_every_request_refused_exits_1(workload_csv: Path, tmp_path: Path) -> None:
    proc = cli("replay", "--workload", str(workload_csv), "--endpoint", f"http://127.0.0.1:{free_port()}",
               "--token-ids", "no", "--ignore-eos", "no", "--out", str(tmp_path / "run"))
    assert proc.returncode == 1 and "connection refused" in proc.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["mostly_failed"] is True


# ------------------------------------------------------------------ bad input: exit 2, nothing left

@pytest.mark.parametrize("flags, needle", [
    (["--endpoint", "a=htp:/x", "--endpoint", "b=http://127.0.0.1:9"], "htp:/x"),
    (["--endpoint", "a=http://host:notaport", "--endpoint", "b=http://127.0.0.1:9"], "bad port"),
    (["--endpoint", "http://host:99999"], "bad port"),
    (["--endpoint", "http://:8000"], "not an http(s) URL"),
    (["--endpoint", "http://host:8000/v2/chat"], "without a path"),
    (["--endpoint", "http://u:pw-7f3e@:8000"], "not an http(s) URL"),
    (["--endpoint", "a=http://127.0.0.1:9", "--endpoint", "b=http://127.0.0.1:9", "--endpoint", "c=http://127.0.0.1:9"],
     "['c'] are not in the workload"),
    (["--endpoint", "http://127.0.0.1:9", "--served-name", "zz=x"], "--served-name"),
    (["--endpoint", "http://127.0.0.1:9", "--duration-s", "-5"], "--duration-s"),
    (["--endpoint", "http://127.0.0.1:9", "--duration-s", "nan"], "--duration-s"),
    (["--endpoint", "http://127.0.0.1:9", "--duration-s", "inf"], "--duration-s"),
    (["--endpoint", "http://127.0.0.1:9", "--time-scale", "0"], "time_scale"),
    (["--endpoint", "http://127.0.0.1:9", "--time-scale", "inf"], "time_scale"),
    (["--endpoint", "http://127.0.0.1:9", "--timeout-s", "nan"], "timeout_s"),
    (["--endpoint", "http://127.0.0.1:9", "--drain-s", "-1"], "drain_s"),
    (["--endpoint", "http://127.0.0.1:9", "--timeout-s", "1e300"], "timeout_s"),
    (["--endpoint", "http://127.0.0.1:9", "--vocab-size", "99999999999999999999"], "vocab_size"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "Bad Name=v"], "header name"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "X-Key"], "NAME=VALUE"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "Host=evil"], "Host"),
    (["--endpoint", "http://127.0.0.1:9", "--web-ui", "127.0.0.1:99999"], "--web-ui"),
    (["--endpoint", "http://127.0.0.1:9", "--master", "--master-port", "0"], "--master-port"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "X-K=caf\u00e9\u2603"], "latin-1"),
    (["--endpoint", "http://127.0.0.1:9", "--api-key", ""], "api key"),
])
def test_bad_live_input_is_one_line_exit_2_and_leaves_no_directory(workload_csv: Path, tmp_path: Path,
                                                                   flags: list[str], needle: str) -> None:
    out = tmp_path / "out" / "run"
    proc = cli("replay", "--workload", str(workload_csv), "--out", str(out), *flags)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "pw-7f3e" not in proc.stderr  # a URL's credentials are not even echoed
    assert not (tmp_path / "out").exists()


def test_a_window_without_requests_is_bad_input(tmp_path: Path) -> None:
    late = tmp_path / "late.csv"
    canonical_frame(np.array([5.0, 6.0]), ["a", "a"], np.full(2, 8), np.full(2, 4)).to_csv(late, index=False)
    proc = cli("replay", "--workload", str(late), "--endpoint", "http://127.0.0.1:9", "--duration-s", "1",
               "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "no request" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_or_unwritable_is_bad_input(workload_csv: Path, tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("x")
    for out, needle in ((file, "is a file"), (file / "run", "is a file")):
        proc = cli("replay", "--workload", str(workload_csv), "--endpoint", "http://127.0.0.1:9", "--out", str(out))
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert file.read_text() == "x"
    taken = tmp_path / "run-before"
    taken.mkdir()
    (taken / "manifest.json").write_text('{"status": "complete"}')
    proc = cli("replay", "--workload", str(workload_csv), "--endpoint", "http://127.0.0.1:9", "--out", str(taken))
    assert proc.returncode == 2 and "already holds a run" in proc.stderr, proc.stderr
    assert [p.name for p in taken.iterdir()] == ["manifest.json"]  # never overwritten
    too_long = tmp_path / ("x" * 300)  # passes every check, the file system refuses it
    proc = cli("replay", "--workload", str(workload_csv), "--endpoint", "http://127.0.0.1:9", "--out", str(too_long))
    assert proc.returncode == 2 and "cannot create" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: no unwritable folder to try")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = cli("replay", "--workload", str(workload_csv), "--endpoint", "http://127.0.0.1:9",
                   "--out", str(locked / "run"))
        assert proc.returncode == 2 and "not writable" in proc.stderr
    finally:
        locked.chmod(0o700)
