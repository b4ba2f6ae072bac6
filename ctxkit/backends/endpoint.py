"""Endpoint: attach to an OpenAI-compatible server that is already running (ctxkit neither starts nor stops it)."""
from __future__ import annotations

from typing import Any, Optional

from ctxkit.backends.base import BackendError, ServingBackend, served_models


class Endpoint(ServingBackend):
    def __init__(self, base_url: str, model: Optional[str] = None, *, name: str = "endpoint") -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.model = model or ""
        self.name = name
        self.mode = "real"

    def start(self) -> "Endpoint":
        """Check that it answers like an OpenAI server, and learn the served model if none was given."""
        models = served_models(self.base_url, f"endpoint {self.base_url}")
        if not self.model:
            if not models:
                raise BackendError(f"endpoint {self.base_url} serves no model")
            self.model = models[0]
        elif self.model not in models:
            raise BackendError(f"endpoint {self.base_url} does not serve {self.model!r} (it serves {models})")
        version = self.version()
        if str(version.get("version", "")).startswith("simulated"):
            self.mode = "simulated"
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "version": self.version(), "attached": True}
