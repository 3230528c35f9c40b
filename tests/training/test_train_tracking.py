"""MLflow tracking of training runs: the loop's rank-0 logging (in-process, Ray Train's local mode) into a
SQLite store, the periodic FID, the driver's run lifecycle (open, continue, finish) and the errors a user
meets. The 2-worker Ray runs (crash, resume, a real MLflow server) are in test_train_ray.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import ConfigError, load_config
from core.tracking import RunTracker, TrackingConfig, TrackingError, flat_params, redact_uri, store_uri
from tests.training.test_train_loop import CONFIGS, CheckpointFolder, one_thread, run_local  # noqa: F401
from training.config import TrainConfig

pytest.importorskip("mlflow")


def feature_net_folder(root: Path) -> Path:
    """A random-weight Fashion-MNIST feature network in the real file layout (FID plumbing, not a real score)."""
    from training.metrics.feature_net import WEIGHTS_FILE, FashionFeatureNet

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(FashionFeatureNet().state_dict(), root / WEIGHTS_FILE)
    return root


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_the_loop_logs_losses_fid_and_grids_from_rank_zero(tmp_path, monkeypatch, one_thread):
    from training.train import open_tracking

    net = feature_net_folder(tmp_path / "featurenet")
    cfg = load_config(TrainConfig, CONFIGS / "tiny_fashion_mnist.yaml", [
        f"run_dir={tmp_path / 'runs'}", "total_steps=4", "log_every=1",
        "fid.every=2", "fid.num_images=8", f"fid.feature_net={net}", "fid.sampler={name: ddim, num_steps: 3}"])
    tracker, cfg = open_tracking(cfg)
    uri = cfg.tracking.uri
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'tiny_fashion_mnist' / 'mlflow.db'}"
    assert cfg.tracking.run_id == tracker.run_id
    store = CheckpointFolder(tmp_path / "ckpt")
    run_local(monkeypatch, cfg, store)
    tracker.finish()

    c = client(uri)
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.name"] == "mdss" and run.data.params["total_steps"] == "4"
    assert run.data.params["optimizer.lr"] == "0.0002"
    for name in ("loss", "eps_loss", "xi_loss", "strategy_frac", "lr", "samples_per_s", "grad_norm"):
        history = c.get_metric_history(tracker.run_id, name)
        assert sorted(m.step for m in history) == [1, 2, 3, 4], name
    losses = {m.step: m.value for m in c.get_metric_history(tracker.run_id, "loss")}
    assert losses == pytest.approx({m["step"]: m["loss"] for m in store.metrics})
    fid = {m.step: m.value for m in c.get_metric_history(tracker.run_id, "fid_featurenet")}
    assert sorted(fid) == [2, 4] and all(v > 0 and v == v for v in fid.values())
    assert fid == pytest.approx({m["step"]: m["fid_featurenet"] for m in store.metrics if "fid_featurenet" in m})
    grids = [a.path for a in c.list_artifacts(tracker.run_id, "samples")]
    assert grids == ["samples/samples_00000002.png", "samples/samples_00000004.png"]
    # artifacts live beside the store, not in the working directory
    assert (tmp_path / "runs" / "tiny_fashion_mnist" / "mlflow_artifacts").is_dir()
    # the checkpoint holds no extra file for the artifact copy
    assert sorted(p.name for p in store.saved[2].iterdir() if p.suffix == ".png") == ["samples.png"]


def test_the_same_run_folder_continues_its_mlflow_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrackingConfig(experiment="x")
    first = RunTracker.open(cfg, uri, key="/runs/a", params={"total_steps": 4, "strategy": {"name": "mdss"}})
    first.log_metrics({"loss": 1.0}, step=1)
    first.finish("FAILED")
    again = RunTracker.open(cfg, uri, key="/runs/a", params={"total_steps": 8, "strategy": {"name": "mdss"}})
    other = RunTracker.open(cfg, uri, key="/runs/b", params={"total_steps": 4})
    assert again.run_id == first.run_id and again.continued and not first.continued
    assert other.run_id != first.run_id
    run = client(uri).get_run(first.run_id)
    assert run.info.status == "RUNNING"  # running again
    assert run.data.params["total_steps"] == "4"  # MLflow params do not change...
    assert run.data.tags["expectdiff.changed.total_steps"] == "4 -> 8"  # ...the change is a tag
    assert run.data.tags["expectdiff.attempts"] == "2"
    # an explicit run id is used as given, and a wrong one is an error naming it
    named = RunTracker.open(cfg.model_copy(update={"run_id": other.run_id}), uri, key="/runs/c", params={})
    assert named.run_id == other.run_id
    with pytest.raises(TrackingError, match="tracking.run_id 'nope'"):
        RunTracker.open(cfg.model_copy(update={"run_id": "nope"}), uri, key="/runs/c", params={})


def test_an_unreachable_server_fails_in_seconds_naming_the_uri_without_its_password(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://user:s3cret@127.0.0.1:{port}"
    started = time.perf_counter()
    with pytest.raises(TrackingError) as caught:
        RunTracker.open(TrackingConfig(), uri, key="/runs/a", params={})
    assert time.perf_counter() - started < 15
    assert "tracking.uri 'http://***@127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_failed_log_call_is_counted_and_warned_not_raised(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker.open(TrackingConfig(), uri, key="/runs/a", params={})
    broken = RunTracker.attach(uri, "0" * 32)  # no such run
    assert broken.log_metrics({"loss": 1.0}, step=1) is False
    assert broken.failures == 1 and "MLflow metrics at step 1 failed" in caplog.text
    assert tracker.log_metrics({"loss": 1.0, "note": "text", "flag": True}, step=1)  # non-numbers left out
    assert set(client(uri).get_run(tracker.run_id).data.metrics) == {"loss"}


def test_store_and_params_helpers():
    assert store_uri(TrackingConfig(uri="http://h:5000"), None) == "http://h:5000"
    assert store_uri(TrackingConfig(), "/runs/x") == "sqlite:////runs/x/mlflow.db"
    with pytest.raises(ConfigError, match="tracking.uri"):
        store_uri(TrackingConfig(), "s3://bucket/runs/x")
    assert redact_uri("https://a:b@host/x") == "https://***@host/x" and redact_uri("http://h:1") == "http://h:1"
    flat = flat_params({"a": {"b": 1, "c": None}, "d": [1, 2], "e": "x" * 7000, "f": {}})
    assert flat["a.b"] == "1" and flat["a.c"] == "null" and flat["d"] == "[1, 2]" and flat["f"] == "{}"
    assert len(flat["e"]) <= 6000 and flat["e"].endswith("(cut by expectdiff)")


def test_training_config_errors_name_the_key(tmp_path):
    def cfg(*sets):
        return load_config(TrainConfig, CONFIGS / "tiny_fashion_mnist.yaml", [f"run_dir={tmp_path}", *sets])

    with pytest.raises(ConfigError, match="fid.every is set: give exactly one"):
        cfg("fid.every=2")
    with pytest.raises(ConfigError, match=r"fid.every \(3\) must be a multiple of checkpoint_every"):
        cfg("fid.every=3", "fid.feature_net=/x")
    with pytest.raises(ConfigError, match="fid.sampler.xi_denoise needs a ξ head"):
        cfg("strategy={name: ddpm}", "sample.every=0", "fid.every=2", "fid.feature_net=/x")
    assert cfg().tracking.experiment == "expectdiff-mdss" and cfg().tracking.enabled


def test_the_cli_refuses_a_uri_run_dir_without_a_tracking_uri(tmp_path, capsys):
    from training.train import main

    status = main(["--config", str(CONFIGS / "tiny_fashion_mnist.yaml"), "--set", "run_dir=s3://bucket/runs"])
    assert status == 2
    assert "tracking.uri" in capsys.readouterr().err
