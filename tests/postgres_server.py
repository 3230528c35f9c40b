"""A throwaway Postgres server for tests: fixtures ``postgres_url`` (one server per test
session) and ``postgres_db_url`` (a fresh, empty database on it for each test).

The server lives in a temporary folder, listens on a unix socket in that folder only
(``listen_addresses=''``: no TCP port is opened), trusts local connections, and is
stopped (``pg_ctl -m fast stop``) and deleted at the end of the session. It needs
``initdb`` and ``pg_ctl`` (Debian's ``postgresql`` package, installed by
scripts/setup_env.sh): without them the tests that use it are skipped — except in CI
(the ``CI`` environment variable set), where they fail, so that a broken install cannot
silently turn the Postgres tests off.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pytest

#: OS user that owns the server's files when the tests run as root (initdb refuses root).
SERVER_OS_USER = "postgres"
#: Database superuser created by initdb, and the user in the URLs.
SUPERUSER = "postgres"


def postgres_bin_dir() -> Optional[Path]:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb:  # often a link to the real bin folder, which also holds pg_ctl and createdb
        folder = Path(initdb).resolve().parent
        if (folder / "pg_ctl").is_file() and (folder / "createdb").is_file():
            return folder
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.parent.name)] or [0])
    return Path(newest).parent


def _unavailable(reason: str) -> None:
    message = f"no Postgres server for the tests: {reason}"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(message + " (CI is set: scripts/setup_env.sh installs Debian's postgresql package)", pytrace=False)
    pytest.skip(message)


def _run(cmd: list[str], what: str, log: Optional[Path] = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.is_file() else ""
        raise RuntimeError(f"{what} failed (exit status {done.returncode}): {' '.join(cmd)}\n"
                           f"{done.stdout}{done.stderr}{tail}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of database ``arpo_test`` on a fresh server reached through its unix socket."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        _unavailable("initdb is not installed (apt-get install postgresql)")
    as_user: list[str] = []
    base = tempfile.gettempdir()
    if len(base) > 60:  # a unix socket path has at most 107 bytes
        base = "/tmp"
    folder = Path(tempfile.mkdtemp(prefix="pgtest_", dir=base))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root: run them as the postgres user
        try:
            owner = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            shutil.rmtree(folder)
            _unavailable(f"running as root, and there is no OS user {SERVER_OS_USER!r} to run the server as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", SERVER_OS_USER, "--"]
    data, log = folder / "data", folder / "server.log"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        _run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER,
              "--no-sync", "-E", "UTF8", "--locale=C"], "initdb")
        # fsync off: a test server's data is thrown away, so crash safety buys nothing here.
        _run([*pg_ctl, "-l", str(log), "-w", "-t", "60",
              "-o", f"-k {folder} -c listen_addresses='' -c fsync=off", "start"], "pg_ctl start", log)
        started = True
        _run([str(bin_dir / "createdb"), "-h", str(folder), "-U", SUPERUSER, "arpo_test"], "createdb")
        yield f"postgresql://{SUPERUSER}@/arpo_test?host={folder}"
    finally:
        try:
            if started:
                _run([*pg_ctl, "-m", "fast", "-w", "stop"], "pg_ctl stop", log)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


_db_numbers = itertools.count()


@pytest.fixture
def postgres_db_url(postgres_url: str) -> str:
    """URL of a new empty database on the session's server (each test gets its own threads and tables)."""
    folder = postgres_url.split("?host=", 1)[1]
    name = f"arpo_test_{os.getpid()}_{next(_db_numbers)}"
    _run([str(postgres_bin_dir() / "createdb"), "-h", folder, "-U", SUPERUSER, name], "createdb")
    return f"postgresql://{SUPERUSER}@/{name}?host={folder}"


def import_or_skip(module: str):
    """``importlib.import_module(module)``; if it is missing, skip the test (fail it in CI, like the server)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        _unavailable(f"{module} is not importable ({exc}); pip install 'expectdiff[postgres]'")
