"""One prompt for a set (``--group-by folder``): the real agent graph and batch job with scripted doubles whose
CLIP scores differ per member, so the outcome is known — a fragment every member rewards (their shared style)
is kept, a fragment only one member rewards is dropped, because the set's score is the mean over members."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.roles import Roles
from agents.batch.captions import CAPTIONS_JSONL, METADATA_JSONL
from agents.batch.errors import EXIT_OK, EXIT_SETUP_ERROR
from agents.batch.runner import run_batch
from agents.batch.sets import GRID_MEMBERS, grid, set_id
from agents.batch_reverse import main
from agents.config import ArpoConfig
from tests.agents.doubles import ScriptedLLM, ScriptedT2I, World, fragment_sum
from tests.agents.test_report import read_browser

SHARED = "oil painting"  # every member rewards it: the set's style
ONLY_FIRST = "red ball"  # only the first member's content


def member_gain(index: int):
    """Member 0 rewards ONLY_FIRST (+0.05), the others penalise it (−0.04): mean over 3 members −0.01.
    Every member rewards SHARED (+0.03): mean +0.03. Anything else: −0.01."""
    weights = {SHARED: 0.03, ONLY_FIRST: 0.05 if index == 0 else -0.04}
    return fragment_sum(weights, unknown=-0.01)


class SetWorld(World):
    def __init__(self, n: int = 3):
        super().__init__(fragment_sum({}))
        self.members = [self.paint(f"<<member {i}>>", 0) for i in range(n)]
        self.gains = [member_gain(i) for i in range(n)]

    def member_index(self, image: np.ndarray) -> int:
        for i, member in enumerate(self.members):
            if image.shape == member.shape and np.array_equal(image, member):
                return i
        raise AssertionError("CLIP double was given something other than a set member")


class SetClip:
    """CLIP double: the score against member j is base + gain_j(prompt); counts calls and keys."""

    def __init__(self, world: SetWorld):
        self.world, self.keys, self.calls = world, set(), {"text_image_scores": 0, "image_image_scores": 0}

    async def text_image_scores(self, texts, image, image_key=None):
        self.calls["text_image_scores"] += 1
        j = self.world.member_index(image)
        self.keys.add(image_key)
        return [0.2 + self.world.gains[j](t) for t in texts]

    async def image_image_scores(self, images, reference, reference_key=None):
        self.calls["image_image_scores"] += 1
        j = self.world.member_index(reference)
        self.keys.add(reference_key)
        return [0.5 + self.world.gains[j](self.world.origin(img)[0]) for img in images]


class GridCaptioner:
    def __init__(self):
        self.seen = []

    async def caption(self, image):
        self.seen.append(image.shape)
        return "a picture"


class GridVLM:
    def __init__(self):
        self.seen = []

    async def chat(self, messages, sampling=None):
        images = [p["image"] for p in messages[-1]["content"] if isinstance(p, dict) and p.get("type") == "image"]
        self.seen.append([im.shape for im in images])
        return "Image 2 differs from the set in style and content"


def set_roles(world: SetWorld) -> Roles:
    replies = [f'["{ONLY_FIRST}", "{SHARED}", "a hat"]'] + ['["a dog"]'] * 20
    return Roles(t2i=ScriptedT2I(world), llm=ScriptedLLM({None: replies}), vlm=GridVLM(),
                 captioner=GridCaptioner(), clip=SetClip(world))


def cfg() -> ArpoConfig:
    return ArpoConfig.model_validate({"agent": {"framework": "vanilla", "max_steps": 2, "seeds": [0]},
                                      "job": {"summary_refresh_s": 0, "group_by": "folder"}})


def write_set(folder: Path, world: SetWorld) -> None:
    (folder / "style_a").mkdir(parents=True)
    for i, member in enumerate(world.members):
        Image.fromarray(member).save(folder / "style_a" / f"m{i}.png")
    Image.fromarray(world.members[0]).save(folder / "loose.png")  # directly in --dir: in no set


async def test_a_set_gets_one_prompt_with_the_fragment_all_members_share(tmp_path, caplog):
    world = SetWorld()
    write_set(tmp_path / "imgs", world)
    out = tmp_path / "out"
    roles = set_roles(world)
    outcome = await run_batch(cfg(), tmp_path / "imgs", out, roles, concurrency=2, progress_stream=io.StringIO())
    assert (outcome.total, outcome.done, outcome.failed, outcome.exit_code) == (1, 1, 0, EXIT_OK)
    assert "belong to no set and are not run: loose.png" in caplog.text
    (record,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert record["kind"] == "set" and record["source"] == "style_a"
    assert record["members"] == ["style_a/m0.png", "style_a/m1.png", "style_a/m2.png"]
    assert record["output_dir"].startswith("sets/style_a-")
    # the shared style is kept, the one member's content dropped: the mean over members decides
    assert SHARED in record["prompt"]["rendered"] and ONLY_FIRST not in record["prompt"]["rendered"]
    outcomes = {o["text"]: o for o in record["iterations"][0]["selection"]}
    assert outcomes[SHARED]["outcome"] == "kept" and outcomes[ONLY_FIRST]["outcome"] == "no_gain"
    # CLIP-I of an iteration is the mean over members (hand-computed from the doubles' gains)
    first = record["iterations"][0]
    assert first["clip_i"] == pytest.approx(np.mean([0.5 + g(first["rendered"]) for g in world.gains]))
    # every member's embedding is keyed by its own content id; the set id is never a CLIP key
    member_ids = {json.loads((out / record["output_dir"] / "result.json").read_text())["image_id"]}
    assert record["image_id"] not in roles.clip.keys and len(roles.clip.keys) == 3
    assert member_ids == {record["image_id"]} == {set_id(sorted(roles.clip.keys))}
    # the captioner and the VLM saw the 2×2 grid, not a member
    assert roles.captioner.seen == [(32, 32, 3)] and all(shapes[0] == (32, 32, 3) for shapes in roles.vlm.seen)
    folder = out / record["output_dir"]
    assert sorted(p.name for p in folder.glob("member_*.png")) == sorted(f"member_{k}.png" for k in roles.clip.keys)
    assert all((out / path).is_file() for path in record["member_references"])
    # captions: every member gets the set's prompt (a LoRA dataset of one style)
    captions = {json.loads(x)["file"]: json.loads(x)["text"] for x in (out / CAPTIONS_JSONL).read_text().splitlines()}
    assert captions == {f"style_a/m{i}.png": record["prompt"]["rendered"] for i in range(3)}
    assert len((out / METADATA_JSONL).read_text().splitlines()) == 3
    # the results browser lists the set and its page names the members
    rows, _, pages = read_browser(out)
    assert len(rows) == 1
    text = "".join(pages[record["image_id"]].text)
    assert "style_a/m1.png" in text and "3 images" in text

    # a rerun finds the set done and calls no model
    before = dict(roles.clip.calls)
    again = await run_batch(cfg(), tmp_path / "imgs", out, roles, concurrency=2, progress_stream=io.StringIO())
    assert (again.skipped, again.done) == (1, 0) and roles.clip.calls == before


async def test_an_unusable_member_is_left_out_and_named(tmp_path):
    world = SetWorld()
    write_set(tmp_path / "imgs", world)
    (tmp_path / "imgs" / "style_a" / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    outcome = await run_batch(cfg(), tmp_path / "imgs", out, set_roles(world), progress_stream=io.StringIO())
    assert outcome.done == 1
    (record,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(record["members"]) == 3 and "style_a/broken.png" in record["member_errors"][0]


def test_the_grid_letterboxes_up_to_four_members():
    tall = np.full((40, 20, 3), 200, np.uint8)
    g = grid([tall] * 5, 64)
    assert g.shape == (64, 64, 3) and GRID_MEMBERS == 4
    cell = g[:32, :32]
    assert cell[:, 8:24].min() == 200 and cell[:, :7].max() == 0  # centred, black bars beside it
    assert grid([tall], 64)[32:, 32:].max() == 0  # empty cells stay black


def test_the_cli_dry_run_lists_sets_and_refuses_group_by_with_files(tmp_path, capsys):
    world = SetWorld()
    write_set(tmp_path / "imgs", world)
    assert main(["--dir", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--group-by", "folder",
                 "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "style_a  (set of 3 image(s))" in out and "1 sets: 1 to run" in out
    status = main(["--image", str(tmp_path / "imgs" / "loose.png"), "--out", str(tmp_path / "o2"),
                   "--group-by", "folder", "--dry-run"])
    assert status == EXIT_SETUP_ERROR and "job.group_by" in capsys.readouterr().err


def test_a_folder_without_subfolders_is_refused_naming_why(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    status = main(["--dir", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--group-by", "folder",
                   "--dry-run"])
    assert status == EXIT_SETUP_ERROR and "has no subfolder with images" in capsys.readouterr().err


def test_the_python_api_takes_a_list_of_images_as_one_set(tmp_path):
    from agents.api import reverse_prompt

    world = SetWorld()
    roles = set_roles(world)
    result = reverse_prompt(list(world.members), cfg(), tmp_path / "work", roles=roles)
    assert result.status == "done"
    assert SHARED in result.prompt.rendered and ONLY_FIRST not in result.prompt.rendered
    assert len(roles.clip.keys) == 3 and roles.captioner.seen == [(32, 32, 3)]
