"""Attaching to a deployment ctxkit does not manage (backend: topology, issue 15): the topology file's own checks;
a dead instance or mixed models refused before anything is sent, naming the instance; `ctxkit bench --topology`
through a router in front of two simulated servers (marked simulated everywhere); and `ctxkit run e2_concurrency`
through ctxkit's router in front of two real vLLM servers, every instance scraped."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ctxkit import deployment
from ctxkit import params as P
from ctxkit.backends import AttachedTopology, Simulated, TopologyError
from ctxkit.backends.process import free_port
from ctxkit.schedulers.router import RouterProcess

from conftest import ROOT, profile_server, run_cli

SIM = {"CTXKIT_ALLOW_SIMULATED_BACKEND": "1"}


def write_topology(path: Path, entry: str, instances: list[dict], **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": "under-test", "entry_url": entry, "instances": instances, **extra}))
    return path


def router_over(servers, tmp_path: Path) -> RouterProcess:
    """ctxkit's router, round robin over servers started elsewhere (the deployment's gateway in this test)."""
    return RouterProcess({"mode": "aggregated", "model": servers[0].model, "policy": "round_robin",
                          "instances": {"pool": [{"name": s.name, "url": s.base_url} for s in servers]},
                          "route_log": str(tmp_path / "routes.jsonl"), "handoff_log": None},
                         name="gateway", log_dir=tmp_path)


def sim_requests(sim: Simulated) -> float:
    return float(next(line.split()[1] for line in sim.metrics().splitlines() if line.startswith("sim:requests_total")))


@pytest.mark.parametrize("instances, complaint", [
    ([{"name": "a", "role": "aggregated", "url": "http://h:1"}, {"name": "p", "role": "prefill", "url": "http://h:2"}],
     "do not mix"),
    ([{"name": "p", "role": "prefill", "url": "http://h:2"}], "needs a decode instance"),
    ([{"name": "a", "role": "aggregated", "url": "http://h:1"}, {"name": "a", "role": "aggregated",
                                                                 "url": "http://h:2"}], "names must differ"),
    ([{"name": "a", "role": "aggregated", "url": "h:1"}], "not an http(s) URL"),
    ([{"name": "a", "role": "router", "url": "http://h:1"}], "instances.0.role"),
    ([{"name": "a", "role": "aggregated", "url": "http://h:1", "gpus": 0}], "sum to 0"),
])
def test_a_topology_file_that_cannot_describe_a_deployment_is_refused(tmp_path, instances, complaint):
    path = write_topology(tmp_path / "t.yaml", "http://gw:8000", instances)
    with pytest.raises(deployment.TopologyFileError, match="topology file .*t.yaml") as err:
        deployment.load(path)
    assert complaint in str(err.value)


def test_the_parameters_name_the_topology_file_and_make_it_absolute(tmp_path, monkeypatch):
    with pytest.raises(P.ParamError, match="backend=topology needs topology_file"):
        P.resolve("e2_concurrency", sets=["backend=topology"])
    write_topology(tmp_path / "bad.yaml", "http://gw:8000", [{"name": "p", "role": "prefill", "url": "http://h:2"}])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(P.ParamError, match="topology_file: .*needs a decode instance"):
        P.resolve("e2_concurrency", sets=["backend=topology", "topology_file=bad.yaml"])
    write_topology(tmp_path / "good.yaml", "http://gw:8000", [{"name": "a", "role": "aggregated", "url": "http://h:1"}])
    params = P.resolve("e2_concurrency", sets=["backend=topology", "topology_file=good.yaml"])
    assert params.topology_file == str(tmp_path / "good.yaml")


def test_a_dead_instance_is_refused_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    runs = tmp_path / "runs"
    with Simulated(name="live", model="tiny-llama", log_dir=tmp_path) as sim:
        topo = write_topology(tmp_path / "t.yaml", sim.base_url, [
            {"name": "live-0", "role": "aggregated", "url": sim.base_url},
            {"name": "gone-1", "role": "aggregated", "url": f"http://127.0.0.1:{free_port()}"}])
        result = run_cli("--runs-dir", str(runs), "run", "e2_concurrency", "--set", "backend=topology",
                         "--set", f"topology_file={topo}", env=SIM)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "instance gone-1 (aggregated)" in result.stderr and "unreachable" in result.stderr
        assert not runs.exists() or not any(runs.rglob("run-*"))
        assert sim_requests(sim) == 0                      # nothing was sent to the live one either


def test_instances_serving_different_models_are_refused_naming_the_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(name="a", model="tiny-llama", log_dir=tmp_path) as a, \
            Simulated(name="b", model="another-model", log_dir=tmp_path) as b:
        topo = write_topology(tmp_path / "t.yaml", a.base_url, [
            {"name": "a-0", "role": "prefill", "url": a.base_url}, {"name": "b-0", "role": "decode", "url": b.base_url}])
        result = run_cli("--runs-dir", str(tmp_path / "runs"), "bench", "--topology", str(topo), "--num-prompts", "4",
                         env=SIM)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "instance b-0" in result.stderr and "'another-model'" in result.stderr
        assert "one topology serves one model" in result.stderr
        assert sim_requests(a) == sim_requests(b) == 0
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run-*"))


def test_an_instance_known_by_metrics_that_name_no_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(name="a", model="tiny-llama", log_dir=tmp_path) as sim:   # its metrics carry no vllm: samples
        topo = AttachedTopology(deployment.Topology.model_validate({"entry_url": sim.base_url, "instances": [
            {"name": "w0", "role": "aggregated", "metrics_url": f"{sim.base_url}/metrics"}]}))
        with pytest.raises(TopologyError, match="instance w0 .*name no model .*give its url"):
            topo.check()


def test_e4_searches_an_attached_topology_per_stated_gpu(tmp_path, monkeypatch):
    """E4 with backend=topology searches the one deployment (not its topologies list) and divides by the GPUs the
    file states. Simulated servers of a known service time behind ctxkit's router (marked simulated)."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(name="q0", model="tiny-llama", queue_servers=1, service_ms=50, log_dir=tmp_path) as q0, \
            Simulated(name="q1", model="tiny-llama", queue_servers=1, service_ms=50, log_dir=tmp_path) as q1, \
            router_over([q0, q1], tmp_path) as gw:
        topo = write_topology(tmp_path / "t.yaml", gw.base_url, [
            {"name": "q0", "role": "aggregated", "url": q0.base_url, "gpus": 1},
            {"name": "q1", "role": "aggregated", "url": q1.base_url, "gpus": 2}])
        result = run_cli("--runs-dir", str(tmp_path / "runs"), "run", "e4_goodput", "--set", "backend=topology",
                         "--set", f"topology_file={topo}", "--set", "search.max_probes=2",
                         "--set", "search.min_requests=10", "--set", "search.max_requests=20",
                         "--set", "search.warmup_requests=2", "--set", "warmup_requests=1", env=SIM)
        assert result.returncode in (0, 1), result.stderr[-4000:]     # 1: a check failed (two probes settle little)
    run = Path(result.stdout.strip().splitlines()[-1])
    goodput = pd.read_csv(run / "artifacts/e4_goodput.csv")
    assert list(goodput["topology"]) == ["under-test"] and list(goodput["devices"]) == [3]   # the file's 1 + 2
    probes = pd.read_csv(run / "artifacts/e4_probes.csv")
    assert len(probes) >= 1 and set(probes["topology"]) == {"under-test"}
    assert json.loads((run / "run_metadata.json").read_text())["backend_mode"] == "simulated"


def test_bench_through_an_attached_topology_scrapes_every_instance_and_says_simulated(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(name="s0", model="tiny-llama", log_dir=tmp_path) as s0, \
            Simulated(name="s1", model="tiny-llama", log_dir=tmp_path) as s1, router_over([s0, s1], tmp_path) as gw:
        topo = write_topology(tmp_path / "t.yaml", gw.base_url, [
            {"name": "s0", "role": "aggregated", "url": s0.base_url},
            {"name": "s1", "role": "aggregated", "url": s1.base_url}], unit="CPU core set")
        result = run_cli("--runs-dir", str(tmp_path / "runs"), "bench", "--topology", str(topo), "--num-prompts", "8",
                         "--max-concurrency", "2", "--random-input-len", "64", "--random-output-len", "4", env=SIM)
        assert result.returncode == 0, result.stderr[-3000:]
        run = Path(result.stdout.strip().splitlines()[-1])
        sent = len((run / "requests.jsonl").read_text().splitlines())      # the 8 and the warmup requests
        assert sent >= 8 and sim_requests(s0) + sim_requests(s1) == sent   # every request went through the gateway
        assert abs(sim_requests(s0) - sim_requests(s1)) <= 1               # ... round robin to both instances
    meta = json.loads((run / "run_metadata.json").read_text())
    assert meta["backend"] == "topology" and meta["backend_mode"] == "simulated"
    assert [i["name"] for i in meta["topology"]["instances"]] == ["s0", "s1"]
    assert all(i["version"]["version"].startswith("simulated") and i["models"] == ["tiny-llama"]
               for i in meta["topology"]["instances"])
    summary = json.loads((run / "summary.json").read_text())
    scraped = summary["profiling"]["server"]                           # each instance scraped under its name
    assert set(scraped) == {"s0", "s1"} and not any(d.get("scrape_errors") for d in scraped.values()), scraped
    assert summary["backend"]["mode"] == "simulated" and summary["backend"]["attached"]


@pytest.mark.vllm
@pytest.mark.slow
def test_e2_measures_through_an_attached_topology_of_real_vllm_servers(vllm_server, tmp_path):
    """Two real tiny vLLM servers (the shared one and one more, started alike) behind ctxkit's router as the
    deployment's gateway: E2 as a user types it, every instance scraped at every point, what each instance answered
    in run_metadata.json."""
    second = profile_server("second", tmp_path, ["--no-enable-prefix-caching"])
    with second, router_over([vllm_server, second], tmp_path) as gw:
        topo = write_topology(tmp_path / "t.yaml", gw.base_url, [      # "second" known by its metrics alone
            {"name": "shared", "role": "aggregated", "url": vllm_server.base_url},
            {"name": "second", "role": "aggregated", "metrics_url": f"{second.base_url}/metrics"}],
            unit="CPU core set")
        result = run_cli("--runs-dir", str(tmp_path / "runs"), "run", "e2_concurrency", "--set", "backend=topology",
                         "--set", f"topology_file={topo}", "--set", "concurrency_levels=[1, 4]",
                         "--set", "requests_per_point=8")
        # c4 against c1, not c2: E2's throughput check must hold on 8 requests a point through two servers that
        # share 2 cores, and a step of 2 left too little margin there
        assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    for name in ("instances_scraped", "success", "requests_recorded", "all_points_measured"):
        assert summary["checks"][name]["passed"], summary["checks"][name]
    routes = [json.loads(line)["instance"] for line in (tmp_path / "routes.jsonl").read_text().splitlines()]
    assert routes.count("shared") == routes.count("second") == 10       # 4 warmup + 2 x 8, round robin
    for point, server in summary["profiling"]["server"].items():          # ... and each instance's own counters
        served = {name: sum(d["request_success"].values()) if isinstance(d["request_success"], dict)
                  else d["request_success"] for name, d in server["instances"].items()}
        assert set(served) == {"shared", "second"} and min(served.values()) > 0, (point, served)
    meta = json.loads((run / "run_metadata.json").read_text())
    assert meta["backend"] == "topology" and meta["backend_mode"] == "real"
    shared, by_metrics = meta["topology"]["instances"]
    assert shared["models"] == by_metrics["models"] == ["tiny-llama"]     # /v1/models; the metrics' model_name
    assert shared["version"]["version"] == meta["versions"]["vllm"] and "no url" in by_metrics["version"]["error"]
    timeline = pd.read_csv(run / "artifacts/e2_server_timeline.csv")
    assert set(timeline["server"]) == {"shared", "second"} and set(timeline["point"]) == {"c1", "c4"}


@pytest.mark.vllm
def test_e5_cost_and_a_trace_through_an_attached_deployment(vllm_server, tmp_path):
    """E5's parts that only send (cost, trace) through an attached deployment of one real tiny vLLM server: the
    server's gauges on the run's timeline under the instance's name, no GPU sampled here (said), the trace exact."""
    topo = write_topology(tmp_path / "t.yaml", vllm_server.base_url, [
        {"name": "only", "role": "aggregated", "url": vllm_server.base_url}], unit="CPU core set")
    result = run_cli("--runs-dir", str(tmp_path / "runs"), "run", "e5_context", "--set", "backend=topology",
                     "--set", f"topology_file={topo}", "--set", "parts=[cost, trace]",
                     "--set", f"trace.dataset_path={ROOT / 'tests/data/prefix_trace.jsonl'}")
    assert result.returncode == 0, result.stderr[-4000:]
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert summary["trace"]["requests"] == 10 and summary["trace"]["fidelity"]["lengths_exact"]
    assert {r["context_len"] for r in summary["cost"]["rows"]} == {128, 512, 1024, 1984}
    assert "backend topology" in summary["profiling"]["gpu"]["reason"]
    timeline = pd.read_csv(run / "artifacts/e5_server_timeline.csv")
    assert set(timeline["server"]) == {"only"} and set(timeline["span"]) == {"trace"}
    assert json.loads((run / "run_metadata.json").read_text())["topology"]["instances"][0]["models"] == ["tiny-llama"]


def test_e5_on_an_attached_deployment_refuses_what_needs_its_own_servers(tmp_path):
    one = write_topology(tmp_path / "one.yaml", "http://gw:8000", [{"name": "a", "role": "aggregated",
                                                                    "url": "http://h:1"}])
    two = write_topology(tmp_path / "two.yaml", "http://gw:8000", [
        {"name": "a", "role": "aggregated", "url": "http://h:1"}, {"name": "b", "role": "aggregated", "url": "http://h:2"}])
    with pytest.raises(P.ParamError, match="part chunked starts a server per chunked-prefill setting"):
        P.resolve("e5_context", sets=["backend=topology", f"topology_file={one}"])     # the default parts
    with pytest.raises(P.ParamError, match="part capacity reads one server's KV cache"):
        P.resolve("e5_context", sets=["backend=topology", f"topology_file={two}", "parts=[capacity]"])
    assert P.resolve("e5_context", sets=["backend=topology", f"topology_file={one}", "parts=[capacity, cost]"])
    with pytest.raises(P.ParamError, match="backend must be vllm, endpoint or topology"):
        P.resolve("e5_context", sets=["backend=simulated", "parts=[cost]"])


FEDERATED = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m",pod="decode-0",job="vllm"} 3
vllm:num_requests_running{engine="0",model_name="m",pod="decode-1",job="vllm"} 1
"""


def test_a_federation_answer_is_one_instances_and_names_its_model():
    from ctxkit.backends.topology import metric_models, metric_targets
    from ctxkit.collectors.server_metrics import parse, value
    assert metric_targets(FEDERATED) == {"decode-0/", "decode-1/"}       # two pods: check() refuses such a URL
    one = "\n".join(FEDERATED.splitlines()[:2]) + "\n"
    assert metric_targets(one) == {"decode-0/"} and metric_models(one) == ["m"]
    assert value(parse(one), "vllm:num_requests_running") == 3            # Prometheus' pod/job labels dropped


@pytest.mark.parametrize("experiment", ["e0_smoke", "e1_latency", "e3_disagg", "e5_context"])   # E5: its defaults
def test_experiments_that_cannot_measure_an_attached_deployment_refuse_it(tmp_path, experiment):
    topo = write_topology(tmp_path / "t.yaml", "http://gw:8000", [{"name": "a", "role": "aggregated",
                                                                   "url": "http://h:1"}])
    with pytest.raises(P.ParamError, match=f"{experiment}.*(topology|must be vllm)"):
        P.resolve(experiment, sets=["backend=topology", f"topology_file={topo}"])


def test_an_instance_url_given_with_v1_means_the_servers_root(tmp_path):
    topo = deployment.load(write_topology(tmp_path / "t.yaml", "http://gw:8000/v1/", [
        {"name": "a", "role": "aggregated", "url": "http://h:1/v1"}]))
    assert topo.entry_url == "http://gw:8000" and topo.instances[0].url == "http://h:1"
    assert topo.instances[0].metrics == "http://h:1/metrics"


def test_the_topology_files_in_the_docs_are_valid(tmp_path):
    """docs/scale-out.md's example topology files (the format, llm-d, Dynamo) load as ctxkit reads them."""
    import re
    text = (ROOT / "docs/scale-out.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "entry_url:" in b]
    assert len(blocks) == 3, len(blocks)
    for i, block in enumerate(blocks):
        (tmp_path / f"{i}.yaml").write_text(block)
        assert deployment.load(tmp_path / f"{i}.yaml").instances


@pytest.mark.vllm
@pytest.mark.slow
def test_e3_measures_an_attached_disaggregated_deployment(vllm_server, tmp_path):
    """E3's disaggregated arm through an attached deployment, its aggregated arm a second one: a 1P1D
    ExampleConnector pool that ctxkit starts here stands for a deployment someone else runs (ctxkit's run only
    reads its topology file), and the shared tiny server is the aggregated deployment. Greedy outputs equal, the
    decode server loaded the KV tokens the connector stores at the block size it reports, the broker's per-handoff
    checks said not applicable, every instance scraped, both deployments in run_metadata.json."""
    from ctxkit.schedulers.topology import build_pool
    server = P.resolve("e3_disagg").server
    spec = P.TopologyParams(kind="disaggregated", prefill=1, decode=1, connector="example")
    with build_pool(server, spec, seed=0, log_dir=tmp_path) as pool:
        dis = write_topology(tmp_path / "dis.yaml", pool.base_url, [
            {"name": s.name, "role": role, "url": s.base_url} for role in ("prefill", "decode")
            for s in pool.by_role(role)], unit="CPU core set")
        agg = write_topology(tmp_path / "agg.yaml", vllm_server.base_url, [
            {"name": "shared", "role": "aggregated", "url": vllm_server.base_url}], unit="CPU core set")
        result = run_cli("--runs-dir", str(tmp_path / "runs"), "run", "e3_disagg", "--set", "backend=topology",
                         "--set", f"topology_file={dis}", "--set", f"aggregated_topology_file={agg}",
                         "--set", "workload.num_prompts=6", "--set", "correctness_prompt_lens=[100, 300, 700]")
        assert result.returncode == 0, result.stderr[-4000:]
        handoffs = pool.handoffs()                       # what the deployment's own router saw
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["checks"]) == {"success", "greedy_outputs_equal", "kv_loaded_not_recomputed"}
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert set(summary["not_checked"]) == {"kv_bytes_within_2pct", "broker_completed_handoffs", "ttft_breakdown"}
    assert not (run / "artifacts/e3_handoffs.csv").exists()     # no broker of ctxkit's saw the handoffs
    corr = summary["correctness"]
    # vLLM's own counter on the decode instance against the connector's rule at the block size it reports
    assert corr["external_kv_tokens"] == corr["expected_external_kv_tokens"] > 0
    assert corr["decode_block_size"] == pool.block_size
    # ... and the requests went through the deployment's own router: it handed the three prompts over
    assert len([h for h in handoffs if "correct-" in h["request_id"]]) == 3
    assert [h["servers"] for h in summary["headline"]] == [1, 2]         # the files' instances
    assert summary["gpu_assignment"]["disaggregated"]["kind"] == "attached"
    scraped = summary["profiling"]["server"]
    assert set(scraped["disaggregated"]) == {s.name for s in pool.servers} and set(scraped["aggregated"]) == {"shared"}
    assert "attached deployment" in summary["profiling"]["kv_transfer"]["link"]["reason"]
    meta = json.loads((run / "run_metadata.json").read_text())
    assert meta["backend_mode"] == "real"
    assert {i["role"] for i in meta["topology"]["instances"]} == {"prefill", "decode"}
    assert [i["name"] for i in meta["aggregated_topology"]["instances"]] == ["shared"]
    html = (run / "report.html").read_text()
    assert "not checked: kv_bytes_within_2pct" in html
    assert "No link or KV rate measured: attached deployment" in html     # a sentence, not an empty table header


def test_e3_on_an_attached_deployment_takes_a_disaggregated_one(tmp_path):
    agg = write_topology(tmp_path / "agg.yaml", "http://gw:8000", [{"name": "a", "role": "aggregated",
                                                                    "url": "http://h:1"}])
    dis = write_topology(tmp_path / "dis.yaml", "http://gw:8000", [
        {"name": "p", "role": "prefill", "url": "http://h:1"}, {"name": "d", "role": "decode", "url": "http://h:2"}])
    with pytest.raises(P.ParamError, match="measures a disaggregated deployment: topology_file lists aggregated"):
        P.resolve("e3_disagg", sets=["backend=topology", f"topology_file={agg}"])
    with pytest.raises(P.ParamError, match="aggregated_topology_file: the aggregated arm's deployment lists"):
        P.resolve("e3_disagg", sets=["backend=topology", f"topology_file={dis}", f"aggregated_topology_file={dis}"])
    with pytest.raises(P.ParamError, match="variants and ray start pools"):
        P.resolve("e3_disagg", sets=["backend=topology", f"topology_file={dis}", "variants=[{name: b32, block_size: 32}]"])
    with pytest.raises(P.ParamError, match="with backend vllm ctxkit starts both arms"):
        P.resolve("e3_disagg", sets=[f"aggregated_topology_file={agg}"])
    resolved = P.resolve("e3_disagg", sets=["backend=topology", f"topology_file={dis}",
                                            f"aggregated_topology_file={agg}"])
    assert resolved.aggregated_topology_file == str(agg.resolve())


class _Decode:
    """An attached decode instance as E3 reads it: its metrics text."""
    def __init__(self, block_size):
        self.text = ("# TYPE vllm:cache_config_info gauge\n"
                     f'vllm:cache_config_info{{block_size="{block_size}",model_name="m"}} 1.0\n'
                     if block_size else "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n")

    def metrics(self):
        return self.text


def _ok(prompt_tokens):
    from ctxkit.records import RequestRecord
    return RequestRecord(request_id=f"p{prompt_tokens}", prompt_tokens=prompt_tokens, max_tokens=4, status="ok")


def test_e3_expects_the_kv_tokens_an_attached_connector_loads_at_the_reported_block_size():
    from ctxkit.experiments.e3_disagg import expected_external, reported_block_size
    assert reported_block_size([_Decode(16), _Decode(16)]) == 16
    assert reported_block_size([_Decode(16), _Decode(32)]) is None          # two sizes: nothing to expect
    assert reported_block_size([_Decode(None)]) is None
    failed = _ok(900)
    failed.status = "http_error"
    records = [_ok(100), _ok(300), failed]
    # ExampleConnector: whole blocks short of the last token (100 -> 96, 300 -> 288); NIXL: every prompt token
    assert expected_external("example", 16, records) == 96 + 288
    assert expected_external("nixl", 16, records) == 100 + 300
    assert expected_external("example", None, records) is None


def test_e3_without_an_aggregated_deployment_starts_as_many_replicas_as_the_file_lists(tmp_path, monkeypatch):
    from ctxkit.experiments import e3_disagg
    dis = write_topology(tmp_path / "dis.yaml", "http://gw:8000", [
        {"name": "p0", "role": "prefill", "url": "http://h:1"}, {"name": "p1", "role": "prefill", "url": "http://h:2"},
        {"name": "d0", "role": "decode", "url": "http://h:3"}])
    params = P.resolve("e3_disagg", sets=["backend=topology", f"topology_file={dis}"])
    built = []
    monkeypatch.setattr(e3_disagg, "build_pool", lambda server, spec, **kw: built.append(spec) or spec)
    run = type("Run", (), {"logs": tmp_path, "run_id": "r"})()
    assert isinstance(e3_disagg.make_pool(params, run, "disaggregated"), AttachedTopology)
    assert e3_disagg.make_pool(params, run, "aggregated").replicas == 3 and built[0].kind == "aggregated"


def test_e3_refuses_two_attached_arms_serving_different_models(tmp_path, monkeypatch):
    """Greedy outputs compared across arms need one model: refused before a run folder is made or a request sent."""
    monkeypatch.setenv("CTXKIT_ALLOW_SIMULATED_BACKEND", "1")
    with Simulated(name="a", model="tiny-llama", log_dir=tmp_path) as a, \
            Simulated(name="b", model="another-model", log_dir=tmp_path) as b:
        dis = write_topology(tmp_path / "dis.yaml", a.base_url, [
            {"name": "p", "role": "prefill", "url": a.base_url}, {"name": "d", "role": "decode", "url": a.base_url}])
        agg = write_topology(tmp_path / "agg.yaml", b.base_url, [{"name": "r", "role": "aggregated", "url": b.base_url}])
        result = run_cli("--runs-dir", str(tmp_path / "runs"), "run", "e3_disagg", "--set", "backend=topology",
                         "--set", f"topology_file={dis}", "--set", f"aggregated_topology_file={agg}", env=SIM)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "serves 'another-model'" in result.stderr and "one model served two ways" in result.stderr
        assert sim_requests(a) == sim_requests(b) == 0
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("run-*"))
