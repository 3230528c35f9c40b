"""Can the Ray cluster hold the training workers? Checked once Ray is up, before the trainer asks.

Ray Train asks for ``num_workers`` bundles of ``TrainConfig.worker_resources()`` and waits, for ever and
silently, until a node can give each one. The cluster profiles pin workers to a node type of
cluster.yaml with a custom resource (``custom_resources_per_worker: {gpu_small: 1}``), which no single
machine has; asked for on a workstation, the documented commands would hang.

* On a Ray this command started itself (one machine), custom resources that no node offers are
  dropped, each with a logged line: they choose a node type of a cluster, and on one machine every
  worker runs here anyway.
* What remains (and everything on a cluster the command joined) must fit, or the run is refused at
  once with the key to change: ``use_gpu`` for GPUs, ``cpus_per_worker`` for CPUs,
  ``custom_resources_per_worker.<name>`` for a custom resource, ``num_workers`` when each worker fits
  but not all of them.
"""
from __future__ import annotations

import math

from core.config import ConfigError
from core.ray_cluster import EPS, ClusterShape
from training.config import TrainConfig

WHERE = "the Ray cluster"


def _key(resource: str) -> str:
    return {"CPU": "cpus_per_worker", "GPU": "use_gpu"}.get(resource, f"custom_resources_per_worker.{resource}")


def _hint(resource: str, have: float) -> str:
    if resource == "GPU":
        return "; set --set use_gpu=false to train on the CPU" if have == 0 else ""
    if resource == "CPU":
        return f"; set --set cpus_per_worker={max(have, 1):g} or less" if have >= 1 else ""
    return "; remove it (--set custom_resources_per_worker={}) or start nodes that offer it"


def place_workers(cfg: TrainConfig, shape: ClusterShape, *, local_ray: bool) -> tuple[TrainConfig, list[str]]:
    """``cfg`` as it will run on ``shape`` and the lines to log for what was dropped; raises
    :class:`ConfigError` naming the key when the workers cannot all be placed."""
    notes = []
    custom = dict(cfg.custom_resources_per_worker)
    if local_ray:
        for name in sorted(custom):
            if shape.most_on_one_node(name) + EPS < custom[name]:
                notes.append(f"custom_resources_per_worker.{name}: dropped — the local Ray this command started has "
                             f"no {name!r} resource (it places workers on a node type of a cluster; on one machine "
                             f"every worker runs here)")
                del custom[name]
        cfg = cfg.model_copy(update={"custom_resources_per_worker": custom})
    bundle = {k: v for k, v in cfg.worker_resources().items() if v > 0}
    where = "this machine's local Ray" if local_ray else WHERE
    for resource, amount in bundle.items():
        have = shape.most_on_one_node(resource)
        if have + EPS < amount:
            raise ConfigError(where, _key(resource),
                              f"each worker needs {resource} {amount:g}, the most any node "
                              f"{'or node type ' if shape.node_types else ''}offers is {have:g}{_hint(resource, have)}")
    if not shape.fits_one_node(bundle):
        raise ConfigError(where, "custom_resources_per_worker",
                          f"no single node offers all of one worker's {bundle} together")
    fit = shape.how_many_fit(bundle)
    if fit < cfg.num_workers:
        raise ConfigError(where, "num_workers",
                          f"{cfg.num_workers} workers of {bundle} each, the cluster holds "
                          f"{'any number' if math.isinf(fit) else int(fit)} at once; set --set num_workers={int(fit)}"
                          if fit >= 1 else f"no node holds one worker of {bundle}")
    return cfg, notes
