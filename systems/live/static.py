"""Systems reached at fixed endpoints: one `Endpoint` per workload model from the options
(`endpoint_map`, shared with the openai adapter), and the adapter of the systems that need no more
(warmserve, serverlessllm)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.contracts.endpoint import Endpoint
from harness.contracts.errors import WarmbenchError
from harness.contracts.live import EventLog, LiveSystem
from systems.live.options import split_url


def endpoint_map(models: list[str], urls: dict[str, str], one_url: str | None, protocol: str,
                 served: dict[str, str], headers: dict[str, str], **kw: Any) -> dict[str, Endpoint]:
    """One Endpoint per model; URL credentials become Basic auth (below `headers`' own)."""
    missing = [m for m in models if m not in urls and one_url is None]
    if missing:
        raise WarmbenchError(f"no endpoint for workload models {missing}: give --endpoint MODEL=URL "
                             "for each, or one URL for all")
    explicit_auth = any(k.lower() == "authorization" for k in headers)
    out = {}
    for m in models:
        try:
            url, auth = split_url(urls.get(m, one_url or ""))
        except ValueError as exc:
            raise WarmbenchError(str(exc)) from None
        if explicit_auth:
            auth = {}  # an explicit header or api key wins over URL credentials
        merged = {**auth, **headers}
        out[m] = Endpoint(url=url, protocol=protocol, served_name=served.get(m, m),  # type: ignore[arg-type]
                          headers=tuple(merged.items()), **kw)
    return out


def auto_id_offset(now_s: float | None = None) -> int:
    """A request-id offset no earlier run against the same server has used: microseconds since
    the epoch at the run's start (one offset for every model and worker: the manager's id set
    is global). A run's ids are [offset, offset + its request count): the next run starts later
    by more microseconds than this one has requests unless it sent over a million requests a
    second. About 1.8e15 today: ids stay below 2**53, exact in every JSON reader."""
    return int((time.time() if now_s is None else now_s) * 1e6)


class StaticSystem(LiveSystem):
    """A system reached at fixed endpoints (warmserve, serverlessllm); the manifest records the
    request-id offset and length caps as well."""

    def __init__(self, name: str, endpoints: dict[str, Endpoint], events: EventLog, run_dir: Path,
                 metrics: bool) -> None:
        super().__init__(endpoints, events, run_dir, metrics=metrics)
        self.name = name

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        first = next(iter(self.endpoints.values()), None)
        if first is not None:
            out.update(id_offset=first.id_offset, max_model_len=first.max_model_len,
                       max_output_tokens=first.max_output_tokens)
        return out
