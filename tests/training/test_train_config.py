"""TrainConfig: the shipped MDSS configs validate; bad keys and inconsistent settings fail naming file and key."""
from pathlib import Path

import pytest

from core.config import ConfigError, load_config
from training.config import XI_STRATEGIES, TrainConfig
from training.train import main, resolve_run_dir

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "mdss").glob("*.yaml"))


def test_all_mdss_configs_are_present():
    names = {p.stem for p in CONFIGS}
    assert {"fashion_mnist_scratch", "finetune_cifar10_ddpm", "sd15_text2image", "tiny_fashion_mnist",
            "tiny_finetune", "tiny_text2image"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path):
    cfg = load_config(TrainConfig, path)
    # what each Ray Train worker does with the dict it is handed
    assert TrainConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_cifar10_config_follows_table_a1():
    cfg = load_config(TrainConfig, next(p for p in CONFIGS if p.stem == "finetune_cifar10_ddpm"))
    assert cfg.model.pretrained == "google/ddpm-cifar10-32"
    assert cfg.batch_size * cfg.num_workers == 128 and cfg.total_steps == 50_000
    assert cfg.optimizer.lr == 1e-4 and cfg.ema.decay == 0.9999 and cfg.model.dropout == 0.3
    assert cfg.strategy.name == "mdss" and (cfg.strategy.prob_start, cfg.strategy.prob_max) == (0.1, 0.9)


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
model: {unet_config: {sample_size: 32, in_channels: 1, out_channels: 1}}
data: {kind: fashion_mnist}
schedule: {kind: linear}
strategy: {name: mdss}
batch_size: 2
total_steps: 4
checkpoint_every: 2
"""


def test_base_config_is_valid(tmp_path):
    assert load_config(TrainConfig, _write(tmp_path, BASE)).strategy.name == "mdss"


@pytest.mark.parametrize("extra, key, reason", [
    ("learning_rate: 0.1\n", "learning_rate", "unknown key"),
    ("optimizer: {lr: 0.1, momentum: 0.9}\n", "optimizer.momentum", "unknown key"),
    ("ema: {decay: 1.5}\n", "ema.decay", "less than 1"),
    ("sample: {every: 3}\n", "<root>", "multiple of checkpoint_every"),
])
def test_bad_config_names_file_and_key(tmp_path, extra, key, reason):
    path = _write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, path)
    assert err.value.source == str(path) and err.value.key == key and reason in err.value.reason


def test_bad_override_names_the_override(tmp_path):
    path = _write(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, path, ["strategy.name=mdsss"])
    assert err.value.key == "strategy.name" and "--set strategy.name" in err.value.source


@pytest.mark.parametrize("model, match", [
    ("{unet_config: {sample_size: 32, bogus_arg: 1}}", "not UNet2DModel arguments: \\['bogus_arg'\\]"),
    ("{unet_config: {sample_size: 32}, pretrained: some/id}", "exactly one of"),
    ("{unet_config: {sample_size: 32}, dropout: 0.3}", "dropout overrides a `pretrained`"),
    ("{pipeline: some/sd}", "captioned_images data goes with model.pipeline"),
])
def test_model_section_errors(tmp_path, model, match):
    text = BASE.replace("model: {unet_config: {sample_size: 32, in_channels: 1, out_channels: 1}}", f"model: {model}")
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, _write(tmp_path, text))


def test_xi_denoise_sampling_needs_a_xi_strategy(tmp_path):
    text = BASE.replace("{name: mdss}", "{name: ddpm}") + "sample: {every: 2}\n"
    with pytest.raises(ConfigError, match="xi_denoise=false"):
        load_config(TrainConfig, _write(tmp_path, text))
    ok = text.replace("sample: {every: 2}", "sample: {every: 2, sampler: {xi_denoise: false}}")
    assert load_config(TrainConfig, _write(tmp_path, ok)).sample.every == 2


def test_xi_strategy_list_matches_the_strategies():
    from training.diffusion import GaussianDiffusion, ScheduleConfig
    from training.strategies import StrategyConfig, build_strategy

    diffusion = GaussianDiffusion.from_config(ScheduleConfig(num_train_timesteps=20))
    for name in ("ddpm", "ip", "ss", "sdss", "mdss", "sdss_ddim", "mdss_ddim"):
        uses_xi = build_strategy(StrategyConfig(name=name, k=2), diffusion).uses_xi
        assert uses_xi == (name in XI_STRATEGIES), name


def test_cli_reports_config_errors_without_starting_ray(tmp_path, capsys):
    path = _write(tmp_path, BASE + "bogus: 1\n")
    assert main(["--config", str(path)]) == 2
    assert f"{path}: bogus: unknown key" in capsys.readouterr().err


def test_run_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_run_dir("runs/x") == str(tmp_path / "runs" / "x")
    assert resolve_run_dir("s3://bucket/runs") == "s3://bucket/runs"
    # under `ray job submit` the cwd is a temporary copy: a relative run_dir would lose the checkpoints
    with pytest.raises(ConfigError, match="absolute path"):
        resolve_run_dir("runs/x", submitted_job=True)
    assert resolve_run_dir(str(tmp_path / "abs"), submitted_job=True) == str(tmp_path / "abs")


def test_a_missing_local_model_folder_is_refused_before_ray_naming_the_key(capsys, tmp_path):
    """It used to reach a worker, which asked the hub for a 'repo id' that is a path."""
    from training.train import main

    missing = tmp_path / "no-such-unet"
    rc = main(["--config", str(next(p for p in CONFIGS if p.stem == "tiny_finetune")),
               "--set", f"model.pretrained={missing}", "--set", f"schedule.from_scheduler_config={missing}",
               "--set", f"run_dir={tmp_path / 'runs'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"model.pretrained: '{missing}' is a local path and does not exist" in err
