"""The batch scheduler of one instance: vLLM-like continuous batching in as few events as possible.

Each instance owns a `BatchEngine` (its replica scheduler, in Vidur's terms) with the iteration-time
model injected (`perf.PerfModel`, the execution-time predictor); the core (core.Simulator) owns
time, resources and events and reaches an engine through `add`, `kick`, `kv_grew`,
`clear` and `check`; the engine reaches the core through `EngineHost`.

At every iteration boundary: prefill-first (admit waiting requests while seats, the token budget
and KV allow; one prefill iteration gives each its first token); else one decode *stretch*: the
unchanged batch runs k decode steps in ONE event, k = steps until the next request finishes or
KV runs out, timed in closed form (a decode step costs `a + s * context`, so k steps cost
`k a + s (k c0 + b k (k - 1) / 2)`). A dispatch that can be admitted cuts the stretch at the end
of the step in progress (`interrupt`). When KV runs out, the policy's `on_kv_full` hook may grow
the cache; otherwise the newest running request is preempted and later recomputed. KV is counted
in tokens with the bound `ceil(tokens / block_size) + seqs` blocks. With `chunked_prefill_tokens`
set, iterations mix one decode token per running request with prefill chunks up to that budget.

Event flow: `kick` -> `_on_kick` -> `_next_iteration` (plan a prefill, mixed or decode iteration,
schedule `_on_iteration_done`) -> `_on_iteration_done` (apply it, finish requests) ->
`_next_iteration` ...; `interrupt` re-schedules the end of a decode stretch earlier.

Over ~400 lines on purpose: one class, the scheduler's documented state and every event handler
that changes it, so that the flow above reads in one file (splitting it would bring back the
cross-file hops this module replaced).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from systems.sim.entities import READY, SimError

if TYPE_CHECKING:
    from systems.sim.entities import Instance, Request
    from systems.sim.perf import PerfModel
    from systems.sim.tables import EventFields

PREFILL, DECODE, MIXED = "prefill", "decode", "mixed"


class EngineHost(Protocol):
    """What an engine needs from the simulator core."""

    @property
    def now_s(self) -> float:
        """Virtual time now."""
    def push(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Schedule `fn(arg)` at virtual time `t`."""
    def kv_full(self, inst: Instance) -> None:
        """The engine lacks KV blocks: the policy's on_kv_full hook may grow the cache."""
    def request_done(self, inst: Instance, req: Request) -> None:
        """`req` left the engine (finished or failed, `req.end_s` set): count it, tell the policy."""
    def engine_idle(self, inst: Instance) -> None:
        """Nothing left to run: a draining instance may stop now."""
    def log(self, kind: str, model: str = "", gpus: Iterable[int] = (), detail: str = "",
            fields: EventFields | None = None) -> None:
        """Add a control-plane event (`fields`: its typed payload)."""


def stretch_s(steps: int, step_fixed_s: float, ctx_slope_s: float, ctx0_tokens: int, seqs: int) -> float:
    """Time of `steps` decode steps of `seqs` sequences holding `ctx0_tokens` at the first one."""
    return steps * step_fixed_s + ctx_slope_s * (steps * ctx0_tokens + seqs * steps * (steps - 1) / 2.0)


class BatchEngine:
    """Continuous batching of one instance; its queues, KV count and the iteration in progress."""

    __slots__ = ("inst", "perf", "host", "block_size", "total_blocks", "max_num_seqs", "max_num_batched_tokens",
                 "chunk_budget", "compute_share", "waiting", "running", "prefilling", "finish_heap", "step",
                 "ctx_tokens", "held_tokens", "busy", "version", "kick_pending", "preemptions", "iter_kind",
                 "iter_start_s", "iter_end_s", "chunk_tokens", "mixed_decode_seqs", "stretch_steps",
                 "stretch_seqs", "stretch_ctx0_tokens", "stretch_step_fixed_s", "stretch_ctx_slope_s",
                 "stretch_share")

    def __init__(self, inst: Instance, perf: PerfModel, host: EngineHost, *, block_size: int,
                 max_num_seqs: int, max_num_batched_tokens: int, chunk_budget: int, compute_share: float) -> None:
        self.inst = inst                  # the instance it serves (its state gates iterations)
        self.perf = perf                  # iteration times (injected: one per model, GPU kind, TP)
        self.host = host
        # configuration
        self.block_size = block_size      # KV block size in tokens
        self.total_blocks = 0             # KV blocks of the cache (the core resizes it)
        self.max_num_seqs = max_num_seqs  # batch limit: running + prefilling sequences
        self.max_num_batched_tokens = max_num_batched_tokens   # prefill token budget per iteration
        self.chunk_budget = chunk_budget  # > 0: chunked prefill with this token budget per iteration
        self.compute_share = compute_share   # iteration times are divided by it (MPS share, 0 < s <= 1)
        # queues
        self.waiting: deque[Request] = deque()       # dispatched, not admitted (preempted go first)
        self.running: dict[Request, None] = {}       # the decode batch, in admission order
        self.prefilling: list[Request] = []          # admitted, prompt (or a chunk of it) in progress
        #: (step at which it finishes, request id, request, its epoch then): stale entries dropped lazily
        self.finish_heap: list[tuple[int, int, Request, int]] = []
        self.step = 0                     # decode steps run so far (a running request's tokens follow it)
        self.ctx_tokens = 0               # KV tokens of the running batch
        self.held_tokens = 0              # KV tokens of prefilling requests (allocated at admission)
        # the iteration in progress
        self.busy = False
        self.version = 0                  # bumps when an iteration is (re)scheduled: older end events are stale
        self.kick_pending = False         # a scheduler run is queued at the current instant
        self.preemptions = 0
        self.iter_kind = ""               # PREFILL | DECODE | MIXED
        self.iter_start_s = 0.0
        self.iter_end_s = 0.0
        self.chunk_tokens: list[int] = []    # MIXED: prompt tokens each prefilling request gets
        self.mixed_decode_seqs = 0           # MIXED: running requests that decode one token in it
        # DECODE: the stretch in progress, k steps of b sequences (module docstring)
        self.stretch_steps = 0               # k
        self.stretch_seqs = 0                # b
        self.stretch_ctx0_tokens = 0         # c0: KV tokens of the batch at its first step
        self.stretch_step_fixed_s = 0.0      # a: a step's context-independent time
        self.stretch_ctx_slope_s = 0.0       # s: a step's time per KV token
        self.stretch_share = 1.0             # compute share when it was planned

    # ------------------------------------------------------------------ queries
    @property
    def num_running(self) -> int:
        """Sequences holding seats: decoding plus prefilling."""
        return len(self.running) + len(self.prefilling)

    @property
    def blocks_used(self) -> int:
        """KV blocks the admitted requests hold now (tokens rounded up, plus one block per sequence)."""
        seqs = len(self.running) + len(self.prefilling)
        return -(-(self.ctx_tokens + self.held_tokens) // self.block_size) + seqs

    def needed_blocks(self) -> int:
        """Blocks in use now, plus what the waiting prompts and the decode stretch in progress need."""
        bs = self.block_size
        waiting = sum(-(-(r.input_tokens + r.gen) // bs) + 1 for r in self.waiting)
        growth = 0
        if self.busy and self.iter_kind == DECODE:   # the stretch in progress adds b tokens a step
            growth = -(-self.stretch_seqs * self.stretch_steps // bs)
        return self.blocks_used + waiting + growth

    # ------------------------------------------------------------------ the core's entry points
    def add(self, req: Request) -> None:
        """A request dispatched to this instance joins the waiting queue (runs once it is ready)."""
        self.waiting.append(req)
        if self.inst.state == READY:
            if not self.busy:
                self.kick()
            elif self.iter_kind == DECODE and len(self.waiting) == 1 and self._admissible():
                self.interrupt()

    def kv_grew(self) -> None:
        """The core grew the KV cache (`total_blocks`): waiting requests may be admitted at the next
        step. (A shrink never cuts into the stretch in progress: `needed_blocks` counts it.)"""
        if self.waiting:
            if self.busy:
                self.interrupt()
            else:
                self.kick()

    def clear(self) -> list[Request]:
        """The instance stops: drop every request (returned, for re-parking) and any pending event."""
        self.version += 1
        orphans = list(self.prefilling) + list(self.running) + list(self.waiting)
        self.prefilling.clear()
        self.running.clear()
        self.waiting.clear()
        self.ctx_tokens = self.held_tokens = 0
        return orphans

    def check(self, now_s: float, in_flight: int) -> None:
        """Invariants (debug runs): KV within the cache, context tokens, request count."""
        iid = self.inst.id
        if self.blocks_used > self.total_blocks + self.num_running and self.num_running:
            raise SimError(f"t={now_s}: instance {iid} holds {self.blocks_used} blocks of {self.total_blocks}")
        held = sum(r.input_tokens + r.gen + (self.step - r.join_step) for r in self.running)
        if self.iter_kind != DECODE or not self.busy:
            if held != self.ctx_tokens:
                raise SimError(f"t={now_s}: instance {iid} context {self.ctx_tokens} != {held}")
        n = len(self.waiting) + len(self.running) + len(self.prefilling)
        if n != in_flight:
            raise SimError(f"t={now_s}: instance {iid} in_flight {in_flight} != {n}")

    def kick(self) -> None:
        """Run the scheduler of an idle ready instance at the current time (once per instant)."""
        if self.kick_pending or self.busy or self.inst.state != READY:
            return
        self.kick_pending = True
        self.host.push(self.host.now_s, self._on_kick, None)

    def interrupt(self) -> None:
        """Cut a decode stretch at the end of the step in progress, so the scheduler runs then."""
        if not self.busy or self.iter_kind != DECODE:
            return
        k, b, c0 = self.stretch_steps, self.stretch_seqs, self.stretch_ctx0_tokens
        a, s, share = self.stretch_step_fixed_s, self.stretch_ctx_slope_s, self.stretch_share
        now = self.host.now_s
        elapsed = (now - self.iter_start_s) * share
        # steps j with S(j) = j*a + s*(j*c0 + b*j*(j-1)/2) <= elapsed: solve the quadratic
        qa = s * b / 2.0
        qb = a + s * c0 - qa
        if qa > 0:
            j = (-qb + math.sqrt(qb * qb + 4 * qa * elapsed)) / (2 * qa)
        else:
            j = elapsed / qb
        kk = min(k, max(0, math.ceil(j - 1e-12)))
        end = self.iter_start_s + stretch_s(kk, a, s, c0, b) / share
        while end < now and kk < k:
            kk += 1
            end = self.iter_start_s + stretch_s(kk, a, s, c0, b) / share
        if kk >= k:
            return
        self.stretch_steps = kk
        self.iter_end_s = end
        self.version += 1
        self.host.push(end, self._on_iteration_done, self.version)

    # ------------------------------------------------------------------ scheduling
    def _on_kick(self, _: Any) -> None:
        self.kick_pending = False
        if not self.busy and self.inst.state == READY:
            self._next_iteration()

    def _kv_fits(self, tokens: int, seqs: int, watermark: bool) -> bool:
        limit = self.total_blocks - (self.total_blocks // 100 if watermark else 0)
        return -(-tokens // self.block_size) + seqs <= limit

    def _admissible(self) -> bool:
        """Could the head of the waiting queue join the batch now?"""
        if self.num_running >= self.max_num_seqs:
            return False
        req = self.waiting[0]
        need = req.input_tokens + req.gen
        return self._kv_fits(self.ctx_tokens + self.held_tokens + need, self.num_running + 1, True)

    def _next_iteration(self) -> None:
        """Plan the next iteration: prefill (or mixed) if a waiting request fits, else a decode stretch."""
        if self.waiting or self.prefilling:
            if self.chunk_budget > 0:
                if self._plan_chunked():
                    return
            elif self._plan_prefill():
                return
        running = self.running
        if running:
            host, inst = self.host, self.inst
            while True:
                b = len(running)
                heap = self.finish_heap
                while True:  # the earliest live finish entry (stale ones are dropped lazily)
                    fs, _, r, epoch = heap[0]
                    if epoch == r.epoch and r in running:
                        break
                    heapq.heappop(heap)
                k_fin = fs - self.step
                room = (self.total_blocks - b) * self.block_size - self.ctx_tokens - self.held_tokens
                k_kv = room // b if room >= 0 else -1
                if k_kv >= 1:
                    break
                host.kv_full(inst)
                room = (self.total_blocks - b) * self.block_size - self.ctx_tokens - self.held_tokens
                if room // b >= 1:
                    continue
                self._preempt()
                if not running:
                    self.kick()
                    return
            k = k_fin if k_fin < k_kv else k_kv
            a = self.perf.decode_fixed_s(b)
            s = self.perf.decode_ctx_slope_s
            c0 = self.ctx_tokens
            self.stretch_steps, self.stretch_seqs, self.stretch_ctx0_tokens = k, b, c0
            self.stretch_step_fixed_s, self.stretch_ctx_slope_s = a, s
            share = self.stretch_share = self.compute_share
            now = host.now_s
            self.iter_kind = DECODE
            self.iter_start_s = now
            end = self.iter_end_s = now + (k * a + s * (k * c0 + b * k * (k - 1) / 2.0)) / share
            self.busy = True
            version = self.version = self.version + 1
            host.push(end, self._on_iteration_done, version)
            return
        if self.waiting and not self.prefilling:
            # nothing runs and the head still cannot be admitted: it can never fit
            self._reject_head()
            return
        self.host.engine_idle(self.inst)

    def _reject_head(self) -> None:
        self.host.kv_full(self.inst)
        head = self.waiting[0]
        if self._kv_fits(head.input_tokens + head.gen, 1, True):   # as admission checks it
            self.kick()
            return
        self.waiting.popleft()
        head.error = f"prompt of {head.input_tokens + head.gen} tokens does not fit the KV cache ({self.total_blocks} blocks)"
        self._finish(head, ok=False)
        self.kick()

    def _plan_prefill(self) -> bool:
        batch: list[Request] = []
        tokens = 0
        sq = 0.0
        held = self.ctx_tokens + self.held_tokens
        seqs = len(self.running)
        waiting = self.waiting
        while waiting:
            r = waiting[0]
            need = r.input_tokens + r.gen
            if seqs + len(batch) >= self.max_num_seqs:
                break
            if batch and tokens + need > self.max_num_batched_tokens:
                break
            if not self._kv_fits(held + need, seqs + len(batch) + 1, True):
                if not batch:
                    self.host.kv_full(self.inst)
                    if self._kv_fits(held + need, seqs + 1, True):
                        continue
                break
            waiting.popleft()
            batch.append(r)
            tokens += need
            held += need
            sq += need * need
        if not batch:
            return False
        now = self.host.now_s
        self.prefilling = batch
        self.held_tokens += tokens
        self.iter_kind = PREFILL
        self.iter_start_s = now
        self.iter_end_s = now + self.perf.prefill_s(tokens, len(batch), sq) / self.compute_share
        self.busy = True
        self.version += 1
        self.host.push(self.iter_end_s, self._on_iteration_done, self.version)
        return True

    def _plan_chunked(self) -> bool:
        b = len(self.running)
        budget = max(1, self.chunk_budget - b)
        chunks: list[int] = []
        sq = 0.0
        for r in self.prefilling:  # continue partly prefilled prompts first
            if budget <= 0:
                break
            c = min(budget, r.input_tokens + r.gen - r.prefilled)
            chunks.append(c)
            sq += c * (2 * r.prefilled + c)
            budget -= c
        held = self.ctx_tokens + self.held_tokens
        while self.waiting and budget > 0:
            r = self.waiting[0]
            need = r.input_tokens + r.gen
            if self.num_running >= self.max_num_seqs:
                break
            if not self._kv_fits(held + need, self.num_running + 1, True):
                self.host.kv_full(self.inst)
                if not self._kv_fits(held + need, self.num_running + 1, True):
                    break
            self.waiting.popleft()
            self.prefilling.append(r)
            self.held_tokens += need
            held += need
            c = min(budget, need)
            chunks.append(c)
            sq += c * c
            budget -= c
        if not chunks:
            return False
        chunks.extend([0] * (len(self.prefilling) - len(chunks)))
        self.chunk_tokens = chunks
        ptok = sum(chunks)
        pseqs = sum(1 for c in chunks if c)
        now = self.host.now_s
        self.iter_kind = MIXED
        self.mixed_decode_seqs = b
        self.iter_start_s = now
        self.iter_end_s = now + self.perf.mixed_s(ptok, pseqs, sq, b, self.ctx_tokens) / self.compute_share
        self.busy = True
        self.version += 1
        self.host.push(self.iter_end_s, self._on_iteration_done, self.version)
        return True

    # ------------------------------------------------------------------ iteration end
    def _on_iteration_done(self, version: int) -> None:
        if version != self.version or not self.busy:
            return
        self.busy = False
        kind = self.iter_kind
        if kind == PREFILL:
            batch = self.prefilling
            self.prefilling = []
            for r in batch:
                self.held_tokens -= r.input_tokens + r.gen
                self._join(r, self.iter_start_s)
        elif kind == DECODE:
            self.step += self.stretch_steps
            self.ctx_tokens += self.stretch_steps * self.stretch_seqs
            self._pop_finished()
        else:  # MIXED
            if self.mixed_decode_seqs:
                self.step += 1
                self.ctx_tokens += self.mixed_decode_seqs
                self._pop_finished()
            still = []
            for r, c in zip(self.prefilling, self.chunk_tokens):
                r.prefilled += c
                if r.prefilled >= r.input_tokens + r.gen:
                    self.held_tokens -= r.input_tokens + r.gen
                    r.prefilled = 0
                    self._join(r, self.iter_start_s)
                else:
                    still.append(r)
            self.prefilling = still
        if self.inst.state == READY:
            self._next_iteration()

    def _join(self, r: Request, prefill_started_s: float) -> None:
        """A request's prefill finished: it has a token and joins the running batch (or is done)."""
        r.gen += 1
        if r.first_token_s != r.first_token_s:  # NaN: first time
            now = self.host.now_s
            r.first_token_s = now
            r.prefill_s = now - prefill_started_s
        if r.gen >= r.n_out:
            self._finish(r, ok=True)
            return
        r.join_step = self.step
        self.running[r] = None
        self.ctx_tokens += r.input_tokens + r.gen
        heapq.heappush(self.finish_heap, (self.step + r.n_out - r.gen, r.id, r, r.epoch))

    def _pop_finished(self) -> None:
        """Finish every running request whose last token came at or before the current step."""
        heap = self.finish_heap
        step = self.step
        running = self.running
        while heap and heap[0][0] <= step:
            fs, _, r, epoch = heapq.heappop(heap)
            if epoch != r.epoch or r not in running:
                continue
            del running[r]
            self.ctx_tokens -= r.input_tokens + r.gen + (step - r.join_step)
            r.gen += step - r.join_step
            self._finish(r, ok=True)

    def _preempt(self) -> None:
        """Recompute preemption of the newest running request (vLLM's LIFO victim)."""
        victim = next(reversed(self.running))
        del self.running[victim]
        gen = victim.gen + self.step - victim.join_step
        self.ctx_tokens -= victim.input_tokens + gen
        victim.gen = gen
        victim.epoch += 1
        self.waiting.appendleft(victim)
        self.preemptions += 1
        inst = self.inst
        self.host.log("preempt", inst.model, inst.gpus,
                      fields={"id": inst.id, "request": victim.id, "tokens": victim.input_tokens + gen})

    def _finish(self, r: Request, ok: bool) -> None:
        r.end_s = self.host.now_s
        if not ok:
            r.gen = 0
        self.host.request_done(self.inst, r)
