"""MLflow tracking of an evaluation (``evaluation.tracking``): opened before any model loads, the table logged
when it is written.

The run of an output folder is found again by that folder (a rerun that resumes the evaluation continues its
MLflow run). Params: the methods, seeds, table mode and each role's model; metrics: every table cell as
``<method>.<metric>.mean`` and ``.std`` plus ``<method>.n_images`` (method keys such as ``file:x.csv`` with
characters MLflow refuses in a metric name get ``_`` there; the ``expectdiff.methods`` tag maps them back);
artifacts: table.md, table.csv, gallery.html and the curve files.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

from agents.eval.config import EvalConfig
from core.tracking import RunTracker, store_uri

ROLES = ("t2i", "llm", "vlm", "captioner", "clip", "dino", "vit")


def metric_key(method: str) -> str:
    """``method`` as MLflow allows in a metric name (letters, digits, _ - . / and space)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", method)


def open_run(cfg: EvalConfig, out_dir: Path) -> Optional[RunTracker]:
    """The evaluation's MLflow run (None when tracking is off). Raises TrackingError or ConfigError."""
    ev = cfg.evaluation
    if not ev.tracking.enabled:
        return None
    folder = str(Path(out_dir).resolve())
    uri = store_uri(ev.tracking, folder, "evaluation")
    if uri.startswith("sqlite:///"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    params = {"methods": ev.methods, "seeds": ev.seeds, "table_images": ev.table_images, "curve": ev.curve,
              **{f"{role}.model": getattr(getattr(cfg, role), "model", None) for role in ROLES}}
    return RunTracker.open(ev.tracking, uri, key=folder, params=params, run_name=Path(folder).name,
                           tags={"expectdiff.methods": json.dumps({metric_key(m): m for m in ev.methods})})


def log_table(tracker: RunTracker, rows, outputs: dict[str, Path]) -> None:
    """Every table cell as metrics, and the written files as artifacts."""
    metrics: dict[str, float] = {}
    for row in rows:
        key = metric_key(row.key)
        metrics[f"{key}.n_images"] = row.n_images
        for name, cell in row.cells.items():
            if not math.isnan(cell.mean):
                metrics[f"{key}.{name}.mean"] = cell.mean
                if not math.isnan(cell.std):
                    metrics[f"{key}.{name}.std"] = cell.std
    tracker.log_metrics(metrics, step=0)
    for path in outputs.values():
        if Path(path).is_file():
            tracker.log_artifact(Path(path))
