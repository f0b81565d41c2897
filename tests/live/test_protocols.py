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
