"""Reading response streams: SSE split anywhere, usage in the last chunk, WarmServe's trailer."""

from __future__ import annotations

import json

from harness.contracts.endpoint import Endpoint
from harness.loadgen.protocols import (
    StreamReader,
    build_request,
    prompt_token_ids,
    wire_lengths,
)

VLLM_STREAM = (
    b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"text_completion","choices": [ {"index":0,"text":" b","finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":" c","finish_reason":"length"}]}\n\n'
    b'data: {"id":"c","object":"text_completion","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def test_sse_events_and_usage_survive_any_split() -> None:
    for cut in range(1, len(VLLM_STREAM)):
        reader = StreamReader("openai")
        events = reader.feed(VLLM_STREAM[:cut]) + reader.feed(VLLM_STREAM[cut:])
        reader.finish()
        assert events == 3, cut
        assert (reader.usage_tokens, reader.prompt_tokens, reader.done, reader.error) == (3, 7, True, None)


def test_sse_without_done_is_an_error() -> None:
    reader = StreamReader("openai")
    reader.feed(VLLM_STREAM[:120])
    reader.finish()
    assert reader.error == "stream ended without [DONE]"


def test_sse_error_event_is_reported() -> None:
    reader = StreamReader("openai")
    reader.feed(b'data: {"error": {"message": "boom", "code": 400}}\n\ndata: [DONE]\n\n')
    reader.finish()
    assert reader.error is not None and "boom" in reader.error


def test_warmserve_trailer_gives_the_token_count() -> None:
    # every read counts when it arrives; the read that held only the trailer is retracted at the end
    reader = StreamReader("warmserve")
    assert reader.feed(b"Hello") == 1 and reader.feed(b" world") == 1 and reader.feed(b"#42") == 1
    reader.finish()
    assert reader.usage_tokens == 42 and reader.error is None and reader.retracted == 1


def test_warmserve_text_with_a_hash_is_not_a_trailer() -> None:
    reader = StreamReader("warmserve")
    reader.feed(b"issue #12 is")
    reader.feed(b" fixed")
    reader.finish()
    assert reader.usage_tokens is None and reader.error is not None


def test_openai_body_pins_exact_lengths() -> None:
    ep = Endpoint(url="http://h:1", served_name="m", token_ids=True, vocab_size=512)
    path, body = build_request(ep, request_id=3, input_tokens=100, output_tokens=20, seed=1)
    payload = json.loads(body)
    assert path == "/v1/completions"
    assert len(payload["prompt"]) == 100 and max(payload["prompt"]) < 512
    assert payload["max_tokens"] == payload["min_tokens"] == 20 and payload["ignore_eos"] is True
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}


def test_prompt_ids_are_fixed_by_seed_and_request() -> None:
    assert prompt_token_ids(1, 10, 512, 0) == prompt_token_ids(1, 10, 512, 0)
    assert prompt_token_ids(1, 10, 512, 0) != prompt_token_ids(2, 10, 512, 0)


CHAT_STREAM = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" \\"content\\":\\"x"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c", "choices": [{"index": 0, "delta": {"content": " b"}, "finish_reason": null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":null},"finish_reason":"length"}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def test_chat_counts_content_deltas_not_the_role_event_whatever_the_split() -> None:
    # role-only first event and the null-content last event carry no token; reasoning content
    # does; quoted "content" inside generated text is not an event
    for cut in range(1, len(CHAT_STREAM)):
        reader = StreamReader("openai-chat")
        first = reader.feed(CHAT_STREAM[:cut])
        events = first + reader.feed(CHAT_STREAM[cut:])
        reader.finish()
        assert events == 3, cut
        assert (reader.usage_tokens, reader.prompt_tokens, reader.done, reader.error) == (3, 12, True, None)
    role_only = StreamReader("openai-chat")
    assert role_only.feed(CHAT_STREAM.split(b"\n\n")[0] + b"\n\n") == 0


def test_chat_body_is_text_messages_with_pinned_output() -> None:
    ep = Endpoint("http://x", protocol="openai-chat", served_name="m", token_ids=True)
    path, body = build_request(ep, 1, 40, 20, seed=0)
    payload = json.loads(body)
    assert path == "/v1/chat/completions" and payload["stream"] is True
    assert isinstance(payload["messages"][0]["content"], str)  # ids are never sent in chat
    assert payload["max_tokens"] == payload["min_tokens"] == 20 and payload["stream_options"]["include_usage"]


# --- WarmServe stream edge cases (issue 17): the PrewarmManager yields each delta's text, then
# f"#{usage.completion_tokens}" (prewarm_manager.py, request_handler / resp_generator).

def warmserve_reads(*reads: bytes) -> tuple[StreamReader, int]:
    reader = StreamReader("warmserve")
    events = sum(reader.feed(r) for r in reads)
    reader.finish()
    return reader, events - reader.retracted


def test_warmserve_a_read_of_generated_text_that_looks_like_a_trailer_is_a_token() -> None:
    reader, tokens = warmserve_reads(b"Issue", b"#12", b" is", b"#3")
    assert (tokens, reader.usage_tokens, reader.error) == (3, 3, None)


def test_warmserve_a_trailer_split_across_reads_is_no_token() -> None:
    reader, tokens = warmserve_reads(*[b"a"] * 127, b" last", b"#1", b"28")
    assert (tokens, reader.usage_tokens, reader.error) == (128, 128, None)
    reader, tokens = warmserve_reads(b"x", b"y#", b"2")  # the trailer's '#' shares a read with text
    assert (tokens, reader.usage_tokens, reader.error) == (2, 2, None)


def test_warmserve_a_clean_end_without_the_trailer_is_a_failure() -> None:
    reader, _ = warmserve_reads(b"Hello", b" world")
    assert reader.error is not None and "trailer" in reader.error and reader.usage_tokens is None
    # text that happens to end in '#<digits>', far below the reads of text, is not a trailer
    reader, _ = warmserve_reads(*[b" a"] * 9, b" see #2")
    assert reader.error is not None and reader.usage_tokens is None
    # a count a little below the reads (a delta split over two reads) is still the trailer
    reader, tokens = warmserve_reads(b" a", b" b", b"\xc3", b"\xa9", b"#3")
    assert (tokens, reader.usage_tokens, reader.error) == (4, 3, None)


def test_warmserve_body_caps_lengths_and_offsets_the_id() -> None:
    ep = Endpoint(url="http://h:9999", protocol="warmserve", served_name="m", id_offset=10**12,
                  max_model_len=2048, max_output_tokens=1023)
    assert wire_lengths(ep, 3000, 1500) == (1025, 1023)
    assert wire_lengths(ep, 3000, 100) == (1948, 100)
    assert wire_lengths(ep, 500, 100) == (500, 100)
    payload = json.loads(build_request(ep, 7, 3000, 1500, seed=0)[1])
    assert payload["id"] == 10**12 + 7 and payload["max_tokens"] == 1023
    assert len(payload["prompt"].split()) == 1025 - 8  # the template's ~8 tokens (request_generator.py)
    tiny = Endpoint(url="http://h:1", protocol="warmserve", max_model_len=16, max_output_tokens=1023)
    sent_in, sent_out = wire_lengths(tiny, 100, 100)
    assert sent_in + sent_out <= 16 and sent_in > 8


# --- ServerlessLLM (issue 17): errors come as HTTP 200 with a JSON body that is no completion.

def sllm_body(body: bytes) -> StreamReader:
    reader = StreamReader("serverlessllm")
    reader.feed(body)
    reader.finish()
    return reader


def test_serverlessllm_error_bodies_are_failures_with_their_text() -> None:
    for body, text in (
            (b'{"error": "Engine is not running"}', "Engine is not running"),
            (b'{"error": "Invalid sampling parameters: Unexpected keyword argument \'stream\'"}',
             "Invalid sampling parameters"),
            (b'{"error": "Instance stopped"}', "Instance stopped"),
            (b'{"preempted": "True", "current_output": [[1, 2]], "completed_tokens": 1}', "preempted"),
            (b'{"id": "x", "object": "chat.completion", "choices": []}', "no choices"),
            (b'"Internal Server Error"', "not a completion")):
        reader = sllm_body(body)
        assert reader.error is not None and text in reader.error, body
        assert reader.usage_tokens is None and not reader.done


def test_serverlessllm_completion_body_gives_the_counts() -> None:
    body = (b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 1732871234.5, "model": "m", '
            b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "a b"}, "logprobs": null, '
            b'"finish_reason": "length"}], "usage": {"prompt_tokens": 20, "completion_tokens": 4, '
            b'"total_tokens": 24}}')
    reader = sllm_body(body)
    assert (reader.error, reader.usage_tokens, reader.prompt_tokens) == (None, 4, 20)


def test_serverlessllm_body_pins_lengths_and_never_asks_to_stream() -> None:
    ep = Endpoint(url="http://h:8343", protocol="serverlessllm", served_name="m", token_ids=True,
                  vocab_size=1000)
    path, body = build_request(ep, 3, 40, 9, seed=0)
    payload = json.loads(body)
    assert path == "/v1/chat/completions"
    assert "stream" not in payload and "stream_options" not in payload
    assert payload["ignore_eos"] is True and payload["max_tokens"] == payload["min_tokens"] == 9
    assert len(payload["input_tokens"]) == 40 and max(payload["input_tokens"]) < 1000
    # the text fallback: 'user: <content>' (vllm_backend.py:220-226) adds ~3 tokens, not 8
    assert len(payload["messages"][0]["content"].split()) == 40 - 3
    text_only = json.loads(build_request(Endpoint(url="http://h:1", protocol="serverlessllm",
                                                  ignore_eos=False), 3, 40, 9, seed=0)[1])
    assert "input_tokens" not in text_only and "ignore_eos" not in text_only and "min_tokens" not in text_only


def warmserve_wire(*messages: bytes) -> bytes:
    """uvicorn's chunked body: one chunk per yielded string, then the end chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(m), m) for m in messages) + b"0\r\n\r\n"


def framed(wire: bytes, cuts: list[int]) -> tuple[StreamReader, int]:
    """Read `wire` split at `cuts` through the HTTP decoder, counting as the client does."""
    from harness.loadgen.http_wire import ChunkedDecoder

    decoder, reader, events = ChunkedDecoder(), StreamReader("warmserve"), 0
    for a, b in zip([0, *cuts], [*cuts, len(wire)]):
        payload = decoder.feed(wire[a:b])
        if payload:
            events += reader.feed_framed(payload, decoder)
    assert decoder.done
    reader.finish()
    return reader, events - reader.retracted


def test_warmserve_framed_counts_every_delta_whatever_the_reads() -> None:
    wire = warmserve_wire(b" a", b"#12", b" \xc3\xa9", b"#3")
    for cut in range(1, len(wire)):
        for cut2 in (cut + 1, cut + 7, len(wire) - 1):
            cuts = sorted({cut, min(cut2, len(wire) - 1)})
            reader, tokens = framed(wire, cuts)
            assert (tokens, reader.usage_tokens, reader.error) == (3, 3, None), cuts


def test_warmserve_framed_last_chunk_must_be_the_trailer() -> None:
    reader, _ = framed(warmserve_wire(b" a", b" b"), [8])
    assert reader.error is not None and "trailer" in reader.error
    # a last delta that reads '#1' after two deltas of text: a cut stream, not a count of 1
    reader, _ = framed(warmserve_wire(b" a", b" b", b"#1"), [8])
    assert reader.error is not None and reader.usage_tokens is None
    # the trailer and text in one chunk is no trailer either (the manager yields it alone)
    reader, _ = framed(warmserve_wire(b" a", b" b#2"), [])
    assert reader.error is not None
