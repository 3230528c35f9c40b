"""A multi-node Ray on this machine whose nodes mirror cluster.yaml's node types (SIMULATION).

``ray.cluster_utils.Cluster`` starts one raylet per simulated node, all on 127.0.0.1. Each
node advertises its type's resources from cluster.yaml — CPU count, logical GPU count and the
custom resource (``gpu_large`` / ``gpu_small``) — so the roles' resource requests from
configs/gpu_cluster.yaml decide placement exactly as on the real cluster. The counts are
logical: the 2-core machine has no GPU and Ray does not enforce CPU counts, it only books them.

Loopback only (see ../shared/notes/environment.md): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and every
node started with ``node_ip_address=127.0.0.1``; :func:`listeners_off_loopback` checks it.
"""
from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"


@dataclass(frozen=True)
class NodeType:
    name: str
    num_cpus: float
    num_gpus: float
    custom: dict  # custom resources, e.g. {"gpu_large": 1}


def node_types(path: Path = CLUSTER_YAML) -> dict[str, NodeType]:
    """cluster.yaml's ``available_node_types`` as CPU / GPU counts and custom resources."""
    doc = yaml.safe_load(Path(path).read_text())
    out = {}
    for name, spec in doc["available_node_types"].items():
        res = dict(spec.get("resources") or {})
        cpus = float(res.pop("CPU", 0))
        gpus = float(res.pop("GPU", 0))
        out[name] = NodeType(name, cpus, gpus, res)
    head = doc["head_node_type"]
    if head not in out:
        raise ValueError(f"cluster.yaml: head_node_type {head!r} is not an available node type")
    return {head: out.pop(head), **out}


@dataclass
class SimCluster:
    """The running simulated cluster: Ray address and which node id is which node type."""

    cluster: object
    address: str
    head_type: str
    node_type_of: dict = field(default_factory=dict)  # node id -> node type name
    counts: dict = field(default_factory=dict)  # node type -> nodes started
    temp_dir: Optional[str] = None
    node_args: dict = field(default_factory=dict)  # what every node was started with beside its type's resources

    def replace_node(self, node_id: str) -> dict:
        """A node lost and replaced, as on a cloud: every process of worker node ``node_id`` killed at once (its
        raylet, object store and the actors' workers: no graceful shutdown), then a fresh node of the same type
        added, as an autoscaler would. Returns the ids, the type and how long each step took (real seconds)."""
        node = next((n for n in self.cluster.worker_nodes if n.node_id == node_id), None)
        if node is None:
            raise ValueError(f"{node_id}: not a worker node of this simulated cluster (the head cannot be removed)")
        kind = self.node_type_of.get(node_id, "?")
        t = node_types()[kind]
        t0 = time.monotonic()
        self.cluster.remove_node(node, allow_graceful=False)
        t1 = time.monotonic()
        new = self.cluster.add_node(num_cpus=int(t.num_cpus), num_gpus=int(t.num_gpus), resources=dict(t.custom),
                                    **self.node_args)
        t2 = time.monotonic()
        del self.node_type_of[node_id]
        self.node_type_of[new.node_id] = kind
        return {"removed": node_id, "type": kind, "added": new.node_id, "remove_s": t1 - t0, "add_s": t2 - t1}

    def shutdown(self, remove_temp: bool = True) -> None:
        """Stop every node; ``remove_temp``: also delete the session folder (Ray's logs) this cluster used."""
        import shutil

        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()
        if remove_temp and self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def loopback_environment() -> None:
    """Before Ray starts any process: talk over 127.0.0.1 only (inherited by every node and worker)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _default_temp_dir_exists() -> None:
    """Ray's ``Cluster`` writes its address file (``ray_current_cluster``) into Ray's *default* temp folder whatever
    the head's own ``temp_dir`` (ray-project/ray#16458), and fails with FileNotFoundError on a machine where no Ray
    has run yet, which has no such folder: create it first."""
    from ray._common.utils import get_default_ray_temp_dir

    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)


def start_cluster(counts: dict[str, int], *, path: Path = CLUSTER_YAML, temp_dir: Optional[str] = None,
                  object_store_mb: int = 80, dashboard_port: Optional[int] = None) -> SimCluster:
    """Start a head of cluster.yaml's head type plus ``counts[type]`` worker nodes of each other type.

    ``dashboard_port``: also start the head's dashboard (and its job server, which ``ray job submit``
    needs) on 127.0.0.1 at that port; None: no dashboard."""
    loopback_environment()
    from ray.cluster_utils import Cluster

    types = node_types(path)
    head_name = next(iter(types))
    unknown = set(counts) - set(types)
    if unknown:
        raise ValueError(f"node types {sorted(unknown)} are not in {path} (it has {sorted(types)})")
    common = dict(node_ip_address="127.0.0.1", object_store_memory=object_store_mb * 2**20)
    head = types[head_name]
    head_args = dict(num_cpus=int(head.num_cpus), num_gpus=int(head.num_gpus), resources=dict(head.custom),
                     include_dashboard=dashboard_port is not None, dashboard_host="127.0.0.1", **common)
    if dashboard_port is not None:
        # The job server hands each job to the head's dashboard agent over HTTP: give that agent a free
        # port (its default, 52365, may be taken by another Ray on the machine, and then `ray job submit`
        # answers "No available agent to submit job" forever).
        head_args.update(dashboard_port=dashboard_port, dashboard_agent_listen_port=free_port())
    if temp_dir:
        head_args["temp_dir"] = temp_dir
    _default_temp_dir_exists()
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    for name, n in counts.items():
        if name == head_name:
            continue
        t = types[name]
        for _ in range(n):
            cluster.add_node(num_cpus=int(t.num_cpus), num_gpus=int(t.num_gpus), resources=dict(t.custom), **common)
    cluster.wait_for_nodes()
    if temp_dir:
        # Processes of this cluster that look for "the local Ray" (the job server's supervisor does, to
        # hand a submitted job its RAY_ADDRESS) read <temp_dir>/ray_current_cluster; Cluster writes only
        # /tmp/ray's, and without ours they fall back to any Ray found on the machine — another user's.
        from ray._private.utils import write_ray_address

        write_ray_address(cluster.address, temp_dir)
    return SimCluster(cluster, cluster.address, head_name, counts={head_name: 1, **{k: v for k, v in counts.items() if k != head_name}},
                      temp_dir=temp_dir, node_args=common)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def classify_nodes(sim: SimCluster) -> dict[str, str]:
    """node id -> node type, read back from each live node's resources (its custom resource, or the head marker)."""
    import ray

    types = node_types()
    out = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node["Resources"]
        if "node:__internal_head__" in res:
            out[node["NodeID"]] = sim.head_type
            continue
        match = [t.name for t in types.values() if t.custom and all(res.get(k) == v for k, v in t.custom.items())]
        out[node["NodeID"]] = match[0] if len(match) == 1 else "?"
    sim.node_type_of = out
    return out


def _is_loopback(ip: str) -> bool:
    ip = ip.split("%")[0]
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def listeners_off_loopback(root_pid: Optional[int] = None) -> list[str]:
    """Listening TCP/UDP sockets of this process and its descendants (the simulated nodes, their workers)
    bound anywhere but loopback; [] when everything stays on 127.0.0.1."""
    import psutil

    root = psutil.Process(root_pid or os.getpid())
    pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
    bad = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids or not conn.laddr:
            continue
        listening = conn.status == psutil.CONN_LISTEN or (conn.type == 2 and not conn.raddr)  # SOCK_DGRAM
        if listening and not _is_loopback(conn.laddr.ip):
            bad.append(f"pid {conn.pid}: {conn.laddr.ip}:{conn.laddr.port}")
    return sorted(bad)
