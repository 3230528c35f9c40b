"""Whether this process is the entrypoint of a ``ray job submit``, and the output folders that must then be
absolute: the entrypoint runs in a temporary copy of the working directory that Ray deletes with the job's
session, so a relative output folder would lose every result, and a rerun could not resume from it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

#: Set by Ray's job supervisor in the environment of a submitted job's entrypoint.
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def submitted_job(environ: Optional[Mapping[str, str]] = None) -> bool:
    return JOB_ENV_VAR in (os.environ if environ is None else environ)


def relative_output_problem(key: str, value: "str | os.PathLike", environ: Optional[Mapping[str, str]] = None
                            ) -> Optional[str]:
    """Why ``value`` (the output folder named by ``key``) cannot be used in this process, or None: a relative
    local path under ``ray job submit``. URIs (``s3://...``) and absolute paths are fine."""
    text = str(value)
    if "://" in text or not submitted_job(environ):
        return None
    if Path(os.path.expandvars(os.path.expanduser(text))).is_absolute():
        return None
    return (f"{key} {text!r} is relative, and under `ray job submit` the job runs in a temporary copy of the working "
            "directory that Ray deletes: give an absolute folder (on storage every node shares, for a cluster), "
            "e.g. /shared/outputs/run1, so results survive the job and a rerun resumes")


def missing_relative_input_problem(key: str, value: "str | os.PathLike", environ: Optional[Mapping[str, str]] = None
                                   ) -> Optional[str]:
    """Why the input ``value`` (named by ``key``) is not there, when the cause is ``ray job submit``: a relative path
    that does not exist in the job's copy of the working directory, which deploy/job_runtime_env.yaml uploads
    without images or data. None otherwise (absolute, present, or not a submitted job)."""
    text = str(value)
    if "://" in text or not submitted_job(environ):
        return None
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    if path.is_absolute() or path.exists():
        return None
    return (f"{key} {text!r} is relative and not in the job's copy of the working directory: `ray job submit "
            "--runtime-env deploy/job_runtime_env.yaml` uploads the code only, never images or data. Put them on the "
            "head node or on storage it mounts (e.g. `ray rsync-up cluster.yaml images/ /home/ubuntu/images/`) and give "
            "the absolute path, e.g. /home/ubuntu/images")
