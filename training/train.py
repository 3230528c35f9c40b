"""CLI: data-parallel MDSS (or baseline) training on Ray Train.

    python -m training.train --config configs/mdss/fashion_mnist_scratch.yaml [--set key.path=value ...]
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m training.train --config configs/mdss/...yaml \
        --set run_dir=/shared/runs      # absolute: a submitted job runs in a temporary copy of the dir
    (the address is cluster.yaml's dashboard through `ray dashboard cluster.yaml`; docs/cluster.md)

The config is validated before Ray starts. The driver joins the cluster named by ``ray.address``
or ``RAY_ADDRESS`` (set by ``ray job submit``), else starts a loopback-only local Ray, and runs a
``TorchTrainer`` whose run folder is ``<run_dir>/<name>``. Workers the cluster cannot hold are refused
at once naming the key to change; on a Ray this command started, custom resources (which choose a
node type of a cluster) are dropped with a logged line (training.placement). Then:

* a worker crash restarts the worker group (``FailureConfig(max_failures)``), which resumes from
  the latest checkpoint;
* launching the same command again with the same ``run_dir`` and ``name`` resumes from the latest
  checkpoint too: Ray Train (v2) reads the run's checkpoint-manager snapshot from the run folder and
  hands the newest checkpoint to ``ray.train.get_checkpoint()``. Raise ``total_steps`` with
  ``--set`` to train an existing run further.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from core.cli import parse_or_status, prog_name
from core.config import ConfigError, expand_path, load_config
from core import job_submit
from core.ray_config import init_ray
from core.tracking import TrackingError, redact_uri, store_uri
from training.config import TrainConfig


def resolve_run_dir(run_dir: str, submitted_job: bool = False) -> str:
    """A URI (``s3://…``) as is; a local path made absolute (Ray Train needs an absolute storage path).

    Under ``ray job submit`` the driver's cwd is a temporary copy of the working dir that Ray deletes
    with the session, so a relative run_dir there would lose every checkpoint: that is an error.
    """
    if "://" in run_dir:
        return run_dir
    expanded = expand_path(run_dir)
    if submitted_job and not Path(expanded).is_absolute():
        raise ConfigError("run_dir", run_dir, "under `ray job submit` give an absolute path (or a URI) that all "
                                              "nodes share, e.g. --set run_dir=/shared/runs: the job's working "
                                              "directory is a temporary copy")
    return str(Path(expanded).resolve())


def build_trainer(cfg: TrainConfig):
    """The TorchTrainer for ``cfg`` (``cfg.run_dir`` must already be resolved)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.loop import train_loop_per_worker
    from training.process_group import LoopbackTorchConfig

    # cpus_per_worker, one GPU with use_gpu, and the custom resources (custom_resources_per_worker, e.g.
    # {gpu_small: 1}) that put each worker on a node of one cluster.yaml node type.
    scaling = ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=cfg.worker_resources())
    run = RunConfig(name=cfg.name, storage_path=cfg.run_dir,
                    failure_config=FailureConfig(max_failures=cfg.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints))
    # On a local (loopback) Ray the torch process group listens on 127.0.0.1 only; see training.process_group.
    return TorchTrainer(train_loop_per_worker, train_loop_config=cfg.model_dump(mode="json"),
                        scaling_config=scaling, run_config=run, torch_config=LoopbackTorchConfig())


def run_folder(cfg: TrainConfig) -> str:
    """``<run_dir>/<name>``: Ray Train's folder of this run (``cfg.run_dir`` already resolved)."""
    return f"{cfg.run_dir.rstrip('/')}/{cfg.name}"


def open_tracking(cfg: TrainConfig, source: str = "training"):
    """The run's MLflow run (found again by its run folder, else created with the config as params) and the
    config the workers get, whose ``tracking`` names that run; ``(None, cfg)`` when tracking is off."""
    from core.tracking import RunTracker, store_uri

    if not cfg.tracking.enabled:
        return None, cfg
    folder = run_folder(cfg)
    uri = store_uri(cfg.tracking, folder, source)
    if uri.startswith("sqlite:///"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    tracker = RunTracker.open(cfg.tracking, uri, key=folder, run_name=cfg.name,
                              params=cfg.model_dump(mode="json", exclude={"tracking"}),
                              tags={"expectdiff.strategy": cfg.strategy.name})
    tracking = cfg.tracking.model_copy(update={"uri": uri, "run_id": tracker.run_id})
    return tracker, cfg.model_copy(update={"tracking": tracking})


def run(cfg: TrainConfig):
    """Open the MLflow run, connect to (or start) Ray, fit, and return the Ray Train ``Result``."""
    import ray

    from core.ray_cluster import current_cluster_shape
    from core.ray_config import on_local_ray
    from training.placement import place_workers

    cfg = cfg.model_copy(update={"run_dir": resolve_run_dir(cfg.run_dir, job_submit.submitted_job())})
    tracker, status = None, "FAILED"
    started = init_ray(cfg.ray)
    try:
        # Ray would wait for ever for workers no node can hold: checked here, in seconds, naming the key.
        cfg, notes = place_workers(cfg, current_cluster_shape(), local_ray=on_local_ray())
        for note in notes:
            print(note, file=sys.stderr, flush=True)
        # After the placement check (a refused run leaves no MLflow run behind), before the workers start;
        # an unusable store fails here in seconds.
        tracker, cfg = open_tracking(cfg)
        if tracker is not None:
            print(f"tracking: MLflow run {tracker.run_id} ({'continued' if tracker.continued else 'new'}) in "
                  f"{redact_uri(tracker.uri)}", file=sys.stderr, flush=True)
        result = build_trainer(cfg).fit()
        status = "FINISHED"
        if tracker is not None and result.checkpoint is not None:
            tracker.set_tags({"expectdiff.final_checkpoint": result.checkpoint.path})
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.finish(status)
        if started:
            ray.shutdown()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog_name("training.train"), description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file validated as training.config.TrainConfig")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set total_steps=2000 --set strategy.k=10 (repeatable); "
                             "VALUE is read as one YAML flow value (number, true/false, null, \"quoted\", [list], "
                             "{mapping}), anything else as the literal text")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (also the ``expectdiff-train`` console script)."""
    args = parse_or_status(lambda: parse_args(argv))
    if isinstance(args, int):
        return args
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        resolve_run_dir(cfg.run_dir, job_submit.submitted_job())  # fail before Ray starts
        from training.build import missing_local_sources

        for key, path in missing_local_sources(cfg):
            raise ConfigError(args.config, key, f"{path!r} is a local path and does not exist")
        if cfg.tracking.enabled:  # the default store needs a local run folder: said before Ray starts
            store_uri(cfg.tracking, run_folder(cfg), args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from ray.train import TrainingFailedError

    try:
        result = run(cfg)
    except ConfigError as exc:  # the workers do not fit the cluster (training.placement)
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except TrackingError as exc:
        print(f"tracking error: {exc} (or --set tracking.enabled=false)", file=sys.stderr)
        return 2
    except TrainingFailedError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    summary = result.return_value or {}
    print(f"finished {cfg.name}: step {summary.get('step')}, latest checkpoint "
          f"{result.checkpoint.path if result.checkpoint else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
