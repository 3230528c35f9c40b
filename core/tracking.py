"""MLflow tracking of a run: one typed config, a run found again by its key, and logging that never stops the work.

* :class:`TrackingConfig` — the ``tracking`` section of a training or evaluation profile. ``uri`` None means
  a SQLite store ``mlflow.db`` in the run's own folder, its artifacts in ``mlflow_artifacts/`` beside it
  (no server needed; open it with ``mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db``).
* :meth:`RunTracker.open` — the driver's side: finds the MLflow run of a run *key* (for training, the
  absolute run folder ``<run_dir>/<name>``) or creates it, so launching the same command again continues
  the same MLflow run, as the training itself continues from its checkpoint. The store must answer here:
  an unreachable server is an error in seconds naming ``tracking.uri`` (HTTP retries are off for this call).
* :meth:`RunTracker.attach` — a worker's side: logs into a run the driver opened (``tracking.run_id``).

Logging goes through ``MlflowClient`` with an explicit run id, never through ``mlflow.start_run``'s
process-global active run, so it is safe in Ray workers and threads. A metric or artifact that cannot be
logged mid-run (a server restarting) is a logged warning and a count (``failures``), not a crash of a
training run that keeps its own metrics in every checkpoint — the count is reported when the run ends.

Credentials never appear here: MLflow reads ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` from the
environment itself, and any ``user:password@`` in a URI is masked in every message (:func:`redact_uri`).
"""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from core.config import ConfigError, StrictModel

logger = logging.getLogger(__name__)

STORE_FILE, ARTIFACTS_DIR = "mlflow.db", "mlflow_artifacts"
RUN_KEY_TAG = "expectdiff.run_key"  # a hash: MLflow's filter strings cannot quote every path
RUN_FOLDER_TAG = "expectdiff.run_folder"
ATTEMPTS_TAG = "expectdiff.attempts"
# MLflow's limits (mlflow.utils.validation): a param value holds at most 6,000 characters, a tag 8,000.
PARAM_VALUE_LIMIT = 6000


class TrackingConfig(StrictModel):
    """Where a run's parameters, metrics and artifacts are tracked (MLflow)."""

    enabled: bool = Field(True, description="Track the run in MLflow. False: only the run folder's own files.")
    uri: Optional[str] = Field(
        None, description="MLflow tracking URI (http://host:5000, sqlite:///abs/path.db, databricks, ...). None: a "
                          "SQLite store mlflow.db in the run folder, artifacts in mlflow_artifacts/ beside it (no "
                          "server; on a cluster the run folder must be shared, so prefer a server there). "
                          "Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, never from the config.")
    experiment: str = Field("expectdiff", description="MLflow experiment name (created when missing).")
    run_id: Optional[str] = Field(
        None, description="Log into this existing MLflow run. None: the run of this run folder (found by its "
                          "expectdiff.run_key tag), else a new one.")


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable, refused, a missing run); the message names the URI."""


def redact_uri(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@``."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def store_uri(cfg: TrackingConfig, folder: Optional[str], source: str = "tracking") -> str:
    """The URI to log to: ``cfg.uri``, else the SQLite store in ``folder`` (which must be a local path)."""
    if cfg.uri:
        return cfg.uri
    if folder is None or "://" in folder:
        raise ConfigError(source, "tracking.uri", f"the default store lives in the run folder, and {folder!r} is not "
                                                  "a local folder: give tracking.uri (an MLflow server) or set "
                                                  "tracking.enabled=false")
    return f"sqlite:///{Path(folder).resolve() / STORE_FILE}"


def run_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, text values (cut to MLflow's limit, saying so)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}."))
            continue
        text = "null" if value is None else str(value)
        if len(text) > PARAM_VALUE_LIMIT:
            mark = " …(cut by expectdiff)"
            text = text[:PARAM_VALUE_LIMIT - len(mark)] + mark
        out[name] = text
    return out


@contextmanager
def _no_http_retries() -> Iterator[None]:
    # MLflow retries an HTTP store 7 times with backoff (minutes against a dead server); the driver's opening
    # calls should fail in seconds instead. These variables are read at each request, so set them around it.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cause(exc: BaseException, uri: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300].replace(uri, redact_uri(uri))


class RunTracker:
    """Logs into one MLflow run by id."""

    def __init__(self, uri: str, run_id: str, experiment_id: str):
        from mlflow.tracking import MlflowClient

        self.uri, self.run_id, self.experiment_id = uri, run_id, experiment_id
        self.client = MlflowClient(tracking_uri=uri)
        self.failures = 0
        self.continued = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, cfg: TrackingConfig, uri: str, *, key: str, params: Mapping[str, Any],
             tags: Optional[Mapping[str, str]] = None, run_name: Optional[str] = None) -> "RunTracker":
        """The run of ``key`` (or ``cfg.run_id``), continued, or a new one with ``params`` and ``tags``.

        A continued run keeps its first params (MLflow params cannot change); a value that differs now
        is recorded as the tag ``expectdiff.changed.<param>`` = ``old -> new``."""
        from mlflow.tracking import MlflowClient

        try:
            with _no_http_retries():
                client = MlflowClient(tracking_uri=uri)
                experiment = client.get_experiment_by_name(cfg.experiment)
                if experiment is not None:
                    experiment_id = experiment.experiment_id
                else:
                    artifacts = None
                    if uri.startswith("sqlite:///"):  # the default store: artifacts beside it, not in the cwd
                        artifacts = (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).as_uri()
                    experiment_id = client.create_experiment(cfg.experiment, artifact_location=artifacts)
                run = cls._find(client, experiment_id, cfg, key, uri)
                flat = flat_params(params)
                if run is None:
                    created = client.create_run(experiment_id, run_name=run_name, tags={
                        RUN_KEY_TAG: run_key_hash(key), RUN_FOLDER_TAG: key, ATTEMPTS_TAG: "1", **(tags or {})})
                    tracker = cls(uri, created.info.run_id, experiment_id)
                    tracker._log_params(flat)
                    return tracker
                tracker = cls(uri, run.info.run_id, run.info.experiment_id)
                tracker.continued = True
                attempts = int(run.data.tags.get(ATTEMPTS_TAG, "1")) + 1
                changed = {f"expectdiff.changed.{k}": f"{run.data.params[k]} -> {v}"[:8000]
                           for k, v in flat.items() if k in run.data.params and run.data.params[k] != v}
                new = {k: v for k, v in flat.items() if k not in run.data.params}
                client.update_run(run.info.run_id, status="RUNNING")
                for tag, value in {ATTEMPTS_TAG: str(attempts), **changed, **(tags or {})}.items():
                    client.set_tag(run.info.run_id, tag, value)
                tracker._log_params(new)
                return tracker
        except TrackingError:
            raise
        except Exception as exc:  # noqa: BLE001 — every store error is reported the same way, naming the URI
            raise TrackingError(f"tracking.uri {redact_uri(uri)!r} cannot be used: {_cause(exc, uri)}") from exc

    @staticmethod
    def _find(client, experiment_id: str, cfg: TrackingConfig, key: str, uri: str):
        if cfg.run_id is not None:
            try:
                return client.get_run(cfg.run_id)
            except Exception as exc:  # noqa: BLE001
                raise TrackingError(f"tracking.run_id {cfg.run_id!r} is not a run in {redact_uri(uri)!r}: "
                                    f"{_cause(exc, uri)}") from exc
        found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key_hash(key)}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None

    @classmethod
    def attach(cls, uri: str, run_id: str) -> "RunTracker":
        """A tracker for a run the driver opened (experiment id unknown here: not needed for logging)."""
        return cls(uri, run_id, experiment_id="")

    # ------------------------------------------------------------------ logging
    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _guard(self, what: str, call) -> bool:
        try:
            call()
            return True
        except Exception as exc:  # noqa: BLE001 — counted and warned: the run's own files keep the figures
            self.failures += 1
            logger.warning("MLflow %s failed (%s; %d failure(s) so far); the run goes on", what,
                           _cause(exc, self.uri), self.failures)
            return False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> bool:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return self._guard(f"metrics at step {step}", lambda: self.client.log_batch(self.run_id, metrics=items))

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> bool:
        return self._guard(f"artifact {Path(path).name}",
                           lambda: self.client.log_artifact(self.run_id, str(path), folder))

    def set_tags(self, tags: Mapping[str, str]) -> bool:
        def set_all() -> None:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)

        return self._guard("tags", set_all)

    def finish(self, status: str = "FINISHED") -> bool:
        """End the run with ``status`` (FINISHED, FAILED or KILLED)."""
        return self._guard(f"ending the run ({status})", lambda: self.client.set_terminated(self.run_id, status))
