"""Options of `run_live` as pydantic models (plain values inside), validated once by
systems.live.registry.parse_options: the client's, and each live system's.

Client options (any system): `time_scale` (arrival times are multiplied by it: 0.5 replays
twice as fast), `timeout_s` (whole request, default 600), `connect_timeout_s` (10),
`drain_s` (wait for in-flight requests after Ctrl-C, 30), `overload_threshold_ms` (P99 send
lag above which the client is flagged overloaded, 10), `scrape_period_s` (Prometheus and NVML
period, 1), `max_connections` (per endpoint, 8192), `served_names` ({model: name sent in the
request body}, default the model name), `api_key` (sent as `Authorization: Bearer <key>` to every
endpoint), `headers` ({name: value} sent with every request, the probe and the `/metrics`
scrape). A value `env:NAME` of `api_key` or a header is read from the environment variable
NAME when the options are validated (unset: an error naming it). These values are registered with
harness.contracts.redact and appear in no file the harness writes (records keep header names only);
credentials in an endpoint URL (`http://user:KEY@host`) are sent as Basic auth and masked the same
way. Precedence for `Authorization`: a `headers` entry, then `api_key`, then URL credentials.

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
- warmserve: `endpoints` ({model: URL}) and/or `url` (the PrewarmManager; neither: default
  http://127.0.0.1:9999), `max_model_len` (2048) and `max_output_tokens` (1023): lengths are
  capped to them and the record keeps both the asked and the sent lengths; `request_id_offset`
  (int, or "auto" (default): a new offset per run so that a second run against the same manager
  never reuses an id).
- serverlessllm: `endpoints` and/or `url` (default http://127.0.0.1:8343), `metrics` (default
  false), `token_ids` (true: `input_tokens`, exact prompt lengths; ids below `vocab_size`,
  32000), `ignore_eos` (true: pin the output length), `max_model_len` (none: no cap).
"""

from __future__ import annotations

import os
import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator

from harness.contracts.options import Options
from harness.contracts.redact import is_secret_key, redact_text, register_basic_auth, register_secret

#: Upper bound of every duration option: about 4 months (larger ones overflow the event loop's timers).
MAX_S = 1e7
#: An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def resolve_secret(value: str, what: str) -> str:
    """`env:NAME` -> the variable's value (unset: an error naming it); any other value as is.
    Either way the value is registered for redaction."""
    if value.startswith("env:"):
        name = value[4:]
        if not name or name not in os.environ:
            raise ValueError(f"{what}: environment variable {name or '(empty name)'!r} is not set")
        value = os.environ[name]
    if not value:
        raise ValueError(f"{what}: empty value")
    if any(c in value for c in "\r\n\0") or not value.isprintable():
        raise ValueError(f"{what}: control characters in the value")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{what}: characters an HTTP header cannot carry (latin-1 only)") from None
    register_secret(value)
    return value


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """A base URL `http(s)://[user:password@]host[:port][/v1]` -> (URL without credentials, the
    headers its credentials stand for: Basic auth). Anything else is a ValueError that never
    quotes the credentials."""
    shown = redact_text(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        raise ValueError(f"endpoint {shown!r} is not an http(s) URL like http://host:8000 (bad port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url.strip()):
        raise ValueError(f"endpoint {shown!r} is not an http(s) URL like http://host:8000")
    if port == 0:
        raise ValueError(f"endpoint {shown!r}: port 0")
    if parts.path.strip("/") not in ("", "v1") or parts.query or parts.fragment:
        raise ValueError(f"endpoint {shown!r}: give the server's base URL (scheme, host, port) without "
                         "a path or query; the client adds /v1/completions itself")
    headers = {}
    if parts.username is not None or parts.password is not None:
        headers["Authorization"] = register_basic_auth(parts.username or "", parts.password or "")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, "", "", "")), headers


def _check_url(value: str | None) -> str | None:
    if value is not None:
        split_url(value)
    return value


class _Strict(Options):
    """The shared options base (harness/contracts/options.py): unknown names, NaN and inf refused."""


class ClientOptions(_Strict):
    time_scale: float = Field(1.0, gt=0, le=1e6)
    timeout_s: float = Field(600.0, gt=0, le=MAX_S)
    connect_timeout_s: float = Field(10.0, gt=0, le=MAX_S)
    drain_s: float = Field(30.0, ge=0, le=MAX_S)
    overload_threshold_ms: float = Field(10.0, gt=0, le=MAX_S * 1000)
    scrape_period_s: float = Field(1.0, gt=0, le=MAX_S)
    max_connections: int = Field(8192, ge=1, le=1_000_000)
    served_names: dict[str, str] = {}
    api_key: SecretStr | None = None
    headers: dict[str, SecretStr] = {}

    @field_validator("api_key", mode="before")
    @classmethod
    def _key(cls, value: object) -> object:
        return resolve_secret(value, "api key") if isinstance(value, str) else value

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        out = {}
        for name, raw in value.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ValueError(f"header name {str(name)[:40]!r} is not a valid HTTP header name")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name!r} is set by the client itself")
            out[name] = resolve_secret(raw, f"header {name}") if isinstance(raw, str) else raw
        return out

    def request_headers(self) -> dict[str, str]:
        """The headers every request carries: the api key as a Bearer token, then `headers`."""
        out = {"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}
        for name, value in self.headers.items():
            out = {k: v for k, v in out.items() if k.lower() != name.lower()}
            out[name] = value.get_secret_value()
        return out


class OpenAIOptions(_Strict):
    endpoints: dict[str, str] = {}
    url: str | None = None
    api: Literal["completions", "chat"] = "completions"
    token_ids: bool | Literal["auto"] = "auto"
    vocab_size: int = Field(32000, ge=32, le=2**31)
    ignore_eos: bool | Literal["auto"] = "auto"
    metrics: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for url in value.values():
            _check_url(url)
        return value


class VllmOptions(_Strict):
    models: dict[str, str]
    mode: Literal["dedicated", "ondemand", "sleep"] = "dedicated"
    api: Literal["completions", "chat"] = "completions"
    idle_s: float = Field(30.0, gt=0, le=MAX_S)
    python: str | None = None
    gpus: dict[str, str] = {}
    max_model_len: int = Field(2048, ge=16, le=2**24)
    dtype: str | None = None
    extra_args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: float = Field(600.0, gt=0, le=MAX_S)
    host: str = "127.0.0.1"


    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if is_secret_key(name):
                register_secret(item)  # e.g. HF_TOKEN: masked in logs and errors as well
        return value


def _check_endpoints(value: dict[str, str]) -> dict[str, str]:
    for url in value.values():
        _check_url(url)
    return value


class WarmServeOptions(_Strict):
    endpoints: dict[str, str] = {}
    url: str | None = None
    metrics: bool = False
    #: The engines' context limit: prewarm_manager.py, create_engine: `--max-model-len=2048`.
    max_model_len: int = Field(2048, ge=16, le=2**24)
    #: The authors' client caps the output: request_generator.py `min(output_tokens, 1023)`.
    max_output_tokens: int = Field(1023, ge=1, le=2**24)
    #: Added to request ids; "auto": a new offset per run (systems.live.static.auto_id_offset). Ids
    #: stay below 2**53 (exact in JSON) with room for 2**32 requests.
    request_id_offset: int | Literal["auto"] = "auto"

    #: Where the PrewarmManager listens: prewarm_manager.py, __main__: `uvicorn.run(app, ..., port=9999)`.
    default_url: ClassVar[str] = "http://127.0.0.1:9999"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_endpoints(value)

    @field_validator("request_id_offset")
    @classmethod
    def _offset(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 2**53 - 2**32:
            raise ValueError("must be between 0 and 2**53 - 2**32 (ids must stay exact in JSON)")
        return value


class ServerlessLLMOptions(_Strict):
    endpoints: dict[str, str] = {}
    url: str | None = None
    metrics: bool = False
    #: Prompts as token ids (`input_tokens`, read by sllm's vLLM backend since v0.5.0): exact input lengths.
    token_ids: bool = True
    vocab_size: int = Field(32000, ge=32, le=2**31)
    #: vLLM's ignore_eos + min_tokens, passed through to SamplingParams: exact output lengths.
    ignore_eos: bool = True
    #: Cap prompt + output to the deployed engines' context (None: no cap; sllm's backend config sets it).
    max_model_len: int | None = Field(None, ge=16, le=2**24)

    #: sllm's default port: sllm/cli/clic.py `--port`, default=8343.
    default_url: ClassVar[str] = "http://127.0.0.1:8343"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_endpoints(value)
