"""Request bodies per wire format: what is put on the wire for one request, lengths capped to
the server's limits (`wire_lengths`). Responses are read in harness.loadgen.protocols, which
re-exports these names.

Citations: see harness.loadgen.protocols.
"""

from __future__ import annotations

import json

import numpy as np

from harness.contracts.endpoint import PROTOCOLS, Endpoint

#: Lowest token id used for id prompts: keeps clear of the special tokens most vocabularies
#: put first (pad, bos, eos, unk).
FIRST_PROMPT_TOKEN_ID = 16


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
