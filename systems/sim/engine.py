"""The engine model: vLLM-like continuous batching of one instance, in as few events as possible.

At every iteration boundary: prefill-first (admit waiting requests while seats, the token budget
and KV allow; one prefill iteration gives each its first token); else one decode *stretch*: the
unchanged batch runs k decode steps in ONE event, k = steps until the next request finishes or
KV runs out, timed in closed form (a decode step costs `a + s * context`, so k steps cost
`k a + s (k c0 + b k (k - 1) / 2)`). A dispatch that can be admitted cuts the stretch at the end
of the step in progress. When KV runs out, the policy's `on_kv_full` hook may grow the cache;
otherwise the newest running request is preempted and later recomputed. KV is counted in tokens
with the bound `ceil(tokens / block_size) + seqs` blocks. With `chunked_prefill_tokens` set,
iterations mix one decode token per running request with prefill chunks up to that budget.
"""

from __future__ import annotations

import heapq
import math
from heapq import heappush

from systems.sim.entities import READY, Instance, Request


class Engine:
    """Mixin of core.Simulator: the per-instance scheduler and its events."""

    def _kick(self, inst: Instance) -> None:
        """Run the scheduler of an idle ready instance at the current time (once per instant)."""
        if inst.kick_pending or inst.busy or inst.state != READY:
            return
        inst.kick_pending = True
        self._push(self.now_s, self._on_kick, inst)

    def _on_kick(self, inst: Instance) -> None:
        inst.kick_pending = False
        if not inst.busy and inst.state == READY:
            self._next_iteration(inst)

    def _kv_fits(self, inst: Instance, tokens: int, seqs: int, watermark: bool) -> bool:
        limit = inst.total_blocks - (inst.total_blocks // 100 if watermark else 0)
        return -(-tokens // inst.block_size) + seqs <= limit

    def _admissible(self, inst: Instance) -> bool:
        """Could the head of the waiting queue join the batch now?"""
        if inst.num_running >= inst.max_num_seqs:
            return False
        req = inst.waiting[0]
        need = req.input_tokens + req.gen
        return self._kv_fits(inst, inst.ctx_tokens + inst.held_tokens + need, inst.num_running + 1, True)

    def _interrupt(self, inst: Instance) -> None:
        """Cut a decode stretch at the end of the step in progress, so the scheduler runs then."""
        if not inst.busy or inst.iter_kind != "decode":
            return
        k, b, c0, a, s = inst.st_k, inst.st_b, inst.st_c0, inst.st_a, inst.st_s
        share = inst.compute_share_at_start
        elapsed = (self.now_s - inst.iter_start_s) * share
        # steps j with S(j) = j*a + s*(j*c0 + b*j*(j-1)/2) <= elapsed: solve the quadratic
        qa = s * b / 2.0
        qb = a + s * c0 - qa
        if qa > 0:
            j = (-qb + math.sqrt(qb * qb + 4 * qa * elapsed)) / (2 * qa)
        else:
            j = elapsed / qb
        kk = min(k, max(0, math.ceil(j - 1e-12)))
        end = inst.iter_start_s + self._stretch_s(kk, a, s, c0, b) / share
        while end < self.now_s and kk < k:
            kk += 1
            end = inst.iter_start_s + self._stretch_s(kk, a, s, c0, b) / share
        if kk >= k:
            return
        inst.st_k = kk
        inst.iter_end_s = end
        inst.version += 1
        self._push(end, self._on_iteration_done, (inst, inst.version))

    @staticmethod
    def _stretch_s(k: int, a: float, s: float, c0: int, b: int) -> float:
        return k * a + s * (k * c0 + b * k * (k - 1) / 2.0)

    def _next_iteration(self, inst: Instance) -> None:
        now = self.now_s
        perf = inst.perf
        if inst.waiting or inst.prefilling:
            if self.chunk_budget > 0:
                if self._plan_chunked(inst):
                    return
            elif self._plan_prefill(inst):
                return
        running = inst.running
        if running:
            while True:
                b = len(running)
                heap = inst.finish_heap
                while True:  # the earliest live finish entry (stale ones are dropped lazily)
                    fs, _, r, epoch = heap[0]
                    if epoch == r.epoch and r in running:
                        break
                    heapq.heappop(heap)
                k_fin = fs - inst.step
                room = (inst.total_blocks - b) * inst.block_size - inst.ctx_tokens - inst.held_tokens
                k_kv = room // b if room >= 0 else -1
                if k_kv >= 1:
                    break
                self.policy.on_kv_full(self, inst)
                room = (inst.total_blocks - b) * inst.block_size - inst.ctx_tokens - inst.held_tokens
                if room // b >= 1:
                    continue
                self._preempt(inst)
                if not inst.running:
                    self._kick(inst)
                    return
            k = k_fin if k_fin < k_kv else k_kv
            a = perf.decode_fixed_s(b)
            s = perf.decode_ctx_slope_s
            c0 = inst.ctx_tokens
            inst.st_k, inst.st_b, inst.st_c0, inst.st_a, inst.st_s = k, b, c0, a, s
            share = inst.compute_share_at_start = inst.compute_share
            inst.iter_kind = "decode"
            inst.iter_start_s = now
            end = inst.iter_end_s = now + (k * a + s * (k * c0 + b * k * (k - 1) / 2.0)) / share
            inst.busy = True
            version = inst.version = inst.version + 1
            seq = self._seq = self._seq + 1
            heappush(self._heap, (end, seq, self._on_iteration_done, (inst, version)))
            return
        if inst.waiting and not inst.running and not inst.prefilling:
            # nothing runs and the head still cannot be admitted: it can never fit
            self._reject_head(inst)
            return
        if inst.draining and inst.in_flight == 0:
            self._finalize_stop(inst)

    def _reject_head(self, inst: Instance) -> None:
        self.policy.on_kv_full(self, inst)
        head = inst.waiting[0]
        if self._kv_fits(inst, head.input_tokens + head.gen, 1, True):   # as admission checks it
            self._kick(inst)
            return
        inst.waiting.popleft()
        head.error = f"prompt of {head.input_tokens + head.gen} tokens does not fit the KV cache ({inst.total_blocks} blocks)"
        self._finish(inst, head, ok=False)
        self._kick(inst)

    def _plan_prefill(self, inst: Instance) -> bool:
        batch = []
        tokens = 0
        sq = 0.0
        held = inst.ctx_tokens + inst.held_tokens
        seqs = len(inst.running)
        waiting = inst.waiting
        while waiting:
            r = waiting[0]
            need = r.input_tokens + r.gen
            if seqs + len(batch) >= inst.max_num_seqs:
                break
            if batch and tokens + need > inst.max_num_batched_tokens:
                break
            if not self._kv_fits(inst, held + need, seqs + len(batch) + 1, True):
                if not batch:
                    self.policy.on_kv_full(self, inst)
                    if self._kv_fits(inst, held + need, seqs + 1, True):
                        continue
                break
            waiting.popleft()
            batch.append(r)
            tokens += need
            held += need
            sq += need * need
        if not batch:
            return False
        inst.prefilling = batch
        inst.held_tokens += tokens
        inst.iter_kind = "prefill"
        inst.iter_start_s = self.now_s
        dur = inst.perf.prefill_s(tokens, len(batch), sq) / inst.compute_share
        inst.iter_end_s = self.now_s + dur
        inst.busy = True
        inst.version += 1
        self._push(inst.iter_end_s, self._on_iteration_done, (inst, inst.version))
        return True

    def _plan_chunked(self, inst: Instance) -> bool:
        b = len(inst.running)
        budget = max(1, self.chunk_budget - b)
        chunks: list[int] = []
        sq = 0.0
        for r in inst.prefilling:  # continue partly prefilled prompts first
            if budget <= 0:
                break
            c = min(budget, r.input_tokens + r.gen - r.prefilled)
            chunks.append(c)
            sq += c * (2 * r.prefilled + c)
            budget -= c
        held = inst.ctx_tokens + inst.held_tokens
        while inst.waiting and budget > 0:
            r = inst.waiting[0]
            need = r.input_tokens + r.gen
            if inst.num_running >= inst.max_num_seqs:
                break
            if not self._kv_fits(inst, held + need, inst.num_running + 1, True):
                self.policy.on_kv_full(self, inst)
                if not self._kv_fits(inst, held + need, inst.num_running + 1, True):
                    break
            inst.waiting.popleft()
            inst.prefilling.append(r)
            inst.held_tokens += need
            held += need
            c = min(budget, need)
            chunks.append(c)
            sq += c * c
            budget -= c
        if not chunks:
            return False
        chunks.extend([0] * (len(inst.prefilling) - len(chunks)))
        inst.chunk_tokens = chunks
        ptok = sum(chunks)
        pseqs = sum(1 for c in chunks if c)
        dur = inst.perf.mixed_s(ptok, pseqs, sq, b, inst.ctx_tokens) / inst.compute_share
        inst.iter_kind = "mixed"
        inst.st_b = b
        inst.iter_start_s = self.now_s
        inst.iter_end_s = self.now_s + dur
        inst.busy = True
        inst.version += 1
        self._push(inst.iter_end_s, self._on_iteration_done, (inst, inst.version))
        return True

    def _join(self, inst: Instance, r: Request, prefill_started_s: float) -> None:
        """A request's prefill finished: it has a token and joins the running batch (or is done)."""
        now = self.now_s
        r.gen += 1
        if r.first_token_s != r.first_token_s:  # NaN: first time
            r.first_token_s = now
            r.prefill_s = now - prefill_started_s
        ctx = r.input_tokens + r.gen
        if r.gen >= r.n_out:
            self._finish(inst, r, ok=True)
            return
        r.join_step = inst.step
        inst.running[r] = None
        inst.ctx_tokens += ctx
        heapq.heappush(inst.finish_heap, (inst.step + r.n_out - r.gen, r.id, r, r.epoch))

    def _on_iteration_done(self, arg: tuple) -> None:
        inst, version = arg
        if version != inst.version or not inst.busy:
            return
        inst.busy = False
        kind = inst.iter_kind
        if kind == "prefill":
            batch = inst.prefilling
            inst.prefilling = []
            for r in batch:
                inst.held_tokens -= r.input_tokens + r.gen
                self._join(inst, r, inst.iter_start_s)
        elif kind == "decode":
            k, b = inst.st_k, inst.st_b
            step = inst.step = inst.step + k
            inst.ctx_tokens += k * b
            heap = inst.finish_heap
            running = inst.running
            while heap and heap[0][0] <= step:
                fs, _, r, epoch = heapq.heappop(heap)
                if epoch != r.epoch or r not in running:
                    continue
                del running[r]
                inst.ctx_tokens -= r.input_tokens + r.gen + (step - r.join_step)
                r.gen += step - r.join_step
                self._finish(inst, r, ok=True)
        else:  # mixed
            if inst.st_b:
                inst.step += 1
                inst.ctx_tokens += inst.st_b
                self._pop_finished(inst)
            still = []
            for r, c in zip(inst.prefilling, inst.chunk_tokens):
                r.prefilled += c
                if r.prefilled >= r.input_tokens + r.gen:
                    inst.held_tokens -= r.input_tokens + r.gen
                    r.prefilled = 0
                    self._join(inst, r, inst.iter_start_s)
                else:
                    still.append(r)
            inst.prefilling = still
        if inst.state == READY:
            self._next_iteration(inst)

    def _pop_finished(self, inst: Instance) -> None:
        heap = inst.finish_heap
        step = inst.step
        while heap and heap[0][0] <= step:
            fs, _, r, epoch = heapq.heappop(heap)
            if epoch != r.epoch or r not in inst.running:
                continue
            del inst.running[r]
            inst.ctx_tokens -= r.input_tokens + r.gen + (step - r.join_step)
            r.gen += step - r.join_step
            self._finish(inst, r, ok=True)

    def _preempt(self, inst: Instance) -> None:
        """Recompute preemption of the newest running request (vLLM's LIFO victim)."""
        victim = next(reversed(inst.running))
        del inst.running[victim]
        gen = victim.gen + inst.step - victim.join_step
        inst.ctx_tokens -= victim.input_tokens + gen
        victim.gen = gen
        victim.epoch += 1
        inst.waiting.appendleft(victim)
        inst.preemptions += 1
        self.log("preempt", inst.model, inst.gpus, f"id={inst.id} request={victim.id} tokens={victim.input_tokens + gen}")

    def _finish(self, inst: Instance, r: Request, ok: bool) -> None:
        r.end_s = self.now_s
        if not ok:
            r.gen = 0
        inst.in_flight -= 1
        self._finished += 1
        self._open[r.model] -= 1
        self.policy.on_finished(self, r, inst)
        if inst.draining and inst.in_flight == 0 and not inst.busy:
            self._finalize_stop(inst)
