"""Options of `run_live`, validated once here (pydantic); plain values inside.

Client options (any system): `time_scale` (arrival times are multiplied by it: 0.5 replays
twice as fast), `timeout_s` (whole request, default 600), `connect_timeout_s` (10),
`drain_s` (wait for in-flight requests after Ctrl-C, 30), `overload_threshold_ms` (P99 send
lag above which the client is flagged overloaded, 10), `scrape_period_s` (Prometheus and NVML
period, 1), `max_connections` (per endpoint, 8192), `served_names` ({model: name sent in the
request body}, default the model name).

System options:
- openai: `endpoints` ({model: base URL}) and/or `url` (one base URL for every model);
  `api` (completions (default) | chat: /v1/chat/completions, text prompts, for servers that
  only serve chat);
  `token_ids` (true: token-id prompts, exact input lengths, ids below `vocab_size` (32000);
  false: text prompts; "auto" (default): probe each endpoint once before t=0 and use ids
  where accepted),
  `ignore_eos` (true: send vLLM's ignore_eos + min_tokens for exact output lengths; false:
  not; "auto" (default): probe, and drop them where the server refuses them), `metrics`
  (scrape `<url>/metrics`, default true).
- vllm: `models` ({model: local model dir}, required), `mode` (dedicated | ondemand | sleep),
  `api` (completions | chat, as for openai; chat needs a chat template in the tokenizer),
  `idle_s` (ondemand / sleep idle time, 30), `python` (interpreter with vLLM; default
  $WARMBENCH_VLLM_PYTHON, else this one), `gpus` ({model: CUDA_VISIBLE_DEVICES}),
  `max_model_len` (2048), `dtype` (default float32 without GPU, auto with), `extra_args`
  (list), `env` (dict), `startup_timeout_s` (600), `host`.
- warmserve: `url` (the PrewarmManager, default http://127.0.0.1:9999).
- serverlessllm: `url` (default http://127.0.0.1:8343), `metrics` (default false).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import WarmbenchError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientOptions(_Strict):
    time_scale: float = Field(1.0, gt=0)
    timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    drain_s: float = Field(30.0, ge=0)
    overload_threshold_ms: float = Field(10.0, gt=0)
    scrape_period_s: float = Field(1.0, gt=0)
    max_connections: int = Field(8192, ge=1)
    served_names: dict[str, str] = {}


class OpenAIOptions(_Strict):
    endpoints: dict[str, str] = {}
    url: str | None = None
    api: Literal["completions", "chat"] = "completions"
    token_ids: bool | Literal["auto"] = "auto"
    vocab_size: int = Field(32000, ge=32)
    ignore_eos: bool | Literal["auto"] = "auto"
    metrics: bool = True


class VllmOptions(_Strict):
    models: dict[str, str]
    mode: Literal["dedicated", "ondemand", "sleep"] = "dedicated"
    api: Literal["completions", "chat"] = "completions"
    idle_s: float = Field(30.0, gt=0)
    python: str | None = None
    gpus: dict[str, str] = {}
    max_model_len: int = Field(2048, ge=16)
    dtype: str | None = None
    extra_args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: float = Field(600.0, gt=0)
    host: str = "127.0.0.1"


class WarmServeOptions(_Strict):
    url: str = "http://127.0.0.1:9999"
    metrics: bool = False


class ServerlessLLMOptions(_Strict):
    url: str = "http://127.0.0.1:8343"
    metrics: bool = False


SYSTEM_OPTIONS: dict[str, type[_Strict]] = {
    "openai": OpenAIOptions, "vllm": VllmOptions, "warmserve": WarmServeOptions,
    "serverlessllm": ServerlessLLMOptions,
}


def parse_options(system: str, options: dict | None) -> tuple[ClientOptions, _Strict]:
    """Split one options dict into client and system options; errors name the bad key."""
    if system not in SYSTEM_OPTIONS:
        raise WarmbenchError(f"unknown live system {system!r}; choose one of {sorted(SYSTEM_OPTIONS)}")
    options = dict(options or {})
    client_keys = set(ClientOptions.model_fields)
    client = {k: options.pop(k) for k in list(options) if k in client_keys}
    try:
        return ClientOptions(**client), SYSTEM_OPTIONS[system](**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise WarmbenchError(f"live system {system!r}: option {where!r}: {first['msg']}") from None
