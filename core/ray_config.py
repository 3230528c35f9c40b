"""Ray connection settings and a loopback-only local start."""
from __future__ import annotations

import os
from typing import Optional

from pydantic import Field

from core.config import StrictModel


class RayConfig(StrictModel):
    """How the driver reaches Ray."""

    address: Optional[str] = Field(None, description="Cluster address ('auto', 'ray://host:10001', ...). None: join the cluster when run under `ray job submit` (RAY_ADDRESS set), else start a local Ray.")
    num_cpus: Optional[int] = Field(None, ge=1, description="Local Ray only: CPUs to offer (None: all).")
    num_gpus: Optional[int] = Field(None, ge=0, description="Local Ray only: GPUs to offer (None: detected).")
    temp_dir: Optional[str] = Field(None, description="Local Ray only: session folder (default /tmp/ray).")
    include_dashboard: bool = Field(False, description="Local Ray only: start the dashboard (on 127.0.0.1).")


# Whether the Ray this process is connected to was started by init_ray on this machine (not joined).
_started_local = False


def on_local_ray() -> bool:
    """True when this process is connected to a Ray that init_ray started here (one machine, loopback),
    False when it joined a cluster or is not connected."""
    import ray

    return _started_local and ray.is_initialized()


def init_ray(cfg: RayConfig, *, log_to_driver: bool = True, **runtime_env) -> bool:
    """Connect to a cluster or start a loopback-only local Ray. Returns True if it started one.

    ``log_to_driver=False`` (local Ray only) keeps what the workers print off this process's
    console; the batch job then has each role's actor write its own log file. A cluster's
    workers always log to the driver: the job's output folder may not exist on their nodes.

    Local Ray binds to 127.0.0.1: a single-machine default should not listen on the
    network, and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is what makes Ray's processes talk
    over loopback rather than the interface address.
    """
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        # Must be in the environment before Ray starts its processes (they inherit it);
        # Ray also reads it into a constant when first imported, so set both.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    global _started_local
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, runtime_env=runtime_env or None, log_to_driver=True)
        _started_local = False
        return False
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    # address="local": always a new instance. Without it ray.init joins the instance recorded in
    # /tmp/ray/ray_current_cluster, i.e. any Ray still running on this machine (another job's,
    # another user's test run) — and then fails on num_cpus, or runs the job in it.
    kwargs = dict(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                  include_dashboard=cfg.include_dashboard, _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1")
    if cfg.temp_dir:
        kwargs["_temp_dir"] = cfg.temp_dir
    ray.init(**{k: v for k, v in kwargs.items() if v is not None}, runtime_env=runtime_env or None,
             log_to_driver=log_to_driver)
    _started_local = True
    return True
