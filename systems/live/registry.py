"""Live systems by name: the options model (pydantic) each one takes and the function that builds
its adapter, as systems/sim/registry.py is for the simulated ones. The harness side
(harness/live/run.py) validates with `parse_options` and builds with `build`.

Add a system: write its `LiveSystem` (harness/contracts/live.py), its options model
(systems/live/options.py), a builder `(options, Context) -> LiveSystem`, and `register` them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.contracts.endpoint import Endpoint
from harness.contracts.errors import WarmbenchError
from harness.contracts.live import EventLog, LiveSystem
from harness.contracts.options import validate
from systems.live import openai, vllm
from systems.live.options import ClientOptions, OpenAIOptions, ServerlessLLMOptions, VllmOptions, WarmServeOptions
from systems.live.static import StaticSystem, auto_id_offset, endpoint_map


@dataclass(frozen=True)
class Context:
    """What a builder gets besides the system's options. `probe_request`: the replay's request shape
    for an endpoint (path, body), from the load generator, which owns the wire formats (for
    adapters that probe what a server accepts before t=0)."""

    models: list[str]
    events: EventLog
    run_dir: Path
    gpu_present: bool
    served_names: dict[str, str]
    headers: dict[str, str]
    probe_request: Callable[[Endpoint], tuple[str, bytes]]


Builder = Callable[[Any, Context], LiveSystem]


@dataclass(frozen=True)
class Entry:
    options: type[BaseModel]
    build: Builder


_REGISTRY: dict[str, Entry] = {}


def register(name: str, options: type[BaseModel], build: Builder) -> None:
    """Make `name` a live system: `options` validates its options, `build` makes its adapter."""
    if name in _REGISTRY:
        raise ValueError(f"live system {name!r} is registered twice")
    _REGISTRY[name] = Entry(options, build)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def parse_options(system: str, options: dict | None) -> tuple[ClientOptions, Any]:
    """Split one options dict into client and system options; errors name the bad key."""
    if system not in _REGISTRY:
        raise WarmbenchError(f"unknown live system {system!r}; choose one of {sorted(_REGISTRY)}")
    options = dict(options or {})
    client_keys = set(ClientOptions.model_fields)
    client = {k: options.pop(k) for k in list(options) if k in client_keys}
    # values may be credentials (api_key, headers, URLs with a password): errors never quote them
    what, known = f"live system {system!r}: ", [*client_keys, *_REGISTRY[system].options.model_fields]
    return (validate(ClientOptions, client, what=what, show_input=False, known=known),
            validate(_REGISTRY[system].options, options, what=what, show_input=False, known=known))


def build(system: str, options: Any, ctx: Context) -> LiveSystem:
    """The adapter for `system` (options as `parse_options` returned them), for the workload's models."""
    return _REGISTRY[system].build(options, ctx)


def _build_openai(o: OpenAIOptions, ctx: Context) -> LiveSystem:
    chat = o.api == "chat"  # chat messages are text: no token-id prompts
    eps = endpoint_map(ctx.models, o.endpoints, o.url, "openai-chat" if chat else "openai", ctx.served_names,
                       ctx.headers, token_ids=o.token_ids is True and not chat, vocab_size=o.vocab_size,
                       ignore_eos=o.ignore_eos is not False)
    return openai.OpenAISystem(eps, ctx.events, ctx.run_dir, metrics=o.metrics, probe_request=ctx.probe_request,
                               probe_token_ids=o.token_ids == "auto" and not chat,
                               probe_ignore_eos=o.ignore_eos == "auto")


def _build_static(name: str) -> Builder:
    def build_one(o: Any, ctx: Context) -> LiveSystem:
        # `endpoints` (--endpoint MODEL=URL) route per model; `url` serves the others; neither
        # given: the system's default address.
        one_url = o.url if o.url or o.endpoints else o.default_url
        if name == "warmserve":
            offset = auto_id_offset() if o.request_id_offset == "auto" else o.request_id_offset
            kw: dict[str, Any] = {"id_offset": offset, "max_model_len": o.max_model_len,
                                  "max_output_tokens": o.max_output_tokens}
        else:
            kw = {"token_ids": o.token_ids, "vocab_size": o.vocab_size, "ignore_eos": o.ignore_eos,
                  "max_model_len": o.max_model_len}
        eps = endpoint_map(ctx.models, o.endpoints, one_url, name, ctx.served_names, ctx.headers, **kw)
        return StaticSystem(name, eps, ctx.events, ctx.run_dir, metrics=o.metrics)
    return build_one


def _build_vllm(o: VllmOptions, ctx: Context) -> LiveSystem:
    missing = [m for m in ctx.models if m not in o.models]
    if missing:
        raise WarmbenchError(f"no model directory for workload models {missing}: give --model MODEL=PATH")
    return vllm.VllmSystem({m: o.models[m] for m in ctx.models}, ctx.events, ctx.run_dir, mode=o.mode, api=o.api,
                           idle_s=o.idle_s, python=o.python, gpus=o.gpus, host=o.host,
                           max_model_len=o.max_model_len, dtype=o.dtype, extra_args=o.extra_args, env=o.env,
                           startup_timeout_s=o.startup_timeout_s, gpu_present=ctx.gpu_present,
                           headers=ctx.headers)


register("openai", OpenAIOptions, _build_openai)
register("vllm", VllmOptions, _build_vllm)
register("warmserve", WarmServeOptions, _build_static("warmserve"))
register("serverlessllm", ServerlessLLMOptions, _build_static("serverlessllm"))
