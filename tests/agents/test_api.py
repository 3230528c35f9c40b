"""The single-image Python API and stable image ids."""
import shutil
import tempfile

import numpy as np
import pytest
import yaml
from PIL import Image

import actors.ray_actors
import core.ray_config
from agents.api import reverse_prompt
from agents.config import AgentConfig, ArpoConfig
from agents.images import ImageLoadError
from agents.image_id import ID_HEX_DIGITS, content_id
from agents.result import ReverseResult
from tests.agents.doubles import World, call_counts, fragment_sum, make_roles, write_reference


def setup(tmp_path):
    w = World(fragment_sum({"blue eyes": .05, "bow tie": .04}, unknown=-.01))
    roles = make_roles(w, {None: ["[blue eyes]", "[bow tie]", "[junk]"]}, caption="a cat")
    cfg = ArpoConfig(agent=AgentConfig(framework="vanilla"))
    return w, roles, cfg


def test_content_id_is_the_file_hash_not_the_path(tmp_path):
    w, _, _ = setup(tmp_path)
    ref = write_reference(w, tmp_path)
    moved = tmp_path / "elsewhere" / "renamed.png"
    moved.parent.mkdir()
    shutil.copy(ref, moved)
    assert content_id(ref) == content_id(moved) and len(content_id(ref)) == ID_HEX_DIGITS
    w.reference[0, 0, 0] ^= 1
    assert content_id(write_reference(w, tmp_path / "elsewhere")) != content_id(ref)


def test_reverse_prompt_on_a_path_and_again_from_the_work_folder(tmp_path):
    w, roles, cfg = setup(tmp_path)
    ref = write_reference(w, tmp_path)
    result = reverse_prompt(ref, cfg, tmp_path / "work", roles=roles)
    assert result.status == "done" and result.stop_reason == "no_improvement"
    assert result.prompt.rendered == "a cat, blue eyes, bow tie" and result.image_id == content_id(ref)
    assert result.source == str(ref)
    assert all(p.startswith(str(tmp_path / "work" / result.image_id)) for it in result.iterations for p in it.image_paths)
    assert (tmp_path / "work" / cfg.job.checkpoint.sqlite_file).is_file()
    # JSON round trip
    assert ReverseResult.model_validate_json(result.model_dump_json()) == result
    # the same call again: the finished thread's result, no model called
    before = call_counts(roles)
    assert reverse_prompt(ref, cfg, tmp_path / "work", roles=roles) == result
    assert call_counts(roles) == before
    # other settings that change results: a fresh thread, not the stored result
    other = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"max_steps": 1})})
    shorter = reverse_prompt(ref, other, tmp_path / "work", roles=roles)
    assert call_counts(roles) != before and len(shorter.iterations) <= 2


def test_reverse_prompt_on_an_array_or_pil_image_with_a_yaml_config(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the temp work folders land here
    w, roles, cfg = setup(tmp_path)
    config_file = tmp_path / "arpo.yaml"
    config_file.write_text(yaml.safe_dump({"agent": {"framework": "vanilla", "max_steps": 1}}))
    result = reverse_prompt(w.reference, config_file, roles=roles)  # no work_dir: a new temp folder
    assert result.status == "done" and result.stop_reason == "max_steps"
    assert np.array_equal(np.asarray(Image.open(result.source)), w.reference)
    roles2 = make_roles(w, {None: ["[blue eyes]"]}, caption="a cat")
    again = reverse_prompt(Image.fromarray(w.reference), config_file, roles=roles2)
    assert again.image_id == result.image_id  # same pixels, same id
    assert len(list(tmp_path.glob("arpo_*"))) == 2


def test_reverse_prompt_refuses_bad_input(tmp_path):
    w, roles, cfg = setup(tmp_path)
    with pytest.raises(TypeError, match="path, a uint8"):
        reverse_prompt(42, cfg, tmp_path, roles=roles)
    with pytest.raises(ValueError, match="uint8"):
        reverse_prompt(np.zeros((4, 4), dtype=np.float32), cfg, tmp_path, roles=roles)
    with pytest.raises(ImageLoadError, match="no such file"):
        reverse_prompt(tmp_path / "missing.png", cfg, tmp_path, roles=roles)


async def test_reverse_prompt_is_not_for_a_running_loop(tmp_path):
    w, roles, cfg = setup(tmp_path)
    with pytest.raises(RuntimeError, match="await agents.api.optimise"):
        reverse_prompt(w.reference, cfg, tmp_path, roles=roles)


def test_without_roles_it_starts_ray_and_the_role_actors(tmp_path, monkeypatch):
    w, roles, cfg = setup(tmp_path)
    seen = {}

    def fake_init_ray(ray_cfg):
        seen["ray"] = ray_cfg
        return False  # "joined an existing Ray": nothing to shut down

    def fake_start_roles(config):
        seen["config"] = config
        return roles

    monkeypatch.setattr(core.ray_config, "init_ray", fake_init_ray)
    monkeypatch.setattr(actors.ray_actors, "start_roles", fake_start_roles)
    result = reverse_prompt(write_reference(w, tmp_path), cfg, tmp_path / "w")
    assert result.status == "done" and seen == {"ray": cfg.ray, "config": cfg}
