"""agent.style_only / --style-only with scripted doubles whose outcome is known: the prompt keeps style fragments
only (content candidates are recorded as not_style, never scored), and the best iteration is the one with the
highest style similarity even where CLIP-I says otherwise. The style similarity itself (content rearranged,
score unchanged) is tested on the real CLIP role: tests/actors/test_clip_style.py."""
from __future__ import annotations

import io
import json

import pytest

from agents.batch.errors import EXIT_OK, EXIT_SETUP_ERROR
from agents.batch.runner import run_batch
from agents.batch_reverse import main
from agents.config import AgentConfig, ArpoConfig
from tests.agents.doubles import ScriptedClip, World, fragment_sum, make_roles

TEXT = {"oil painting": 0.03, "red ball": 0.05, "soft lighting": 0.02}
# CLIP-I falls with each style fragment, the style similarity rises: the two scores disagree on purpose
CLIP_I = fragment_sum({"oil painting": -0.02, "soft lighting": -0.02, "watercolor": 0.0}, unknown=0.0)
STYLE = fragment_sum({"oil painting": 0.10, "soft lighting": 0.05, "watercolor": 0.01}, unknown=0.0)


class StyleClip(ScriptedClip):
    async def style_scores(self, images, reference, reference_key=None):
        self._tick("style_scores")
        self._check_reference(reference)
        return [0.6 + STYLE(self.world.origin(img)[0]) for img in images]


def roles(world: World):
    replies = ['["red ball", "oil painting", "a hat"]', '["soft lighting", "a dog"]'] + ['["a cat"]'] * 10
    r = make_roles(world, {None: replies}, caption="a black cat, watercolor")
    r.clip = StyleClip(world)
    return r


def cfg(**agent) -> ArpoConfig:
    return ArpoConfig.model_validate({"agent": {"framework": "vanilla", "max_steps": 3, "seeds": [0, 1],
                                                "style_only": True, **agent}, "job": {"summary_refresh_s": 0}})


async def test_style_fragments_only_and_the_best_by_style_similarity(tmp_path):
    world = World(fragment_sum(TEXT, unknown=-0.01), image_gain=CLIP_I)
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.fromarray(world.reference).save(tmp_path / "imgs" / "ref.png")
    r = roles(world)
    outcome = await run_batch(cfg(), tmp_path / "imgs", tmp_path / "out", r, progress_stream=io.StringIO())
    assert outcome.exit_code == EXIT_OK
    (record,) = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    its = record["iterations"]
    assert record["style_only"] is True
    assert its[0]["rendered"] == "watercolor"  # P^0: the caption's style part; "a black cat" dropped
    assert all(it["content"] == [] for it in its)  # never a content fragment
    first = {o["text"]: o["outcome"] for o in its[0]["selection"]}
    assert first == {"oil painting": "kept", "red ball": "not_style", "a hat": "not_style"}
    assert record["prompt"]["rendered"] == "watercolor, oil painting, soft lighting"
    # every iteration scored both ways; the best is the highest style similarity, though CLIP-I falls
    for it in its:
        assert it["style_i"] == pytest.approx(0.6 + STYLE(it["rendered"])) and len(it["style_i_per_seed"]) == 2
    assert record["best_iteration"] == 2 and its[2]["clip_i"] < its[0]["clip_i"]
    assert record["best_clip_i"] == its[2]["clip_i"]  # CLIP-I of the best iteration, as always
    assert r.clip.calls["style_scores"] == len(its)


async def test_without_the_option_nothing_changes(tmp_path):
    world = World(fragment_sum(TEXT, unknown=-0.01), image_gain=CLIP_I)
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.fromarray(world.reference).save(tmp_path / "imgs" / "ref.png")
    r = roles(world)
    await run_batch(cfg(style_only=False), tmp_path / "imgs", tmp_path / "out", r, progress_stream=io.StringIO())
    (record,) = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert record["style_only"] is False and "style_scores" not in r.clip.calls
    assert all(it.get("style_i") is None for it in record["iterations"])
    assert record["best_iteration"] == 0  # CLIP-I decides: it only fell


def test_style_only_with_a_negative_search_is_refused_naming_both(tmp_path, capsys):
    with pytest.raises(ValueError, match="style_only and negative.enabled do not go together"):
        AgentConfig(style_only=True, negative={"enabled": True})
    (tmp_path / "imgs").mkdir()
    status = main(["--dir", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--style-only", "--negative",
                   "--dry-run"])
    assert status == EXIT_SETUP_ERROR and "do not go together" in capsys.readouterr().err
