"""A discrete-event model of one vLLM instance (simpy): its scheduler as vLLM v1 runs it, one engine step at a time.

Each step the scheduler spends a token budget (max_num_batched_tokens): first on the running requests in the order
they were admitted (a decode token each, or the next chunk of a prompt), then on waiting requests, first come first
served, while the budget, max_num_seqs and free KV blocks allow (a request is admitted only when its whole sequence
fits the free blocks, though blocks are taken chunk by chunk). A running request that needs a block when none is
free preempts the request admitted last (its KV is dropped and recomputed later, vLLM's recompute preemption), and
nobody is admitted in that step. With async scheduling (vLLM's default on GPUs) a request arriving during a step
waits one more; a decode server sees arrived KV one step later still (it polls its connector after each step; an
idle one polls at once). A
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
    not_before: int = 0                     # the engine's completed steps before it may be admitted
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

    def __init__(self, env: simpy.Environment, cost: StepCost, limits: EngineLimits, role: str = "both",
                 fast_forward: bool = True) -> None:
        if role not in ("both", "prefill", "decode"):
            raise ValueError(f"role {role!r}: one of both, prefill, decode")
        self.env, self.cost, self.limits, self.role = env, cost, limits, role
        self.fast_forward = fast_forward
        self.free_blocks = limits.kv_capacity_tokens // limits.block_size
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        self.steps = 0
        self.busy = False                   # a step is running
        self.preemptions = 0
        self.dropped: list[Job] = []        # prompts larger than the whole KV cache: vLLM rejects them
        self._wake: simpy.Event = env.event()
        env.process(self._loop())

    def submit(self, job: Job) -> simpy.Event:
        """Queue a request; the event fires when it leaves (finished, or dropped as too large for the cache)."""
        done = job.done = self.env.event()
        if self.role == "decode":
            job.computed = job.prompt - 1
        too_long = not self.limits.chunked_prefill and job.prompt > self.limits.max_num_batched_tokens
        if too_long or math.ceil((job.prompt + job.output) / self.limits.block_size) > self.total_blocks:
            self.dropped.append(job)
            done.succeed()
            return done
        # arriving while a step runs, a request is seen when the next is scheduled; with async scheduling that one
        # was scheduled already, so one step later; a decode server also learns that a request's KV has arrived
        # only when it polls its connector, after a step
        delay = self.limits.async_scheduling + (self.role == "decode") if self.busy else 0
        job.not_before = self.steps + self.busy + delay
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
            if not batch.chunks:                                # only requests not yet seen: nothing else to do
                for job in self.waiting:
                    job.not_before = 0
                batch = self._schedule()
            if not batch.chunks:                                # nothing can run until something arrives
                self._wake = self.env.event()
                yield self._wake
                continue
            self.busy = True
            first = self.cost.step_s(batch.prefill_tokens, batch.attention, batch.decode_seqs, batch.kv_tokens)
            steps = self._decode_run(batch, first) if self.fast_forward else 1
            # steps of decodes alone: the KV each reads grows by one token a request a step
            growth = self.cost.per_kv_token_ms * batch.decode_seqs / 1e3
            yield self.env.timeout(steps * first + growth * steps * (steps - 1) / 2)
            self.steps += steps
            self.busy = False
            self._advance(batch, steps)

    def _decode_run(self, batch: Batch, first_s: float) -> int:
        """How many steps alike can be taken at once: a batch of decodes alone, nothing waiting, nothing arriving
        (the next event on the clock), no request finishing and no block missing before the last of them. The
        model is the same step by step (tests/test_plan_model.py); this is only faster, by a factor of the steps
        a request decodes between arrivals."""
        if batch.prefill_tokens or self.waiting or first_s <= 0 or any(job.generated == 0 for job, _ in batch.chunks):
            return 1                                            # (a first token is timed by its own step)
        room = self.env.peek() - self.env.now
        growth = self.cost.per_kv_token_ms * batch.decode_seqs / 1e3
        # the most steps whose total time, steps x first + growth x steps (steps - 1) / 2, fits before the next event
        if growth > 0:
            a = first_s - growth / 2
            steps = int((-a + math.sqrt(a * a + 2 * growth * room)) / growth) if room < math.inf else 1 << 30
        else:
            steps = int(room / first_s) if room < math.inf else 1 << 30
        steps = min(steps, min(job.output - job.generated for job, _ in batch.chunks))
        while steps > 1 and sum(self._blocks_for(job, steps) for job, _ in batch.chunks) > self.free_blocks:
            steps //= 2
        return max(1, steps)

    def _schedule(self) -> Batch:
        batch, budget, preemptions = Batch(), self.limits.max_num_batched_tokens, self.preemptions
        for job in list(self.running):
            if job.blocks == 0 and job.computed == 0 or budget <= 0:    # preempted by an earlier job of this step
                continue
            n = min(job.pending, budget)
            if not self._reserve(job, n):
                continue
            batch.add(job, n)
            budget -= n
        preempted = self.preemptions > preemptions       # vLLM admits nobody in a step that preempted
        while self.waiting and budget > 0 and len(self.running) < self.limits.max_num_seqs and not preempted:
            job = self.waiting[0]
            n = min(job.pending, budget)
            if n < job.pending and not self.limits.chunked_prefill or job.not_before > self.steps:
                break
            # vLLM admits a request only when its whole sequence fits the free blocks (scheduler_reserve_full_isl),
            # though it allocates them chunk by chunk
            if self._blocks_for(job, job.prompt + job.generated - job.computed) > self.free_blocks:
                break
            need = self._blocks_for(job, n)
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
            self.preemptions += 1
            self.waiting.appendleft(victim)
            if victim is job:
                return False
        self.free_blocks -= need
        job.blocks += need
        return True

    def _release(self, job: Job) -> None:
        self.free_blocks += job.blocks
        job.blocks = 0

    def _advance(self, batch: Batch, steps: int = 1) -> None:
        now = self.env.now
        if steps > 1:                                           # a run of decode steps: the blocks it grew into
            for job, _ in batch.chunks:
                extra = self._blocks_for(job, steps)
                self.free_blocks -= extra
                job.blocks += extra
        for job, n in batch.chunks:
            job.computed += n + steps - 1
            if job.pending > 0:
                continue                                        # a prompt chunk short of the prompt's end
            job.generated += steps
            if job.first_token_s is None:
                job.first_token_s = now
            job.last_token_s = now
            if job.generated >= job.output or self.role == "prefill":
                self._release(job)
                self.running.remove(job)
                assert job.done is not None
                job.done.succeed()
