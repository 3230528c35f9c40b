"""Replicas of a role spread over nodes (actors/spread.py) on a simulated cluster of cluster.yaml's gpu_small nodes.

The layout that CI's scale run once got wrong with Ray's actor-level SPREAD hint: the captioner and
CLIP (a quarter of a GPU each) on one gpu_small node, then configs/gpu_cluster.yaml's two T2I
replicas (half a GPU each), which fit one per node. Repeated, because the old hint failed only
sometimes; and ``placement: pack`` (a PACK group) shows that the node count seen here does catch packing."""
import asyncio
import os

import pytest

from actors.config import ResourceConfig
from actors.ray_actors import start_role, stop_roles, wait_ready
from actors.shared_roles import SharedRoles, spread_group_name, stop_shared_roles
from actors.capacity import actor_bundle
from actors.spread import group_strategy, named_groups, wants_spread_group

pytestmark = pytest.mark.ray

QUARTER = ResourceConfig(num_gpus=0.25, num_cpus=1, custom_resources={"gpu_small": 0.25})
T2I = ResourceConfig(num_gpus=0.5, num_cpus=2, num_replicas=2, custom_resources={"gpu_small": 0.5})


class Where:
    """A stand-in role server that says where it runs."""

    def __init__(self, cfg):
        self.cfg = cfg

    async def ping(self):
        return True

    async def node(self):
        import ray

        return ray.get_runtime_context().get_node_id()


@pytest.fixture(scope="module")
def two_small_nodes(tmp_path_factory):
    import ray

    from benchmarks.scale.cluster import start_cluster

    sim = start_cluster({"gpu_small": 2}, temp_dir=f"/tmp/rsp{os.getpid()}")
    ray.init(address=sim.address, log_to_driver=False)
    yield ray
    ray.shutdown()
    sim.shutdown()


async def nodes_of(client) -> list[str]:
    return list(await client.broadcast("node"))


async def all_gpus_free(ray, timeout_s: float = 60.0) -> None:
    """Wait until the earlier test's reservations are back: a group is removed asynchronously, and a
    SPREAD group placed meanwhile would rightly share the one node with room (not what a test means)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while ray.available_resources().get("GPU", 0) < ray.cluster_resources().get("GPU", 0):
        assert asyncio.get_running_loop().time() < deadline, ray.available_resources()
        await asyncio.sleep(0.2)


def test_what_a_replica_bundle_holds():
    # a bundle of the group is what one actor asks for (zero amounts left out: Ray refuses them in a bundle)
    assert actor_bundle(T2I) == {"CPU": 2.0, "GPU": 0.5, "gpu_small": 0.5}
    assert actor_bundle(ResourceConfig(num_gpus=0, num_cpus=0, num_replicas=2)) == {}
    assert wants_spread_group(T2I) and group_strategy(T2I) == "SPREAD"
    pack = T2I.model_copy(update={"placement": "pack"})
    assert wants_spread_group(pack) and group_strategy(pack) == "PACK"
    assert not wants_spread_group(T2I.model_copy(update={"num_replicas": 1}))
    assert not wants_spread_group(ResourceConfig(num_gpus=0, num_cpus=0, num_replicas=2))  # nothing to spread


async def test_two_half_gpu_replicas_land_on_two_nodes_every_time(two_small_nodes):
    ray = two_small_nodes
    for attempt in range(4):
        await all_gpus_free(ray)
        small = [start_role(role, Where, role, QUARTER) for role in ("captioner", "clip")]
        await wait_ready(*small)
        t2i = start_role("t2i", Where, "t2i", T2I)
        await wait_ready(t2i)
        assert len(set(await nodes_of(t2i))) == 2, attempt
        pg = t2i.placement_group
        assert ray.util.placement_group_table(pg)["strategy"] == "SPREAD"
        await t2i.close(5)
        # the group's reservations go with the actors: the next attempt (and any later role) gets them back
        assert ray.util.placement_group_table(pg)["state"] == "REMOVED"
        for client in small:
            await client.close(5)


async def test_pack_puts_both_replicas_on_one_node_and_the_node_count_sees_it(two_small_nodes):
    """``placement: pack`` (a PACK group) on two free nodes: both halves of a GPU on one node, and the count
    that guards spreading above sees one node (so it can fail)."""
    ray = two_small_nodes
    for attempt in range(2):
        await all_gpus_free(ray)
        t2i = start_role("t2i", Where, "t2i", T2I.model_copy(update={"placement": "pack"}))
        await wait_ready(t2i)
        assert len(set(await nodes_of(t2i))) == 1, attempt
        assert ray.util.placement_group_table(t2i.placement_group)["strategy"] == "PACK"
        await t2i.close(5)


async def test_shared_replicas_keep_one_detached_group_until_stopped(two_small_nodes):
    ray = two_small_nodes
    await all_gpus_free(ray)
    shared = SharedRoles("spreadtest")
    first = start_role("t2i", Where, "t2i", T2I, shared=shared)
    await wait_ready(first)
    name = spread_group_name("spreadtest", "t2i")
    [pg] = named_groups(name)
    assert ray.util.placement_group_table(pg)["strategy"] == "SPREAD"
    assert len(set(await nodes_of(first))) == 2
    # a second job joins the same actors and the same group (no second reservation)
    second = start_role("t2i", Where, "t2i", T2I, shared=SharedRoles("spreadtest"))
    assert [a._actor_id for a in second.handles] == [a._actor_id for a in first.handles]
    assert [g.id for g in named_groups(name)] == [pg.id]
    await stop_roles(second)  # a job's end leaves shared actors and their group alone
    assert [g.id for g in named_groups(name)] == [pg.id] and await second.broadcast("ping") == [True, True]
    stopped = await asyncio.to_thread(stop_shared_roles, "spreadtest", 5)
    assert stopped == ["spreadtest:t2i:0", "spreadtest:t2i:1"]
    assert named_groups(name) == []
