"""Ray Train's torch process group, kept on loopback when the whole run is on this machine.

Ray Train's ``TorchConfig`` sets ``MASTER_ADDR`` to rank 0's node address and lets torch's
``env://`` rendezvous create the c10d ``TCPStore`` on rank 0. That server listens on *every*
interface whatever ``MASTER_ADDR`` says (libuv binds ``::`` / ``0.0.0.0``; torch has no
option or environment variable for a bind address), and gloo binds to the address the host
name resolves to (the network interface on most machines). A single-machine run therefore
opened ports to the network although nothing outside the machine ever connects.

:class:`LoopbackTorchConfig` changes that when every worker's Ray node address is a loopback
address — which is the case for the local Ray of :func:`core.ray_config.init_ray` (bound to
127.0.0.1), i.e. ``python -m training.train`` without a cluster:

* rank 0 binds a socket to 127.0.0.1 itself and hands it to ``TCPStore(master_listen_fd=...)``
  (the one way torch offers to choose where the store listens);
* every worker joins the group through that store, with ``MASTER_ADDR=127.0.0.1`` and gloo
  (``GLOO_SOCKET_IFNAME``) and NCCL's bootstrap (``NCCL_SOCKET_IFNAME``) on the loopback
  interface, unless the user set those variables.

On a real cluster (node addresses that are not loopback) it is Ray's own set-up, unchanged:
workers on other machines must reach rank 0's store over the network.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend

logger = logging.getLogger(__name__)

LOOPBACK_ADDR = "127.0.0.1"

# Rank 0's store server (a torch.distributed.TCPStore), kept until the backend shuts down.
_STORE = None


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def loopback_interface() -> Optional[str]:
    """Name of the network interface that carries 127.0.0.1 (``lo`` on Linux, ``lo0`` on macOS)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == LOOPBACK_ADDR for a in addrs):
            return name
    return None


def loopback_env() -> dict[str, str]:
    """Environment that keeps torch.distributed's sockets on loopback (user settings win)."""
    env = {"MASTER_ADDR": LOOPBACK_ADDR}
    iface = loopback_interface()
    if iface:
        for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            if not os.environ.get(var):
                env[var] = iface
    return env


def _node_address() -> str:
    import ray

    return ray.util.get_node_ip_address()


def _serve_store_on_loopback(timeout_s: int) -> int:
    """On rank 0: start the c10d store server on a socket bound to 127.0.0.1; return its port."""
    import torch.distributed as dist

    global _STORE
    _release_store()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK_ADDR, 0))
        sock.listen(socket.SOMAXCONN)
        port = sock.getsockname()[1]
        store = dist.TCPStore(LOOPBACK_ADDR, port, world_size=None, is_master=True,
                              timeout=timedelta(seconds=timeout_s), wait_for_workers=False,
                              master_listen_fd=sock.fileno())
    except BaseException:
        sock.close()
        raise
    sock.detach()  # the store's server owns the descriptor now and closes it when it goes
    _STORE = store
    return port


def _release_store() -> None:
    global _STORE
    _STORE = None


def _set_distributed_env(port: int) -> None:
    """On every worker: loopback rendezvous variables plus the torchrun-style rank variables."""
    import ray.train

    os.environ.update(loopback_env())
    os.environ["MASTER_PORT"] = str(port)
    ctx = ray.train.get_context()
    os.environ.update({"LOCAL_RANK": str(ctx.get_local_rank()), "LOCAL_WORLD_SIZE": str(ctx.get_local_world_size()),
                       "NODE_RANK": str(ctx.get_node_rank()), "RANK": str(ctx.get_world_rank()),
                       "WORLD_SIZE": str(ctx.get_world_size())})
    from ray.train.torch import get_device

    os.environ["ACCELERATE_TORCH_DEVICE"] = str(get_device())  # as Ray's own set-up does


def _init_process_group(backend: str, world_rank: int, world_size: int, port: int, timeout_s: int) -> None:
    """On every worker: join the group through the loopback store (rank 0 holds the server)."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    if world_rank == 0:
        store = _STORE
    else:
        store = dist.TCPStore(LOOPBACK_ADDR, port, world_size=None, is_master=False, timeout=timeout)
    if "nccl" in backend:
        # What Ray's set-up does for NCCL: fail (rather than hang) when a collective times out.
        if "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in os.environ and "TORCH_NCCL_BLOCKING_WAIT" not in os.environ:
            os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
    dist.init_process_group(backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig):
        import ray
        from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup

        backend = backend_config.backend
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        addresses = worker_group.execute(_node_address)
        if (isinstance(worker_group, V1WorkerGroup) or backend not in ("gloo", "nccl")
                or not all(is_loopback(a) for a in addresses)):
            return super().on_start(worker_group, backend_config)
        port = worker_group.execute_single(0, _serve_store_on_loopback, timeout_s=backend_config.timeout_s)
        worker_group.execute(_set_distributed_env, port=port)
        n = len(worker_group)
        ray.get([worker_group.execute_single_async(i, _init_process_group, backend=backend, world_rank=i, world_size=n,
                                                   port=port, timeout_s=backend_config.timeout_s)
                 for i in range(n)])
        logger.debug("torch process group (%s, %d workers) on %s:%d", backend, n, LOOPBACK_ADDR, port)

    def on_shutdown(self, worker_group, backend_config):
        try:
            super().on_shutdown(worker_group, backend_config)
        finally:
            try:
                worker_group.execute_single(0, _release_store)
            except Exception:  # a dead worker: its store went with it
                pass


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group stays on loopback when every worker is on a loopback Ray node."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend
