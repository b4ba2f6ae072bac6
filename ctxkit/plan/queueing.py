"""Closed forms for the M/M/k queue, the one served by ctxkit's simulated server with `queue_servers` = k: the
answers that the goodput search and the placement model are checked against."""
from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_c(lam: float, k: int, mu: float) -> float:
    """The share of an M/M/k queue's requests that wait for a server (Erlang C; below saturation)."""
    a = lam / mu
    tail = a ** k / math.factorial(k) / (1 - a / k)
    return tail / (sum(a ** i / math.factorial(i) for i in range(k)) + tail)


def mmk_attainment(lam: float, k: int, mu: float, s: float) -> float:
    """P(response time <= s) in an M/M/k FCFS queue (response = wait + exponential service)."""
    if lam >= k * mu:
        return 0.0
    waits = erlang_c(lam, k, mu)
    theta = k * mu - lam
    both = (theta * math.exp(-mu * s) - mu * math.exp(-theta * s)) / (theta - mu)
    return 1 - ((1 - waits) * math.exp(-mu * s) + waits * both)


def mmk_capacity(target: float, k: int, mu: float, s: float) -> float:
    """The highest Poisson rate whose share `target` of responses finish within s: the goodput in closed form."""
    lo, hi = 0.0, k * mu * (1 - 1e-9)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mmk_attainment(mid, k, mu, s) >= target else (lo, mid)
    return lo


@dataclass(frozen=True)
class MMk:
    """An M/M/k FCFS queue (service rate mu per server) under a response-time objective s (seconds) and a target
    share of responses within it."""
    k: int
    mu: float
    s: float
    target: float

    def attainment(self, lam: float) -> float:
        return mmk_attainment(lam, self.k, self.mu, self.s)

    def capacity(self) -> float:
        return mmk_capacity(self.target, self.k, self.mu, self.s)


# The queue the goodput search is validated on (the simulated server with 8 slots of 80 ms mean service, a 300 ms
# TTFT objective for 90% of requests: capacity 89.1 req/s); tests/test_goodput_search.py says why these values.
REFERENCE = MMk(k=8, mu=12.5, s=0.300, target=0.9)
