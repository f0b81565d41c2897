"""What the real WarmServe and ServerlessLLM front ends answer, as pure functions the stand-in
(harness.loadgen.standin) serves. Byte-level references: tests/live/fixtures (their README cites
the source each answer follows).

WarmServe: LLMServe/WarmServe `vllm-0.6.3.post1/vllm/entrypoints/controller/prewarm_manager.py`
(a601215): `RequestModel` is a pydantic model validated by FastAPI (422 on a bad body), engines run
with `--max-model-len=2048` (create_engine). ServerlessLLM: ServerlessLLM/ServerlessLLM
`sllm/app_lib.py` and `sllm/backends/vllm_backend.py` (9f50241).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

#: The context limit WarmServe starts every engine with (prewarm_manager.py create_engine:
#: `--max-model-len=2048`); the stand-in applies it to ServerlessLLM too unless told otherwise.
WARMSERVE_MAX_MODEL_LEN = 2048

#: Tokens the chat template adds around a WarmServe prompt (the manager sends the prompt as one
#: user message; the authors' client subtracts 8: request_generator.py `max(input_tokens-8,1)`).
WARMSERVE_TEMPLATE_TOKENS = 8

#: What Starlette's ServerErrorMiddleware answers when a handler raises (text/plain); uvicorn then
#: closes the connection.
INTERNAL_ERROR = b"Internal Server Error"

#: vLLM SamplingParams fields (0.6.6 to 0.11; the keys ServerlessLLM's backend may pass on,
#: vllm_backend.py:242 `SamplingParams(**request_data)`). Any other key is a 200 error body.
SAMPLING_FIELDS = frozenset({
    "n", "best_of", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
    "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "bad_words", "ignore_eos",
    "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
    "spaces_between_special_tokens", "logits_processors", "include_stop_str_in_output",
    "truncate_prompt_tokens", "output_kind", "guided_decoding", "logit_bias", "allowed_token_ids",
    "extra_args",
})

#: SamplingParams' default max_tokens.
SAMPLING_DEFAULT_MAX_TOKENS = 16


class WarmServeRequest(BaseModel):
    """The PrewarmManager's request body (prewarm_manager.py `class RequestModel(BaseModel)`)."""

    id: int
    model: str
    prompt: str
    max_tokens: Optional[int] = 100  # noqa: UP045 - the reference's own spelling
    stream: Optional[bool] = False  # noqa: UP045


def _compact(obj: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def warmserve_parse(body: bytes) -> tuple[WarmServeRequest | None, bytes]:
    """(the request, b'') or (None, FastAPI's 422 body): FastAPI's request_validation_exception_handler
    over pydantic's errors, `loc` prefixed with "body"."""
    if not body:
        return None, _compact({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required",
                                           "input": None}]})
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos, msg = (exc.pos, exc.msg) if isinstance(exc, json.JSONDecodeError) else (0, str(exc))
        return None, _compact({"detail": [{"type": "json_invalid", "loc": ["body", pos],
                                           "msg": "JSON decode error", "input": {}, "ctx": {"error": msg}}]})
    try:
        return WarmServeRequest.model_validate(payload, from_attributes=True), b""
    except ValidationError as exc:
        errors: list[dict[str, Any]] = []
        for err in exc.errors(include_url=False):
            shown: dict[str, Any] = {**err, "loc": ["body", *err["loc"]]}
            if "ctx" in err:  # jsonable_encoder: exceptions and other objects as text
                shown["ctx"] = {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                                for k, v in err["ctx"].items()}
            errors.append(shown)
        return None, _compact({"detail": errors})


def warmserve_prompt_tokens(prompt: str) -> int:
    """Prompt tokens as the engine sees them: one per word plus the chat template."""
    return len(prompt.split()) + WARMSERVE_TEMPLATE_TOKENS


def warmserve_refused(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> bool:
    """Whether vLLM's OpenAI server refuses the request (400, which the manager turns into a 500):
    prompt + max_tokens over the context, or max_tokens below 1."""
    if max_tokens is None:
        return prompt_tokens >= max_model_len
    return max_tokens < 1 or prompt_tokens + max_tokens > max_model_len


class SllmAnswer:
    """ServerlessLLM's answer to one POST /v1/chat/completions, before the wait for its tokens.

    `status`: 200 / 400 / 500 (500: the handler raised: text/plain, connection closed);
    `body`: the bytes for anything but a completion; for a completion, `prompt_tokens`,
    `output_tokens` and `request_id` say what to generate."""

    __slots__ = ("status", "body", "prompt_tokens", "output_tokens", "request_id", "model")

    def __init__(self, status: int, body: bytes = b"", prompt_tokens: int = 0, output_tokens: int = 0,
                 request_id: str = "", model: str = "") -> None:
        self.status, self.body = status, body
        self.prompt_tokens, self.output_tokens = prompt_tokens, output_tokens
        self.request_id, self.model = request_id, model


def _error(message: str) -> SllmAnswer:
    return SllmAnswer(200, _compact({"error": message}))


def sllm_answer(body: bytes, models: set[str], error_body_models: set[str], max_model_len: int) -> SllmAnswer:
    """app_lib.py inference_handler + vllm_backend.py generate, up to generation."""
    try:
        payload = json.loads(body)
        model = payload.get("model")  # a non-object body: AttributeError, as in app_lib.py:118
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return SllmAnswer(500, INTERNAL_ERROR)  # `await request.json()` / `body.get` raise
    if not model:
        return SllmAnswer(400, _compact({"detail": "Missing model_name in request body"}))
    if models and model not in models:
        return SllmAnswer(500, INTERNAL_ERROR)  # app_lib.py:125 ray.get_actor raises
    if model in error_body_models:
        return _error("Engine is not running")  # vllm_backend.py:211
    data = dict(payload)
    data.pop("model")
    messages = data.pop("messages", [])
    prompt = data.pop("prompt", None)
    # popped only when not None (vllm_backend.py:232): `"input_tokens": null` reaches SamplingParams
    input_tokens = data.pop("input_tokens") if data.get("input_tokens") is not None else None
    request_id = str(data.pop("request_id", f"chatcmpl-{uuid.uuid4()}"))
    unknown = [k for k in data if k not in SAMPLING_FIELDS]
    if unknown:  # msgspec's TypeError from SamplingParams(**request_data)
        return _error(f"Invalid sampling parameters: Unexpected keyword argument '{unknown[0]}'")
    max_tokens = data.get("max_tokens", SAMPLING_DEFAULT_MAX_TOKENS)
    if max_tokens is None:
        max_tokens = SAMPLING_DEFAULT_MAX_TOKENS
    if type(max_tokens) is not int or max_tokens < 1:
        return _error(f"Invalid sampling parameters: max_tokens must be at least 1, got {max_tokens}.")
    if input_tokens is not None:
        n_in = len(input_tokens) if isinstance(input_tokens, list) else 0
    elif prompt is not None:
        n_in = len(str(prompt).split()) + 1  # + BOS
    else:
        # vllm_backend.py:220-226: "role: content" lines; "role:" is two tokens, + BOS
        lines = [m for m in messages if isinstance(m, dict) and "content" in m]
        n_in = sum(len(str(m["content"]).split()) + 2 for m in lines) + 1
    if n_in > max_model_len or n_in == 0:
        return SllmAnswer(500, INTERNAL_ERROR)  # vLLM's ValueError from generate, unhandled
    # vLLM does not refuse prompt + max_tokens over the context here: it stops the output there.
    n_out = max(1, min(max_tokens, max_model_len - n_in))
    return SllmAnswer(200, prompt_tokens=n_in, output_tokens=n_out, request_id=request_id, model=str(model))


def sllm_completion(answer: SllmAnswer, created_s: float, text: str) -> bytes:
    """vllm_backend.py process_output: `created` is vLLM's arrival time (a float), `logprobs` null."""
    return _compact({
        "id": answer.request_id, "object": "chat.completion", "created": created_s, "model": answer.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.output_tokens,
                  "total_tokens": answer.prompt_tokens + answer.output_tokens}})
