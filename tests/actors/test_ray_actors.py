"""The Ray shell: resources from config, restart of a killed actor with the in-flight call retried."""
import asyncio
import os

import pytest

from actors.config import ResourceConfig
from actors.ray_actors import RoleClient, actor_options, start_role, wait_ready

pytestmark = pytest.mark.ray


class SlowEcho:
    """A stand-in role server: loads 'a model' in __init__, answers slowly."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.loads = 1

    async def ping(self):
        return os.getpid()

    async def echo(self, x, delay=0.0):
        await asyncio.sleep(delay)
        return x, os.getpid()


class BrokenLoad:
    def __init__(self, cfg):
        raise FileNotFoundError(f"no model at {cfg}")

    async def ping(self):
        return True


def test_actor_options_follow_config():
    res = ResourceConfig(num_gpus=0.25, num_cpus=2, max_restarts=5, max_task_retries=7, max_concurrency=64)
    assert actor_options(res) == dict(num_gpus=0.25, num_cpus=2, max_restarts=5, max_task_retries=7, max_concurrency=64)
    # several replicas are spread over nodes unless packing is asked for
    many = ResourceConfig(num_gpus=0.5, num_replicas=2)
    assert actor_options(many)["scheduling_strategy"] == "SPREAD"
    assert "scheduling_strategy" not in actor_options(ResourceConfig(num_gpus=0.5, num_replicas=2, placement="pack"))


async def test_killed_actor_restarts_and_call_completes(ray_local):
    ray = ray_local
    client = start_role("echo", SlowEcho, "cfg", ResourceConfig(num_cpus=0.1, max_restarts=2, max_task_retries=2))
    first_pid = await client.ping()
    call = asyncio.ensure_future(client.echo("hello", delay=3.0))
    await asyncio.sleep(1.0)
    ray.kill(client.handles[0], no_restart=False)
    value, pid = await asyncio.wait_for(call, 60)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert value == "hello"
    assert pid != first_pid  # answered by the restarted actor
    client.kill()


async def test_replicas_round_robin(ray_local):
    client = start_role("echo", SlowEcho, "cfg", ResourceConfig(num_cpus=0.1, num_replicas=2))
    pids = {(await client.echo(i))[1] for i in range(4)}
    assert len(pids) == 2
    assert len(await client.broadcast("ping")) == 2
    client.kill()


async def test_failed_load_names_role(ray_local):
    client = start_role("t2i", BrokenLoad, "/no/such/model", ResourceConfig(num_cpus=0.1, max_restarts=0))
    with pytest.raises(RuntimeError) as e:
        await wait_ready(client)
    assert "role 't2i' failed to start" in str(e.value) and "/no/such/model" in str(e.value)


def test_client_requires_handles():
    with pytest.raises(ValueError):
        RoleClient("x", [])
