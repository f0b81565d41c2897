"""Reading response streams: SSE split anywhere, usage in the last chunk, WarmServe's trailer."""

from __future__ import annotations

import json

from harness.loadgen.protocols import Endpoint, StreamReader, build_request, prompt_token_ids

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
    reader = StreamReader("warmserve")
    assert reader.feed(b"Hello") == 1 and reader.feed(b" world") == 1 and reader.feed(b"#42") == 0
    reader.finish()
    assert reader.usage_tokens == 42 and reader.error is None


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
