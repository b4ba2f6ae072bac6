"""Property-based: whatever a parameter file or --set holds, the outcome is valid parameters or one ParamError
that names the layer it came from and the key; never another exception, and nothing is started (resolve only
reads and checks)."""
from __future__ import annotations

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxkit import params as P

KEYS = ["seed", "backend", "endpoint_url", "request_timeout_s", "prompt_lens", "max_tokens", "sampling_temperature",
        "repeats", "server.model", "server.max_model_len", "server.kv_cache_space_gib", "server.extra_args",
        "server.env", "server.host", "bogus", "server.bogus"]
values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) |
                      st.text(string.printable, max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=6)


def nest(key: str, value):
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEYS), values)
def test_any_file_value_is_valid_or_a_named_error(tmp_path_factory, key, value):
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text(yaml.safe_dump(nest(key, value)))
    try:
        P.resolve("e0_smoke", files=[path])
    except P.ParamError as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}: "), msg                 # names the file, not only "some layer"
        assert key.split(".")[-1] in msg or key.split(".")[0] in msg, msg


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=20))
def test_any_set_string_is_valid_or_a_named_error(key, raw):
    try:
        P.resolve("e0_smoke", sets=[f"{key}={raw}"])
    except P.ParamError as exc:
        msg = str(exc)
        assert msg.startswith(f"--set {key}={raw}: "), msg      # the exact assignment that was wrong ...
        assert key.split(".")[-1] in msg[len(f"--set {key}={raw}: "):], msg   # ... and its key, after the prefix
