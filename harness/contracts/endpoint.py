"""Where a model is served and how to talk to it (`Endpoint`), and the error a live system raises
when it cannot give one (`Unavailable`): what adapters hand the load generator.

The request bodies of each wire format are the load generator's (harness.loadgen.bodies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Protocol = Literal["openai", "openai-chat", "warmserve", "serverlessllm"]
PROTOCOLS: tuple[str, ...] = ("openai", "openai-chat", "warmserve", "serverlessllm")


@dataclass(frozen=True)
class Endpoint:
    """Where one model is served and how to talk to it.

    `token_ids`: send prompts as token ids (exact input length; vLLM accepts them) drawn from
    `[FIRST_PROMPT_TOKEN_ID, vocab_size)` (harness.loadgen.bodies). `ignore_eos`: ask for exactly `max_tokens` through
    vLLM's `ignore_eos` and `min_tokens` extensions. `headers`: (name, value) pairs sent with every
    request (credentials: never written anywhere; `url` never holds any). `max_model_len` /
    `max_output_tokens`: lengths are capped to them before sending (see harness.loadgen.bodies.wire_lengths; the
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


class Unavailable(Exception):
    """The system could not give an endpoint for this request (e.g. its server failed to start)."""
