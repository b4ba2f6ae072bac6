"""The router's typed configuration and its instance selection (no servers needed)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from ctxkit.schedulers.router import Instance, InstanceSelector, RouterConfig

A, B, C = (Instance(name=n, url=f"http://127.0.0.1:{p}") for n, p in (("a", 1), ("b", 2), ("c", 3)))


def test_least_outstanding_picks_the_instance_holding_fewest_and_holding_releases_even_on_error():
    sel = InstanceSelector([B, A, C], "least_outstanding")
    assert sel.pick() is A                                       # all idle: the first by name
    with sel.holding(A), sel.holding(B):
        assert sel.pick() is C
        with sel.holding(C), sel.holding(C):
            assert sel.pick() is A                               # a and b hold one each, c two
    with pytest.raises(RuntimeError), sel.holding(A):
        raise RuntimeError("upstream failed")
    assert sel.outstanding == {"a": 0, "b": 0, "c": 0}


def test_round_robin_cycles_in_the_configured_order():
    sel = InstanceSelector([B, A], "round_robin")
    assert [sel.pick().name for _ in range(4)] == ["b", "a", "b", "a"]


def test_a_configuration_names_the_roles_its_mode_needs():
    agg = {"mode": "aggregated", "model": "m", "route_log": "r.jsonl", "instances": {"pool": [A.model_dump()]}}
    assert RouterConfig.model_validate(agg).policy == "round_robin"
    with pytest.raises(ValidationError, match="exactly \\['decode', 'prefill'\\]"):
        RouterConfig.model_validate({**agg, "mode": "disaggregated", "handoff_log": "h.jsonl"})
    with pytest.raises(ValidationError, match="needs handoff_log"):
        RouterConfig.model_validate({**agg, "mode": "disaggregated",
                                     "instances": {"prefill": [A.model_dump()], "decode": [B.model_dump()]}})
    with pytest.raises(ValidationError, match="exactly"):
        RouterConfig.model_validate({**agg, "instances": {"pool": []}})          # a role without instances
    with pytest.raises(ValidationError, match="extra"):
        RouterConfig.model_validate({**agg, "fault_drop_kv": True})               # a misspelt key is refused


def test_the_kv_of_a_hop_asked_and_never_finished_stays_for_its_engine(tmp_path):
    """vLLM's decode engine died reading a KV file the router had removed when the request's client left, and a
    prefill engine writing one (a probe cut off while prompts were still being prefilled, E6 on the CPU); such a
    folder stays until the pool removes its storage. Finished requests, and ones whose prefill answered with an
    error, are cleaned at once."""
    from ctxkit.schedulers.broker import new_handoff
    from ctxkit.schedulers.router import Router
    cfg = RouterConfig(mode="disaggregated", model="m", instances={"prefill": [A], "decode": [B]}, connector="example",
                       storage_path=str(tmp_path), route_log=str(tmp_path / "r.jsonl"),
                       handoff_log=str(tmp_path / "h.jsonl"))
    router = Router(cfg)
    prefilled = {"t_prefill_sent_ns": 1, "t_prefill_done_ns": 2}
    cases = {"finished": (prefilled, {"t_upstream_sent_ns": 1, "done": True}, False),
             "client left during decode": (prefilled, {"t_upstream_sent_ns": 1}, True),
             "client left during prefill": ({"t_prefill_sent_ns": 1}, {}, True),
             "prefill answered an error": ({"t_prefill_sent_ns": 1}, {"prefill_failed": True}, False)}
    for name, (times, marks, kept) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "layer.safetensors").write_bytes(b"kv")
        h = new_handoff(name, "a", "b", "example", 32, 16, 1, 0)
        for key, value in times.items():
            setattr(h, key, value)
        if "t_upstream_sent_ns" in marks:
            h.t_decode_sent_ns = marks["t_upstream_sent_ns"]
        router.close_handoff(h, marks, folder)
        assert folder.exists() == kept, name
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 4
