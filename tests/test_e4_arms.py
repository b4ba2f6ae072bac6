"""Each E4 arm at its best: a topology's own env and flags reach its servers alone, the table says what each arm ran,
and a run that sets an eager arm beside a compiled one fails a check saying so."""
from __future__ import annotations

import shutil

from ctxkit.experiments.e4_goodput import arm_config, arms_alike, topologies
from ctxkit.params import resolve
from ctxkit.schedulers.kv_store import block_size_of
from ctxkit.schedulers.topology import build_pool


def test_a_gpu_profiles_disaggregated_arm_runs_cross_layer_blocks_on_the_v1_runner():
    params = resolve("e4_goodput", "h100x2-llama8b-nixl")
    agg, disagg = topologies(params)
    assert "cross-layer blocks; V1 model runner" in arm_config(params, disagg)
    assert "V1 model runner" not in arm_config(params, agg) and "compiled" in arm_config(params, agg)
    assert arms_alike(params)["passed"]


def test_a_topologys_env_and_flags_reach_its_servers_alone(tmp_path):
    params = resolve("e4_goodput", "cpu-tiny", sets=[
        'topologies=[{"kind": "aggregated", "replicas": 1}, {"kind": "disaggregated", "connector": "example", '
        '"env": {"X_ARM": "1"}, "extra_args": ["--block-size", "256"]}]', 'server.extra_args=["--block-size", "128"]'])
    agg, disagg = (build_pool(params.server, spec, seed=0, log_dir=tmp_path) for spec in topologies(params))
    assert all("X_ARM" not in s.env and s.extra_args[-2:] == ["--block-size", "128"] for s in agg.servers)
    assert all(s.env["X_ARM"] == "1" for s in disagg.servers)
    assert disagg.block_size == 256 == block_size_of(["--block-size", "128", "--block-size", "256"], "cpu")
    assert "block 256" in arm_config(params, topologies(params)[1])
    eq = topologies(params)[1].model_copy(update={"extra_args": ["--block-size=64"]})
    assert "block 64" in arm_config(params, eq)
    shutil.rmtree(disagg.storage)           # ExampleConnector's folder, made when the pool is (never started here)


def test_an_eager_arm_beside_a_compiled_one_fails_the_check():
    params = resolve("e4_goodput", "h100x2-llama8b-nixl", sets=[
        'topologies=[{"kind": "aggregated", "replicas": 2}, {"kind": "disaggregated", "connector": "nixl", '
        '"extra_args": ["--enforce-eager"]}]'])
    got = arms_alike(params)
    assert not got["passed"] and "1P1D nixl eager" in got["reason"] and "compared with a compiled one" in got["reason"]


def test_a_servers_role_comes_from_its_pools_record_not_its_name(tmp_path):
    from ctxkit.experiments.e4_goodput import _role
    params = resolve("e4_goodput", "cpu-tiny", sets=[
        'topologies=[{"kind": "aggregated", "replicas": 2, "name": "prefill-heavy"}, '
        '{"kind": "disaggregated", "connector": "example"}]'])
    agg, disagg = (build_pool(params.server, spec, seed=0, log_dir=tmp_path) for spec in topologies(params))
    assert [_role(s.name, agg.placement) for s in agg.servers] == ["aggregated", "aggregated"]
    assert sorted(_role(s.name, disagg.placement) for s in disagg.servers) == ["decode", "prefill"]
    shutil.rmtree(disagg.storage)


def test_default_probes_are_sized_by_time_under_poisson_arrivals_and_by_the_window_on_a_trace():
    from ctxkit.load.search import SearchPolicy
    poisson = SearchPolicy.of(resolve("e4_goodput", "cpu-tiny", sets=["search={}"]).search, seed=0)
    trace = SearchPolicy.of(resolve("e4_goodput", "cpu-tiny", sets=["search={}", "search.arrival=trace",
                                                                    "workload.dataset=trace",
                                                                    "workload.dataset_path=tests/data/fresh_trace.jsonl"]
                                    ).search, seed=0)
    assert (poisson.warmup_s, poisson.min_duration_s) == (3.0, 6.0)
    assert (trace.warmup_s, trace.min_duration_s) == (0.0, 0.0)
