"""Existing OpenAI-compatible endpoints (one base URL per model, or one for all).

Servers differ in what they accept beyond OpenAI's own fields: vLLM and SGLang take token-id
prompts (exact input lengths) and `ignore_eos` / `min_tokens` (exact output lengths); OpenAI's
API refuses unknown fields with HTTP 400. With `token_ids` or `ignore_eos` set to "auto" each
endpoint gets a probe before t=0, the replay's own request shape with a 3-token prompt (with
token ids: the lowest, a middle and the highest id the run will send, so a vocabulary smaller than
`vocab_size` is caught here rather than in every request) and 2 tokens out, tried from the most
exact variant down; the first one answered 200 is replayed,
and the run's events and manifest say which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient

from harness.contracts.endpoint import Endpoint
from harness.contracts.live import LiveSystem
from harness.contracts.redact import redact_text

#: The replay's request shape for an endpoint: (path, body). The load generator owns the wire
#: formats (harness.loadgen.bodies.probe_request); the harness hands it over (systems.live.registry.Context).
ProbeRequest = Callable[[Endpoint], tuple[str, bytes]]


def _ask(ep: Endpoint, probe_request: ProbeRequest, timeout_s: float) -> tuple[int | None, str]:
    """(HTTP status, error text) for the replay's request shape; status None if no answer came."""
    parts = urlsplit(ep.url)
    path, body = probe_request(ep)
    if parts.hostname is None:
        return None, "the endpoint URL names no host"
    client = HTTPClient(parts.hostname, parts.port, connection_timeout=timeout_s, network_timeout=timeout_s,
                        ssl=parts.scheme == "https",
                        headers={"Content-Type": "application/json", "X-Request-Id": "warmbench-probe",
                                 **dict(ep.headers)})
    try:
        with gevent.Timeout(timeout_s):
            resp = client.request("POST", path, body=body)
            if resp.status_code == 200:
                try:
                    resp.read()  # accepted; a stream that breaks later is the replay's to record
                except Exception:  # noqa: BLE001
                    pass
                return 200, ""
            text = redact_text(resp.read()[:200].decode('utf-8', 'replace'))
            return resp.status_code, f"HTTP {resp.status_code}: {text}"
    except (Exception, gevent.Timeout) as exc:  # noqa: BLE001 - any failure: no answer
        return None, redact_text(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        client.close()


def probe(ep: Endpoint, probe_request: ProbeRequest, token_ids: bool | None, ignore_eos: bool | None,
          timeout_s: float = 10.0) -> tuple[Endpoint, str]:
    """The most exact variant of `ep` the server accepts (None = try both), and what was learnt.

    Order: ids and pinned output, text and pinned output, ids, text: an output length the server
    may cut short changes the load more than a prompt a few tokens off. If no variant is
    accepted, `ep` as configured (its requests will fail with the server's answer) and why."""
    ids_options = (True, False) if token_ids is None else (token_ids,)
    eos_options = (True, False) if ignore_eos is None else (ignore_eos,)
    last = ""
    for eos in eos_options:
        for ids in ids_options:
            variant = dataclasses.replace(ep, token_ids=ids, ignore_eos=eos)
            status, last = _ask(variant, probe_request, timeout_s)
            if status is None:  # down, hanging or cut: no shape will do better; the replay records it
                return ep, f"no answer to the probe ({last}): replaying as configured"
            if status == 200:
                said = ("token-id prompts" if ids else "text prompts") + ", " + (
                    "output lengths pinned (ignore_eos, min_tokens)" if eos else
                    "output lengths not pinned (ignore_eos / min_tokens refused): replies may be shorter")
                return variant, said
    return ep, f"no request shape accepted; last answer {last}"


class OpenAISystem(LiveSystem):
    name = "openai"

    def __init__(self, *args: Any, probe_request: ProbeRequest, probe_token_ids: bool = False,
                 probe_ignore_eos: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.probe_request = probe_request
        self.probe_token_ids, self.probe_ignore_eos = probe_token_ids, probe_ignore_eos
        self.token_ids: dict[str, bool] = {m: ep.token_ids for m, ep in self.endpoints.items()}
        self.ignore_eos: dict[str, bool] = {m: ep.ignore_eos for m, ep in self.endpoints.items()}

    def start(self) -> None:
        if not (self.probe_token_ids or self.probe_ignore_eos):
            return
        # all endpoints at once: 64 models behind one URL, or one hanging server, cost one probe's time
        models = list(self.endpoints)
        jobs = [gevent.spawn(probe, self.endpoints[m], self.probe_request, None if self.probe_token_ids else self.endpoints[m].token_ids,
                             None if self.probe_ignore_eos else self.endpoints[m].ignore_eos) for m in models]
        gevent.joinall(jobs)
        for model, job in zip(models, jobs):
            chosen, said = job.value if job.successful() else (self.endpoints[model], f"probe failed: {job.exception}")
            self.endpoints[model] = chosen
            self.token_ids[model], self.ignore_eos[model] = chosen.token_ids, chosen.ignore_eos
            self.events.add("probe", model, said)

    def describe(self) -> dict:
        return {**super().describe(), "token_ids": self.token_ids, "ignore_eos": self.ignore_eos}
