"""The batch job end to end through each text-to-image target's twin (SD1.5, SDXL, SD3.5, FLUX.1,
PixArt-α): the real run_batch, graph, SQLite checkpointer and results writer, and the real T2I role
loading the twin (random weights: the images are meaningless); the LLM, VLM, captioner and CLIP are
scripted doubles (their real models are run by the offline-kit CLI tests), CLIP one that prefers longer
prompts so that only the token budget bounds them.

What it shows: the agent's prompt budget comes from the target's own tokenizer. Six proposed fragments
(115 CLIP tokens together) are all kept for SD3.5 and FLUX.1, whose T5 reads 256 and 512 tokens; for
SD1.5 and SDXL (CLIP, 77) and PixArt-α (T5, 120) some are held out as too long, and every prompt the
pipeline saw fits its budget under its own tokenizer."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.config import T2IConfig
from actors.roles import Roles
from actors.t2i import T2IServer
from agents.batch.runner import run_batch
from agents.config import ArpoConfig
from tests.agents.doubles import ScriptedLLM

# Six fragments of 18 words (each within the parser's 20 words and 200 characters): 115 CLIP tokens
# together, 176 of the twins' small T5 vocabulary.
FRAGMENTS = [
    "a red fox with thick winter fur standing alert in deep fresh snow under tall dark pine trees",
    "golden hour sunlight low on the horizon casting long blue shadows across the frozen lake and the hills",
    "soft film grain with muted warm colours and a shallow depth of field that blurs the distant forest",
    "misty mountains rising behind the trees with thin clouds drifting slowly over the icy ridges at dusk",
    "a wide angle view from ground level with small snowflakes falling through the cold clear evening air",
    "quiet wilderness scene in the style of a classic nature documentary photograph printed in a magazine",
]
KEPT_ALL = {"sd15": False, "sdxl": False, "sd3": True, "flux": True, "pixart": False}
LIMIT = {"sd15": 77, "sdxl": 77, "sd3": 256, "flux": 512, "pixart": 120}


class LongerIsBetterClip:
    """Scores a prompt higher the more words it has, so Algorithm 8 adds every fragment that fits: what
    bounds the prompt is then the token budget alone."""

    async def text_image_scores(self, texts, image, image_key=None) -> list[float]:
        return [0.1 + 0.001 * len(t.split()) for t in texts]

    async def image_image_scores(self, images, reference, reference_key=None) -> list[float]:
        return [0.5 + 0.001 * float(np.asarray(img).mean()) for img in images]


class PlainVLM:
    async def chat(self, messages, sampling=None) -> str:
        return "Image 2 lacks the fox, the forest and the warm light of Image 1."


class FixedCaptioner:
    async def caption(self, image) -> str:
        return "a photo of an animal"


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    from actors.offline_kit import OFFLINE_KIT_MARKER, t2i, t2i_targets

    root = tmp_path_factory.mktemp("targets_kit")
    (root / OFFLINE_KIT_MARKER).write_text("random weights\n")
    sections = {"sd15": t2i.build(root, seed=0), **{t: t2i_targets.build(root, t, seed=0) for t in t2i_targets.TARGETS}}
    return sections


def images(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.mark.parametrize("target", list(KEPT_ALL))
def test_the_batch_job_runs_through_the_twin_with_the_targets_budget(kit, target, tmp_path):
    section = kit[target]
    assert section.get("max_prompt_tokens") is None or target == "sd15"
    section = {**section, "max_prompt_tokens": None}  # the default: from the pipeline
    cfg = ArpoConfig.model_validate({"t2i": section, "agent": {"framework": "vanilla", "max_steps": 2, "seeds": [0]},
                                     "job": {"summary_refresh_s": 0}})
    llm = ScriptedLLM({None: [json.dumps(FRAGMENTS)] * 8})
    t2i_server = T2IServer(T2IConfig.model_validate(section))
    roles = Roles(t2i=t2i_server, llm=llm, vlm=PlainVLM(), captioner=FixedCaptioner(), clip=LongerIsBetterClip())

    outcome = asyncio.run(run_batch(cfg, images(tmp_path / "imgs"), tmp_path / "out", roles, concurrency=2,
                                    progress_stream=io.StringIO()))

    assert (outcome.done, outcome.failed) == (2, 0)
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["status"] for r in records} == {"done"}
    for record in records:
        first = record["iterations"][0]
        assert first["image_paths"] and [c["text"] for c in first["candidates"]] == FRAGMENTS
        final = record["prompt"]["rendered"]
        if KEPT_ALL[target]:  # T5 reads all six: every fragment kept, nothing too long
            assert first["too_long"] == [] and all(f in final for f in FRAGMENTS)
        else:  # the budget binds: some fragments held out as too long
            assert first["too_long"] and not all(f in final for f in FRAGMENTS)
        # every prompt the T2I saw fits the target's own budget, counted with its own tokenizer
        counts = t2i_server.model.count_tokens([it["rendered"] for it in record["iterations"]])
        assert max(counts) + cfg.agent.reserved_tokens <= LIMIT[target]
    assert asyncio.run(t2i_server.prompt_budget())["limit"] == LIMIT[target]
