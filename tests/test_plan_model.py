"""The placement model (ctxkit.plan): the engine model's scheduler keeps vLLM's limits and its costs add up where
they can be worked out by hand; one instance per pool stands for the whole placement; the fits recover known
coefficients; the plan lists every placement, best first; `ctxkit plan` answers from a calibration file."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import simpy

from ctxkit.plan.costs import Calibration, EngineLimits, LinearFit, Transfer, fit_linear
from ctxkit.plan.engine import Instance, Job
from ctxkit.plan.placements import Placement, Slo, Workload, attainment, attainment_full, goodput
from ctxkit.plan.planner import _best_split, plan, render

from conftest import run_cli


def fit(terms: list[str], coef: list[float]) -> LinearFit:
    return LinearFit(terms=terms, coef=coef, cov=np.diag([(0.01 * c) ** 2 for c in coef]).tolist(),
                     residual_sd=0.0, r2=1.0, points=10)


def calibration(kv_tokens: int = 400_000, budget: int = 2048, seqs: int = 64) -> Calibration:
    """Costs of the order one H100 shows for an 8B model (ms): prefill 8 + 0.024 L, a decode step 5 + 0.02 a
    sequence + 2.5e-5 a KV token read."""
    return Calibration(model="llama-3.1-8b", device="test", engine="vLLM (test)",
                       limits=EngineLimits(max_num_seqs=seqs, max_num_batched_tokens=budget,
                                           kv_capacity_tokens=kv_tokens, block_size=16),
                       prefill=fit(["one", "L", "L2"], [8.0, 0.024, 1e-7]),
                       decode=fit(["one", "seqs", "kv_tokens"], [5.0, 0.02, 2.5e-5]),
                       transfer=Transfer(kv_bytes_per_token=131072, per_handoff_ms=5, gb_per_s=50, source="test"))


def run_jobs(cal: Calibration, jobs: list[Job], role: str = "both", check=None, fast_forward: bool = True) -> Instance:
    env = simpy.Environment()
    inst = Instance(env, cal.step_cost(), cal.limits, role, fast_forward=fast_forward)
    if check is not None:
        schedule = inst._schedule

        def checked():
            batch = schedule()
            check(inst, batch)
            return batch
        inst._schedule = checked

    def arrive():
        for job in jobs:
            yield env.timeout(max(0.0, job.arrival_s - env.now))
            inst.submit(job)
    env.process(arrive())
    env.run(until=1e4)
    return inst


def test_one_request_alone_costs_what_the_fits_say():
    """A prompt within the budget is one step; each decode step reads the prompt and the tokens so far."""
    cal = calibration()
    step = cal.step_cost()
    job = Job(0, prompt=1000, output=4, arrival_s=0.0)
    run_jobs(cal, [job])
    prefill_ms = step.base_ms + 0.024 * 1000 + 1e-7 * 1000 ** 2
    assert job.first_token_s * 1e3 == pytest.approx(prefill_ms)
    decodes = [step.base_ms + 0.02 + 2.5e-5 * (1000 + k) for k in (1, 2, 3)]
    assert (job.last_token_s - job.first_token_s) * 1e3 == pytest.approx(sum(decodes))
    assert step.request_overhead_ms == pytest.approx(8.0 - 5.0)


def test_a_long_prompt_is_chunked_by_the_token_budget():
    """5,000 tokens with a 2,048-token budget: three steps, whose attention terms add up to the whole prompt's."""
    cal = calibration(budget=2048)
    job = Job(0, prompt=5000, output=1, arrival_s=0.0)
    inst = run_jobs(cal, [job])
    assert inst.steps == 3
    step = cal.step_cost()
    expected = 3 * step.base_ms + 0.024 * 5000 + 1e-7 * 5000 ** 2
    assert job.first_token_s * 1e3 == pytest.approx(expected)


def test_the_scheduler_keeps_vllms_limits_and_every_request_finishes():
    """Overload with a KV cache too small for everyone: budget, max_num_seqs and free blocks hold at every step,
    requests are preempted, and all of them finish with all their tokens."""
    cal = calibration(kv_tokens=16 * 400, budget=1024, seqs=16)
    seen = {"steps": 0}

    def check(inst: Instance, batch) -> None:
        seen["steps"] += 1
        assert sum(n for _, n in batch.chunks) <= cal.limits.max_num_batched_tokens
        assert len(inst.running) <= cal.limits.max_num_seqs
        assert 0 <= inst.free_blocks <= inst.total_blocks
        assert inst.free_blocks + sum(j.blocks for j in inst.running) == inst.total_blocks
    rng = np.random.default_rng(0)
    jobs = [Job(i, int(rng.integers(100, 600)), int(rng.integers(20, 200)), float(t))
            for i, t in enumerate(np.cumsum(rng.exponential(0.005, 120)))]
    run_jobs(cal, jobs, check=check)
    assert seen["steps"] > 100
    assert all(j.generated == j.output and j.done.triggered for j in jobs)
    assert sum(j.preempted for j in jobs) > 0


@pytest.mark.parametrize("role", ["both", "decode"])
def test_decode_runs_taken_at_once_are_the_same_as_step_by_step(role):
    """The engine takes runs of decode-only steps in one jump; every token time and step count must be what the
    step-by-step model gives, KV blocks and preemption included."""
    cal = calibration(kv_tokens=16 * 300, budget=1024, seqs=16)
    rng = np.random.default_rng(2)
    shape = [(int(rng.integers(50, 500)), int(rng.integers(2, 150)), float(t))
             for t in np.cumsum(rng.exponential(0.02, 150))]
    runs = {}
    for ff in (False, True):
        jobs = [Job(i, p, o, t) for i, (p, o, t) in enumerate(shape)]
        inst = run_jobs(cal, jobs, role=role, fast_forward=ff)
        runs[ff] = (inst.steps, [(j.first_token_s, j.last_token_s, j.generated, j.preempted) for j in jobs])
    assert runs[True][0] == runs[False][0]
    for fast, slow in zip(runs[True][1], runs[False][1]):
        assert fast[2:] == slow[2:] and fast[0] == pytest.approx(slow[0]) and fast[1] == pytest.approx(slow[1])


def test_a_decode_server_computes_one_token_then_decodes():
    """Arriving with its prompt's KV but the last token, a request's first step is a one-token decode step."""
    cal = calibration()
    job = Job(0, prompt=4096, output=3, arrival_s=0.0)
    run_jobs(cal, [job], role="decode")
    step = cal.step_cost()
    assert job.first_token_s * 1e3 == pytest.approx(step.base_ms + 0.02 + 2.5e-5 * 4096)


@pytest.mark.parametrize("placement", [Placement(replicas=2), Placement(prefill=1, decode=1)],
                         ids=lambda p: p.name)
def test_one_instance_per_pool_stands_for_the_placement(placement):
    """The shortcut (one instance of each pool, Erlang gaps) against every instance simulated, below the goodput
    the shortcut finds and at it (where the prefill server runs at 95% of its capacity: runs of a few thousand
    requests differ by several points there, so the tolerance)."""
    cal, w, slo = calibration(), Workload(input_len=2048, output_len=64), Slo(ttft_ms=600, tpot_ms=20)
    rate = goodput(placement, cal, w, slo, requests=2000)
    for r, tolerance in ((0.8 * rate, 0.03), (rate, 0.08)):
        short = attainment(placement, cal, w, slo, r, requests=4000, seed=3)
        full = attainment_full(placement, cal, w, slo, r, requests=4000, seed=3)
        assert short == pytest.approx(full, abs=tolerance), (r, short, full)


def test_goodput_is_where_attainment_crosses_the_target():
    cal, w, slo = calibration(), Workload(input_len=1024, output_len=32), Slo(ttft_ms=300, tpot_ms=15)
    p = Placement(replicas=1)
    g = goodput(p, cal, w, slo, target=0.9, requests=400)
    assert attainment(p, cal, w, slo, g, requests=400) >= 0.9
    assert attainment(p, cal, w, slo, g * 1.02, requests=400) < 0.9


def test_least_squares_recovers_known_costs_and_their_spread():
    rng = np.random.default_rng(1)
    rows = [{"one": 1.0, "seqs": float(b), "kv_tokens": float(b * length)}
            for b in (1, 4, 16, 64) for length in (512, 2048, 8192) for _ in range(3)]
    y = [5.0 + 0.02 * r["seqs"] + 2.5e-5 * r["kv_tokens"] + rng.normal(0, 0.05) for r in rows]
    f = fit_linear(["one", "seqs", "kv_tokens"], rows, y)
    assert f["one"] == pytest.approx(5.0, abs=0.1) and f["kv_tokens"] == pytest.approx(2.5e-5, rel=0.05)
    assert f.residual_sd == pytest.approx(0.05, rel=0.4) and f.r2 > 0.99
    with pytest.raises(ValueError, match="measure more"):
        fit_linear(["one", "seqs", "kv_tokens"], rows[:3], y[:3])


def test_calibration_file_round_trip_and_an_older_schema(tmp_path):
    cal = calibration()
    path = cal.save(tmp_path / "calibration.json")
    assert Calibration.load(path) == cal
    data = json.loads(path.read_text())
    data["schema_version"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="calibrate again"):
        Calibration.load(path)


def test_the_split_search_finds_the_brute_force_best():
    """Above eight GPUs the splits are searched, not all modelled: on a unimodal goodput it must find the best."""
    for gpus, best in ((40, 29), (64, 7), (17, 16), (12, 1)):
        def rate_of(p: Placement, best=best) -> float:
            return 100.0 - (p.prefill - best) ** 2
        seen = _best_split(gpus, rate_of)
        assert max(seen, key=seen.get) == Placement(prefill=best, decode=gpus - best)
        assert len(seen) < gpus - 1


def test_a_plan_lists_every_placement_best_first():
    cal, w, slo = calibration(), Workload(input_len=2048, output_len=64), Slo(ttft_ms=600, tpot_ms=20)
    p = plan(cal, 4, w, slo, draws=2, requests=300)
    assert {r.placement.name for r in p.predicted} == {"aggregated x4", "1P3D", "2P2D", "3P1D"}
    per_gpu = [r.per_gpu for r in p.predicted]
    assert per_gpu == sorted(per_gpu, reverse=True)
    near = [r for r in p.predicted if r.per_gpu >= 0.8 * p.winner.per_gpu][:3]
    assert all(r.per_gpu_low is not None and r.per_gpu_low <= r.per_gpu_high for r in near)
    assert all(r.per_gpu_low is None for r in p.predicted if r not in near)
    assert "Winner:" in render(p)
    no_transfer = cal.model_copy(update={"transfer": None})
    assert [r.placement.name for r in plan(no_transfer, 4, w, slo, draws=0, requests=300).predicted] == \
        ["aggregated x4"]


def test_ctxkit_plan_answers_from_a_calibration_file(tmp_path):
    path = calibration().save(tmp_path / "calibration.json")
    result = run_cli("plan", "--calibration", str(path), "--gpus", "1,2", "--input-len", "2048", "--output-len", "64",
                     "--ttft-ms", "600", "--tpot-ms", "20", "--draws", "2", "--json", str(tmp_path / "plan.json"),
                     timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| aggregated x1 |" in result.stdout and "| 1P1D |" in result.stdout
    plans = json.loads((tmp_path / "plan.json").read_text())
    assert [p["gpus"] for p in plans] == [1, 2]
    bad = run_cli("plan", "--calibration", str(tmp_path / "missing.json"), "--input-len", "1", "--output-len", "1",
                  "--ttft-ms", "1", "--tpot-ms", "1")
    assert bad.returncode == 2 and "missing.json" in bad.stderr
    assert math.isfinite(plans[0]["predicted"][0]["goodput"])


def test_a_cost_that_fits_below_zero_is_dropped_not_kept():
    """Points from a line with no quadratic part, bent slightly down by noise: the L^2 term would come out
    negative (a step that costs less than nothing at long prompts); it is dropped and the line fitted alone."""
    rows = [{"one": 1.0, "L": float(n), "L2": float(n) ** 2} for n in (128, 256, 512, 1024, 2048)]
    y = [10.0 + 0.02 * r["L"] - 2e-7 * r["L2"] for r in rows]
    f = fit_linear(["one", "L", "L2"], rows, y)
    assert f["L2"] == 0.0 and f["L"] > 0 and f["one"] > 0
    assert f.cov[2] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("async_scheduling, role, wait", [(False, "both", 1), (True, "both", 2), (True, "decode", 3)])
def test_a_request_arriving_mid_step_waits_as_vllm_schedules(async_scheduling, role, wait):
    """Arriving while a step runs, a request is first computed in the next step (the one after with async
    scheduling, one more on a decode server, which learns of arrived KV when it polls): its first token comes at
    the end of that step."""
    cal = calibration()
    cal = cal.model_copy(update={"limits": cal.limits.model_copy(update={"async_scheduling": async_scheduling})})
    env = simpy.Environment()
    inst = Instance(env, cal.step_cost(), cal.limits, role, fast_forward=False)
    ends: list[float] = []
    schedule = inst._schedule

    def noting():
        ends.append(env.now)                # a step is scheduled when the one before ends
        return schedule()
    inst._schedule = noting
    long = Job(0, prompt=1000, output=200, arrival_s=0.0)
    late = Job(1, prompt=500, output=2, arrival_s=0.0)

    def arrive():
        inst.submit(long)
        yield env.timeout(ends_after_two_steps(cal))
        inst.submit(late)
    env.process(arrive())
    env.run(until=10)
    arrived_in = sum(t <= ends_after_two_steps(cal) for t in ends)        # the step running when it arrived
    assert late.first_token_s == pytest.approx(ends[arrived_in + wait - 1 + 1])


def ends_after_two_steps(cal: Calibration) -> float:
    """A time inside the long request's third step (a prefill step, then decode steps of about 5 ms)."""
    step = cal.step_cost()
    return (step.base_ms + 0.024 * 1000 + 1e-7 * 1000 ** 2 + 1.5 * step.base_ms) / 1e3


def test_a_request_waits_until_its_whole_sequence_fits():
    """vLLM admits a request only when blocks for its whole prompt are free, though it takes them chunk by chunk:
    a second long prompt waits for the first to finish rather than starting and being preempted."""
    cal = calibration(kv_tokens=16 * 200, budget=512, seqs=8)      # 3,200 tokens of KV
    first, second = Job(0, prompt=2000, output=20, arrival_s=0.0), Job(1, prompt=2000, output=20, arrival_s=0.0)
    run_jobs(cal, [first, second])
    assert second.first_token_s > first.last_token_s
    assert first.preempted == second.preempted == 0


def test_a_scaled_calibration_costs_that_many_times_more():
    cal = calibration()
    slow = cal.scaled(2.0).step_cost()
    fast = cal.step_cost()
    for field in ("base_ms", "per_prompt_token_ms", "per_attention_ms", "per_decode_seq_ms", "per_kv_token_ms",
                  "request_overhead_ms"):
        assert getattr(slow, field) == pytest.approx(2 * getattr(fast, field)), field


def test_drawn_fits_are_costs_and_scatter_around_the_fit():
    """Draws for the plan's ranges (a residual bootstrap, refitted as the fit was): every cost at least zero, the
    draws differ, and at a measured point they centre on the fit."""
    rng = np.random.default_rng(4)
    rows = [{"one": 1.0, "L": float(n), "L2": float(n) ** 2} for n in (128, 256, 512, 1024, 1536, 2048)]
    y = [10.0 + 0.02 * r["L"] + 1e-7 * r["L2"] + rng.normal(0, 1.0) for r in rows]
    f = fit_linear(["one", "L", "L2"], rows, y)
    draws = [f.drawn(g) for g in np.random.default_rng(5).spawn(400)]
    assert all(min(d.coef) >= 0 for d in draws)
    at_longest = [d.predict(rows[-1]) for d in draws]
    assert np.std(at_longest) > 0.1
    assert np.median(at_longest) == pytest.approx(f.predict(rows[-1]), rel=0.03)


def test_a_scaled_calibration_draws_around_its_own_costs():
    """Draws refit the fit's points: a scaled calibration must scale its points too, or its ranges are the
    unscaled server's."""
    rng = np.random.default_rng(7)
    rows = [{"one": 1.0, "L": float(n), "L2": float(n) ** 2} for n in (128, 256, 512, 1024, 1536, 2048)]
    y = [10.0 + 0.02 * r["L"] + 1e-7 * r["L2"] + rng.normal(0, 0.5) for r in rows]
    cal = calibration().model_copy(update={"prefill": fit_linear(["one", "L", "L2"], rows, y)})
    slow = cal.scaled(2.0)
    drawn = [slow.sample(g).prefill.predict(rows[-1]) for g in np.random.default_rng(8).spawn(200)]
    assert np.median(drawn) == pytest.approx(slow.prefill.predict(rows[-1]), rel=0.03)
