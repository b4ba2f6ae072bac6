"""The calibration file: what one vLLM instance's steps cost on one GPU, its limits and its KV transfer, each fit with
its spread, and the runs and commit it came from.

Two least-squares fits, as E5's cost part makes them (ctxkit/experiments/e5_cost.py):
- prefill: TTFT of a request alone against its prompt length L, a + b L + c L^2 (c: attention over the prompt);
- decode: a step's time against the requests it decodes and the KV tokens they read, d + f seqs + e kv_tokens.
A step carrying both costs d + b P + c A + f seqs + e kv (P prompt tokens, A their attention term; engine.Batch),
and a request's TTFT carries a - d beyond its steps (the HTTP round trip, tokenizing, detokenizing).
The fits keep their covariance: `Calibration.sample` draws a plausible set of coefficients, and the planner's
interval is the spread of the goodput over such draws.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class LinearFit(BaseModel):
    """y = X @ coef, least squares, with the coefficients' covariance s^2 (X'X)^-1 and the points it was fitted on."""
    terms: list[str]
    coef: list[float]
    cov: list[list[float]]
    residual_sd: float
    r2: float
    points: int
    x: list[list[float]] = []               # the design rows (one per point, in `terms`' order)
    y: list[float] = []

    def __getitem__(self, term: str) -> float:
        return self.coef[self.terms.index(term)]

    def predict(self, row: dict[str, float]) -> float:
        return float(sum(c * row[t] for t, c in zip(self.terms, self.coef)))

    def drawn(self, rng: np.random.Generator) -> "LinearFit":
        """The fit again on points its residuals, resampled, put around its line (a residual bootstrap), fitted as
        the original was (no cost below zero): draws of the estimator itself, its constraint included, where draws
        from the covariance would have to be clipped at zero. A fit without its points draws from the covariance."""
        if not self.x:
            coef = np.maximum(rng.multivariate_normal(self.coef, self.cov, method="svd"), 0.0)
            return self.model_copy(update={"coef": [float(c) for c in coef]})
        x, y = np.asarray(self.x), np.asarray(self.y)
        fitted = x @ np.asarray(self.coef)
        kept = sum(c > 0 for c in self.coef)
        resid = (y - fitted) * np.sqrt(len(y) / max(1, len(y) - kept))     # the residuals' shrinkage undone
        again = fitted + rng.choice(resid, size=len(y), replace=True)
        refit = fit_linear(self.terms, [dict(zip(self.terms, row)) for row in self.x], list(again))
        return self.model_copy(update={"coef": refit.coef})


def fit_linear(terms: list[str], rows: list[dict[str, float]], y: list[float]) -> LinearFit:
    """Least squares with every coefficient at least zero (each is a cost): a term whose coefficient comes out
    negative (on noisy points, the L^2 term's trade with L's) is dropped, coefficient 0, and the rest fitted again."""
    x = np.array([[r[t] for t in terms] for r in rows], dtype=float)
    yy = np.asarray(y, dtype=float)
    if len(yy) <= len(terms):
        raise ValueError(f"{len(yy)} points for {len(terms)} terms ({', '.join(terms)}): measure more")
    kept = list(range(len(terms)))
    while True:
        coef_kept, *_ = np.linalg.lstsq(x[:, kept], yy, rcond=None)
        if (coef_kept >= 0).all() or len(kept) == 1:
            break
        # the most negative by its t value (coefficient over its standard error): the units' scale does not choose
        resid_k = yy - x[:, kept] @ coef_kept
        var = float(resid_k @ resid_k) / max(1, len(yy) - len(kept)) * np.diag(np.linalg.pinv(x[:, kept].T @ x[:, kept]))
        kept.pop(int(np.argmin(coef_kept / np.sqrt(np.maximum(var, 1e-300)))))
    coef = np.zeros(len(terms))
    coef[kept] = np.maximum(coef_kept, 0.0)
    resid = yy - x @ coef
    s2 = float(resid @ resid) / (len(yy) - len(kept))
    cov = np.zeros((len(terms), len(terms)))
    cov[np.ix_(kept, kept)] = s2 * np.linalg.pinv(x[:, kept].T @ x[:, kept])
    total = float(((yy - yy.mean()) ** 2).sum())
    return LinearFit(terms=terms, coef=[float(c) for c in coef], cov=cov.tolist(), residual_sd=s2 ** 0.5,
                     r2=1.0 - float(resid @ resid) / total if total > 0 else float("nan"), points=len(yy),
                     x=x.tolist(), y=yy.tolist())


class EngineLimits(BaseModel):
    """The server settings the costs hold for, and the KV cache they leave."""
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    kv_capacity_tokens: int = Field(ge=1)
    block_size: int = Field(16, ge=1)
    chunked_prefill: bool = True
    compiled: bool = True
    async_scheduling: bool = False          # vLLM's default on GPUs: the next step is scheduled while one runs


class StepCost(BaseModel):
    """Milliseconds a step costs (the fits' coefficients) and what a request adds beyond its steps."""
    base_ms: float
    per_prompt_token_ms: float
    per_attention_ms: float                 # per unit of engine.Batch.attention (L^2 for one prompt)
    per_decode_seq_ms: float
    per_kv_token_ms: float
    request_overhead_ms: float

    def step_s(self, prompt_tokens: int, attention: float, decode_seqs: int, kv_tokens: int) -> float:
        """A step's seconds: its prompt chunks (their tokens and attention term, engine.Batch) and its decodes."""
        return (self.base_ms + self.per_prompt_token_ms * prompt_tokens + self.per_attention_ms * attention
                + self.per_decode_seq_ms * decode_seqs + self.per_kv_token_ms * kv_tokens) / 1e3


class Transfer(BaseModel):
    """A KV handoff between a prefill and a decode instance: a fixed cost plus bytes over a rate."""
    kv_bytes_per_token: int = Field(ge=0)
    per_handoff_ms: float = Field(ge=0)
    gb_per_s: float = Field(gt=0)
    source: str                             # what the figures come from (E3 run, link probe, ...)

    def seconds(self, prompt_tokens: int) -> float:
        return self.per_handoff_ms / 1e3 + prompt_tokens * self.kv_bytes_per_token / (self.gb_per_s * 1e9)


class Calibration(BaseModel):
    schema_version: int = SCHEMA_VERSION
    model: str
    device: str                             # "1 x NVIDIA H100 80GB HBM3", "cpu (2 cores)", ...
    engine: str                             # "vLLM 0.24.0"
    limits: EngineLimits
    limits_from: str = ""                   # "server flags", or what was assumed
    prefill: LinearFit                      # TTFT ms alone: terms one, L, L2
    decode: LinearFit                       # step ms: terms one, seqs, kv_tokens
    transfer: Optional[Transfer] = None     # None: no disaggregated placement can be predicted
    runs: list[str] = []
    commit: Optional[str] = None
    ctxkit: str = ""

    def step_cost(self) -> StepCost:
        base = self.decode["one"]
        return StepCost(base_ms=base, per_prompt_token_ms=self.prefill["L"], per_attention_ms=self.prefill["L2"],
                        per_decode_seq_ms=self.decode["seqs"], per_kv_token_ms=self.decode["kv_tokens"],
                        request_overhead_ms=max(0.0, self.prefill["one"] - base))

    def scaled(self, factor: float) -> "Calibration":
        """Every cost times `factor`: a server with 1/factor of the calibrated one's compute (on the CPU tier, a
        pool's servers split the host's cores that the calibrated server had to itself)."""
        def times(fit: LinearFit) -> LinearFit:
            return fit.model_copy(update={"coef": [c * factor for c in fit.coef], "y": [v * factor for v in fit.y],
                                          "cov": (np.asarray(fit.cov) * factor ** 2).tolist()})
        return self.model_copy(update={"prefill": times(self.prefill), "decode": times(self.decode)})

    def sample(self, rng: np.random.Generator) -> "Calibration":
        return self.model_copy(update={"prefill": self.prefill.drawn(rng), "decode": self.decode.drawn(rng)})

    def save(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        data = json.loads(Path(path).read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{path}: calibration schema {data.get('schema_version')}, this ctxkit reads "
                             f"{SCHEMA_VERSION}: calibrate again (ctxkit bench --calibrate, or ctxkit run e6_plan)")
        return cls.model_validate(data)
