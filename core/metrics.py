"""The job's and the model roles' figures as Ray metrics (``ray.util.metrics``), for Ray's Prometheus endpoint.

Ray exports every metric a driver or actor records through its node's metrics agent
(``ray start --metrics-export-port``; Prometheus finds the agents through Ray's service-discovery
file, docs/metrics.md), with the prefix ``ray_`` and Ray's own labels (``SessionName``, ``NodeAddress``,
``WorkerId``: one worker per role replica). The names and labels below are the documented interface;
deploy/grafana/expectdiff.json plots them and tests/test_metrics_names.py keeps the two in step.

Outside a Ray worker (a plain in-process server in a test, a benchmark's simulation) recording is a
no-op: nothing is created and Ray is not imported for it.
"""
from __future__ import annotations

import sys
import threading
from typing import Mapping, Optional

PREFIX = "expectdiff_"

_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]

#: name (without PREFIX) -> (kind, description, tag keys, histogram boundaries)
METRICS: dict[str, tuple[str, str, tuple[str, ...], Optional[list[float]]]] = {
    "images_total": ("counter", "Images a batch job finished, by status (done, failed).", ("job_id", "status"), None),
    "images_in_flight": ("gauge", "Optimisations a batch job is running now.", ("job_id",), None),
    "iterations_total": ("counter", "ARPO iterations a batch job generated (one generate node each).", ("job_id",), None),
    "node_seconds": ("histogram", "Seconds one agent graph node took (init, generate, describe, diff, propose, "
                     "select, negative_propose, negative_select).", ("node",), _SECONDS),
    "role_calls_total": ("counter", "Calls the driver made to a model role, by method and outcome (ok, error).",
                         ("role", "method", "outcome"), None),
    "role_call_resends_total": ("counter", "Calls the driver sent to a model role again because Ray said its actor was "
                                "unreachable (a node lost, a restart under way).", ("role", "method"), None),
    "role_call_seconds": ("histogram", "Seconds a model-role call took as the driver saw it (queueing, batching "
                          "and the forward pass).", ("role", "method"), _SECONDS),
    "role_batch_size": ("histogram", "Items in one forward pass of a batching role (t2i, clip_text, clip_image, "
                        "captioner, chat, image_embedder).", ("batcher",), _SIZES),
    "role_queue_depth": ("gauge", "Items left waiting in a batching role's queue when a forward pass starts.",
                         ("batcher",), None),
    "role_starts_total": ("counter", "Model-role servers started; a replica Ray restarts after a crash counts again.",
                          ("role",), None),
    "role_tokens_total": ("counter", "Tokens a chat role (llm, vlm) read and wrote, by direction (prompt, completion).",
                          ("role", "direction"), None),
    "role_cache_total": ("counter", "Lookups in a role's embedding cache (clip_text, clip_image) by result: hit, coalesced "
                         "(joined a computation in flight), miss.", ("cache", "result"), None),
}

_made: dict[str, object] = {}
_lock = threading.Lock()


def _metric(name: str):
    """The Ray metric object for ``name`` in this process, made once; None outside a Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    metric = _made.get(name)
    if metric is None:
        from ray.util import metrics

        kind, description, tags, boundaries = METRICS[name]
        with _lock:
            metric = _made.get(name)
            if metric is None:
                if kind == "counter":
                    metric = metrics.Counter(PREFIX + name, description=description, tag_keys=tags)
                elif kind == "gauge":
                    metric = metrics.Gauge(PREFIX + name, description=description, tag_keys=tags)
                else:
                    metric = metrics.Histogram(PREFIX + name, description=description, boundaries=boundaries, tag_keys=tags)
                _made[name] = metric
    return metric


def record(name: str, value: float, tags: Mapping[str, str]) -> None:
    """Add ``value`` to a counter, set a gauge to it, or observe it in a histogram (METRICS says which).

    Never raises for the job's sake: a figure is not worth an optimisation (a bad name is a bug, and raises)."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    metric = _metric(name)
    if metric is None:
        return
    kind = METRICS[name][0]
    try:
        if kind == "counter":
            metric.inc(value, tags=dict(tags))
        elif kind == "gauge":
            metric.set(value, tags=dict(tags))
        else:
            metric.observe(value, tags=dict(tags))
    except Exception:  # noqa: BLE001 - the metrics agent's trouble is not the job's
        pass
