"""The profile check on every batch profile under configs/: each runs through the real batch job (its own
process and local Ray) on two images for two iterations, with every model replaced by its twin — the
same pipeline classes, engines (vLLM where the profile says vLLM), chat templates, processor settings and
shared engines — and fails naming the role and the setting when a profile is broken."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import pytest

from agents.profile_check.__main__ import main

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.vllm]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# The offline profiles point at the offline kit's folders (built by `python -m agents.offline_kit`, which
# their own tests run); every other profile names hub models, replaced here by twins.
PROFILES = sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("offline"))


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("twins")


def check(kit: Path, out: Path, config: str, *sets: str) -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        rc = main(["--config", str(CONFIGS / config), "--kit", str(kit), "--out", str(out),
                   *[a for s in sets for a in ("--set", s)]])
    return rc, buffer.getvalue()


def test_every_batch_profile_is_listed():
    assert {"one_gpu_24gb.yaml", "one_gpu_80gb.yaml", "gpu_cluster.yaml", "gpu_eval.yaml", "one_gpu_24gb_sdxl.yaml",
            "one_gpu_80gb_sd35.yaml", "one_gpu_80gb_flux1.yaml"} == set(PROFILES)


@pytest.mark.parametrize("config", PROFILES)
def test_the_profile_check_runs_every_batch_profile(kit, tmp_path, config):
    rc, out = check(kit, tmp_path, config)
    assert rc == 0, out
    assert "PASSED: 2 of 2 images done" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["done", "done"]
    assert all(len(r["iterations"]) >= 1 for r in records)
    assert "t2i.dtype" in out and "Replaced because this is a CPU" in out


def test_broken_settings_of_several_roles_are_all_named_by_one_check(kit, tmp_path):
    """A prompt budget the target cannot hold (t2i) and a processor setting the model does not take (the
    llm/vlm engine): the roles load at once, and the check names both, each with its role and setting."""
    rc, out = check(kit, tmp_path, "one_gpu_24gb.yaml", "t2i.max_prompt_tokens=100",
                    "llm.vllm.mm_processor_kwargs={no_such_kwarg: 3}", "vlm.vllm.mm_processor_kwargs={no_such_kwarg: 3}")
    assert rc == 1, out
    assert "FAILED" in out
    assert "role 't2i' failed to start" in out and "t2i.max_prompt_tokens 100 is more than StableDiffusionPipeline reads" in out
    assert "no_such_kwarg" in out and "vlm" in out


def test_a_wrong_chat_template_fails_at_load_naming_the_role(kit, tmp_path):
    """A template that cannot render the agent's conversations (here: one that refuses every request) is
    refused when the role loads, before any image is spent on it."""
    template = "{{ raise_exception('this template only takes tool calls') }}"
    rc, out = check(kit, tmp_path, "one_gpu_80gb.yaml", f"llm.chat_template={json.dumps(template)}")
    assert rc == 1, out
    assert "FAILED" in out and "this template only takes tool calls" in out
    assert "role 'llm' failed to start" in out and "cannot render a user turn" in out
    assert not (tmp_path / "run" / "results.jsonl").exists() or not (tmp_path / "run" / "results.jsonl").read_text()
