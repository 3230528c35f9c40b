"""Images by object-store reference through real Ray actors (issue #24 item 2).

The five scripted doubles run inside one Ray actor (they share one World, which tells a generated image's
prompt from its pixels), reached through routed RoleClients — the production client and actor shell
(actors.ray_actors.start_role, remote_class). The doubles assert that they get pixel arrays (the reference,
the generated images, the VLM's image parts), so a reference that reached them unresolved fails the run.
Compared with the same optimisation on in-process doubles (pixels throughout): the same prompts and scores.
"""
from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from actors.config import ResourceConfig
from actors.object_refs import ImageRefs
from actors.ray_actors import RoleClient, start_role
from actors.roles import Roles
from agents.api import optimise
from agents.config import AgentConfig
from agents.graph import build_graph, compile_graph
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference

pytestmark = pytest.mark.ray

GAINS = {"blue eyes": .05, "bow tie": .04, "oil painting": .03, "soft light": .02}
REPLIES = {"content": ["[blue eyes, junk one]", "[bow tie]", "[junk two]"],
           "style": ["[oil painting]", "[soft light]", "[junk three]"], None: ["[blue eyes]", "[bow tie]"]}
ROLE_NAMES = ("t2i", "llm", "vlm", "captioner", "clip")


def world() -> World:
    return World(fragment_sum(GAINS, unknown=-.01), size=64)


class DoublesServer:
    """The five doubles behind one actor, as a role group's server: ``call(role, method, ...)``."""

    def __init__(self, cfg):
        self.roles = make_roles(world(), REPLIES)

    async def ping(self):
        return True

    async def call(self, role, method, *args, **kwargs):
        return await getattr(getattr(self.roles, role), method)(*args, **kwargs)

    async def counts(self):
        return call_counts(self.roles)


@pytest.fixture
def ray_roles(ray_local):
    group = start_role("doubles", DoublesServer, None, ResourceConfig(num_cpus=0.1, max_concurrency=64))
    roles = Roles(**{name: RoleClient(name, group.handles, route=name) for name in ROLE_NAMES})
    yield roles, group
    group.kill()


async def test_images_travel_by_reference_and_the_result_is_the_same(ray_roles, tmp_path):
    roles, group = ray_roles
    cfg = AgentConfig(framework="enhanced", seeds=[0, 1])
    ref_path = write_reference(world(), tmp_path)
    refs = ImageRefs()
    graph = compile_graph(build_graph(roles, cfg, 77, refs=refs), InMemorySaver())
    on_ray = await optimise("img", ref_path, tmp_path / "ray", roles, cfg, 77, graph=graph)

    local_roles = make_roles(world(), REPLIES)
    local = await optimise("img", ref_path, tmp_path / "local", local_roles, cfg, 77)
    assert [r.rendered for r in on_ray.iterations] == [r.rendered for r in local.iterations]
    assert [r.clip_i_per_seed for r in on_ray.iterations] == [r.clip_i_per_seed for r in local.iterations]
    assert on_ray.status == local.status == "done", on_ray.error
    assert on_ray.prompt == local.prompt and on_ray.stop_reason == local.stop_reason
    assert await group.handles[0].counts.remote() == call_counts(local_roles)

    # the driver put the reference into the store once; every other use was a reference handed out again
    stats = refs.stats()
    assert stats["puts"] == 1, stats
    assert stats["reused"] >= len(on_ray.iterations) * 2, stats  # each generate scores CLIP-I and CLIP-T against it
    assert stats["owners"] == 1  # the caller releases (the batch runner does, per image)


async def test_one_seed_hands_the_list_object_on(ray_roles, tmp_path):
    """With one seed T2I's result is one object (the list): CLIP gets it whole, the VLM its first item."""
    roles, group = ray_roles
    cfg = AgentConfig(framework="vanilla", seeds=[0], max_steps=1)
    refs = ImageRefs()
    graph = compile_graph(build_graph(roles, cfg, 77, refs=refs), InMemorySaver())
    result = await optimise("one", write_reference(world(), tmp_path), tmp_path / "one", roles, cfg, 77, graph=graph)
    assert result.status == "done", result.error
    assert len(result.iterations) >= 1 and refs.stats()["puts"] == 1


def test_only_ray_clients_take_references(ray_roles):
    """Doubles in this process lack takes_object_refs: the graph hands them arrays (they assert it elsewhere)."""
    from agents import nodes

    assert not nodes.takes_object_refs(make_roles(world(), REPLIES))
    roles, _ = ray_roles
    assert nodes.takes_object_refs(roles)
    mixed = Roles(**{**{n: getattr(roles, n) for n in ROLE_NAMES}, "clip": make_roles(world(), REPLIES).clip})
    assert not nodes.takes_object_refs(mixed)  # one in-process image role: pixels for all
