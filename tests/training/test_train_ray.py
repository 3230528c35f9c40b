"""Data-parallel training on a local Ray: 2 CPU workers, a worker crash, resumption, and a rerun.

Each Ray Train fit costs tens of seconds here, so this file holds one test that runs the CLI twice:
a 6-step run whose rank-0 worker hard-exits once before step 5 (fault injection, see
TrainConfig.inject_crash_at_step) and must come back from its latest checkpoint, then the same
command with ``total_steps=8``, which must resume at step 6 from the run folder.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import read_history, read_training_state
from training.loop import CRASH_MARKER
from training.train import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "mdss" / "tiny_fashion_mnist.yaml"


def latest_checkpoint(run_folder: Path) -> tuple[Path, dict]:
    found = sorted(p for p in run_folder.glob("checkpoint_*") if p.is_dir())
    assert found, f"no checkpoints under {run_folder}"
    states = [(p, read_training_state(p, torch.device("cpu"))) for p in found]
    return max(states, key=lambda ps: ps[1]["step"])


def test_two_workers_crash_resume_and_rerun(ray_local, tmp_path):
    run_dir, run_folder = tmp_path / "runs", tmp_path / "runs" / "tiny_fashion_mnist"
    command = ["--config", str(CONFIG), "--set", f"run_dir={run_dir}", "--set", "inject_crash_at_step=5"]

    assert main(command) == 0
    assert (run_folder / CRASH_MARKER).is_file()  # the crash did happen
    folder, state = latest_checkpoint(run_folder)
    assert folder.name == "checkpoint_00000006" and state["step"] == 6
    first, resumed_at = state["attempt_starts"]
    # the restarted worker group came back from a checkpoint (2 or 4, whichever Ray had registered
    # when rank 0 died), not from step 0
    assert first == 0 and resumed_at in (2, 4)
    assert [row["step"] for row in read_history(folder)] == [1, 2, 3, 4, 5, 6]
    assert (folder / "samples.png").is_file() and (folder / "ema" / "config.json").is_file()

    # the same command again, asked for 2 more steps: resumes from the run folder at step 6
    assert main(command + ["--set", "total_steps=8"]) == 0
    folder, state = latest_checkpoint(run_folder)
    assert state["step"] == 8 and state["attempt_starts"] == [0, resumed_at, 6]
    assert [row["step"] for row in read_history(folder)] == list(range(1, 9))
    assert len([p for p in run_folder.glob("checkpoint_*") if p.is_dir()]) == 2  # keep_checkpoints: 2

    # MLflow, by default a SQLite store in the run folder: both launches and the restart are one MLflow run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("expectdiff-mdss").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["expectdiff.attempts"] == "2"
    assert run.data.params["total_steps"] == "6" and run.data.tags["expectdiff.changed.total_steps"] == "6 -> 8"
    assert run.data.tags["expectdiff.final_checkpoint"].endswith("checkpoint_00000008")
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    # rank 0 alone logs (two workers would log every step twice); only the steps redone after the crash,
    # (resumed_at, 5), appear twice
    redone = set(range(resumed_at + 1, 5))
    assert sorted(set(logged)) == list(range(1, 9))
    assert all(logged.count(s) == (2 if s in redone else 1) for s in range(1, 9)), logged
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert "samples/samples_00000008.png" in grids


def test_a_cluster_node_type_resource_is_dropped_and_the_run_is_tracked_on_a_real_mlflow_server(
        ray_local, tmp_path, capsys, mlflow_server_uri):
    """configs/mdss/*'s cluster profiles pin workers with custom_resources_per_worker; on one machine the
    documented command used to wait for ever. Through the real CLI on the local Ray: dropped, logged, trained —
    and tracked on a real `mlflow server` on loopback, read back through MLflow's client (one fit for both)."""
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "runs"
    command = ["--config", str(CONFIG), "--set", f"run_dir={run_dir}", "--set", "custom_resources_per_worker={gpu_small: 1}",
               "--set", "total_steps=2", "--set", "checkpoint_every=2",
               "--set", f"tracking.uri={mlflow_server_uri}", "--set", "tracking.experiment=server-test"]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "custom_resources_per_worker.gpu_small: dropped" in err
    assert latest_checkpoint(run_dir / "tiny_fashion_mnist")[1]["step"] == 2

    assert f"in {mlflow_server_uri}" in err
    assert not (run_dir / "tiny_fashion_mnist" / "mlflow.db").exists()  # nothing local with a server
    client = MlflowClient(tracking_uri=mlflow_server_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("server-test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["strategy.name"] == "mdss"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert run.data.metrics["samples_per_s"] > 0
    assert run.data.tags["expectdiff.final_checkpoint"].endswith("checkpoint_00000002")
    grid = client.download_artifacts(run.info.run_id, "samples/samples_00000002.png", str(tmp_path))
    assert Path(grid).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_gpu_profile_on_this_cpu_machine_is_refused_naming_the_key(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    config = CONFIG.parent / "finetune_cifar10_ddpm.yaml"
    assert main(["--config", str(config), "--set", f"run_dir={tmp_path / 'runs'}", "--set", "cpus_per_worker=1"]) == 2
    err = capsys.readouterr().err
    assert "config error: this machine's local Ray: use_gpu: each worker needs GPU 1" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint_*"))
