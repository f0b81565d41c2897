"""Wire formats: how a request is put on the wire and how a response stream is read.

Four formats: `openai` (completions with SSE streaming, vLLM and any OpenAI-compatible
server), `openai-chat` (chat completions with SSE streaming, for servers that only take chat:
a token is an event whose delta carries non-empty content, never the role-only first event),
`warmserve` (the reference PrewarmManager: `POST /` with `{"id","model","prompt",
"max_tokens","stream"}`, answered by raw text chunks then `#<completion tokens>`), and
`serverlessllm` (OpenAI chat completions without streaming: no first-token time exists).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

Protocol = Literal["openai", "openai-chat", "warmserve", "serverlessllm"]
PROTOCOLS: tuple[str, ...] = ("openai", "openai-chat", "warmserve", "serverlessllm")

#: An SSE event that carries a token: a non-empty `choices` list (OpenAI chunks, any spacing).
_TOKEN_EVENT = re.compile(rb'"choices"\s*:\s*\[\s*\{')

#: A chat event that carries a token: non-empty content or reasoning content in its delta.
_CHAT_TOKEN = re.compile(rb'"(?:reasoning_)?content"\s*:\s*"(?!")')

#: Lowest token id used for id prompts: keeps clear of the special tokens most vocabularies
#: put first (pad, bos, eos, unk).
FIRST_PROMPT_TOKEN_ID = 16


@dataclass(frozen=True)
class Endpoint:
    """Where one model is served and how to talk to it.

    `token_ids`: send prompts as token ids (exact input length; vLLM accepts them) drawn from
    `[FIRST_PROMPT_TOKEN_ID, vocab_size)`. `ignore_eos`: ask for exactly `max_tokens` through
    vLLM's `ignore_eos` and `min_tokens` extensions.
    """

    url: str
    protocol: Protocol = "openai"
    served_name: str = ""
    token_ids: bool = False
    vocab_size: int = 32000
    ignore_eos: bool = True


def prompt_token_ids(request_id: int, n_tokens: int, vocab_size: int, seed: int) -> list[int]:
    """Random token ids, fixed by (seed, request id): no prefix-cache hits between requests."""
    rng = np.random.default_rng((seed, request_id))
    high = max(vocab_size, FIRST_PROMPT_TOKEN_ID + 1)
    return rng.integers(FIRST_PROMPT_TOKEN_ID, high, size=max(1, n_tokens)).tolist()


def text_prompt(n_tokens: int) -> str:
    """`a a a ...`: one token per word for common tokenizers; exact only for some."""
    return " ".join(["a"] * max(1, n_tokens))


def build_request(ep: Endpoint, request_id: int, input_tokens: int, output_tokens: int,
                  seed: int) -> tuple[str, bytes]:
    """Path and JSON body for one request; output length pinned where the server allows."""
    max_tokens = max(1, int(output_tokens))
    if ep.protocol == "openai":
        prompt: object = (prompt_token_ids(request_id, input_tokens, ep.vocab_size, seed)
                          if ep.token_ids else text_prompt(input_tokens))
        body: dict[str, object] = {
            "model": ep.served_name, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0.0,
        }
        if ep.ignore_eos:
            body.update(ignore_eos=True, min_tokens=max_tokens)
        return "/v1/completions", json.dumps(body).encode()
    if ep.protocol == "openai-chat":
        # Chat takes text only; the template adds about 8 tokens (usage says how many were read).
        body = {"model": ep.served_name, "max_tokens": max_tokens, "stream": True,
                "messages": [{"role": "user", "content": text_prompt(max(1, input_tokens - 8))}],
                "stream_options": {"include_usage": True}, "temperature": 0.0}
        if ep.ignore_eos:
            body.update(ignore_eos=True, min_tokens=max_tokens)
        return "/v1/chat/completions", json.dumps(body).encode()
    if ep.protocol == "warmserve":
        # The PrewarmManager wraps the prompt in a chat template (about 8 tokens), as its own
        # request generator assumes; it always sets ignore_eos itself.
        body = {"id": int(request_id), "model": ep.served_name,
                "prompt": text_prompt(max(1, input_tokens - 8)), "max_tokens": max_tokens,
                "stream": True}
        return "/", json.dumps(body).encode()
    if ep.protocol == "serverlessllm":
        body = {"model": ep.served_name, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": text_prompt(max(1, input_tokens - 8))}]}
        return "/v1/chat/completions", json.dumps(body).encode()
    raise ValueError(f"unknown protocol {ep.protocol!r}; expected one of {PROTOCOLS}")


class StreamReader:
    """Turns arriving body bytes into token events and a final token count, per protocol."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.pending = b""
        self.usage_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.done = False
        self.error: str | None = None
        self.raw = bytearray()
        if protocol == "openai":
            self.feed = self._feed_sse  # type: ignore[method-assign]  # one call less per read
        elif protocol == "openai-chat":
            self.feed = self._feed_chat  # type: ignore[method-assign]

    def feed(self, data: bytes) -> int:
        """Consume bytes; returns how many token-bearing events they completed."""
        if self.protocol == "openai":
            return self._feed_sse(data)
        if self.protocol == "openai-chat":
            return self._feed_chat(data)
        if self.protocol == "warmserve":
            self.raw += data
            return 0 if data.startswith(b"#") and data[1:].strip().isdigit() else 1
        self.raw += data  # serverlessllm: one JSON body, parsed at the end
        return 0

    def _complete_lines(self, data: bytes) -> bytes:
        """The whole SSE lines that `data` completes (the rest waits for the next read)."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if data.endswith(b"\n"):
            return data
        cut = data.rfind(b"\n") + 1
        complete, self.pending = data[:cut], data[cut:]
        return complete

    def _read_marks(self, complete: bytes) -> None:
        """Parse the lines that carry usage, an error or the end marker (rare: JSON there only)."""
        if b'"usage"' in complete or b'"error"' in complete or b"[DONE]" in complete:
            marks = [i for i in (complete.find(b'"usage"'), complete.find(b'"error"'), complete.find(b"[DONE]"))
                     if i >= 0]
            start = complete.rfind(b"\n", 0, min(marks)) + 1
            for line in complete[start:].split(b"\n"):
                self._parse_line(line.strip())

    def _feed_chat(self, data: bytes) -> int:
        # A token is a delta with non-empty content: the first event (role, empty content) and
        # the usage event are not tokens, or TTFT would be the time to the role event.
        complete = self._complete_lines(data)
        if not complete:
            return 0
        events = len(_CHAT_TOKEN.findall(complete))
        self._read_marks(complete)
        return events

    def _feed_sse(self, data: bytes) -> int:
        # Hot path (one call per network read, tens of thousands per second): count token
        # events with C-level byte counts over the complete lines (the regex only where an
        # event is spaced unusually or has empty choices); JSON-decode only the rare lines that
        # carry usage, an error or the end marker.
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if data.endswith(b"\n"):
            complete = data  # the usual read: whole events
        else:
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                self.pending = data
                return 0
            complete, self.pending = data[:cut], data[cut:]
        events = complete.count(b'"choices":[{')
        if complete.count(b"data:") == events:
            return events  # every event a plain token event (compact JSON, as vLLM writes it)
        events = len(_TOKEN_EVENT.findall(complete))
        self._read_marks(complete)
        return events

    def _parse_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        if b'"usage"' not in payload and b'"error"' not in payload:
            return
        try:
            obj = json.loads(payload)
        except json.JSONDecodeError:
            self.error = f"bad SSE data: {payload[:120]!r}"
            return
        if obj.get("error") and not obj.get("choices"):
            self.error = str(obj["error"])[:300]
        usage = obj.get("usage")
        if usage:
            self.usage_tokens = usage.get("completion_tokens")
            self.prompt_tokens = usage.get("prompt_tokens")

    def finish(self) -> None:
        """Called when the body ended cleanly: read trailing counts."""
        if self.protocol == "warmserve":
            text = self.raw.decode("utf-8", "replace")
            pos = text.rfind("#")
            if pos >= 0 and text[pos + 1:].strip().isdigit():
                self.usage_tokens = int(text[pos + 1:].strip())
                self.done = True
            else:
                self.error = "no '#<tokens>' trailer: stream ended early"
        elif self.protocol == "serverlessllm":
            try:
                obj = json.loads(bytes(self.raw))
                usage = obj.get("usage") or {}
                self.usage_tokens = usage.get("completion_tokens")
                self.prompt_tokens = usage.get("prompt_tokens")
                self.done = True
            except (json.JSONDecodeError, AttributeError):
                self.error = f"bad JSON body: {bytes(self.raw[:120])!r}"
        elif not self.done and self.error is None:
            self.error = "stream ended without [DONE]"
