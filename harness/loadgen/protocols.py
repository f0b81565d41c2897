"""Wire formats: how a request is put on the wire and how a response stream is read.

Four formats: `openai` (completions with SSE streaming, vLLM and any OpenAI-compatible
server), `openai-chat` (chat completions with SSE streaming, for servers that only take chat:
a token is an event whose delta carries non-empty content, never the role-only first event),
`warmserve` (the reference PrewarmManager: `POST /` with `{"id","model","prompt",
"max_tokens","stream"}`, answered by raw text chunks then `#<completion tokens>`), and
`serverlessllm` (an OpenAI-like chat body that is never streamed: no first-token time exists;
failures often come as HTTP 200 with `{"error": ...}`).

Citations `prewarm_manager.py:N` are to LLMServe/WarmServe
`vllm-0.6.3.post1/vllm/entrypoints/controller/prewarm_manager.py` (commit a601215),
`request_generator.py:N` to its `trace-generator/request_generator.py`; `vllm_backend.py:N`,
`app_lib.py:N`, `roundrobin_router.py:N` and `transformers_backend.py:N` to
ServerlessLLM/ServerlessLLM `sllm/...` at commit 9f50241 (main after v0.8.0; `sllm/serve/...`
before v0.8.0). WarmServe's citations name the function and quote the line (greppable).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

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
    vLLM's `ignore_eos` and `min_tokens` extensions. `headers`: (name, value) pairs sent with every
    request (credentials: never written anywhere; `url` never holds any). `max_model_len` /
    `max_output_tokens`: lengths are capped to them before sending (see `wire_lengths`; the
    record keeps what was asked and what was sent).
    """

    url: str
    protocol: Protocol = "openai"
    served_name: str = ""
    token_ids: bool = False
    vocab_size: int = 32000
    ignore_eos: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    #: Added to the request id put in the body (warmserve): ids must be new for the server's lifetime.
    id_offset: int = 0
    #: The server's context limit (prompt + output tokens) and its output cap; None: no cap.
    max_model_len: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:  # pairs may arrive as lists (a locust message)
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in self.headers))

    def __repr__(self) -> str:  # never print header values
        return (f"Endpoint(url={self.url!r}, protocol={self.protocol!r}, served_name={self.served_name!r}, "
                f"headers={[k for k, _ in self.headers]})")


def prompt_token_ids(request_id: int, n_tokens: int, vocab_size: int, seed: int) -> list[int]:
    """Random token ids, fixed by (seed, request id): no prefix-cache hits between requests."""
    rng = np.random.default_rng((seed, request_id))
    high = max(vocab_size, FIRST_PROMPT_TOKEN_ID + 1)
    return rng.integers(FIRST_PROMPT_TOKEN_ID, high, size=max(1, n_tokens)).tolist()


def probe_token_ids(vocab_size: int) -> list[int]:
    """A probe's prompt: the lowest and the highest id the run will send, so that a vocabulary
    smaller than `vocab_size` fails the probe and not every request of the run."""
    high = max(vocab_size, FIRST_PROMPT_TOKEN_ID + 1) - 1
    return [FIRST_PROMPT_TOKEN_ID, (FIRST_PROMPT_TOKEN_ID + high) // 2, high]


def probe_request(ep: Endpoint) -> tuple[str, bytes]:
    """The replay's request shape with a 3-token prompt spanning the run's id range, 2 tokens out."""
    path, body = build_request(ep, 0, 3, 2, seed=0)
    if ep.protocol == "openai" and ep.token_ids:
        payload = json.loads(body)
        payload["prompt"] = probe_token_ids(ep.vocab_size)
        body = json.dumps(payload).encode()
    return path, body


#: Longest SSE line kept while waiting for its end, and largest non-streamed body read.
MAX_LINE_BYTES = 1 << 20
MAX_BODY_BYTES = 16 << 20

#: Largest token count taken from a server (usage, trailer): beyond it the count is malformed.
MAX_COUNT = 2**53

#: WarmServe's trailer `#<completion tokens>` at the very end of the stream, and the most bytes
#: looked at for it (a count up to MAX_COUNT takes 17; longer ones are malformed counts).
_TRAILER = re.compile(rb"#([0-9]+)\Z")
_TRAILER_MAX_BYTES = 64

#: Most tokens one stream event may plausibly carry (speculative decoding, stream intervals):
#: a server whose `usage` claims more per event than this is contradicted by its own stream.
MAX_TOKENS_PER_EVENT = 8


def trusted_tokens(streamed: int, claimed: int | None, asked: int) -> tuple[int, bool]:
    """(tokens to count, whether the server's claim was contradicted).

    The claim (`usage.completion_tokens`, WarmServe's trailer) is taken when it is plausible:
    no more than the `max_tokens` asked, no fewer than the token events streamed (one spare: a
    last event may carry none), no more than MAX_TOKENS_PER_EVENT per event. Otherwise the
    streamed count is what was seen, and TPOT uses it."""
    if claimed is None:
        return streamed, False
    plausible = (claimed <= max(1, asked) and claimed >= max(0, streamed - 1)
                 and claimed <= MAX_TOKENS_PER_EVENT * streamed + 1)
    return (claimed, False) if plausible else (streamed, True)


#: Tokens a server adds around a text prompt, subtracted from the words sent so that the prompt
#: the model reads is about the length asked:
#: - openai-chat: a chat template, about 8 (model-dependent; usage says how many were read);
#: - warmserve: the PrewarmManager wraps the prompt in a chat message for vLLM's chat template
#:   (request_handler: `prompt = [{"role": "user", "content": prompt}]`); the authors' client
#:   subtracts 8 (request_generator.py: `global_prompt[:(max(input_tokens-8,1)*2-1)]`);
#: - serverlessllm: its vLLM backend flattens messages to `"user: <content>"` (vllm_backend.py:220-226:
#:   `f"{message['role']}: {message['content']}"`), i.e. "user" and ":" plus the BOS token that
#:   vLLM's tokenizer adds: 3 (Llama; 2 for tokenizers without BOS). Only used when the prompt is
#:   text: with `input_tokens` the ids are the prompt.
PROMPT_OVERHEAD_TOKENS: dict[str, int] = {"openai": 0, "openai-chat": 8, "warmserve": 8, "serverlessllm": 3}


def wire_lengths(ep: Endpoint, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """(prompt tokens, output tokens) the request asks the server for: the workload's lengths,
    capped so that the prompt (with the server's overhead) plus the output fit `max_model_len`
    and the output stays within `max_output_tokens`. Without caps, the asked lengths (at least 1).

    Why cap rather than send: WarmServe's engines start with `--max-model-len=2048`
    (prewarm_manager.py, create_engine: `args = f"--model ... --max-model-len=2048 ..."`); vLLM
    refuses a longer request, the manager answers 500 and, having counted the request against
    its engine in `schedule` (`self.engine_stats[...].num_reqs += 1`), never uncounts it: the
    engine looks busy for the rest of the run."""
    out = max(1, int(output_tokens))
    inp = max(1, int(input_tokens))
    if ep.max_output_tokens is not None:
        out = min(out, ep.max_output_tokens)
    if ep.max_model_len is not None:
        least_prompt = PROMPT_OVERHEAD_TOKENS.get(ep.protocol, 0) + 1
        out = max(1, min(out, ep.max_model_len - least_prompt))
        inp = max(1, min(inp, ep.max_model_len - out))
    return inp, out


def text_prompt(n_tokens: int) -> str:
    """`a a a ...`: one token per word for common tokenizers; exact only for some."""
    return " ".join(["a"] * max(1, n_tokens))


def build_request(ep: Endpoint, request_id: int, input_tokens: int, output_tokens: int,
                  seed: int) -> tuple[str, bytes]:
    """Path and JSON body for one request; output length pinned where the server allows;
    lengths capped by `wire_lengths`."""
    input_tokens, max_tokens = wire_lengths(ep, input_tokens, output_tokens)
    words = max(1, input_tokens - PROMPT_OVERHEAD_TOKENS.get(ep.protocol, 0))
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
                "messages": [{"role": "user", "content": text_prompt(words)}],
                "stream_options": {"include_usage": True}, "temperature": 0.0}
        if ep.ignore_eos:
            body.update(ignore_eos=True, min_tokens=max_tokens)
        return "/v1/chat/completions", json.dumps(body).encode()
    if ep.protocol == "warmserve":
        # prewarm_manager.py, RequestModel: `id: int`, `model: str`, `prompt: str`,
        # `max_tokens: Optional[int] = 100`, `stream: Optional[bool] = False` (pydantic: other
        # types are a 422). The manager sets `extra_body={"ignore_eos": True}` itself
        # (request_handler), so the output length is pinned. `id` is offset: the manager counts
        # an id's load only the first time it sees it, for its whole life (schedule:
        # `if request_id not in self.recorded_reqs`).
        body = {"id": int(ep.id_offset) + int(request_id), "model": ep.served_name,
                "prompt": text_prompt(words), "max_tokens": max_tokens, "stream": True}
        return "/", json.dumps(body).encode()
    if ep.protocol == "serverlessllm":
        # vllm_backend.py:218-244 pops model, messages, prompt, input_tokens (when not None) and
        # request_id, and passes every other key to vLLM's SamplingParams (an unknown key, e.g.
        # `stream` or `stream_options`, is a 200 `{"error": "Invalid sampling parameters ..."}`;
        # before commit 0074717 unknown keys were dropped). `input_tokens` (vllm_backend.py:232-235,
        # in every release since v0.5.0) becomes the prompt's token ids: exact input length.
        # `messages` stays for backends that ignore `input_tokens` (transformers_backend.py:247).
        body = {"model": ep.served_name, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": text_prompt(words)}]}
        if ep.token_ids:
            body["input_tokens"] = prompt_token_ids(request_id, input_tokens, ep.vocab_size, seed)
        if ep.ignore_eos:
            body.update(ignore_eos=True, min_tokens=max_tokens)
        return "/v1/chat/completions", json.dumps(body).encode()
    raise ValueError(f"unknown protocol {ep.protocol!r}; expected one of {PROTOCOLS}")


class StreamReader:
    """Turns arriving body bytes into token events and a final token count, per protocol.

    SSE reads whose every event has vLLM's compact token shape are counted without decoding
    (the hot path); any other read is decoded event by event: a token is an object whose first
    choice carries one (completions: any choice; chat: non-empty content or reasoning content),
    and an event that is not JSON, not an object, or has neither choices, usage nor an error is
    counted in `bad_events` (never a token, never silently dropped)."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.pending = b""
        self.usage_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.done = False
        self.error: str | None = None
        self.bad_events = 0
        self.raw = bytearray()
        #: warmserve: token events counted that turned out to be the `#N` trailer (see finish).
        self.retracted = 0
        self._reads = 0  # warmserve: non-empty reads, each counted as one token event
        self._tail: list[int] = []  # warmserve: sizes of the latest reads, enough to hold a trailer
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
            # Every read is a token event when it arrives (a read of `#12` may be generated text,
            # and a trailer may come split over reads: `#1`, `28`); `finish` retracts the reads
            # that held nothing but the trailer.
            if not data:
                return 0
            self.raw += data
            if len(self.raw) > MAX_LINE_BYTES:
                del self.raw[:-4096]  # only the trailer at the end matters
            self._reads += 1
            tail = self._tail
            tail.append(len(data))
            while len(tail) > 1 and sum(tail) - tail[0] > _TRAILER_MAX_BYTES:
                del tail[0]
            return 1
        self.raw += data  # serverlessllm: one JSON body, parsed at the end
        if len(self.raw) > MAX_BODY_BYTES:
            self.error = f"response body over {MAX_BODY_BYTES >> 20} MiB"
            self.raw.clear()
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
        self._bound_pending()
        return complete

    def _bound_pending(self) -> None:
        """A line that never ends must not fill the memory: dropped and counted as malformed."""
        if len(self.pending) > MAX_LINE_BYTES:
            self.pending = b""
            self.bad_events += 1

    def _feed_chat(self, data: bytes) -> int:
        # A token is a delta with non-empty content: the first event (role, empty content) and
        # the usage event are not tokens, or TTFT would be the time to the role event.
        complete = self._complete_lines(data)
        if not complete:
            return 0
        events = len(_CHAT_TOKEN.findall(complete))
        if (events and complete.count(b"data:") == events
                and complete.count(b"}\n") + complete.count(b"}\r\n") == events):
            return events  # every event one plain content delta
        return self._decode_lines(complete)

    def _feed_sse(self, data: bytes) -> int:
        # Hot path (one call per network read, tens of thousands per second): count token
        # events with C-level byte counts over the complete lines; JSON-decode only reads that
        # hold anything else (usage, an error, the end marker, an odd or malformed event).
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if data.endswith(b"\n"):
            complete = data  # the usual read: whole events
        else:
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                self.pending = data
                self._bound_pending()
                return 0
            complete, self.pending = data[:cut], data[cut:]
        events = complete.count(b'"choices":[{')
        if (complete.count(b"data:") == events
                and complete.count(b"}\n") + complete.count(b"}\r\n") == events):
            return events  # every event a plain token event (compact JSON, as vLLM writes it)
        return self._decode_lines(complete)

    def _decode_lines(self, complete: bytes) -> int:
        """Token events among whole SSE lines, each decoded; usage, errors and [DONE] noted."""
        events = 0
        for line in complete.split(b"\n"):
            line = line.strip()
            if not line or line.startswith(b":"):
                continue  # event separator or SSE comment
            if not line.startswith(b"data:"):
                if not line.split(b":", 1)[0] in (b"event", b"id", b"retry"):
                    self.bad_events += 1  # not an SSE field at all
                continue
            events += self._parse_data(line[5:].strip())
        return events

    def _parse_data(self, payload: bytes) -> int:
        """One `data:` payload: 1 if it carries a token, else 0."""
        if payload == b"[DONE]":
            self.done = True
            return 0
        try:
            obj: Any = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.bad_events += 1
            return 0
        if not isinstance(obj, dict):
            self.bad_events += 1
            return 0
        choices = obj.get("choices")
        if obj.get("error") and not choices:
            self.error = str(obj["error"])[:300]
            return 0
        usage = obj.get("usage")
        if usage is not None:
            self._read_usage(usage)
        if not isinstance(choices, list) or (not choices and usage is None):
            self.bad_events += 1  # no choices, or an empty list that is not the usage event
            return 0
        if not choices:
            return 0
        first = choices[0]
        if not isinstance(first, dict):
            self.bad_events += 1
            return 0
        if self.protocol == "openai-chat":
            delta = first.get("delta")
            if not isinstance(delta, dict):
                self.bad_events += 1
                return 0
            return int(any(isinstance(delta.get(k), str) and delta.get(k) for k in ("content", "reasoning_content")))
        return 1

    def _read_usage(self, usage: Any) -> None:
        """Counts from a usage object; anything but non-negative integers is a malformed event."""
        if not isinstance(usage, dict):
            self.bad_events += 1
            return
        completion, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        ok = all(v is None or (type(v) is int and 0 <= v <= MAX_COUNT) for v in (completion, prompt))
        if not ok:
            self.bad_events += 1
            return
        self.usage_tokens, self.prompt_tokens = completion, prompt

    def finish(self) -> None:
        """Called when the body ended cleanly: read trailing counts."""
        if self.protocol == "warmserve":
            self._finish_warmserve()
        elif self.protocol == "serverlessllm":
            self._finish_serverlessllm()
        elif not self.done and self.error is None:
            self.error = "stream ended without [DONE]"

    def _finish_warmserve(self) -> None:
        """The PrewarmManager streams each delta's text, then `#<completion tokens>` once the
        stream is over (request_handler, resp_generator: `yield f"#{stream_response.usage.completion_tokens}"`).
        If vLLM fails mid-stream, or sends no usage, the generator logs it and ends cleanly
        without the trailer: that is a failed request, never an ok one."""
        match = _TRAILER.search(bytes(self.raw[-_TRAILER_MAX_BYTES:]))
        if match is None:
            self.error = "no '#<tokens>' trailer: the stream ended early (server-side failure)"
            return
        covered, retract = 0, 0
        for size in reversed(self._tail):  # reads made of trailer bytes only carried no token
            if covered + size > len(match.group(0)):
                break
            covered += size
            retract += 1
        count = int(match.group(1))
        text_reads = self._reads - retract
        if 2 * count < text_reads:
            # A read of text holds at least one delta of at least one token (a delta split over
            # two reads is rare): a count below half the reads of text is no trailer but text
            # ending in `#<digits>`, cut short. Between half and all, trusted_tokens judges it.
            self.error = (f"no '#<tokens>' trailer: the stream ended early (its text ends with "
                          f"'#{count}', under half its {text_reads} reads of text)")
            return
        if count > MAX_COUNT:
            self.bad_events += 1  # a count no table column can hold: no claim at all
        else:
            self.usage_tokens = count
        self.retracted = retract
        self.done = True

    def _finish_serverlessllm(self) -> None:
        """ServerlessLLM answers most failures with HTTP 200 and a JSON body that is not a
        completion: `{"error": ...}` (vllm_backend.py:211,216,244: engine not running, no data,
        invalid sampling parameters; roundrobin_router.py:147,164,172,189: instance stopped or
        not found, LoRA adapter not found, invalid action), or `{"preempted": "True", ...}` from
        a backend shut down mid-request (transformers_backend.py:288-292). A request is ok only
        with a completion: non-empty `choices` and a `usage.completion_tokens` count
        (vllm_backend.py:49-82)."""
        if self.error is not None:
            return  # body over the limit
        try:
            obj = json.loads(bytes(self.raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.error = f"bad JSON body: {bytes(self.raw[:120])!r}"
            return
        if not isinstance(obj, dict):
            self.error = f"not a completion: {str(obj)[:200]}"
            return
        if "error" in obj:
            self.error = f"server error: {str(obj['error'])[:280]}"
            return
        if "preempted" in obj:
            self.error = f"preempted: the instance was stopped mid-request ({str(obj)[:200]})"
            return
        choices, usage = obj.get("choices"), obj.get("usage")
        if not isinstance(choices, list) or not choices:
            self.error = f"not a completion (no choices): {json.dumps(obj)[:200]}"
            return
        if not isinstance(usage, dict) or usage.get("completion_tokens") is None:
            self.error = "no usage.completion_tokens in the body: tokens generated unknown"
            return
        self._read_usage(usage)
        if self.usage_tokens is None:
            self.error = f"bad usage in the body: {json.dumps(usage)[:200]}"
            return
        self.done = True
