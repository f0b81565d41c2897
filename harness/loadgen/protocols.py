"""Wire formats: how a response stream is read (request bodies: harness.loadgen.bodies,
re-exported here).

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
from typing import Any

from harness.contracts.endpoint import Protocol
from harness.loadgen.bodies import (  # noqa: F401 - re-exported: the request side of each format
    FIRST_PROMPT_TOKEN_ID,
    PROMPT_OVERHEAD_TOKENS,
    build_request,
    probe_request,
    probe_token_ids,
    prompt_token_ids,
    text_prompt,
    wire_lengths,
)

#: An SSE event that carries a token: a non-empty `choices` list (OpenAI chunks, any spacing).
_TOKEN_EVENT = re.compile(rb'"choices"\s*:\s*\[\s*\{')

#: A chat event that carries a token: non-empty content or reasoning content in its delta.
_CHAT_TOKEN = re.compile(rb'"(?:reasoning_)?content"\s*:\s*"(?!")')

#: Longest SSE line kept while waiting for its end, and largest non-streamed body read.
MAX_LINE_BYTES = 1 << 20
MAX_BODY_BYTES = 16 << 20

#: Largest token count taken from a server (usage, trailer): beyond it the count is malformed.
MAX_COUNT = 2**53

#: WarmServe's trailer `#<completion tokens>` at the very end of the stream, and the most bytes
#: looked at for it (a count up to MAX_COUNT takes 17; longer ones are malformed counts).
_TRAILER = re.compile(rb"#([0-9]+)\Z")
_TRAILER_CHUNK = re.compile(rb"#([0-9]+)")
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
        self._framed = False  # warmserve: HTTP chunks seen (feed_framed): one per message
        self._chunks = 0  # warmserve, framed: chunks begun so far, each counted as one event
        self._ended = 0  # ... the decoder's count of whole chunks at the last read
        self._partial = False  # ... a chunk begun (and counted) but not ended at the last read
        self._last_size = 0  # ... the last whole chunk's size
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

    def feed_framed(self, data: bytes, decoder: Any) -> int:
        """warmserve: consume bytes of a chunked body whose `decoder` (http_wire.ChunkedDecoder) counts
        its chunks. The PrewarmManager's StreamingResponse is written by uvicorn as one HTTP
        chunk per yielded string (a delta's text, then the trailer; none for an empty string),
        so a chunk is a message: tokens read together each count, the trailer is the last chunk
        exactly. Returns the chunks that began in this read. Without chunks: `feed`."""
        if decoder is None:
            return self.feed(data)
        self._framed = True
        self.raw += data
        if len(self.raw) > MAX_LINE_BYTES:
            del self.raw[:-4096]  # only the last chunk matters at the end
        ended, partial = decoder.ended, decoder.partial
        began = ended - self._ended + partial - self._partial
        self._ended, self._partial, self._last_size = ended, partial, decoder.last_size
        self._chunks += began
        return began

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
                if line.split(b":", 1)[0] not in (b"event", b"id", b"retry"):
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
        if self._framed:
            self._finish_warmserve_framed()
            return
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
        self._claim_trailer(count, retract)

    def _finish_warmserve_framed(self) -> None:
        """The trailer is the last chunk, whole: `#<digits>` and nothing else."""
        size = self._last_size
        last = bytes(self.raw[-size:]) if 0 < size <= min(_TRAILER_MAX_BYTES, len(self.raw)) else b""
        match = _TRAILER_CHUNK.fullmatch(last)
        if match is None:
            self.error = "no '#<tokens>' trailer: the stream ended early (server-side failure)"
            return
        count, text_chunks = int(match.group(1)), self._chunks - 1
        if count < text_chunks:
            # Each chunk of text is one delta of at least one token: a smaller count is a delta
            # of text that reads `#<digits>`, and the stream was cut after it.
            self.error = (f"no '#<tokens>' trailer: the stream ended early (its last chunk "
                          f"'#{count}' is text: {text_chunks} chunks of text came before it)")
            return
        self._claim_trailer(count, 1)  # the trailer's chunk was counted when it began: the last event

    def _claim_trailer(self, count: int, retract: int) -> None:
        """A valid `#<count>` trailer ends the stream; `retract` token events were its bytes."""
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
