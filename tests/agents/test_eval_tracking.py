"""The evaluation's MLflow run (agents.eval.tracking): off by default, a store in the output folder when on,
every table cell a metric under a name MLflow accepts. The CLI against a real server: test_eval_cli_ray.py."""
from __future__ import annotations

import math

import pytest

from agents.eval.config import EvalConfig
from agents.eval.metrics import MeanStd
from agents.eval.table import Row
from agents.eval.tracking import log_table, metric_key, open_run

pytest.importorskip("mlflow")


def test_off_by_default():
    assert EvalConfig().evaluation.tracking.enabled is False
    assert open_run(EvalConfig(), "/nonexistent/out") is None


def test_a_local_store_in_the_output_folder_holds_the_table(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = EvalConfig.model_validate({"evaluation": {"tracking": {"enabled": True}, "methods": ["arpo", "file:x.csv"]}})
    out = tmp_path / "out"
    tracker = open_run(cfg, out)
    (out / "table.csv").write_text("method\n")
    cell = MeanStd(mean=71.5, std=0.5, n_seeds=3, n_images=2)
    empty = MeanStd(mean=math.nan, std=math.nan, n_seeds=0, n_images=0)
    rows = [Row("arpo", "ARPO", {"clip_t": cell, "clip_i": cell}, 2),
            Row("file:x.csv", "Hand", {"clip_t": empty, "clip_i": cell}, 0)]
    log_table(tracker, rows, {"table.csv": out / "table.csv", "curve.svg": out / "missing.svg"})
    tracker.finish()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    run = client.get_run(tracker.run_id)
    assert run.data.metrics == {"arpo.n_images": 2, "arpo.clip_t.mean": 71.5, "arpo.clip_t.std": 0.5,
                                "arpo.clip_i.mean": 71.5, "arpo.clip_i.std": 0.5, "file_x.csv.n_images": 0,
                                "file_x.csv.clip_i.mean": 71.5, "file_x.csv.clip_i.std": 0.5}
    assert run.data.params["t2i.model"] == EvalConfig().t2i.model
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["table.csv"]
    assert open_run(cfg, out).run_id == tracker.run_id  # the same output folder continues its run


def test_metric_names_keep_only_what_mlflow_accepts():
    assert metric_key("arpo:enhanced") == "arpo_enhanced" and metric_key("file:a b/c.csv") == "file_a b/c.csv"
