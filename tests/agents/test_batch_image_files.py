"""``--image FILE`` (repeatable) instead of ``--dir``: planning given files (agents/batch/plan.py plan_files),
their display names, the output-folder rule, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import agents.batch_reverse as br
from agents.batch.errors import SetupError
from agents.batch.plan import ImageSource, check_files, plan_files, unique_tails
from agents.batch.startup import RunningRoles
from agents.image_id import content_id
from tests.agents.doubles import World, fragment_sum, make_roles


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_display_names_are_file_names_or_the_shortest_tail_that_tells_them_apart(tmp_path):
    a = _png(tmp_path / "one" / "x.png", 1)
    b = _png(tmp_path / "two" / "deep" / "x.png", 2)
    c = _png(tmp_path / "three" / "deep" / "x.png", 3)
    d = _png(tmp_path / "one" / "y.png", 4)
    same = tmp_path / "one" / "." / "x.png"  # the same file named again: once
    items = plan_files([a, b, c, d, same], tmp_path / "out")
    assert {it.source.rel: it.image_id for it in items} == {
        "one/x.png": content_id(a), "two/deep/x.png": content_id(b), "three/deep/x.png": content_id(c),
        "y.png": content_id(d)}
    assert all(it.source.path.is_absolute() for it in items)
    assert len({it.folder for it in items}) == 4  # distinct output folders
    # one path that is the tail of another still gets a name of its own
    assert set(unique_tails([Path("/a/x.png"), Path("/b/a/x.png")]).values()) == {"a/x.png", "b/a/x.png"}


def test_same_content_under_two_names_is_one_item_with_a_duplicate(tmp_path):
    a = _png(tmp_path / "p" / "x.png", 1)
    b = tmp_path / "q" / "x.png"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    (item,) = plan_files([a, b], tmp_path / "out")
    assert item.source.rel == "p/x.png" and item.duplicates == ["q/x.png"]
    assert [f.path for f in item.images()] == [a, b]


def test_missing_files_and_folders_are_setup_errors(tmp_path):
    with pytest.raises(SetupError, match="nope.png: no such file"):
        plan_files([tmp_path / "nope.png"], tmp_path / "out")
    with pytest.raises(SetupError, match="not a file .use --dir"):
        plan_files([tmp_path], tmp_path / "out")
    with pytest.raises(SetupError, match="no such file"):
        ImageSource(files=(tmp_path / "nope.png",)).check(tmp_path / "out")
    with pytest.raises(ValueError):
        ImageSource()  # neither a folder nor files
    with pytest.raises(ValueError):
        ImageSource(folder=tmp_path, files=(tmp_path / "a.png",))


def test_a_given_file_may_not_lie_inside_the_output_folder(tmp_path):
    out = tmp_path / "out"
    inside = _png(out / "images" / "x" / "reference.png", 1)
    outside = _png(tmp_path / "pics" / "a.png", 2)
    with pytest.raises(SetupError, match="lies inside --out"):
        check_files([outside, inside], out)
    link = tmp_path / "link.png"  # named outside, but resolves inside: refused too
    link.symlink_to(inside)
    with pytest.raises(SetupError, match="lies inside --out"):
        check_files([link], out)
    check_files([outside], out)  # elsewhere is fine,
    check_files([outside], tmp_path / "pics" / "out")  # and so is an output folder beside or below the files
    check_files([outside], tmp_path / "pics" / "sub")


def test_cli_runs_given_files_and_resumes_by_content(tmp_path, monkeypatch, capsys):
    world = World(fragment_sum({"red ball": 0.05}, unknown=-0.01))
    monkeypatch.setattr(br, "start_ray_and_roles", lambda cfg, **_: RunningRoles(make_roles(world, {None: ['["red ball"]'] * 40}), False))
    a = tmp_path / "p" / "x.png"
    a.parent.mkdir()
    Image.fromarray(world.reference).save(a)
    b = tmp_path / "q" / "x.png"  # the same picture under the same name elsewhere (the doubles know only it)
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    out = tmp_path / "out"
    argv = ["--image", str(a), "--image", str(b), "--out", str(out), "--set", "agent.framework=vanilla",
            "--set", "agent.max_steps=2", "--set", "job.summary_refresh_s=0", "--captions-txt"]
    assert br.main(argv) == br.EXIT_OK, capsys.readouterr().err
    assert "1 done, 0 failed" in capsys.readouterr().err
    (record,) = map(json.loads, (out / "results.jsonl").read_text().splitlines())
    assert record["status"] == "done" and record["source"] == "p/x.png" and record["duplicate_sources"] == ["q/x.png"]
    captions = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert captions == [{"file": str(a), "text": record["prompt"]["rendered"]},
                        {"file": str(b), "text": record["prompt"]["rendered"]}]
    assert sorted(p.relative_to(out / "captions").as_posix() for p in (out / "captions").rglob("*.txt")) == ["p/x.txt", "q/x.txt"]
    # rerun with one of them moved: known by content, not by path
    moved = tmp_path / "r" / "renamed.png"
    moved.parent.mkdir()
    b.rename(moved)
    assert br.main(["--image", str(a), "--image", str(moved), *argv[4:]]) == br.EXIT_OK
    assert "0 done, 0 failed, 1 already done" in capsys.readouterr().err
    captions = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert sorted(c["file"] for c in captions) == sorted([str(a), str(moved)])  # the moved file's old line is gone
    # a dry run lists them without starting anything
    assert br.main(["--image", str(a), "--image", str(moved), *argv[4:], "--dry-run"]) == br.EXIT_OK
    assert "skip  " in capsys.readouterr().out


def test_cli_wants_exactly_one_of_dir_and_image(tmp_path, monkeypatch, capsys):
    def refuse(cfg, **_):
        raise AssertionError("Ray must not start here")
    monkeypatch.setattr(br, "start_ray_and_roles", refuse)
    a = _png(tmp_path / "a.png", 1)
    assert br.main(["--out", str(tmp_path / "out")]) == br.EXIT_SETUP_ERROR
    assert "one of the arguments --dir --image is required" in capsys.readouterr().err
    assert br.main(["--dir", str(tmp_path), "--image", str(a), "--out", str(tmp_path / "out")]) == br.EXIT_SETUP_ERROR
    assert "not allowed with argument" in capsys.readouterr().err
    assert br.main(["--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == br.EXIT_SETUP_ERROR
    assert "setup error: --image" in capsys.readouterr().err and not (tmp_path / "out").exists()
    inside = _png(tmp_path / "out2" / "a.png", 2)
    assert br.main(["--image", str(inside), "--out", str(tmp_path / "out2")]) == br.EXIT_SETUP_ERROR
    assert "lies inside --out" in capsys.readouterr().err
