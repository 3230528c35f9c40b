"""Start Ray and the model roles for a batch, failing fast; and stop everything the job started.

Start-up refuses, with exit status 2, before any model loads, a config whose roles the
cluster cannot hold (actors.capacity), and gives up on roles not ready within
``job.startup_timeout_s``. Shutting down closes every role (a vLLM engine's
engine-core process included), and when the job started its own local Ray, also kills
any process of that Ray still alive afterwards: a job leaves nothing running.

With ``job.shared_roles`` the roles are named actors several jobs share (actors/shared_roles.py):
start-up logs whether this job started or joined each, and refuses actors started with another
config; shutting down leaves them running (unless the job's own local Ray ends with it).
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from actors.shared_roles import SharedRolesMismatch
from agents.batch.errors import SetupError
from agents.config import ArpoConfig

log = logging.getLogger("agents.batch")


@dataclass
class RunningRoles:
    roles: Any  # actors.roles.Roles of RoleClients
    started_local_ray: bool
    earlier_children: frozenset = frozenset()  # pids of this process's children before Ray started: not ours to stop
    shared: tuple = ()  # actors.shared_roles.SharedCheck per group of shared roles: started or joined

    def clients(self) -> list:
        return [getattr(self.roles, f.name) for f in fields(self.roles)]


def start_ray_and_roles(cfg: ArpoConfig, log_dir: Optional[Path] = None, *, servers: Any = None) -> RunningRoles:
    """Connect to (or start) Ray, check capacity, start every role and wait until each has loaded its model.

    ``log_dir`` (the quiet console, agents.batch.console): on a local Ray, workers' output is not
    forwarded to this process (``log_to_driver=False``) and each role's actors write theirs to
    ``<log_dir>/<role>.log``. On a cluster the roles keep Ray's own logging (forwarded to the
    driver, as under ``ray job submit``): the worker nodes may not see the output folder.

    ``servers`` (actors.ray_actors.ServerPicker; None: the real servers): what each role's actors run. The
    scale simulation passes its latency-model stand-ins here, so that its drivers start up as a batch job does.
    """
    import psutil

    earlier = frozenset(p.pid for p in psutil.Process().children(recursive=True))
    started = _connect(cfg, log_to_driver=log_dir is None)
    role_logs = log_dir if started else None
    if log_dir is not None and not started:
        log.info("on a cluster the roles' output stays in Ray's logs (ray job logs, /tmp/ray/session_latest/logs "
                 "on each node), not in %s", log_dir)
    shared = cfg.job.shared_roles
    if shared and started:
        log.warning("job.shared_roles is %r but no Ray was running to join: this job started its own local Ray, and "
                    "its roles end with it. To share roles between jobs, start Ray first (ray start --head) or give "
                    "ray.address", shared)
    try:
        _check_capacity(cfg)
        from actors.ray_actors import start_roles

        chosen = {} if servers is None else {"servers": servers}
        if role_logs is not None:
            log.info("the model roles write their output to %s/<role>.log", role_logs)
            roles = start_roles(cfg, log_dir=str(role_logs), shared=shared, **chosen)
        else:
            roles = start_roles(cfg, shared=shared, **chosen)
        running = RunningRoles(roles, started, earlier)
    except SharedRolesMismatch as exc:  # other actor layout under the name: refused before any actor started
        _shutdown_ray(started, earlier)
        raise SetupError(f"cannot use the shared roles: {exc}") from exc
    except BaseException:
        _shutdown_ray(started, earlier)
        raise
    try:
        asyncio.run(_wait_ready(running.clients(), cfg.job.startup_timeout_s))
        if shared:
            running.shared = tuple(asyncio.run(_check_shared(running.clients(), cfg.job.startup_timeout_s)))
    except BaseException:
        stop_ray_and_roles(running)
        raise
    return running


async def _check_shared(clients: list, timeout_s: float) -> list:
    """Which shared roles this job started and which it joined (logged); actors started with another
    config refuse the job (SetupError naming the differing keys)."""
    from actors.shared_roles import SharedRolesMismatch, check_shared_clients

    try:
        checks = await check_shared_clients(clients, timeout_s)
    except SharedRolesMismatch as exc:
        raise SetupError(f"cannot use the shared roles: {exc}") from exc
    except asyncio.TimeoutError:
        raise SetupError(f"the shared roles did not say what they were started with within {timeout_s:g} s "
                         "(job.startup_timeout_s)") from None
    name = next(c.shared["name"] for c in clients if isinstance(getattr(c, "shared", None), dict))
    for check in checks:
        log.info("%s", check.describe(name))
    return checks


def _connect(cfg: ArpoConfig, log_to_driver: bool = True) -> bool:
    try:
        from core.ray_config import init_ray

        started = init_ray(cfg.ray, log_to_driver=log_to_driver)
    except Exception as exc:
        raise SetupError(f"cannot connect to or start Ray: {type(exc).__name__}: {exc}") from exc
    import ray

    if started:
        log.info("started a local Ray on 127.0.0.1 (no cluster address given); Ray's own logs: %s",
                 _session_logs())
    else:
        resources = ray.cluster_resources()
        log.info("joined the Ray cluster (%d CPUs, %d GPUs)", resources.get("CPU", 0), resources.get("GPU", 0))
    return started


def _session_logs() -> str:
    try:
        import ray

        return str(Path(ray._private.worker._global_node.get_session_dir_path()) / "logs")
    except Exception:  # noqa: BLE001 - a private API: only for a log line
        return "/tmp/ray/session_latest/logs"


def _check_capacity(cfg: ArpoConfig) -> None:
    """Ray resources of the actors that will start (an actor shared by several roles counted once),
    then, on a cluster with GPUs whose memory this machine can read, the GPU memory plan
    (actors.memory.startup_check): certain shortfalls refuse the job, estimated ones are logged."""
    import ray

    from actors.capacity import capacity_problems, current_cluster_shape
    from actors.memory.startup_check import gpu_memory_check
    from actors.role_groups import role_groups

    problems = capacity_problems(role_groups(cfg), current_cluster_shape())
    if problems:
        raise SetupError("the cluster cannot hold the model roles as configured (each role's `resources`):\n  "
                         + "\n  ".join(problems))
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if not gpus:
        return
    check = gpu_memory_check(cfg, gpus)
    for line in check.info:
        log.info("%s", line)
    for line in check.warnings:
        log.warning("GPU memory plan (estimated, not certain): %s", line)
    if check.problems:
        raise SetupError("the GPU memory cannot hold the model roles as configured (weights and vLLM budgets alone; "
                         "see python -m actors.plan):\n  " + "\n  ".join(check.problems))


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.*)$")


def load_error_cause(exc: BaseException) -> str:
    """``Type: message`` of what failed inside a role's actor: Ray wraps an error raised while the actor was
    created in ActorDiedError, whose text is the whole remote traceback; the last exception line is the cause."""
    text = str(exc)
    found = [m for m in map(_EXCEPTION_LINE.match, text.splitlines()) if m]
    if "\n" in text and found:
        name, message = found[-1].groups()
        return f"{name.rpartition('.')[2]}: {message}"
    return f"{type(exc).__name__}: {text}"


async def _wait_ready(clients: list, timeout_s: float) -> None:
    """Every actor answers ``ping`` once its model is loaded; a load error names its role."""
    tasks = {asyncio.ensure_future(c.broadcast("ping")): c.role for c in clients}
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    # Every role that failed is named (the roles load at once: one start-up shows every broken setting); roles
    # whose actors are one (a role group's shared engine) fail with one cause, said once.
    causes: dict[str, list[str]] = {}
    for task in sorted((t for t in done if t.exception() is not None), key=lambda t: tasks[t]):
        causes.setdefault(load_error_cause(task.exception()), []).append(tasks[task])
    if causes:
        what = "; ".join(f"{'roles' if len(roles) > 1 else 'role'} {', '.join(repr(r) for r in roles)} failed to start: "
                         f"{cause}" for cause, roles in causes.items())
        raise SetupError(f"cannot start the model roles: {what}")
    if pending:
        raise SetupError(f"roles {', '.join(sorted(tasks[t] for t in pending))} not ready after {timeout_s:g} s "
                         "(job.startup_timeout_s): still loading, or waiting for resources the cluster has not given")


def stop_ray_and_roles(running: RunningRoles, timeout_s: float = 30.0) -> None:
    """Close every role, then stop the local Ray this job started (if it did) and anything of it left running.

    Shared roles (``job.shared_roles``) are left running for the other jobs, unless this job started
    the local Ray they run in (it ends with the job: they are closed first, like the job's own)."""
    from actors.ray_actors import stop_roles

    try:
        asyncio.run(asyncio.wait_for(stop_roles(*running.clients(), timeout_s=timeout_s,
                                                include_shared=running.started_local_ray), timeout_s + 5))
    except Exception as exc:  # noqa: BLE001 - Ray may already be gone; the shutdown below still runs
        log.debug("closing the roles: %s: %s", type(exc).__name__, exc)
    _shutdown_ray(running.started_local_ray, running.earlier_children)


def _shutdown_ray(started_local_ray: bool, earlier_children: frozenset, grace_s: float = 10.0) -> None:
    import ray

    if not started_local_ray:
        return  # a cluster's processes are the cluster's; our actors were killed above
    import psutil

    # Ray's processes are this process's children; what they spawned (a vLLM engine core)
    # is not, once they die: remember the whole tree now.
    tree = [p for p in psutil.Process().children(recursive=True) if p.pid not in earlier_children]
    ray.shutdown()
    gone, alive = psutil.wait_procs(tree, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    if alive:
        psutil.wait_procs(alive, timeout=grace_s)
        log.info("stopped %d process(es) the local Ray left running", len(alive))
