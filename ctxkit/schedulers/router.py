"""The router: an OpenAI-compatible /v1/completions endpoint on 127.0.0.1 in front of a pool of servers, so the
same client measures aggregated and disaggregated serving alike.

aggregated:     the request is proxied (streaming) to one instance of the pool.
disaggregated:  prefill on a prefill instance with max_tokens=1 (the connector stores the KV), then the original
                request streams from a decode instance that loads the KV instead of recomputing it.
The request id travels through both hops (X-Request-Id). Every request appends one line to the route log, and in
disaggregated mode one handoff record (broker.HandoffRecord); times are time.perf_counter_ns(), the client's clock.
Failures are answered as OpenAI-style errors (HTTP 502) naming the hop that failed, never as a hang.

Run as its own process (RouterProcess manages it): python -m ctxkit.schedulers.router --config router.json --port P
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ctxkit import sse
from ctxkit.backends.process import ManagedServer
from ctxkit.records import HandoffRecord
from ctxkit.schedulers import kv_store
from ctxkit.schedulers.broker import NIXL_PREFILL_PARAMS, new_handoff


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    url: str


class RouterConfig(BaseModel):
    """What a router serves and how (written as JSON beside its log; the pools build it)."""
    model_config = ConfigDict(extra="forbid")
    mode: Literal["aggregated", "disaggregated"]
    model: str
    policy: Literal["round_robin", "least_outstanding"] = "round_robin"
    instances: dict[str, list[Instance]]     # role -> instances: "pool" (aggregated), "prefill" and "decode"
    route_log: str
    handoff_log: Optional[str] = None        # disaggregated: one broker.HandoffRecord per request
    timeout_s: float = 600.0
    connector: Optional[str] = None          # "example" (KV through storage_path) or "nixl"
    storage_path: Optional[str] = None
    block_size: int = 16
    kv_bytes_per_token: int = 0
    cleanup_kv: bool = True                  # remove a request's KV files once its decode has them
    fault: Optional[Literal["drop_kv"]] = None   # reliability tests: FaultyRouter loses the KV before decode

    @model_validator(mode="after")
    def _roles(self) -> "RouterConfig":
        roles = {"aggregated": {"pool"}, "disaggregated": {"prefill", "decode"}}[self.mode]
        if set(self.instances) != roles or not all(self.instances.values()):
            raise ValueError(f"a {self.mode} router needs instances for exactly {sorted(roles)}, "
                             f"got {sorted(self.instances)}")
        if self.mode == "disaggregated" and not self.handoff_log:
            raise ValueError("a disaggregated router needs handoff_log")
        return self


class RouterProcess(ManagedServer):
    """The router as a managed child process (own process group, health-checked, stopped with its run)."""

    kind = "router"
    mode = "real"

    def __init__(self, config: RouterConfig | dict[str, Any], *, name: str = "router", log_dir: Path,
                 host: str = "127.0.0.1") -> None:
        super().__init__(name=name, host=host, log_dir=log_dir, startup_timeout_s=60.0)
        self.config = RouterConfig.model_validate(config)
        self.model = self.config.model
        self.config_path = Path(log_dir) / f"{name}.config.json"

    def command(self) -> list[str]:
        return [self.python, "-m", "ctxkit.schedulers.router", "--config", str(self.config_path),
                "--host", self.host, "--port", str(self.port)]

    def start(self) -> "RouterProcess":
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config.model_dump_json(indent=2))
        super().start()
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.model_dump()}


class InstanceSelector:
    """Picks the instance of one role (pool, prefill or decode) for the next request, by the routing policy, and
    counts the requests each holds (holding)."""

    def __init__(self, instances: list[Instance], policy: str) -> None:
        if not instances:
            raise ValueError("a pool needs at least one instance")
        self.instances = instances
        self.policy = policy
        self.outstanding = {i.name: 0 for i in instances}
        self._rr = itertools.cycle(range(len(instances)))

    def pick(self) -> Instance:
        if self.policy == "least_outstanding":
            return min(self.instances, key=lambda i: (self.outstanding[i.name], i.name))
        return self.instances[next(self._rr)]

    @contextlib.contextmanager
    def holding(self, inst: Instance) -> Iterator[None]:
        """`inst` holds one more request for the block's duration (least_outstanding reads it)."""
        self.outstanding[inst.name] += 1
        try:
            yield
        finally:
            self.outstanding[inst.name] -= 1


class HopError(RuntimeError):
    """A hop of a disaggregated request failed: answered to the client as HTTP 502, naming the hop. `answered`: the
    instance answered (with an error), so its engine is done with the request."""

    def __init__(self, message: str, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


def _error(status: int, message: str) -> Any:
    from aiohttp import web
    return web.json_response({"error": {"message": message, "type": "router_error", "code": status}}, status=status)


def step_ms(chunks: list[int]) -> Optional[float]:
    """A decode stream's own median gap between token chunks (ms)."""
    return statistics.median(b - a for a, b in zip(chunks, chunks[1:])) / 1e6 if len(chunks) > 2 else None


class Router:
    """The router's aiohttp application over one RouterConfig: /v1/completions (aggregated: relay to one instance;
    disaggregated: prefill, then decode), /health, /version, /v1/models and /metrics (its own backlog)."""

    def __init__(self, cfg: RouterConfig) -> None:
        self.cfg = cfg
        self.pools = {role: InstanceSelector(insts, cfg.policy) for role, insts in cfg.instances.items()}
        self.storage = Path(cfg.storage_path) if cfg.storage_path else None
        self.in_flight = 0
        self.route_log = open(cfg.route_log, "a", buffering=1)
        self.handoff_log = open(cfg.handoff_log, "a", buffering=1) if cfg.handoff_log else None
        self.session: Any = None

    def app(self) -> Any:
        from aiohttp import web
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        app.add_routes([web.post("/v1/completions", self.completions), web.get("/health", self.health),
                        web.get("/version", self.version), web.get("/v1/models", self.models),
                        web.get("/metrics", self.metrics)])
        return app

    async def on_startup(self, app: Any) -> None:
        import aiohttp
        # idle connections dropped after 4 s, before vLLM's server (uvicorn) drops them after 5 s: a request sent
        # on one the server is closing at that moment fails before the server has read it
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
                                             connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0))

    async def on_cleanup(self, app: Any) -> None:
        await self.session.close()

    def log_route(self, entry: dict[str, Any]) -> None:
        self.route_log.write(json.dumps(entry, separators=(",", ":")) + "\n")

    async def relay(self, request: Any, url: str, body: dict[str, Any], rid: str, marks: dict[str, Any]) -> Any:
        """Stream the upstream answer to the client; marks the first token-carrying chunk and the gaps."""
        from aiohttp import web
        marks["t_upstream_sent_ns"] = time.perf_counter_ns()
        async with self.session.post(url, json=body, headers={"X-Request-Id": rid}) as up:
            if up.status != 200:
                text = await up.text()
                marks["error"] = f"{marks['hop']} instance {marks['instance']} answered HTTP {up.status}: {text[:300]}"
                return _error(502 if up.status >= 500 else up.status, marks["error"])
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                           "X-Ctxkit-Route": marks["route"]})
            await resp.prepare(request)
            chunks: list[int] = marks.setdefault("chunks", [])   # kept in marks: a cancelled relay still has them
            client_open = True
            async for line in sse.lines(up.content):
                if line.startswith(b"data: [DONE]"):
                    marks["done"] = True     # the answer is whole: a client leaving now cancels nothing
                if line.startswith(b"data:") and b'"token_ids":[' in line and b'"token_ids":[]' not in line:
                    now = time.perf_counter_ns()
                    marks.setdefault("t_first_ns", now)
                    chunks.append(now)
                if client_open:
                    client_open = await self._write(resp, line, marks)
            if client_open:
                try:
                    await resp.write_eof()
                except ConnectionResetError:
                    marks["client_closed_early"] = True
            return resp

    @staticmethod
    async def _write(resp: Any, line: bytes, marks: dict[str, Any]) -> bool:
        """Pass one line on; False once the client has gone (a client may close as soon as it has read [DONE]):
        not an upstream failure, and the relay keeps draining upstream so the request's times stay complete."""
        try:
            await resp.write(line)
            return True
        except ConnectionResetError:
            marks["client_closed_early"] = True
            return False

    async def completions(self, request: Any) -> Any:
        self.in_flight += 1
        try:
            t_recv = time.perf_counter_ns()
            rid = request.headers.get("X-Request-Id") or f"req-{uuid.uuid4().hex[:12]}"
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "body is not JSON")
            if self.cfg.mode == "aggregated":
                return await self.aggregated(request, body, rid, t_recv)
            return await self.disaggregated(request, body, rid, t_recv)
        finally:
            self.in_flight -= 1

    async def aggregated(self, request: Any, body: dict[str, Any], rid: str, t_recv: int) -> Any:
        import aiohttp
        pool = self.pools["pool"]
        inst = pool.pick()
        marks: dict[str, Any] = {"hop": "aggregated", "instance": inst.name, "route": inst.name}
        try:
            with pool.holding(inst):
                return await self.relay(request, f"{inst.url}/v1/completions", body, rid, marks)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            marks["error"] = f"instance {inst.name} unreachable: {type(exc).__name__}: {exc}"
            return _error(502, marks["error"])
        finally:
            self.log_route({"request_id": rid, "mode": "aggregated", "pool": "pool", "instance": inst.name,
                            "t_recv_ns": t_recv, "t_sent_ns": marks.get("t_upstream_sent_ns"),
                            "t_first_ns": marks.get("t_first_ns"), "t_end_ns": time.perf_counter_ns(),
                            "error": marks.get("error")})

    async def prefill(self, inst: Instance, body: dict[str, Any], rid: str) -> dict[str, Any]:
        """The prefill hop: the request with max_tokens=1, not streamed; the connector stores the KV."""
        import aiohttp
        pre_body = {**body, "max_tokens": 1, "stream": False}
        pre_body.pop("stream_options", None)
        if self.cfg.connector == "nixl":
            pre_body["kv_transfer_params"] = dict(NIXL_PREFILL_PARAMS)
        try:
            with self.pools["prefill"].holding(inst):
                async with self.session.post(f"{inst.url}/v1/completions", json=pre_body,
                                             headers={"X-Request-Id": rid}) as up:
                    text = await up.text()
                    if up.status != 200:
                        raise HopError(f"prefill instance {inst.name} answered HTTP {up.status}: {text[:300]}",
                                       answered=True)
                    return json.loads(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise HopError(f"prefill instance {inst.name} unreachable: {type(exc).__name__}: {exc}") from None

    def kv_ready(self, h: HandoffRecord, folder: Optional[Path], prefill: Instance) -> None:
        """Through storage (ExampleConnector): the prefill's KV files are there before decode is asked, else decode
        would recompute the prompt and the run would measure the wrong thing."""
        if folder is not None and h.kv_tokens > 0:
            if not folder.is_dir() or not any(folder.glob("*.safetensors")):
                raise HopError(f"KV for request {h.request_id} not found in {self.storage} after prefill on "
                               f"{prefill.name} (expected {h.kv_tokens} tokens in {folder.name}): decode would "
                               "recompute it")
            h.kv_bytes_measured = kv_store.stored_bytes(folder)

    async def disaggregated(self, request: Any, body: dict[str, Any], rid: str, t_recv: int) -> Any:
        import aiohttp
        cfg = self.cfg
        p, d = self.pools["prefill"].pick(), self.pools["decode"].pick()
        prompt = body.get("prompt")
        n_prompt = len(prompt) if isinstance(prompt, list) else 0
        kv_tokens, kv_bytes_tokens = kv_store.loaded_tokens(cfg.connector, n_prompt, cfg.block_size)
        h = new_handoff(rid, p.name, d.name, cfg.connector or "none", n_prompt, kv_tokens, cfg.kv_bytes_per_token,
                        t_recv)
        h.kv_bytes_expected = kv_bytes_tokens * cfg.kv_bytes_per_token
        marks: dict[str, Any] = {"hop": "decode", "instance": d.name, "route": f"{p.name}>{d.name}"}
        folder = kv_store.kv_folder(self.storage, prompt, cfg.block_size) \
            if cfg.connector == "example" and self.storage else None
        try:
            h.t_prefill_sent_ns = time.perf_counter_ns()
            pre = await self.prefill(p, body, rid)
            h.t_prefill_done_ns = time.perf_counter_ns()
            dec_body = dict(body)
            if cfg.connector == "nixl":
                dec_body["kv_transfer_params"] = pre.get("kv_transfer_params")
            self.kv_ready(h, folder, p)
            h.t_kv_ready_ns = time.perf_counter_ns()
            try:
                with self.pools["decode"].holding(d):
                    resp = await self.relay(request, f"{d.url}/v1/completions", dec_body, rid, marks)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                raise HopError(f"decode instance {d.name} unreachable: {type(exc).__name__}: {exc}") from None
            if marks.get("error"):
                h.status, h.error = "error", marks["error"]
            return resp
        except HopError as exc:
            h.status, h.error = "error", str(exc)
            marks["prefill_failed"] = h.t_prefill_done_ns is None and exc.answered
            return _error(502, str(exc))
        except asyncio.CancelledError:   # the client went away: its upstream requests are closed, vLLM aborts them
            if not marks.get("done"):    # (a client may close as soon as it has read [DONE]: that one is whole)
                h.status, h.error = "cancelled", "the client went away before the answer ended"
            raise
        finally:   # also when cancelled after [DONE]: the record is written from what the relay marked
            self.close_handoff(h, marks, folder)

    def close_handoff(self, h: HandoffRecord, marks: dict[str, Any], folder: Optional[Path]) -> None:
        """The decode hop's times from what the relay marked; the handoff record and the route line written."""
        h.t_decode_sent_ns = marks.get("t_upstream_sent_ns")
        h.t_decode_first_ns = marks.get("t_first_ns")
        h.decode_step_ms = step_ms(marks.get("chunks") or [])
        if h.status == "ok" and h.t_decode_first_ns and h.t_decode_sent_ns:
            first_ms = (h.t_decode_first_ns - h.t_decode_sent_ns) / 1e6
            h.transfer_ms = max(0.0, first_ms - (h.decode_step_ms or 0.0)) if h.kv_tokens else 0.0
        h.t_end_ns = time.perf_counter_ns()
        # a prefill or a decode asked and not finished (its client went away) may still be writing or loading this
        # KV: vLLM's engine dies on a file removed under it, so such a folder stays until the pool stops and removes
        # its storage. Removed at once: a request whose prefill ended and whose decode ended or was never asked.
        prefill_ended = h.t_prefill_sent_ns is None or h.t_prefill_done_ns is not None or marks.get("prefill_failed")
        decode_ended = h.t_decode_sent_ns is None or marks.get("done")
        if folder is not None and self.cfg.cleanup_kv and prefill_ended and decode_ended:
            kv_store.remove(folder)
        assert self.handoff_log is not None      # RouterConfig requires one in disaggregated mode
        self.handoff_log.write(json.dumps(h.to_json(), separators=(",", ":")) + "\n")
        self.log_route({"request_id": h.request_id, "mode": "disaggregated", "prefill": h.prefill_instance,
                        "decode": h.decode_instance, "t_recv_ns": h.t_recv_ns,
                        "t_prefill_sent_ns": h.t_prefill_sent_ns, "t_prefill_done_ns": h.t_prefill_done_ns,
                        "t_decode_sent_ns": h.t_decode_sent_ns, "t_first_ns": h.t_decode_first_ns,
                        "t_end_ns": h.t_end_ns, "error": h.error})

    async def health(self, _: Any) -> Any:
        from aiohttp import web
        return web.Response(text="")

    def _some_url(self) -> str:
        return next(iter(self.pools.values())).instances[0].url

    async def version(self, _: Any) -> Any:
        # The version of the servers behind the router (all vLLM), so checks see what actually serves.
        import aiohttp
        from aiohttp import web
        try:
            async with self.session.get(f"{self._some_url()}/version") as up:
                data = await up.json()
        except (aiohttp.ClientError, ValueError):
            data = {}
        return web.json_response({**data, "router": self.cfg.mode})

    async def models(self, _: Any) -> Any:
        from aiohttp import web
        async with self.session.get(f"{self._some_url()}/v1/models") as up:
            return web.json_response(await up.json(), status=up.status)

    async def metrics(self, _: Any) -> Any:
        # The router's own: requests it holds (a backlog vLLM's gauges do not see, e.g. between prefill and decode)
        from aiohttp import web
        text = ("# TYPE ctxkit_router_requests_in_flight gauge\n"
                f"ctxkit_router_requests_in_flight {self.in_flight}\n")
        return web.Response(text=text, content_type="text/plain")


class FaultyRouter(Router):
    """For the reliability tests (RouterConfig.fault "drop_kv"): the stored KV is lost between prefill and decode,
    which the router must report as a clear error rather than let decode recompute the prompt."""

    def kv_ready(self, h: HandoffRecord, folder: Optional[Path], prefill: Instance) -> None:
        if folder is not None:
            kv_store.remove(folder)
        super().kv_ready(h, folder, prefill)


def serve(cfg: RouterConfig, host: str, port: int) -> None:
    from aiohttp import web
    router = (FaultyRouter if cfg.fault == "drop_kv" else Router)(cfg)
    # A client that goes away cancels its handler, which closes the upstream request: vLLM aborts it instead of
    # computing an answer nobody reads (a probe that stopped early leaves no backlog behind the router).
    web.run_app(router.app(), host=host, port=port, access_log=None, print=lambda *_: None,
                handler_cancellation=True)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="ctxkit router (aggregated pool or disaggregated prefill -> decode)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        cfg = RouterConfig.model_validate_json(Path(args.config).read_text())
    except ValidationError as exc:
        sys.exit(f"router configuration {args.config}: {exc}")
    serve(cfg, args.host, args.port)


if __name__ == "__main__":
    main()
