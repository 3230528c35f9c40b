"""The profile check on every MDSS training profile (configs/mdss/*.yaml): the real Ray Train loop runs
two steps of each with its models replaced by twins (google/ddpm-cifar10-32's layout, the SD1.5
pipeline's) and its data by generated images where the dataset is not here; every replacement is listed.
One local Ray is shared by the checks (the training runs in this process, as ``training.train.main``)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest

from agents.profile_check.__main__ import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MDSS = Path(__file__).resolve().parent.parent / "configs" / "mdss"
TESTS = Path(__file__).resolve().parent
#: Profiles with nothing for the check to replace (no hub model, local data) that other tests already train
#: through training.train on a local Ray: a check would repeat that run.
TRAINED_ELSEWHERE = {"tiny_fashion_mnist.yaml": TESTS / "training" / "test_train_ray.py",
                     "tiny_text2image.yaml": TESTS / "test_captions_loop.py"}
PROFILES = sorted(p.name for p in MDSS.glob("*.yaml") if p.name not in TRAINED_ELSEWHERE)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("twins")


def documented_sets(name: str, kit: Path) -> list[str]:
    """The --set lines the tiny profiles' headers tell their users to give (their model folders are the
    user's own: the profile names /tmp placeholders)."""
    if name == "tiny_finetune.yaml":
        from actors.offline_kit import ddpm_unet

        folder = ddpm_unet.build(kit / "user_unet", channels=1)["model"]["pretrained"]  # a Fashion-MNIST UNet
        return ["--set", f"model.pretrained={folder}", "--set", f"schedule.from_scheduler_config={folder}"]
    if name == "tiny_text2image.yaml":
        from actors.offline_kit import t2i

        folder = t2i.build(kit / "user_sd")["model"]
        return ["--set", f"model.pipeline={folder}", "--set", f"schedule.from_scheduler_config={folder}"]
    return []


def test_every_mdss_profile_has_a_test():
    assert set(PROFILES) | set(TRAINED_ELSEWHERE) == {p.name for p in MDSS.glob("*.yaml")} == {
        "fashion_mnist_scratch.yaml", "finetune_cifar10_ddpm.yaml", "sd15_text2image.yaml", "tiny_fashion_mnist.yaml",
        "tiny_finetune.yaml", "tiny_text2image.yaml"}


@pytest.mark.parametrize("name", sorted(TRAINED_ELSEWHERE))
def test_a_profile_trained_elsewhere_needs_no_twin_and_its_test_trains_it(kit, tmp_path, name):
    from agents.profile_check.train_profile import train_twin_profile
    from core.config import read_yaml

    _, replaced, twins = train_twin_profile(read_yaml(MDSS / name), kit, tmp_path)
    assert not twins, twins  # nothing replaced by a twin: the profile runs as it is
    text = TRAINED_ELSEWHERE[name].read_text()
    assert f'"{name}"' in text and "training.train" in text


@pytest.mark.parametrize("name", PROFILES)
def test_the_profile_check_trains_every_mdss_profile(ray_local, kit, tmp_path, monkeypatch, capsys, name):
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "not-here"))
    monkeypatch.setenv("SD15_DATA_DIR", str(tmp_path / "not-here"))
    rc = main(["--config", str(MDSS / name), "--kit", str(kit), "--out", str(tmp_path / "check"),
               *documented_sets(name, kit)], in_process=True)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASSED: training ran 2 steps" in out
    assert ("use_gpu: True -> False (no GPU)" in out) == (name in ("finetune_cifar10_ddpm.yaml", "sd15_text2image.yaml"))
    if name == "finetune_cifar10_ddpm.yaml":
        assert "model.pretrained: 'google/ddpm-cifar10-32' -> " in out
        assert "custom_resources_per_worker: {'gpu_small': 1} -> {}" in out
    if name == "sd15_text2image.yaml":
        assert "StableDiffusionPipeline (SD1.5)" in out and "data.captions_file" in out
    assert sorted((tmp_path / "check" / "runs").glob("*/checkpoint_*")), "no checkpoint written"


def test_a_missing_user_folder_fails_the_check_naming_the_key(ray_local, kit, tmp_path, capsys):
    rc = main(["--config", str(MDSS / "tiny_finetune.yaml"), "--kit", str(kit), "--out", str(tmp_path / "check")],
              in_process=True)
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED" in out and "model.pretrained: '/tmp/expectdiff-tiny-unet' is a local path and does not exist" in out
