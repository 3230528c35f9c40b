"""The scale benchmark's pieces without Ray: the latency model against its published points, the
ideal-throughput formula, the simulated chat engine's timing, the stand-ins' job tags and answers,
and the simulated cluster's node types against cluster.yaml and configs/gpu_cluster.yaml."""
import asyncio
import time

import numpy as np
import pytest

from benchmarks.scale import analysis
from benchmarks.scale.cluster import CLUSTER_YAML, node_types
from benchmarks.scale.latency import (SD15_A10_50STEPS, BatchedCost, EngineCost, RoleCapacity, critical_path, default_model,
                                      fit_line, ideal_throughput, sd15_a10)
from benchmarks.scale.standins import (GENERATED_MARK, UNREADABLE_ANSWER, VOCABULARY, Behaviour, LatencyClipModel,
                                       SimChatBackend, SimEngine, image_job, tag_image, text_job)

REPO_CONFIG = CLUSTER_YAML.parent / "configs" / "gpu_cluster.yaml"


def _cfg():
    from agents.config import ArpoConfig
    from core.config import load_config

    return load_config(ArpoConfig, REPO_CONFIG, ["agent.max_steps=3"])


def test_sd15_line_reproduces_the_published_a10_timings():
    cost = sd15_a10(50)
    for batch, seconds in SD15_A10_50STEPS:
        assert cost.seconds(batch) == pytest.approx(seconds, rel=0.02)
    # 25 steps (gpu_cluster.yaml) costs half; half a GPU doubles it
    assert sd15_a10(25).seconds(8, share=0.5) == pytest.approx(cost.seconds(8), rel=1e-9)
    a, c = fit_line([(1, 3.0), (2, 5.0), (4, 9.0)])
    assert (a, c) == pytest.approx((1.0, 2.0))


def test_ideal_is_the_smaller_bound_and_names_it():
    caps = [RoleCapacity("t2i", 2, 0.5, busy_s_per_image=10.0, images_per_s=0.2),
            RoleCapacity("vlm", 1, 1.0, busy_s_per_image=4.0, images_per_s=0.25)]
    low = ideal_throughput(1, critical_path_s=50.0, capacities=caps)
    assert low.bound == "concurrency" and low.images_per_s == pytest.approx(1 / 50)
    high = ideal_throughput(1024, critical_path_s=50.0, capacities=caps)
    assert high.bound == "t2i" and high.images_per_s == pytest.approx(0.2)


def test_critical_path_counts_every_stage_of_the_enhanced_loop():
    cfg = _cfg()
    model = default_model(cfg)
    shares = {r: getattr(cfg, r).resources.num_gpus for r in ("t2i", "llm", "vlm", "captioner", "clip")}
    path = critical_path(model, cfg, shares, max_steps=3, candidates=6, describe_prompt_tokens=2900,
                         differences_prompt_tokens=300, propose_prompt_tokens=300)
    names = [s.name for s in path]
    assert names[0] == "caption" and names[-1] == "clip[3]"
    assert sum(n.startswith("t2i[") for n in names) == 4 and sum(n.startswith("select[") for n in names) == 3
    assert path[1].seconds == pytest.approx(model.t2i.seconds(1, 0.5))


def _run(coro):
    return asyncio.run(coro)


def _engine(max_num_seqs=8, kv_tokens=10_000, prefill=0.0):
    # 1 s per decode step whatever the batch, k = 0.01: 20 tokens take 0.2 s of wall time
    cost = EngineCost(t0_s=1.0, t1_s=0.0, prefill_s_per_token=prefill, vision_s=0.0, image_tokens=0,
                      kv_tokens=kv_tokens, max_num_seqs=max_num_seqs)
    return SimEngine(cost, share=1.0, dilation=0.01)


async def _timed(engine, n, tokens=20, prompt=10):
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.generate(prompt, tokens, 0, job=i % 2) for i in range(n)))
    return time.perf_counter() - t0


def test_engine_decodes_concurrent_requests_together():
    engine = _engine()
    one = _run(_timed(engine, 1))
    four = _run(_timed(_engine(), 4))
    assert 0.18 < one < 0.5
    assert four < 1.6 * one  # batched: not 4x
    assert engine.as_dict()["max_running"] == 1


def test_engine_limits_running_sequences_and_kv_cache():
    by_seqs = _engine(max_num_seqs=1)
    serial = _run(_timed(by_seqs, 3))
    assert serial > 0.55  # three 0.2 s decodes one after the other
    assert by_seqs.as_dict()["max_running"] == 1
    by_kv = _engine(kv_tokens=45)  # each request holds 10 + 20 tokens: one at a time
    assert _run(_timed(by_kv, 3)) > 0.55
    assert by_kv.as_dict()["max_running"] == 1
    mixed = _engine()
    _run(_timed(mixed, 4))
    assert mixed.as_dict()["mixed_admissions"] >= 1 and mixed.as_dict()["job_requests"] == {"0": 2, "1": 2}


def test_engine_charges_prefill():
    fast = _run(_timed(_engine(), 1, tokens=1, prompt=10))
    slow = _run(_timed(_engine(prefill=3.0), 1, tokens=1, prompt=10))  # 30 s of prefill x 0.01
    assert slow - fast > 0.25


def test_job_tags_survive_and_noise_has_none():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert image_job(noise) is None
    for job in (0, 3, 14):
        assert image_job(tag_image(noise, job)) == job
    with pytest.raises(ValueError):
        tag_image(noise, 15)
    assert text_job("scalejob7 photo of a street") == 7 and text_job("a street") is None


def test_standin_clip_prefers_longer_prompts_and_knows_references():
    clip = LatencyClipModel(BatchedCost(0, 0), BatchedCost(0, 0), share=1.0, dilation=1.0)
    ref = np.zeros((32, 32, 3), dtype=np.uint8)
    gen = ref.copy()
    gen[1] = GENERATED_MARK
    texts = ["a b", "a b c d", "a b c d e f g h"]
    t = clip.encode_texts(texts)
    r, g = clip.encode_images([ref, gen])
    scores = t @ r
    assert list(scores) == sorted(scores) and scores[0] < scores[-1]
    assert r[0] == pytest.approx(1.0) and g @ r < 0.99
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)


def test_stand_ins_that_say_no_make_algorithm_8_drop_fragments_and_the_agent_reask():
    """Behaviour (issue #24 item 4): a rejected fragment lowers CLIP-T, so Algorithm 8 drops it; a prose answer
    cannot be parsed, so the agent re-asks, and the re-ask gets a list."""
    from actors.chat.messages import normalize_messages
    from agents import prompts
    from agents.parsing import parse_fragments

    saying_no = Behaviour(reject_share=0.5, unreadable_share=1.0)
    share = sum(saying_no.rejected(f) for f in VOCABULARY) / len(VOCABULARY)
    assert 0.35 < share < 0.65  # the hash splits the vocabulary about as asked
    good = next(f for f in VOCABULARY if not saying_no.rejected(f))
    bad = next(f for f in VOCABULARY if saying_no.rejected(f))
    clip = LatencyClipModel(BatchedCost(0, 0), BatchedCost(0, 0), share=1.0, dilation=1.0, behaviour=saying_no)
    ref = np.zeros((32, 32, 3), dtype=np.uint8)
    base = "scalejob1 photo of a quiet street"
    t = clip.encode_texts([base, f"{base}, {good}", f"{base}, {bad}"]) @ clip.encode_images([ref])[0]
    assert t[1] > t[0] > t[2]  # kept: raises the score; rejected: lowers it despite its two words
    assert Behaviour().rejected(bad) is False and Behaviour(reject_share=1.0).rejected(good) is True
    with pytest.raises(ValueError, match="reject_share"):
        Behaviour(reject_share=1.5)

    cfg = _cfg()
    model = default_model(cfg, dilation=1e-6)
    llm = SimChatBackend(model.llm, model.answers, 1.0, 1e-6, vision=False, behaviour=saying_no)
    asked = prompts.propose_messages("the sky differs", base, aspect="style")
    kind, answer, _ = llm._answer(normalize_messages(asked, allow_images=False))
    assert (kind, answer) == ("propose", UNREADABLE_ANSWER) and parse_fragments(answer) is None
    again = prompts.reask_messages(asked, answer)
    kind, answer, _ = llm._answer(normalize_messages(again, allow_images=False))
    assert kind == "propose" and len(parse_fragments(answer)) == 3 and llm.unreadable_answers == 1


def test_standin_chat_answers_parse_and_propose_only_new_fragments():
    from actors.chat.messages import normalize_messages
    from agents import prompts
    from agents.parsing import parse_fragments

    cfg = _cfg()
    model = default_model(cfg, dilation=1e-6)
    backend = SimChatBackend(model.llm, model.answers, 1.0, 1e-6, vision=False)
    prompt = f"scalejob2 photo 1234 of a quiet street, {VOCABULARY[0]}, {VOCABULARY[1]}"
    msgs = normalize_messages(prompts.propose_messages("the sky differs", prompt, aspect="style"), allow_images=False)
    kind, answer, job = backend._answer(msgs)
    assert (kind, job) == ("propose", 2)
    found = parse_fragments(answer)
    assert found and len(found) == 3 and not set(found) & {VOCABULARY[0], VOCABULARY[1]}
    vlm = SimChatBackend(model.vlm, model.answers, 1.0, 1e-6, vision=True)
    image = tag_image(np.zeros((32, 32, 3), dtype=np.uint8), 4)
    kind, answer, job = vlm._answer(normalize_messages(prompts.describe_messages(image, "style"), allow_images=True))
    assert kind == "describe" and job == 4 and "scalejob4" in answer


def test_steady_rate_skips_ramp_and_drain():
    finish = [10.0] * 2 + [float(i) for i in range(11, 17)]  # 8 completions: a burst, then 1 per second
    rate, window = analysis.steady_rate(finish)
    assert rate == pytest.approx(1.0) and "of 8" in window
    assert analysis.steady_rate([2.0, 4.0])[0] == pytest.approx(0.5)


def test_simulated_nodes_mirror_cluster_yaml_and_hold_the_gpu_roles():
    from actors.capacity import ClusterShape, capacity_problems

    types = node_types()
    assert list(types)[0] == "head_cpu" and types["head_cpu"].num_cpus == 0 and types["head_cpu"].num_gpus == 0
    assert (types["gpu_large"].num_cpus, types["gpu_large"].num_gpus, types["gpu_large"].custom) == (4, 1, {"gpu_large": 1})
    assert (types["gpu_small"].num_cpus, types["gpu_small"].num_gpus, types["gpu_small"].custom) == (8, 1, {"gpu_small": 1})
    cfg = _cfg()
    roles = {r: getattr(cfg, r).resources for r in ("t2i", "llm", "vlm", "captioner", "clip")}

    def shape(large, small):
        nodes = [{}] + [{"CPU": t.num_cpus, "GPU": t.num_gpus, **t.custom}
                        for t, n in ((types["gpu_large"], large), (types["gpu_small"], small)) for _ in range(n)]
        return ClusterShape(nodes=nodes)

    assert capacity_problems(roles, shape(2, 2)) == []  # the benchmark's cluster
    assert capacity_problems(roles, shape(1, 2))  # one gpu_large cannot hold the LLM and the VLM
    assert capacity_problems(roles, shape(2, 1))  # 1.5 gpu_small are asked for


def test_real_size_images_on_request(tmp_path):
    from PIL import Image

    from benchmarks.scale.run import make_images
    from benchmarks.scale.latency import BatchedCost
    from benchmarks.scale.standins import LatencyT2IModel

    folder = make_images(tmp_path / "refs", 2, seed=0, job=3, side=512)
    first = np.asarray(Image.open(folder / "img_00000.png"))
    assert first.shape == (512, 512, 3) and image_job(first) == 3
    model = LatencyT2IModel(BatchedCost(0.0, 0.0), share=1.0, dilation=0.0, side=512)
    out = model.generate_batch([("a scalejob3 prompt", 0)])
    assert out[0].shape == (512, 512, 3) and image_job(out[0]) == 3 and (out[0][1] == GENERATED_MARK).all()


def test_decisions_count_stop_reasons_candidate_fates_and_reasks(tmp_path):
    """What the stand-ins that say no are for shows in the level's figures (benchmarks.scale.level_outputs.decisions)."""
    import json

    from benchmarks.scale.level_outputs import decisions

    records = [
        {"image_id": "a", "status": "done", "stop_reason": "no_improvement", "iterations": [
            {"selection": [{"outcome": "kept"}, {"outcome": "no_gain"}]}, {"selection": [{"outcome": "no_gain"}]}]},
        {"image_id": "b", "status": "done", "stop_reason": "max_steps", "iterations": [{"selection": [{"outcome": "kept"}]}] * 4},
        {"image_id": "c", "status": "error", "error": "boom", "iterations": []},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    d = decisions(tmp_path, {"llm": [{"unreadable_answers": 3}, {"unreadable_answers": 2}]})
    assert d["stop_reasons"] == {"no_improvement": 1, "max_steps": 1}
    assert d["candidate_outcomes"] == {"kept": 5, "no_gain": 2} and d["reasks"] == 5
    assert d["iterations_per_image"] == 3.0
    assert decisions(tmp_path / "missing", {})["stop_reasons"] == {}


def test_the_simulation_substitutes_only_the_servers_and_refuses_a_shared_engine():
    from actors.config import ResourceConfig
    from actors.role_groups import RoleGroup
    from benchmarks.scale.roles import standin_servers
    from benchmarks.scale.standins import SERVERS

    specs = {role: object() for role in SERVERS}
    pick = standin_servers(specs)
    assert pick(RoleGroup("vlm", ("vlm",), ResourceConfig()), None) == (SERVERS["vlm"], specs["vlm"])
    with pytest.raises(ValueError, match="share one actor.*llm\\+vlm"):
        pick(RoleGroup("llm+vlm", ("llm", "vlm"), ResourceConfig()), None)
