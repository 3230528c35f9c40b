"""Which actors start for which roles (actors/role_groups.py), the shared chat server and the VLM
captioner (with a scripted backend: no model), and the capacity check counting a shared actor once."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from actors.capacity import ClusterShape, capacity_problems
from actors.chat.base import ChatBackend, ChatResult
from actors.chat.server import ChatGroupServer, LLMServer
from actors.config import CaptionerConfig
from actors.role_groups import engine_differences, plan_groups, role_groups
from agents.config import ArpoConfig
from core.config import load_config

REPO = Path(__file__).resolve().parents[2]
ROLES = ("t2i", "llm", "vlm", "captioner", "clip")


def profile(name: str, *overrides: str) -> ArpoConfig:
    return load_config(ArpoConfig, REPO / "configs" / name, overrides)


def test_the_24gb_profile_starts_three_actors_one_serving_llm_vlm_and_captioner():
    cfg = profile("one_gpu_24gb.yaml")
    groups = plan_groups(cfg)
    assert [(g.name, g.roles) for g in groups] == [
        ("t2i", ("t2i",)), ("llm+vlm+captioner", ("llm", "vlm", "captioner")), ("clip", ("clip",))]
    assert engine_differences(cfg.llm, cfg.vlm) == []
    assert cfg.llm.sampling != cfg.vlm.sampling and cfg.vlm.image_size == 448  # per-role settings do not split the engine


def test_a_shared_engine_is_counted_once_by_the_capacity_check():
    cfg = profile("one_gpu_24gb.yaml")
    workstation = ClusterShape(nodes=[{"CPU": 8.0, "GPU": 1.0}])
    assert sum(r.num_gpus for r in role_groups(cfg).values()) == pytest.approx(1.0)
    assert capacity_problems(role_groups(cfg), workstation) == []
    # Counted per role, as before shared engines, the same profile asks for more than the one GPU.
    per_role = capacity_problems({r: getattr(cfg, r).resources for r in ROLES}, workstation)
    assert any(p.startswith("all roles together need GPU 2.1") for p in per_role), per_role


def test_the_80gb_profile_runs_five_actors_on_one_gpu_without_custom_resources():
    cfg = profile("one_gpu_80gb.yaml")
    groups = role_groups(cfg)
    assert list(groups) == list(ROLES)
    assert all(not r.custom_resources for r in groups.values())
    assert capacity_problems(groups, ClusterShape(nodes=[{"CPU": 8.0, "GPU": 1.0}])) == []


def test_the_cluster_profile_keeps_one_actor_per_role():
    assert list(role_groups(profile("gpu_cluster.yaml"))) == list(ROLES)


def test_any_engine_setting_that_differs_gives_two_engines_and_is_named():
    cfg = profile("one_gpu_24gb.yaml", "llm.vllm.max_num_seqs=32", "llm.resources.num_gpus=0.5")
    assert engine_differences(cfg.llm, cfg.vlm) == ["resources.num_gpus", "vllm.max_num_seqs"]
    assert [g.name for g in plan_groups(cfg)] == ["t2i", "llm", "vlm+captioner", "clip"]


def test_a_transformers_captioner_keeps_its_own_actor_and_a_vlm_one_rides_a_separate_vlm():
    cfg = profile("gpu_cluster.yaml", "captioner.backend=vlm")
    assert [g.name for g in plan_groups(cfg)] == ["t2i", "llm", "vlm+captioner", "clip"]
    cfg = profile("one_gpu_24gb.yaml", "captioner.backend=transformers")
    assert [g.name for g in plan_groups(cfg)] == ["t2i", "llm+vlm", "captioner", "clip"]


def test_vllm_engine_args_carry_the_multimodal_processor_options():
    from actors.chat.vllm_backend import engine_args

    cfg = profile("one_gpu_24gb.yaml")
    assert engine_args(cfg.vlm, vision=True)["mm_processor_kwargs"] == {"max_pixels": 200704}
    assert "mm_processor_kwargs" not in engine_args(profile("one_gpu_80gb.yaml").vlm, vision=True)


# --- the shared server, on a scripted backend ------------------------------------------------

class Scripted(ChatBackend):
    """Answers with what it was asked: the number of images, the last text, the sampling."""

    name = "scripted"

    def __init__(self):
        self.calls = []
        self.closed = 0

    async def chat(self, messages, sampling):
        self.calls.append((messages, sampling))
        last = messages[-1]
        return ChatResult(text=f"\n  '{len(last.images)} image(s): {last.text[:20]}'\nsecond line", prompt_tokens=1, completion_tokens=1)

    async def aclose(self):
        await asyncio.sleep(0.05)
        self.closed += 1


def _group(**roles):
    cfg = profile("one_gpu_24gb.yaml")
    backend = Scripted()
    sections = {r: getattr(cfg, r) for r in roles or ("llm", "vlm", "captioner")}
    return ChatGroupServer(sections, backend=backend), backend


def _image():
    return np.zeros((8, 8, 3), dtype=np.uint8)


async def test_each_role_keeps_its_interface_over_the_one_backend():
    server, backend = _group()
    assert await server.call("llm", "chat", [{"role": "user", "content": "hi"}]) == "\n  '0 image(s): hi'\nsecond line"
    with pytest.raises(ValueError, match="text only"):
        await server.call("llm", "chat", [{"role": "user", "content": [{"type": "image", "image": _image()}]}])
    answer = await server.call("vlm", "chat", [{"role": "user", "content": [{"type": "image", "image": _image()},
                                                                          {"type": "text", "text": "what?"}]}])
    assert answer.startswith("\n  '1 image(s): what?")
    # Each role's own default sampling reaches the shared backend.
    assert backend.calls[0][1].temperature == 0.7 and backend.calls[1][1].temperature == 0.2
    pings = await server.ping()
    assert set(pings) == {"llm", "vlm", "captioner"}
    assert pings["llm"]["engine"] == pings["vlm"]["engine"] == pings["captioner"]["engine"]
    with pytest.raises(ValueError, match="not 't2i'"):
        await server.call("t2i", "generate", "x", [0])
    with pytest.raises(AttributeError):
        await server.call("llm", "aclose")


async def test_the_vlm_captioner_sends_the_image_with_its_prompt_greedily_and_keeps_the_first_line():
    server, backend = _group()
    caption = await server.call("captioner", "caption", _image())
    messages, sampling = backend.calls[-1]
    cfg = profile("one_gpu_24gb.yaml").captioner
    assert len(messages[0].images) == 1 and messages[0].text == cfg.vlm_prompt
    assert sampling.temperature == 0.0 and sampling.max_new_tokens == cfg.max_new_tokens == 40
    assert caption == f"1 image(s): {cfg.vlm_prompt[:20]}".strip()  # first non-empty line, quotes removed
    with pytest.raises(ValueError):
        await server.call("captioner", "caption", np.zeros((8, 8), dtype=np.uint8))


async def test_closing_from_every_role_releases_the_engine_once_and_each_waits_for_it():
    server, backend = _group()
    await asyncio.gather(server.aclose(), server.aclose(), server.aclose())
    assert backend.closed == 1


def test_separate_servers_report_different_engines():
    a, b = LLMServer(profile("one_gpu_24gb.yaml").llm, backend=Scripted()), LLMServer(profile("one_gpu_24gb.yaml").llm, backend=Scripted())
    assert a.engine_id != b.engine_id


def test_a_vlm_captioner_cannot_be_started_on_its_own():
    from actors.captioner import CaptionerServer

    with pytest.raises(ValueError, match="served by the VLM's actor"):
        CaptionerServer(CaptionerConfig(backend="vlm"))


@pytest.mark.parametrize("answer, caption", [
    ("A cat on a sofa.", "A cat on a sofa."),
    ("\n\nCaption: \"a red car\"\nIt is parked.", "a red car"),
    ("'a dog'", "a dog"),
    ("", ""),
])
def test_first_caption_line(answer, caption):
    from actors.captioner import first_caption_line

    assert first_caption_line(answer) == caption


def test_start_roles_runs_the_real_servers_unless_told_otherwise():
    """actors.ray_actors.production_servers: a role's own server from its section; a shared group's ChatGroupServer
    from {role: section} (the scale simulation substitutes only this choice: benchmarks/scale/roles.py)."""
    from actors.ray_actors import GROUP_SERVER, ROLE_SERVERS, production_servers

    cfg = profile("one_gpu_24gb.yaml")
    chosen = {g.name: production_servers(g, cfg) for g in plan_groups(cfg)}
    assert chosen["t2i"] == (ROLE_SERVERS["t2i"], cfg.t2i)
    shared = next(name for name in chosen if "+" in name)
    assert chosen[shared].server == GROUP_SERVER
    assert chosen[shared].arg == {role: getattr(cfg, role) for role in shared.split("+")}
