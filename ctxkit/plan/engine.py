"""A discrete-event model of one vLLM instance (simpy): its scheduler as vLLM v1 runs it, one engine step at a time.

Each step the scheduler spends a token budget (max_num_batched_tokens): first on the running requests in the order
they were admitted (a decode token each, or the next chunk of a prompt), then on waiting requests, first come first
served, while the budget, max_num_seqs and free KV blocks allow. A running request that needs a block when none is
free preempts the request admitted last (its KV is dropped and recomputed later, vLLM's recompute preemption). A
step takes what the calibration's step cost says for the tokens it carries (ctxkit.plan.costs.StepCost); at its end
every request whose tokens were all computed emits one token.

Roles: `both` (an aggregated server), `prefill` (a disaggregated prefill server: max_tokens=1, its KV leaves when
the prompt is done) and `decode` (requests arrive with their prompt's KV loaded but the last token, as vLLM's
decode servers receive them through a KV connector, and compute that token first).
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any, Generator, Optional

import simpy

from ctxkit.plan.costs import EngineLimits, StepCost


@dataclass(eq=False)                        # identity: a job is in a list or not, whatever its counts
class Job:
    """One request's passage through an instance; times are seconds on the simulation's clock."""
    index: int
    prompt: int
    output: int
    arrival_s: float
    computed: int = 0                       # tokens whose KV this instance holds
    generated: int = 0
    blocks: int = 0
    first_token_s: Optional[float] = None
    last_token_s: Optional[float] = None
    preempted: int = 0
    done: Optional[simpy.Event] = field(default=None, repr=False)

    @property
    def pending(self) -> int:
        """Tokens to compute before the next token comes out: the rest of the prompt, or the last token sampled."""
        return self.prompt + self.generated - self.computed

    def tpot_s(self) -> Optional[float]:
        if self.first_token_s is None or self.last_token_s is None or self.generated < 2:
            return None
        return (self.last_token_s - self.first_token_s) / (self.generated - 1)


@dataclass
class Batch:
    """What one step carries, in the terms its cost is counted in."""
    chunks: list[tuple[Job, int]] = field(default_factory=list)
    prefill_tokens: int = 0
    attention: float = 0.0                  # sum over prompt chunks of n (2 x computed + n): L^2 for one whole prompt
    decode_seqs: int = 0
    kv_tokens: int = 0                      # context the decode tokens read

    def add(self, job: Job, n: int) -> None:
        self.chunks.append((job, n))
        if n == 1 and job.computed > 0:
            self.decode_seqs += 1
            self.kv_tokens += job.computed + 1
        else:
            self.prefill_tokens += n
            self.attention += n * (2.0 * job.computed + n)


class Instance:
    """One vLLM server on the simulation's clock. `submit(job)` queues a request; `job.done` fires when it leaves."""

    def __init__(self, env: simpy.Environment, cost: StepCost, limits: EngineLimits, role: str = "both") -> None:
        if role not in ("both", "prefill", "decode"):
            raise ValueError(f"role {role!r}: one of both, prefill, decode")
        self.env, self.cost, self.limits, self.role = env, cost, limits, role
        self.free_blocks = limits.kv_capacity_tokens // limits.block_size
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        self.steps = 0
        self.dropped: list[Job] = []        # prompts larger than the whole KV cache: vLLM rejects them
        self._wake: simpy.Event = env.event()
        env.process(self._loop())

    def submit(self, job: Job) -> simpy.Event:
        """Queue a request; the event fires when it leaves (finished, or dropped as too large for the cache)."""
        done = job.done = self.env.event()
        if self.role == "decode":
            job.computed = job.prompt - 1
        if self._blocks_for(job, job.pending if self.role == "decode" else 1) > self.total_blocks:
            self.dropped.append(job)
            done.succeed()
            return done
        self.waiting.append(job)
        if not self._wake.triggered:
            self._wake.succeed()
        return done

    @property
    def total_blocks(self) -> int:
        return self.limits.kv_capacity_tokens // self.limits.block_size

    def _blocks_for(self, job: Job, n: int) -> int:
        return math.ceil((job.computed + n) / self.limits.block_size) - job.blocks

    def _loop(self) -> Generator[simpy.Event, Any, None]:
        while True:
            if not self.running and not self.waiting:
                self._wake = self.env.event()
                yield self._wake
            batch = self._schedule()
            yield self.env.timeout(self.cost.step_s(batch.prefill_tokens, batch.attention, batch.decode_seqs,
                                                       batch.kv_tokens))
            self.steps += 1
            self._advance(batch)

    def _schedule(self) -> Batch:
        batch, budget = Batch(), self.limits.max_num_batched_tokens
        for job in list(self.running):
            if job.blocks == 0 and job.computed == 0 or budget <= 0:    # preempted by an earlier job of this step
                continue
            n = min(job.pending, budget)
            if not self._reserve(job, n):
                continue
            batch.add(job, n)
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.limits.max_num_seqs:
            job = self.waiting[0]
            n = min(job.pending, budget)
            if n < job.pending and not self.limits.chunked_prefill:
                break
            need = self._blocks_for(job, n)
            if need > self.free_blocks:
                break
            self.waiting.popleft()
            self.running.append(job)
            self.free_blocks -= need
            job.blocks += need
            batch.add(job, n)
            budget -= n
        return batch

    def _reserve(self, job: Job, n: int) -> bool:
        """Blocks for a running job's next n tokens, preempting from the back of the running list; False when
        the job itself was the one preempted."""
        need = self._blocks_for(job, n)
        while need > self.free_blocks:
            victim = self.running[-1]
            self._release(victim)
            self.running.pop()
            victim.computed, victim.preempted = 0, victim.preempted + 1
            self.waiting.appendleft(victim)
            if victim is job:
                return False
        self.free_blocks -= need
        job.blocks += need
        return True

    def _release(self, job: Job) -> None:
        self.free_blocks += job.blocks
        job.blocks = 0

    def _advance(self, batch: Batch) -> None:
        now = self.env.now
        for job, n in batch.chunks:
            job.computed += n
            if job.pending:
                continue                                        # a prompt chunk short of the prompt's end
            job.generated += 1
            if job.first_token_s is None:
                job.first_token_s = now
            job.last_token_s = now
            if job.generated >= job.output or self.role == "prefill":
                self._release(job)
                self.running.remove(job)
                assert job.done is not None
                job.done.succeed()
