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
import itertools
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from ctxkit import sse
from ctxkit.backends.process import ManagedServer
from ctxkit.schedulers import kv_store
from ctxkit.schedulers.broker import NIXL_PREFILL_PARAMS, new_handoff

POLICIES = ("round_robin", "least_outstanding")


class RouterProcess(ManagedServer):
    """The router as a managed child process (own process group, health-checked, stopped with its run)."""

    kind = "router"
    mode = "real"

    def __init__(self, config: dict[str, Any], *, name: str = "router", log_dir: Path, host: str = "127.0.0.1") -> None:
        super().__init__(name=name, host=host, log_dir=log_dir, startup_timeout_s=60.0)
        self.config = config
        self.model = config["model"]
        self.config_path = Path(log_dir) / f"{name}.config.json"

    def command(self) -> list[str]:
        return [self.python, "-m", "ctxkit.schedulers.router", "--config", str(self.config_path),
                "--host", self.host, "--port", str(self.port)]

    def start(self) -> "RouterProcess":
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        super().start()
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config}


class InstanceSelector:
    """Picks the instance of one role (pool, prefill or decode) for the next request, by the routing policy."""

    def __init__(self, instances: list[dict[str, str]], policy: str) -> None:
        if not instances:
            raise ValueError("a pool needs at least one instance")
        self.instances = instances
        self.policy = policy
        self.outstanding = {i["name"]: 0 for i in instances}
        self._rr = itertools.cycle(range(len(instances)))

    def pick(self) -> dict[str, str]:
        if self.policy == "least_outstanding":
            return min(self.instances, key=lambda i: (self.outstanding[i["name"]], i["name"]))
        return self.instances[next(self._rr)]


def _error(status: int, message: str) -> Any:
    from aiohttp import web
    return web.json_response({"error": {"message": message, "type": "router_error", "code": status}}, status=status)


def _serve(cfg: dict[str, Any], host: str, port: int) -> None:
    import aiohttp
    from aiohttp import web

    mode = cfg["mode"]
    policy = cfg.get("policy", "round_robin")
    pools = {k: InstanceSelector(v, policy) for k, v in cfg["instances"].items()}
    route_log = open(cfg["route_log"], "a", buffering=1)
    handoff_log = open(cfg["handoff_log"], "a", buffering=1) if mode == "disaggregated" else None
    timeout = aiohttp.ClientTimeout(total=cfg.get("timeout_s", 600))
    connector = cfg.get("connector")
    storage = Path(cfg["storage_path"]) if cfg.get("storage_path") else None
    state: dict[str, Any] = {"in_flight": 0}

    async def on_startup(app: web.Application) -> None:
        # idle connections dropped after 4 s, before vLLM's server (uvicorn) drops them after 5 s: a request sent
        # on one the server is closing at that moment fails before the server has read it
        state["session"] = aiohttp.ClientSession(timeout=timeout,
                                                 connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0))

    async def on_cleanup(app: web.Application) -> None:
        await state["session"].close()

    def log_route(entry: dict[str, Any]) -> None:
        route_log.write(json.dumps(entry, separators=(",", ":")) + "\n")

    async def relay(request: web.Request, url: str, body: dict[str, Any], rid: str,
                    marks: dict[str, Any]) -> web.StreamResponse:
        """Stream the upstream answer to the client; marks the first token-carrying chunk and the gaps."""
        marks["t_upstream_sent_ns"] = time.perf_counter_ns()
        async with state["session"].post(url, json=body, headers={"X-Request-Id": rid}) as up:
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
                    try:
                        await resp.write(line)
                    except ConnectionResetError:
                        # The client went away (a client may close as soon as it has read [DONE]): not an
                        # upstream failure. Keep draining upstream so the request's times stay complete.
                        client_open = False
                        marks["client_closed_early"] = True
            if client_open:
                try:
                    await resp.write_eof()
                except ConnectionResetError:
                    marks["client_closed_early"] = True
            return resp

    def step_ms(marks: dict[str, Any]) -> Optional[float]:
        """The decode stream's own median gap between token chunks."""
        chunks = marks.get("chunks") or []
        return statistics.median(b - a for a, b in zip(chunks, chunks[1:])) / 1e6 if len(chunks) > 2 else None

    async def completions(request: web.Request) -> web.StreamResponse:
        state["in_flight"] += 1
        try:
            return await handle(request)
        finally:
            state["in_flight"] -= 1

    async def handle(request: web.Request) -> web.StreamResponse:
        t_recv = time.perf_counter_ns()
        rid = request.headers.get("X-Request-Id") or f"req-{uuid.uuid4().hex[:12]}"
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        prompt = body.get("prompt")
        n_prompt = len(prompt) if isinstance(prompt, list) else 0
        if mode == "aggregated":
            inst = pools["pool"].pick()
            pools["pool"].outstanding[inst["name"]] += 1
            marks: dict[str, Any] = {"hop": "aggregated", "instance": inst["name"], "route": inst["name"]}
            entry = {"request_id": rid, "mode": mode, "pool": "pool", "instance": inst["name"], "t_recv_ns": t_recv}
            try:
                return await relay(request, f"{inst['url']}/v1/completions", body, rid, marks)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                marks["error"] = f"instance {inst['name']} unreachable: {type(exc).__name__}: {exc}"
                return _error(502, marks["error"])
            finally:
                pools["pool"].outstanding[inst["name"]] -= 1
                log_route({**entry, "t_sent_ns": marks.get("t_upstream_sent_ns"), "t_first_ns": marks.get("t_first_ns"),
                           "t_end_ns": time.perf_counter_ns(), "error": marks.get("error")})

        # disaggregated: prefill, then decode
        p, d = pools["prefill"].pick(), pools["decode"].pick()
        bs = cfg["block_size"]
        kv_tokens, kv_bytes_tokens = kv_store.loaded_tokens(connector, n_prompt, bs)
        h = new_handoff(rid, p["name"], d["name"], connector or "none", n_prompt, kv_tokens,
                        cfg["kv_bytes_per_token"], t_recv)
        h.kv_bytes_expected = kv_bytes_tokens * cfg["kv_bytes_per_token"]
        marks = {"hop": "decode", "instance": d["name"], "route": f"{p['name']}>{d['name']}"}
        pools["prefill"].outstanding[p["name"]] += 1
        folder = kv_store.kv_folder(storage, prompt, cfg["block_size"]) if connector == "example" and storage else None
        try:
            pre_body = {**body, "max_tokens": 1, "stream": False}
            pre_body.pop("stream_options", None)
            if connector == "nixl":
                pre_body["kv_transfer_params"] = dict(NIXL_PREFILL_PARAMS)
            h.t_prefill_sent_ns = time.perf_counter_ns()
            try:
                async with state["session"].post(f"{p['url']}/v1/completions", json=pre_body,
                                                 headers={"X-Request-Id": rid}) as up:
                    text = await up.text()
                    if up.status != 200:
                        raise RuntimeError(f"prefill instance {p['name']} answered HTTP {up.status}: {text[:300]}")
                    pre = json.loads(text)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                raise RuntimeError(f"prefill instance {p['name']} unreachable: {type(exc).__name__}: {exc}") from None
            finally:
                pools["prefill"].outstanding[p["name"]] -= 1
            h.t_prefill_done_ns = time.perf_counter_ns()
            dec_body = dict(body)
            if connector == "nixl":
                dec_body["kv_transfer_params"] = pre.get("kv_transfer_params")
            if folder is not None and cfg.get("fault_drop_kv"):
                kv_store.remove(folder)  # fault injection (reliability tests): the KV is lost before decode
            if folder is not None and kv_tokens > 0:
                if not folder.is_dir() or not any(folder.glob("*.safetensors")):
                    raise RuntimeError(f"KV for request {rid} not found in {storage} after prefill on {p['name']} "
                                       f"(expected {kv_tokens} tokens in {folder.name}): decode would recompute it")
                h.kv_bytes_measured = kv_store.stored_bytes(folder)
            h.t_kv_ready_ns = time.perf_counter_ns()
            pools["decode"].outstanding[d["name"]] += 1
            try:
                resp = await relay(request, f"{d['url']}/v1/completions", dec_body, rid, marks)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                raise RuntimeError(f"decode instance {d['name']} unreachable: {type(exc).__name__}: {exc}") from None
            finally:
                pools["decode"].outstanding[d["name"]] -= 1
            if marks.get("error"):
                h.status, h.error = "error", marks["error"]
            return resp
        except RuntimeError as exc:
            h.status, h.error = "error", str(exc)
            return _error(502, str(exc))
        except asyncio.CancelledError:   # the client went away: its upstream requests are closed, vLLM aborts them
            if not marks.get("done"):    # (a client may close as soon as it has read [DONE]: that one is whole)
                h.status, h.error = "cancelled", "the client went away before the answer ended"
            raise
        finally:   # also when cancelled after [DONE]: the record is written from what the relay marked
            h.t_decode_sent_ns = marks.get("t_upstream_sent_ns")
            h.t_decode_first_ns = marks.get("t_first_ns")
            h.decode_step_ms = step_ms(marks)
            if h.status == "ok" and h.t_decode_first_ns and h.t_decode_sent_ns:
                first_ms = (h.t_decode_first_ns - h.t_decode_sent_ns) / 1e6
                h.transfer_ms = max(0.0, first_ms - (h.decode_step_ms or 0.0)) if kv_tokens else 0.0
            h.t_end_ns = time.perf_counter_ns()
            if folder is not None and cfg.get("cleanup_kv", True):
                kv_store.remove(folder)
            handoff_log.write(json.dumps(h.to_json(), separators=(",", ":")) + "\n")
            log_route({"request_id": rid, "mode": mode, "prefill": p["name"], "decode": d["name"],
                       "t_recv_ns": t_recv, "t_prefill_sent_ns": h.t_prefill_sent_ns,
                       "t_prefill_done_ns": h.t_prefill_done_ns, "t_decode_sent_ns": h.t_decode_sent_ns,
                       "t_first_ns": h.t_decode_first_ns, "t_end_ns": h.t_end_ns, "error": h.error})

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def version(_: web.Request) -> web.Response:
        # The version of the servers behind the router (all vLLM), so checks see what actually serves.
        some = next(iter(pools.values())).instances[0]["url"]
        try:
            async with state["session"].get(f"{some}/version") as up:
                data = await up.json()
        except (aiohttp.ClientError, ValueError):
            data = {}
        return web.json_response({**data, "router": mode})

    async def models(_: web.Request) -> web.Response:
        some = next(iter(pools.values())).instances[0]["url"]
        async with state["session"].get(f"{some}/v1/models") as up:
            return web.json_response(await up.json(), status=up.status)

    async def metrics(_: web.Request) -> web.Response:
        # The router's own: requests it holds (a backlog vLLM's gauges do not see, e.g. between prefill and decode)
        text = ("# TYPE ctxkit_router_requests_in_flight gauge\n"
                f"ctxkit_router_requests_in_flight {state['in_flight']}\n")
        return web.Response(text=text, content_type="text/plain")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.add_routes([web.post("/v1/completions", completions), web.get("/health", health),
                    web.get("/version", version), web.get("/v1/models", models), web.get("/metrics", metrics)])
    # A client that goes away cancels its handler, which closes the upstream request: vLLM aborts it instead of
    # computing an answer nobody reads (a probe that stopped early leaves no backlog behind the router).
    web.run_app(app, host=host, port=port, access_log=None, print=lambda *_: None, handler_cancellation=True)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="ctxkit router (aggregated pool or disaggregated prefill -> decode)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    if cfg.get("policy", "round_robin") not in POLICIES:
        sys.exit(f"unknown routing policy {cfg.get('policy')!r}: {', '.join(POLICIES)}")
    _serve(cfg, args.host, args.port)


if __name__ == "__main__":
    main()
