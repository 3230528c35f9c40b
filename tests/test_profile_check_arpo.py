"""The profile check on every batch profile under configs/: each runs through the real batch job (its own
process and local Ray) on two images for two iterations, with every model replaced by its twin — the
same pipeline classes, engines (vLLM where the profile says vLLM), chat templates, processor settings and
shared engines — and fails naming the role and the setting when a profile is broken.

A batch job costs a minute here, most of it vLLM engines starting (an actor importing vLLM, then its
engine-core process importing it again). Profiles whose twin profile equals a fully checked one's except
in some role settings are *derived*: the test below shows that they differ only there, and those settings
are checked role by role — the T2I and CLIP roles loaded with the derived profile's section and run, the
vLLM sections turned into vLLM's own engine config (its validation: KV-cache fraction, scheduler limits
against the batched-token budget, ...). What a derived check does not run is an engine started with those
scheduler numbers; `python -m agents.profile_check --config FILE` runs any profile in full."""
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
#: Run through the batch job in full.
FULL = ["gpu_cluster.yaml", "one_gpu_24gb.yaml", "one_gpu_80gb.yaml"]
#: Derived profile -> the fully checked profile whose twin it equals outside the role settings checked below.
DERIVED = {"one_gpu_24gb_sdxl.yaml": "one_gpu_24gb.yaml", "one_gpu_80gb_sd35.yaml": "one_gpu_24gb.yaml",
           "one_gpu_80gb_flux1.yaml": "one_gpu_24gb.yaml", "gpu_eval.yaml": "gpu_cluster.yaml"}
#: The settings a derived profile may differ in: each is checked role by role.
ROLE_CHECKED = ("t2i.", "clip.", "llm.vllm.", "vlm.vllm.")


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("twins")


def check(kit: Path, out: Path, config: str, *sets: str, address: str = "") -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        rc = main(["--config", str(CONFIGS / config), "--kit", str(kit), "--out", str(out),
                   *[a for s in sets for a in ("--set", s)], *(["--address", address] if address else [])])
    return rc, buffer.getvalue()


def test_every_batch_profile_is_checked_in_full_or_derived():
    assert {"one_gpu_24gb.yaml", "one_gpu_80gb.yaml", "gpu_cluster.yaml", "gpu_eval.yaml", "one_gpu_24gb_sdxl.yaml",
            "one_gpu_80gb_sd35.yaml", "one_gpu_80gb_flux1.yaml"} == set(PROFILES) == set(FULL) | set(DERIVED)
    assert set(DERIVED.values()) <= set(FULL)


@pytest.mark.parametrize("config", FULL)
def test_the_profile_check_runs_every_full_profile(kit, tmp_path, config):
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


# --------------------------------------------------------------------------- derived profiles, role by role

def twin_of(kit: Path, config: str) -> dict:
    """The twin profile the check would run for ``config`` (the check's own builder), validated."""
    from agents.config import ArpoConfig
    from agents.profile_check.__main__ import _prepare_kit
    from agents.profile_check.twin_profile import twin_profile
    from agents.profiles import load_profile

    profile = load_profile(str(CONFIGS / config))
    cfg = profile.config.arpo_config() if profile.kind == "evaluation" else profile.config
    twin = twin_profile(cfg.model_dump(mode="json"), _prepare_kit(kit)).profile
    ArpoConfig.model_validate(twin)
    return twin


def flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing(a: dict, b: dict) -> set[str]:
    fa, fb = flat(a), flat(b)
    return {k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)}


@pytest.fixture(scope="module")
def derived(kit) -> dict:
    """config -> (its twin, the keys where it differs from its base's twin)."""
    twins = {c: twin_of(kit, c) for c in set(DERIVED) | set(DERIVED.values())}
    return {c: (twins[c], differing(twins[base], twins[c])) for c, base in DERIVED.items()}


@pytest.mark.parametrize("config", sorted(DERIVED))
def test_a_derived_profile_differs_from_its_base_only_in_role_checked_settings(derived, config):
    _, keys = derived[config]
    assert keys, f"{config}: identical to {DERIVED[config]}'s twin"
    assert all(k.startswith(ROLE_CHECKED) for k in keys), sorted(k for k in keys if not k.startswith(ROLE_CHECKED))


@pytest.mark.parametrize("config", sorted(DERIVED))
async def test_a_derived_profiles_differing_roles_load_and_run_with_its_settings(derived, config):
    import numpy as np

    from actors.chat.vllm_backend import engine_args
    from actors.clip_scorer import ClipServer
    from actors.config import ClipConfig, LLMConfig, T2IConfig, VLMConfig
    from actors.t2i import T2IServer

    twin, keys = derived[config]
    checked = set()
    if any(k.startswith("t2i.") for k in keys):
        t2i = T2IConfig.model_validate(twin["t2i"])
        server = T2IServer(t2i)
        budget = await server.prompt_budget()
        assert budget["limit"] >= 1
        images = await server.generate("a red fox in fresh snow under pine trees", [0])
        assert images[0].dtype == np.uint8 and images[0].shape == (t2i.height, t2i.width, 3)
        checked.add("t2i.")
    if any(k.startswith("clip.") for k in keys):
        clip = ClipServer(ClipConfig.model_validate(twin["clip"]))
        scores = await clip.text_image_scores(["a fox"], np.zeros((32, 32, 3), np.uint8))
        assert len(scores) == 1
        checked.add("clip.")
    for role in ("llm", "vlm"):
        if any(k.startswith(f"{role}.vllm.") for k in keys):
            from vllm import AsyncEngineArgs

            section = (VLMConfig if role == "vlm" else LLMConfig).model_validate(twin[role])
            engine = AsyncEngineArgs(**engine_args(section, role == "vlm")).create_engine_config()
            assert engine.cache_config.gpu_memory_utilization == section.vllm.gpu_memory_utilization
            assert engine.scheduler_config.max_num_seqs == section.vllm.max_num_seqs
            checked.add(f"{role}.vllm.")
    assert {prefix for prefix in ROLE_CHECKED if any(k.startswith(prefix) for k in keys)} == checked


def test_a_vllm_setting_the_engine_refuses_is_caught_by_the_role_check(derived):
    """The engine-config check can fail: more sequences at once than the batched-token budget holds."""
    from vllm import AsyncEngineArgs

    from actors.chat.vllm_backend import engine_args
    from actors.config import LLMConfig

    twin, _ = derived["one_gpu_80gb_sd35.yaml"]
    section = LLMConfig.model_validate(twin["llm"])
    section = section.model_copy(update={"vllm": section.vllm.model_copy(update={"max_num_seqs": 4096})})
    with pytest.raises(Exception, match="max_num_batched_tokens .* must be greater than or equal to max_num_seqs"):
        AsyncEngineArgs(**engine_args(section, False)).create_engine_config()


def test_on_a_joined_cluster_a_node_type_it_lacks_fails_naming_the_role(kit, tmp_path, monkeypatch):
    """`--address`: the check joins a running Ray (here a head started on 127.0.0.1 with no node types) and keeps the
    profile's custom resources and replica counts, so gpu_cluster.yaml's `gpu_small`/`gpu_large` fail it at start-up,
    before any model loads, naming the role and the resource."""
    import subprocess
    import sys

    from benchmarks.scale.cluster import free_port
    from tests.agents.test_batch_ray import _stop_processes_using

    ray_bin = Path(sys.executable).with_name("ray")
    temp = Path(f"/tmp/rpc{os.getpid()}")  # short: Ray's unix socket paths have a length limit
    port = free_port()
    # token authentication, as on cluster.yaml's clusters (docs/cluster.md): the head and the check's job both use it
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        rc, out = check(kit, tmp_path, "gpu_cluster.yaml", address=f"127.0.0.1:{port}")
    finally:
        _stop_processes_using(temp)
    assert rc == 1, out
    assert "on the Ray cluster at 127.0.0.1:" in out and "FAILED" in out
    assert "custom_resources" not in out.split("Replaced because this is a CPU", 1)[1].split("Running", 1)[0]
    assert "role 't2i'" in out and "gpu_small" in out, out


@pytest.mark.parametrize("config", PROFILES)
def test_list_only_prints_every_replacement_and_runs_nothing(kit, tmp_path, config):
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        rc = main(["--config", str(CONFIGS / config), "--kit", str(kit), "--out", str(tmp_path), "--list-only"])
    out = buffer.getvalue()
    assert rc == 0, out
    assert "Running the batch job" not in out and not (tmp_path / "run").exists()
    header = next(line for line in out.splitlines() if line.startswith("Replaced because this is a CPU"))
    count = int(header.split("(")[1].rstrip("):"))
    listed = out.split(header)[1].split("\n\nNot run")[0].strip().splitlines()
    assert count == len(listed) > 0
    assert any(line.strip().startswith("t2i.device:") and "'cpu'" in line for line in listed)
    if config == "one_gpu_24gb.yaml":  # the AWQ checkpoint is named as replaced, not silently dropped
        assert any("AWQ: the twin is unquantised" in line for line in listed)
