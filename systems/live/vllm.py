"""Local vLLM servers the adapter starts and stops itself, one per model.

Modes: `dedicated` (all up before the replay), `ondemand` (a model's server starts on its first
request, the real engine start being the cold start, and stops after `idle_s` without
requests), `sleep` (GPU only: all start with sleep mode; idle models are put to sleep and woken
on their next request). Each server runs `python -m vllm.entrypoints.openai.api_server` with the
interpreter given (vLLM may live in its own virtual environment), logs to
`<run>/logs/vllm-<model>.log`, and is listed with its pid in `<run>/servers.json`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
from gevent.event import Event
from geventhttpclient import HTTPClient

from harness.contracts.endpoint import Endpoint, Unavailable
from harness.contracts.errors import WarmbenchError
from harness.contracts.files import write_json
from harness.contracts.live import EventLog, LiveSystem
from harness.contracts.redact import redact_text


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def vocab_size(model_dir: str) -> int:
    """The model's vocabulary size from its config.json (bounds token-id prompts)."""
    config = Path(model_dir) / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WarmbenchError(f"cannot read {config}: {exc}; --model needs a local model directory") from exc
    size = data.get("vocab_size") or data.get("text_config", {}).get("vocab_size")
    if not size:
        raise WarmbenchError(f"{config} has no vocab_size")
    return int(size)


def default_python() -> str:
    """$WARMBENCH_VLLM_PYTHON (what `make test` sets to the vLLM environment), else this Python."""
    return os.environ.get("WARMBENCH_VLLM_PYTHON") or sys.executable


def _get_status(url: str, path: str, method: str = "GET", timeout_s: float = 2.0,
                headers: dict[str, str] | None = None) -> int:
    host, port = url.split("//", 1)[1].split(":")
    client = HTTPClient(host, int(port), connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        resp = client.request(method, path, body=b"", headers=headers or {})
        resp.read()
        return resp.status_code
    finally:
        client.close()


@dataclass
class VllmServer:
    """One vLLM OpenAI server process (and its children, in their own process group)."""

    model: str
    model_dir: str
    port: int
    python: str
    log_path: Path
    host: str = "127.0.0.1"
    gpus: str | None = None
    max_model_len: int = 2048
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    proc: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
                "--served-model-name", self.model, "--host", self.host, "--port", str(self.port),
                "--max-model-len", str(self.max_model_len), "--dtype", self.dtype, *self.extra_args]

    def start(self) -> None:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
               **(self.env or {})}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = gevent.subprocess.Popen(self.command(), stdout=log, stderr=gevent.subprocess.STDOUT,
                                            stdin=gevent.subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        log.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Poll /health until 200; raise Unavailable (with the log's tail) if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"vLLM for {self.model} exited with code {self.proc.returncode}: "
                                  f"{self.log_tail()}")
            try:
                if _get_status(self.url, "/health") == 200:
                    return
            except (OSError, gevent.Timeout):
                pass
            gevent.sleep(0.5)
        raise Unavailable(f"vLLM for {self.model} not healthy after {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, n_chars: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return redact_text(" | ".join(text[-n_chars:].splitlines()[-6:]))

    def scrub_log(self) -> None:
        """Mask credentials the server may have logged (its env, an --api-key in its arguments)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return
        clean = redact_text(text)
        if clean != text:
            tmp = self.log_path.with_suffix(".tmp")
            tmp.write_text(clean)
            tmp.replace(self.log_path)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=grace_s)
        except gevent.subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class _Instance:
    """A model's server and its state: down, starting, up (or asleep in sleep mode)."""

    def __init__(self, server: VllmServer) -> None:
        self.server = server
        self.state = "down"
        self.ready = Event()
        self.error: str | None = None
        self.inflight = 0
        self.last_used = time.monotonic()


class VllmSystem(LiveSystem):
    """vLLM servers started and stopped by the adapter; see the module docstring for modes."""

    name = "vllm"

    def __init__(self, models: dict[str, str], events: EventLog, run_dir: Path, *,
                 mode: str = "dedicated", api: str = "completions", idle_s: float = 30.0, python: str | None = None,
                 gpus: dict[str, str] | None = None, host: str = "127.0.0.1",
                 max_model_len: int = 2048, dtype: str | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 600.0, gpu_present: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        if mode == "sleep" and not gpu_present:
            raise WarmbenchError("vllm mode 'sleep' needs a GPU (vLLM's CPU build has no sleep mode); "
                                 "use 'dedicated' or 'ondemand'")
        self.mode, self.idle_s, self.startup_timeout_s = mode, idle_s, startup_timeout_s
        self.headers = dict(headers or {})  # e.g. for a server started with --api-key
        dtype = dtype or ("auto" if gpu_present else "float32")
        python = python or default_python()
        extra = list(extra_args or [])
        if not gpu_present and "--enforce-eager" not in extra:
            extra.append("--enforce-eager")  # on CPU, compiling the graph takes ~45 s per start
        env = dict(env or {})
        if mode == "sleep":
            extra.append("--enable-sleep-mode")
            env.setdefault("VLLM_SERVER_DEV_MODE", "1")
        self.instances: dict[str, _Instance] = {}
        endpoints: dict[str, Endpoint] = {}
        for model, model_dir in models.items():
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
            server = VllmServer(model=model, model_dir=str(model_dir), port=free_port(host), python=python,
                                log_path=run_dir / "logs" / f"vllm-{safe}.log", host=host,
                                gpus=(gpus or {}).get(model), max_model_len=max_model_len, dtype=dtype,
                                extra_args=tuple(extra), env=env)
            self.instances[model] = _Instance(server)
            chat = api == "chat"  # chat messages are text: no token-id prompts
            endpoints[model] = Endpoint(url=server.url, protocol="openai-chat" if chat else "openai",
                                        served_name=model, token_ids=not chat,
                                        vocab_size=vocab_size(model_dir), ignore_eos=True,
                                        headers=tuple(self.headers.items()))
        super().__init__(endpoints, events, run_dir)
        self._reaper: Any = None
        self._watcher: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def _launch(self, model: str) -> None:
        """Start one server and wait for it; sets the instance's state and ready event."""
        inst = self.instances[model]
        inst.state, inst.error = "starting", None  # acquire() may have set these already
        inst.ready.clear()
        self.events.add("instance_start", model, f"port {inst.server.port}", inst.server.gpus or "")
        try:
            inst.server.start()
            self._write_servers()
            inst.server.wait_ready(self.startup_timeout_s)
            inst.state = "up"
            self.events.add("instance_ready", model, f"pid {inst.server.proc.pid}", inst.server.gpus or "")
        except Unavailable as exc:
            inst.state, inst.error = "down", str(exc)
            inst.server.stop(grace_s=5)
            self.events.add("instance_failed", model, str(exc)[:300])
        finally:
            inst.last_used = time.monotonic()
            inst.ready.set()

    def start(self) -> None:
        self._watcher = gevent.spawn(self._watch)
        if self.mode == "ondemand":
            self._reaper = gevent.spawn(self._reap)
            return
        jobs = [gevent.spawn(self._launch, m) for m in self.instances]
        gevent.joinall(jobs)
        failed = {m: i.error for m, i in self.instances.items() if i.state != "up"}
        if failed:
            self.stop()
            raise WarmbenchError(f"vLLM failed to start for {sorted(failed)}: {next(iter(failed.values()))}")
        if self.mode == "sleep":
            self._reaper = gevent.spawn(self._reap)

    def stop(self) -> None:
        for greenlet in (self._reaper, self._watcher):
            if greenlet is not None:
                greenlet.kill()
        self._reaper = self._watcher = None
        jobs = []
        for model, inst in self.instances.items():
            if inst.server.alive():
                jobs.append(gevent.spawn(self._stop_one, model))
        gevent.joinall(jobs)
        for inst in self.instances.values():
            inst.server.scrub_log()

    def _stop_one(self, model: str) -> None:
        inst = self.instances[model]
        inst.server.stop()
        inst.state = "down"
        self.events.add("instance_stop", model)

    def _reap(self) -> None:
        """Stop (ondemand) or put to sleep (sleep mode) models idle for `idle_s`."""
        while True:
            gevent.sleep(min(1.0, self.idle_s / 4))
            for model, inst in self.instances.items():
                idle = time.monotonic() - inst.last_used
                if inst.state != "up" or inst.inflight or idle < self.idle_s:
                    continue
                if self.mode == "ondemand":
                    inst.state = "stopping"
                    self._stop_one(model)
                else:
                    self._sleep(model, inst)

    def _watch(self) -> None:
        """Notice a server that exits on its own (crash, OOM kill): an event on the timeline, and
        its next requests fail at once (ondemand: they start it again, as a cold start)."""
        while True:
            gevent.sleep(0.5)
            for model, inst in self.instances.items():
                proc = inst.server.proc
                if inst.state not in ("up", "asleep", "sleeping") or proc is None or proc.poll() is None:
                    continue
                inst.error = f"vLLM server for {model} exited with code {proc.returncode}"
                inst.state = "down" if self.mode == "ondemand" else "dead"
                self.events.add("instance_exit", model, f"exit code {proc.returncode}")

    def _sleep(self, model: str, inst: _Instance) -> None:
        # "sleeping" while the call runs: a request that comes meanwhile waits for it and then
        # wakes the engine, rather than reaching an engine that vLLM is pausing (its default
        # sleep aborts what is in flight)
        inst.state = "sleeping"
        inst.ready.clear()
        try:
            status = _get_status(inst.server.url, "/sleep?level=1", "POST", timeout_s=60, headers=self.headers)
        except (OSError, gevent.Timeout) as exc:
            status = 0
            self.events.add("sleep_failed", model, str(exc)[:200])
        if status == 200:
            self.events.add("sleep", model, "level 1")
        elif status:
            self.events.add("sleep_failed", model, f"HTTP {status}")
        if inst.state == "sleeping":  # not if the watcher saw the server exit meanwhile
            inst.state = "asleep" if status == 200 else "up"
        inst.ready.set()

    # -- routing ---------------------------------------------------------------------------
    def acquire(self, model: str) -> tuple[Endpoint, str, float]:
        inst = self.instances.get(model)
        if inst is None:
            raise Unavailable(f"no vLLM model configured for {model!r}")
        inst.inflight += 1
        t = time.perf_counter()
        try:
            while inst.state == "sleeping":
                inst.ready.wait()
            if inst.state == "up":
                return self.endpoints[model], "warm", 0.0
            if inst.state == "asleep":
                inst.state = "waking"
                inst.ready.clear()
                self.events.add("wake_begin", model)
                try:
                    status = _get_status(inst.server.url, "/wake_up", "POST", timeout_s=120, headers=self.headers)
                except (OSError, gevent.Timeout) as exc:
                    status, inst.error = 0, f"wake_up failed: {exc}"
                inst.state = "up" if status == 200 else "asleep"
                inst.ready.set()
                if status != 200:
                    raise Unavailable(inst.error or f"wake_up answered HTTP {status}")
                self.events.add("wake_end", model)
                return self.endpoints[model], "cold", time.perf_counter() - t
            if inst.state in ("down", "stopping") and self.mode == "ondemand":
                if inst.state == "stopping":
                    while inst.state == "stopping":
                        gevent.sleep(0.1)
                if inst.state == "down":
                    inst.state = "starting"
                    inst.ready.clear()
                    gevent.spawn(self._launch, model)
            inst.ready.wait()
            if inst.state != "up":
                raise Unavailable(inst.error or f"vLLM for {model} is {inst.state}")
            return self.endpoints[model], "cold", time.perf_counter() - t
        except BaseException:
            inst.inflight -= 1
            raise

    def release(self, model: str) -> None:
        inst = self.instances[model]
        inst.inflight -= 1
        inst.last_used = time.monotonic()

    # -- telemetry -------------------------------------------------------------------------
    def metrics_targets(self) -> dict[str, tuple[str, str, dict[str, str]]]:
        return {m: (i.server.url + "/metrics", m, self.headers) for m, i in self.instances.items() if i.state == "up"}

    def gpu_pids(self) -> dict[int, str]:
        return {i.server.proc.pid: m for m, i in self.instances.items() if i.server.alive()}

    def _write_servers(self) -> None:
        write_json(self.run_dir / "servers.json", {
            m: {"url": i.server.url, "pid": i.server.proc.pid if i.server.proc else None,
                "log": str(i.server.log_path), "command": i.server.command()}
            for m, i in self.instances.items()})

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "idle_s": self.idle_s,
                "servers": {m: {"url": i.server.url, "model_dir": i.server.model_dir, "gpus": i.server.gpus,
                                "command": i.server.command()} for m, i in self.instances.items()}}
