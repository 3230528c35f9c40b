"""Model paths a profile names are checked before Ray and any role start (agents.local_models): every
missing one named with its key, the offline kit's build command suggested for its folder; hub ids and API
model names are left to their loaders."""
from __future__ import annotations

import time

from agents.batch.errors import EXIT_SETUP_ERROR
from agents.batch_reverse import main
from agents.config import ArpoConfig
from agents.local_models import missing_model_paths, missing_models_problem


def cfg(**sections) -> ArpoConfig:
    return ArpoConfig.model_validate(sections)


def test_hub_ids_and_served_names_are_not_paths(tmp_path):
    c = cfg(llm={"backend": "openai", "model": "/not/a/path/but/a/name", "openai": {"base_url": "http://127.0.0.1:1/v1"}},
            captioner={"backend": "vlm", "model": "/ignored/when/vlm"})
    assert missing_model_paths(c) == []  # defaults are hub ids; an API's model is a served name


def test_every_missing_path_is_named_with_its_key(tmp_path):
    (tmp_path / "t2i").mkdir()
    kit_path = "~/.cache/expectdiff/offline/definitely-missing-folder"
    c = cfg(t2i={"model": str(tmp_path / "t2i")}, vlm={"model": str(tmp_path / "nope")}, captioner={"model": kit_path},
            clip={"pretrained": str(tmp_path / "clip.safetensors")})
    assert missing_model_paths(c) == [("vlm.model", str(tmp_path / "nope")), ("captioner.model", c.captioner.model),
                                      ("clip.pretrained", str(tmp_path / "clip.safetensors"))]
    problem = missing_models_problem(c)
    assert "vlm.model" in problem and "clip.pretrained" in problem and "python -m agents.offline_kit" in problem


def test_the_batch_job_refuses_in_seconds_before_ray(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "p.yaml").write_text(f"t2i:\n  model: {tmp_path / 'missing_t2i'}\n")
    started = time.monotonic()
    status = main(["--dir", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "p.yaml")])
    assert status == EXIT_SETUP_ERROR and time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert f"t2i.model: '{tmp_path / 'missing_t2i'}' does not exist" in err and "starting Ray" not in err
