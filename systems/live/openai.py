"""Existing OpenAI-compatible endpoints (one base URL per model, or one for all).

With `token_ids="auto"` each endpoint gets one probe before t=0 (a 3-token id prompt asking for
one token): if it answers 200 the replay sends token-id prompts (exact input lengths), else text
prompts of the same word count.
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient

from harness.loadgen import Endpoint
from harness.loadgen.protocols import FIRST_PROMPT_TOKEN_ID
from systems.live.base import LiveSystem


def accepts_token_ids(ep: Endpoint, timeout_s: float = 10.0) -> bool:
    """Whether the endpoint answers a token-id prompt with 200."""
    parts = urlsplit(ep.url)
    client = HTTPClient(parts.hostname, parts.port, connection_timeout=timeout_s, network_timeout=timeout_s,
                        ssl=parts.scheme == "https", headers={"Content-Type": "application/json"})
    body = {"model": ep.served_name, "max_tokens": 1,
            "prompt": list(range(FIRST_PROMPT_TOKEN_ID, FIRST_PROMPT_TOKEN_ID + 3))}
    try:
        resp = client.request("POST", "/v1/completions", body=json.dumps(body).encode())
        resp.read()
        return resp.status_code == 200
    except (OSError, gevent.Timeout):
        return False
    finally:
        client.close()


class OpenAISystem(LiveSystem):
    name = "openai"

    def __init__(self, *args, probe_token_ids: bool = False, **kw) -> None:
        super().__init__(*args, **kw)
        self.probe_token_ids = probe_token_ids
        self.token_ids: dict[str, bool] = {m: ep.token_ids for m, ep in self.endpoints.items()}

    def start(self) -> None:
        if not self.probe_token_ids:
            return
        for model, ep in list(self.endpoints.items()):
            ok = accepts_token_ids(dataclasses.replace(ep, token_ids=True))
            self.token_ids[model] = ok
            self.endpoints[model] = dataclasses.replace(ep, token_ids=ok)
            self.events.add("probe", model, "token-id prompts accepted" if ok else "text prompts (ids refused)")

    def describe(self) -> dict:
        return {**super().describe(), "token_ids": self.token_ids}
