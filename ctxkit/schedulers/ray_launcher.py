"""Place a pool's vLLM servers on the nodes of a Ray cluster (`ray: {...}` in E3/E4 parameters; `pip install
ctxkit[ray]`). ctxkit builds each server's command line as for a local pool; Ray only decides where it runs.

One placement group holds a bundle per server (its CPUs and GPUs), packed or spread as the parameters say. In each
bundle a small actor (`_Host`) runs the server as a child process in its own process group, tied to the actor's
life (PR_SET_PDEATHSIG), so the server goes when the actor goes: on stop, on error, and when the driver dies (Ray
kills the actors a dead driver owned). The actor reports its node's address and a free port there, so servers
listen on the node's address (not 127.0.0.1) and the router and a decode server's NIXL side channel reach them
from other nodes. Each server's log is brought back into the run's logs/ when it stops. Ray assigns a bundle's GPUs
(CUDA_VISIBLE_DEVICES) itself: the local placement's device and core choices (this host's) are dropped.

The pool must start from the main thread: a local cluster's daemons die with the thread that called ray.init. A
model replica that spans nodes is not placed here (a bundle holds one node's GPUs): run it with vLLM's own Ray
executor or data parallel and attach to it (backend: topology).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

from ctxkit.backends.process import PID_REGISTRY_ENV, die_with_parent, register_pgid
from ctxkit.backends.vllm_server import VLLMServer
from ctxkit.params import RayParams


class RayUnavailable(RuntimeError):
    """Ray is not installed (the `ray` extra) or the cluster cannot be reached."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("placing servers through Ray needs Ray: pip install 'ctxkit[ray]'") from None
    return ray


# Set in a Ray actor's environment but not the server's to inherit: Ray pins OMP_NUM_THREADS to the bundle's CPUs
# (a local server would use its cores), and the driver's process registry means nothing on another node.
NOT_INHERITED = ("OMP_NUM_THREADS", PID_REGISTRY_ENV)
# This host's placement choices, meaningless where Ray puts the server (Ray sets CUDA_VISIBLE_DEVICES itself).
LOCAL_ONLY = ("CUDA_VISIBLE_DEVICES", "VLLM_CPU_OMP_THREADS_BIND")


def bundle_gpus(devices: list[str], gpus_per_server: float | None) -> list[float]:
    """GPUs for each server's bundle: as given, or as this host's placement gave them (`devices`: each server's
    CUDA_VISIBLE_DEVICES, "" for none), a device shared by k servers counting 1/k to each."""
    if gpus_per_server is not None:
        return [float(gpus_per_server)] * len(devices)
    sharing = {d: devices.count(d) for d in devices}
    return [len(d.split(",")) / sharing[d] if d else 0.0 for d in devices]


class _Host:
    """Runs one server process on its node (a Ray actor; its methods run in the actor's one thread)."""

    def __init__(self) -> None:
        self.proc = None
        self.log_path = ""

    def node(self) -> tuple[str, int]:
        """This node's address as the cluster knows it, and a port free on it now."""
        import ray
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), int(s.getsockname()[1])

    def start(self, cmd: list[str], env: dict[str, str], log_name: str) -> int:
        import os
        import subprocess
        import sys
        import tempfile

        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: a plain actor runs its methods on its
        # process's main thread (no max_concurrency, no concurrency groups), which lives as long as the actor
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("_Host.start must run on the actor's main thread (a plain, sequential actor)")
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="ctxkit-ray-"), log_name)
        # the reaper leads the server's group and stops all of it (the engine core too) when this actor dies
        cmd = [sys.executable, "-m", "ctxkit.backends.reaper", *cmd]
        with open(self.log_path, "ab") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**{k: v for k, v in os.environ.items() if k not in NOT_INHERITED},
                                              **env}, start_new_session=True,
                                         preexec_fn=die_with_parent)   # dies with this actor's process
        return self.proc.pid

    def poll(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def log(self) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def stop(self) -> bytes:
        """Stop the server's whole process group (SIGTERM, then SIGKILL) and hand back its log."""
        import os
        import signal
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait_s)
                    break
                except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: escalate
                    continue
        return self.log()


class RayPlacement:
    """The cluster connection and the placement group of one pool."""

    def __init__(self, params: RayParams, bundles: list[dict[str, float]]) -> None:
        ray = _ray()
        self.params = params
        self.started_cluster = False
        if not ray.is_initialized():
            # "local": a new cluster on this host even where RAY_ADDRESS or a `ray start` cluster would be joined
            kwargs: dict[str, Any] = {"address": params.address} if params.address else \
                {"address": "local", "num_cpus": params.local_num_cpus, "include_dashboard": False}
            if threading.current_thread() is not threading.main_thread():
                raise RayUnavailable("start a Ray-placed pool from the main thread (a local cluster's daemons die "
                                     "with the thread that started them)")
            try:
                ray.init(log_to_driver=False, **kwargs)
            except (ConnectionError, ValueError) as exc:
                raise RayUnavailable(f"Ray cluster {params.address or '(local)'}: {exc}") from None
            self.started_cluster = params.address is None
        self.group = None
        try:
            self.group = ray.util.placement_group(bundles, strategy=params.strategy)
            ready, _ = ray.wait([self.group.ready()], timeout=params.placement_timeout_s)
            if not ready:
                raise RayUnavailable(f"Ray could not place {len(bundles)} server bundle(s) {bundles} "
                                     f"({params.strategy}) within {params.placement_timeout_s:g} s: cluster "
                                     f"resources {ray.cluster_resources()}")
            self.table = ray.util.placement_group_table(self.group)
        except BaseException:
            self.close()
            raise

    def off_this_node(self) -> list[int]:
        """Bundles Ray put on another node than this driver's."""
        here = _ray().get_runtime_context().get_node_id()
        return [int(i) for i, node in self.table.get("bundles_to_node_id", {}).items() if node != here]

    def host(self, index: int, bundle: dict[str, float]):
        ray = _ray()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        actor = ray.remote(_Host).options(
            num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=index))
        return actor.remote()

    def close(self) -> None:
        """Remove the placement group and shut down a cluster this pool started; never raises (it runs on every
        way out, after the servers are stopped)."""
        ray = _ray()
        try:
            if self.group is not None and ray.is_initialized():
                ray.util.remove_placement_group(self.group)
        except Exception:  # noqa: BLE001 - the cluster is already gone: nothing left to remove
            pass
        self.group = None
        if self.started_cluster and ray.is_initialized():   # the cluster ctxkit started for this pool goes with it
            ray.shutdown()
        self.started_cluster = False


class RayServer(VLLMServer):
    """A VLLMServer whose process runs in a Ray actor on whichever node its bundle landed on."""

    kind = "server (ray)"

    def attach(self, placement: RayPlacement, index: int, bundle: dict[str, float]) -> "RayServer":
        self.placement, self.index, self.bundle = placement, index, bundle
        self.actor = None
        self.node_ip = ""
        self.pid: Optional[int] = None           # the server's process (group leader) on its node
        return self

    def launch(self) -> None:
        ray = _ray()
        self.preflight()
        self.actor = self.placement.host(self.index, self.bundle)
        self.node_ip, self.port = ray.get(self.actor.node.remote())
        self.host = self.node_ip
        self.base_url = f"http://{self.host}:{self.port}"
        env = {k: v for k, v in self.environment_overrides().items() if k not in LOCAL_ONLY}
        self._t0 = time.monotonic()
        self.pid = ray.get(self.actor.start.remote(self.command(), env, self.log_path.name))
        if self.node_ip in _local_addresses():   # on this host: `ctxkit run` sweeps it up if everything else fails
            register_pgid(self.pid)

    def environment_overrides(self) -> dict[str, str]:
        """What this server sets on top of its node's environment (not this host's whole environment)."""
        env = dict(self.env)
        if self.kv_cache_space_gib is not None and "VLLM_CPU_KVCACHE_SPACE" not in env:
            env["VLLM_CPU_KVCACHE_SPACE"] = f"{self.kv_cache_space_gib:g}"
        if "VLLM_NIXL_SIDE_CHANNEL_PORT" in env:   # decode servers reach this side channel from their own nodes
            env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = self.node_ip
        return env

    def exit_code(self) -> Optional[int]:
        ray = _ray()
        try:
            return ray.get(self.actor.poll.remote(), timeout=30)
        except ray.exceptions.GetTimeoutError:
            return None                                    # a busy node: its health answer decides

    def last_lines(self) -> str:
        return f"(on {self.node_ip}); last lines:\n{self._tail()}"

    def _tail(self, lines: int = 25) -> str:
        text = _ray().get(self.actor.log.remote()).decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        if self.actor is None:
            return False
        ray = _ray()
        try:
            return ray.get(self.actor.poll.remote(), timeout=30) is None
        except ray.exceptions.GetTimeoutError:
            return True       # a busy node that has not answered yet: not evidence of a dead server
        except Exception:  # noqa: BLE001 - a dead actor or node: the server is gone
            return False

    def death_note(self) -> str:
        return f"{self.kind} {self.name!r} on {self.node_ip or '?'} is gone (log {self.log_path})"

    def stop(self) -> None:
        if self.actor is None:
            return
        ray = _ray()
        try:
            log = ray.get(self.actor.stop.remote(), timeout=60)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_bytes(log)          # the node's log, brought back into the run folder
            ray.kill(self.actor)
        except Exception:  # noqa: BLE001 - the actor, its node or the cluster is already gone, and the server with it
            pass
        self.actor = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "node_ip": self.node_ip, "pid": self.pid, "ray_bundle": self.bundle,
                "ray_index": self.index}


def _local_addresses() -> set[str]:
    import psutil
    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}


def place_on_ray(servers: list[VLLMServer], params: RayParams, gpus_each: list[float], *,
                 shared_folder: bool = False) -> tuple[list[RayServer], RayPlacement]:
    """The pool's servers as RayServers in one placement group (one bundle each), not yet launched."""
    bundles = [{"CPU": params.cpus_per_server, **({"GPU": g} if g else {})} for g in gpus_each]
    placement = RayPlacement(params, bundles)
    elsewhere = placement.off_this_node() if shared_folder else []
    if elsewhere:
        placement.close()
        raise RayUnavailable("ExampleConnector hands KV over through a folder on this host, and Ray placed servers "
                             f"on other nodes (bundles {elsewhere}): use connector nixl across "
                             "nodes, or strategy STRICT_PACK with this host in the cluster")
    placed = []
    for i, (s, b) in enumerate(zip(servers, bundles)):
        r = RayServer.__new__(RayServer)            # the same server (model, flags, env, log file), placed by Ray:
        r.__dict__.update(s.__dict__)               # a copy of its state, so the pool's code sees no difference
        placed.append(r.attach(placement, i, b))
    return placed, placement
