"""A throwaway MLflow tracking server for tests: fixture ``mlflow_server_uri`` (one per test session).

The real ``mlflow server`` (PyPI's ``mlflow``, in the dev extra) on 127.0.0.1 and a free port, its SQLite
store and its proxied artifacts in a temporary folder; stopped (its whole process group) and deleted at the
end of the session. Without the ``mlflow`` command the tests that use it are skipped — except in CI (``CI``
set), where they fail, so that a broken install cannot silently turn them off.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_command() -> str | None:
    beside = Path(sys.executable).with_name("mlflow")  # the venv's, even when it is not on PATH
    return str(beside) if beside.is_file() else shutil.which("mlflow")


@pytest.fixture(scope="session")
def mlflow_server_uri() -> Iterator[str]:
    command = _mlflow_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("the mlflow command is missing (pip install -e '.[dev]')")
        pytest.skip("the mlflow command is missing (pip install -e '.[dev]')")
    folder = Path(tempfile.mkdtemp(prefix="mlflow_server_"))
    port = _free_port()
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen(
        [command, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art")],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}: "
                            f"{(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
