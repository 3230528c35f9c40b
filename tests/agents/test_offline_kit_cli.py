"""`python -m agents.offline_kit`: builds every role, writes profiles that load, and the
committed configs/offline*.yaml are exactly what it writes for the default kit folder."""
from pathlib import Path

import pytest
import yaml

from actors.offline_kit import OFFLINE_KIT_MARKER, REAL_WEIGHTS_MARKER, is_random_weight_model
from actors.offline_kit.build import DEFAULT_OUT, build_kit
from agents.offline_kit import split_profiles, write_profile
from agents.config import ArpoConfig
from agents.eval.config import EvalConfig
from core.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from actors.offline_kit import smollm2

    out = tmp_path_factory.mktemp("kit")
    # The SmolLM2 conversion (~25 s) is covered by test_chat_smollm2; here only its config section matters.
    mp = pytest.MonkeyPatch()
    mp.setattr(smollm2, "is_built", lambda d: True)
    try:
        profile = build_kit(out, log=lambda *_: None)
    finally:
        mp.undo()
    return out, profile


def test_profiles_load_and_mark_weights(kit, tmp_path):
    out, profile = kit
    batch, evaluation = split_profiles(profile)
    write_profile(batch, tmp_path / "offline.yaml", ArpoConfig, home_relative=False)
    write_profile(evaluation, tmp_path / "offline_eval.yaml", EvalConfig, home_relative=False)
    cfg = load_config(ArpoConfig, tmp_path / "offline.yaml")
    ecfg = load_config(EvalConfig, tmp_path / "offline_eval.yaml")
    assert (out / OFFLINE_KIT_MARKER).is_file()
    for role in ("t2i", "captioner", "vlm"):
        assert Path(getattr(cfg, role).model).is_dir() and is_random_weight_model(getattr(cfg, role).model)
    assert is_random_weight_model(cfg.clip.pretrained)
    assert is_random_weight_model(ecfg.dino.model) and is_random_weight_model(ecfg.vit.model)
    # the LLM folder is the real SmolLM2: marked as real weights, not random
    assert (Path(cfg.llm.model) / REAL_WEIGHTS_MARKER).is_file() and not is_random_weight_model(cfg.llm.model)
    assert cfg.llm.vllm.enable_chunked_prefill is False


@pytest.mark.parametrize("name,model", [("offline.yaml", ArpoConfig), ("offline_eval.yaml", EvalConfig)])
def test_committed_profiles_match_the_kit(kit, name, model):
    out, profile = kit
    batch, evaluation = split_profiles(profile)
    expected = batch if name == "offline.yaml" else evaluation
    text = yaml.safe_dump(expected, sort_keys=False).replace(str(out), str(DEFAULT_OUT))
    committed = yaml.safe_load((REPO / "configs" / name).read_text())
    assert committed == yaml.safe_load(text), f"configs/{name} is stale: rerun `python -m agents.offline_kit --profile configs/offline.yaml`"
