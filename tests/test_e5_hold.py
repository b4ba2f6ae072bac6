"""E5's hold rule: when a level of c requests sent at once has seen what the server's cache admits."""
from __future__ import annotations

from ctxkit.experiments.e5_context import hold_rule
from ctxkit.records import RequestRecord


def _rec(i: int, send_s: float, first_s=None) -> RequestRecord:
    rec = RequestRecord(request_id=f"r{i}", prompt_tokens=8, max_tokens=8)
    rec.t_send_ns = int(send_s * 1e9)
    rec.t_first_ns = int(first_s * 1e9) if first_s is not None else None
    return rec


def test_hold_rule_ends_a_level_once_admission_is_over():
    """E5's hold levels: wait while sending; with every first token in, wait the dwell, then cancel; with some
    never admitted, cancel after the longer of settle_s and three times the longest wait between first tokens."""
    rule = hold_rule(3, settle_s=5.0, dwell_s=0.3)
    s = lambda t: int(t * 1e9)                                                     # noqa: E731
    assert rule([], [_rec(0, 0.0, 1.0), _rec(1, 0.0, 2.0)], s(60)) is None        # two of three sent
    every = [_rec(0, 0.0, 1.0), _rec(1, 0.0, 2.0), _rec(2, 0.0, 2.5)]
    assert rule(every[:1], every[1:], s(2.7)) is None and rule(every[:1], every[1:], s(2.9)) == "cancel"
    stalled = [_rec(0, 0.0, 1.0), _rec(1, 0.0, 2.0), _rec(2, 0.0)]                  # the third waits
    assert rule([], stalled, s(6.9)) is None and rule([], stalled, s(7.0)) == "cancel"   # 2.0 + settle 5
    slow = [_rec(0, 0.0, 3.0), _rec(1, 0.0, 6.0), _rec(2, 0.0)]                     # 3 s between admissions
    assert rule([], slow, s(14.9)) is None and rule([], slow, s(15.0)) == "cancel"  # 6.0 + 3 x 3 s


def test_hold_rule_waits_for_the_first_prefill_however_long():
    """A 129K-token prompt's prefill outlasts settle_s (about 10.5 s on an H100 against 10): a level with no first
    token yet is still being admitted, not over (an H100 run cancelled every level so, before any admission)."""
    rule = hold_rule(2, settle_s=5.0, dwell_s=0.3)
    s = lambda t: int(t * 1e9)                                                     # noqa: E731
    none_yet = [_rec(0, 0.0), _rec(1, 0.0)]
    assert rule([], none_yet, s(60)) is None                                       # well past settle_s
    first = [_rec(0, 0.0, 10.5), _rec(1, 0.0)]                                     # then settle from there
    assert rule([], first, s(41.9)) is None and rule([], first, s(42.0)) == "cancel"   # 10.5 + 3 x 10.5 s
