"""What every backend offers: an OpenAI-compatible base URL, streaming generation, prefill, server metrics."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Optional

from ctxkit.completions import CompletionRequest, stream_one
from ctxkit.records import RequestRecord


class BackendError(RuntimeError):
    """A backend could not be started or reached."""


class BackendUnavailable(BackendError):
    """The backend's software is not installed or not allowed (e.g. vLLM missing, simulation not enabled)."""


class ServerDied(BackendError):
    """The server process exited (at start or later); the message quotes its last log lines."""


class ServerStartTimeout(BackendError):
    """The server did not answer /health within the start-up time limit."""


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Plain GET (stdlib: usable from any thread or loop). Returns (status, body); raises URLError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback by default
            return resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


def served_models(base_url: str, who: str, error: type[BackendError] = BackendError) -> list[str]:
    """The model ids the OpenAI server at base_url lists in /v1/models; `error` naming `who` when it cannot say."""
    try:
        status, body = http_get(f"{base_url}/v1/models", timeout=5.0)
    except OSError as exc:
        raise error(f"{who} is unreachable: {getattr(exc, 'reason', exc)}") from None
    if status != 200:
        raise error(f"{who} is not OpenAI-compatible: GET /v1/models -> HTTP {status}")
    try:
        return [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        raise error(f"{who} is not OpenAI-compatible: /v1/models is not a model list") from None


class ServingBackend:
    """Base: subclasses set `base_url` and `model` (the served model name) once started."""

    mode: str = "real"  # "real" | "simulated"
    base_url: str = ""
    model: str = ""
    name: str = "server"

    # --- queries ---------------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        try:
            status, body = http_get(f"{self.base_url}/version")
        except OSError as exc:    # unreachable: said in the record, not raised (it describes, it does not check)
            return {"error": f"unreachable: {getattr(exc, 'reason', exc)}"}
        if status != 200:
            return {"error": f"HTTP {status}"}
        try:
            return json.loads(body)
        except ValueError:
            return {"error": "not JSON", "body": body[:200]}

    def metrics(self) -> str:
        """The server's Prometheus text (/metrics)."""
        status, body = http_get(f"{self.base_url}/metrics")
        if status != 200:
            raise BackendError(f"{self.base_url}/metrics answered HTTP {status}")
        return body

    def metric_sources(self) -> dict[str, Any]:
        """Every server whose /metrics describes this backend's requests: name -> fetch()."""
        return {self.name: self.metrics}

    # A request is served by one server end to end (False for disaggregated pools, where it spans two).
    single_hop: bool = True

    def served_max_model_len(self) -> Optional[int]:
        """The context length the server announces in /v1/models (vLLM does), or None."""
        try:
            status, body = http_get(f"{self.base_url}/v1/models")
            for m in json.loads(body).get("data", []) if status == 200 else []:
                if m.get("id") == self.model and m.get("max_model_len"):
                    return int(m["max_model_len"])
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def death_note(self) -> str:
        """Why the backend is gone (managed servers quote their log)."""
        return ""

    def alive(self) -> Optional[bool]:
        """Whether the processes behind it still run: True or False for what ctxkit started, None where it cannot
        know (a server it attached to)."""
        return None

    def router_in_flight(self) -> float:
        """Requests a front end holds that no server's gauges show (a router between a prefill and its decode)."""
        return 0.0

    def handoffs(self) -> list[dict[str, Any]]:
        """KV handoff records of a disaggregated deployment ctxkit routes (none elsewhere)."""
        return []

    def healthy(self) -> bool:
        try:
            return http_get(f"{self.base_url}/health", timeout=2.0)[0] == 200
        except (OSError, ValueError):
            return False

    # --- requests --------------------------------------------------------------------------------------
    def generate(self, prompt: list[int], max_tokens: int, *, temperature: float = 0.0, seed: Optional[int] = None,
                 ignore_eos: bool = True, request_id: str = "req-0", timeout_s: float = 120.0,
                 extra: Optional[dict[str, Any]] = None) -> RequestRecord:
        """One streaming completion; the record holds each chunk's arrival time and the output token ids."""
        req = CompletionRequest(request_id=request_id, prompt=list(prompt), max_tokens=max_tokens,
                                temperature=temperature, seed=seed, ignore_eos=ignore_eos, extra=extra or {})
        return stream_one(self.base_url, self.model, req, timeout_s=timeout_s)

    def prefill(self, prompt: list[int], *, request_id: str = "req-0", timeout_s: float = 120.0,
                extra: Optional[dict[str, Any]] = None) -> RequestRecord:
        """The prefill phase alone: max_tokens=1, so TTFT is the prefill time."""
        return self.generate(prompt, 1, request_id=request_id, timeout_s=timeout_s, extra=extra)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "base_url": self.base_url, "model": self.model}

    # --- lifecycle (managed backends override) ---------------------------------------------------------
    def start(self) -> "ServingBackend":
        return self

    def stop(self) -> None:
        return None

    def __enter__(self) -> "ServingBackend":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
