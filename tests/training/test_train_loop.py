"""The worker loop, run in-process through Ray Train's local mode (``ScalingConfig(num_workers=0)``: no
Ray cluster, the loop runs in the test process with a real train context, so it is seconds, not tens).

Local mode keeps no checkpoints, so ``ray.train.report`` / ``ray.train.get_checkpoint`` are routed
through a folder here; the 2-worker Ray runs with real storage, a crash and resumption are in
test_train_ray.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.config import load_config
from tests.training.mdss_assets import captioned_folder, tiny_sd_folder, tiny_unet_folder
from training.checkpoint import load_diffusion, load_trained_model, read_history, read_training_state
from training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "mdss"


class CheckpointFolder:
    """Stands in for Ray Train's storage in local mode: keeps every reported checkpoint."""

    def __init__(self, root: Path, resume_from: Path | None = None):
        self.root, self.resume_from, self.metrics, self.saved = root, resume_from, [], {}

    def report(self, metrics, checkpoint=None, checkpoint_dir_name=None, **_):
        self.metrics.append(metrics)
        if checkpoint is not None:
            dest = self.root / checkpoint_dir_name
            checkpoint.to_directory(str(dest))
            self.saved[metrics["step"]] = dest

    def get_checkpoint(self):
        from ray.train import Checkpoint

        return Checkpoint.from_directory(str(self.resume_from)) if self.resume_from else None


@pytest.fixture
def one_thread():
    """Run as a 1-CPU Ray worker does (Ray sets its thread count to its CPUs): two intra-op threads on a
    busy 2-core machine made these runs 10-40x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_local(monkeypatch, cfg: TrainConfig, store: CheckpointFolder) -> dict:
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.loop import train_loop_per_worker

    monkeypatch.setattr(ray.train, "report", store.report)
    monkeypatch.setattr(ray.train, "get_checkpoint", store.get_checkpoint)
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=cfg.model_dump(mode="json"),
                           scaling_config=ScalingConfig(num_workers=0),
                           run_config=RunConfig(name=cfg.name, storage_path=str(store.root)))
    return trainer.fit().return_value


def tiny_cfg(tmp_path: Path, name: str, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIGS / f"{name}.yaml", [f"run_dir={tmp_path / 'runs'}", *overrides])


def test_ema_rates_and_temporary_swap():
    from training.ema import EMA

    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9, warmup=True)
    assert ema.rate() == pytest.approx(1 / 10)  # (1+0)/(10+0): the first update mostly copies
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = ema.shadow["weight"].clone()
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * before + 0.9 * torch.ones_like(before))
    assert EMA(model, decay=0.9, warmup=False).rate() == 0.9
    with ema.applied_to(model):
        torch.testing.assert_close(model.weight, ema.shadow["weight"])
    assert torch.all(model.weight == 1.0)  # restored


def test_learning_rate_warmup_and_step_seeds():
    from training.config import OptimizerConfig
    from training.loop import learning_rate, step_seed

    opt = OptimizerConfig(lr=1e-3, warmup_steps=4)
    assert [learning_rate(opt, s) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    seeds = {step_seed(0, r, s) for r in range(4) for s in range(1000)}
    assert len(seeds) == 4000


def test_sample_grid_layout(tmp_path):
    from PIL import Image

    from training.checkpoint import write_sample_grid

    images = torch.linspace(-1, 1, 5).reshape(5, 1, 1, 1).expand(5, 1, 4, 4)
    write_sample_grid(tmp_path / "g.png", images)
    with Image.open(tmp_path / "g.png") as im:
        arr = np.asarray(im)
    assert arr.shape == (8, 12)  # 3 columns x 2 rows of 4x4, the last cell empty
    assert arr[0, 0] == 0 and arr[0, 4] == 64 and arr[4, 4] == 255 and arr[4, 8] == 0


def test_resumed_run_matches_uninterrupted_run(tmp_path, monkeypatch, one_thread):
    cfg = tiny_cfg(tmp_path, "tiny_fashion_mnist", "total_steps=4", "log_every=1")
    full = CheckpointFolder(tmp_path / "full")
    assert run_local(monkeypatch, cfg, full) == {"step": 4, "attempt_starts": [0]}
    assert sorted(full.saved) == [2, 4]
    assert (full.saved[2] / "samples.png").is_file() and (full.saved[4] / "samples.png").is_file()
    assert [m["step"] for m in full.metrics] == [1, 2, 3, 4]
    first = full.metrics[0]
    assert {"loss", "eps_loss", "xi_loss", "strategy_frac", "lr", "samples_per_s"} <= set(first)
    assert first["loss"] == pytest.approx(first["eps_loss"] + first["xi_loss"])  # xi_weight 1

    resumed = CheckpointFolder(tmp_path / "resumed", resume_from=full.saved[2])
    assert run_local(monkeypatch, cfg, resumed) == {"step": 4, "attempt_starts": [0, 2]}
    assert [m["step"] for m in resumed.metrics] == [3, 4]  # continues at 3, does not restart at 1
    # the resumed run took exactly the steps of the uninterrupted one: same data, noise, optimiser and EMA state
    for sub in ("model", "ema"):
        a = load_file(full.saved[4] / sub / "diffusion_pytorch_model.safetensors")
        b = load_file(resumed.saved[4] / sub / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{sub}/{k}")
    assert [r["step"] for r in read_history(resumed.saved[4])] == [1, 2, 3, 4]
    state = read_training_state(resumed.saved[4], torch.device("cpu"))
    assert state["step"] == 4 and state["ema_updates"] == 4 and state["attempt_starts"] == [0, 2]


def test_finetune_pretrained_unet_adds_trained_xi_channels(tmp_path, monkeypatch, one_thread):
    unet_dir = tiny_unet_folder(tmp_path / "pretrained")
    cfg = tiny_cfg(tmp_path, "tiny_finetune", f"model.pretrained={unet_dir}",
                   f"schedule.from_scheduler_config={unet_dir}")
    store = CheckpointFolder(tmp_path / "ckpt")
    assert run_local(monkeypatch, cfg, store)["step"] == 4
    saved = json.loads((store.saved[4] / "model" / "config.json").read_text())
    assert saved["_xi_channels"] == 1 and saved["out_channels"] == 2 and saved["dropout"] == 0.1
    trained = load_trained_model(store.saved[4], "model")
    assert trained.has_xi
    xi_rows = trained.unet.conv_out.weight[1:]
    assert xi_rows.abs().sum() > 0  # zero-initialised, then trained on the ξ loss
    # the ε rows started from the pretrained weights and moved only a little in 4 steps at lr 1e-4
    before = load_file(unet_dir / "diffusion_pytorch_model.safetensors")["conv_out.weight"]
    eps_rows = trained.unet.conv_out.weight[:1].detach()
    assert 0 < (eps_rows - before).abs().max() < 0.01
    ema = load_trained_model(store.saved[4])  # decay 0.9999: the EMA is still ~ the pretrained weights
    torch.testing.assert_close(ema.unet.conv_out.weight[:1].detach(), before, atol=1e-5, rtol=0)
    x = torch.randn(2, 1, 32, 32)
    eps, xi = ema(x, torch.tensor([3, 7]))
    assert eps.shape == xi.shape == x.shape
    # sampling from the checkpoint as docs/mdss_training.md shows
    from training.samplers import SamplerConfig, sample

    diffusion = load_diffusion(store.saved[4])
    assert diffusion.num_timesteps == 50  # the pretrained folder's scheduler config
    images = sample(ema, diffusion, SamplerConfig(name="ddim", num_steps=3, xi_denoise=True), (2, 1, 32, 32),
                    seed=0)
    assert images.shape == (2, 1, 32, 32) and images.abs().max() <= 1
    assert (store.saved[4] / "samples.png").is_file()


def test_text_to_image_latent_run_and_reuse_in_a_stock_pipeline(tmp_path, monkeypatch, one_thread):
    from diffusers import StableDiffusionPipeline

    sd_dir = tiny_sd_folder(tmp_path / "sd")
    data_dir = captioned_folder(tmp_path / "captions")
    cfg = tiny_cfg(tmp_path, "tiny_text2image", f"model.pipeline={sd_dir}", f"data.path={data_dir}",
                   f"schedule.from_scheduler_config={sd_dir}")
    store = CheckpointFolder(tmp_path / "ckpt")
    assert run_local(monkeypatch, cfg, store)["step"] == 2
    m = store.metrics[-1]
    assert m["xi_loss"] >= 0 and torch.isfinite(torch.tensor(m["loss"]))
    from PIL import Image

    with Image.open(store.saved[2] / "samples.png") as grid:
        assert grid.size == (64, 32)  # 2 decoded 32x32 images side by side
    model = load_trained_model(store.saved[2])
    assert model.has_xi and model.unet.config.in_channels == 4
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, unet=model.eps_unet(), safety_checker=None)
    out = pipe("a red square", num_inference_steps=2, height=32, width=32, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 32, 32, 3)


def test_channel_mismatch_is_a_clear_error(tmp_path, monkeypatch, one_thread):
    cfg = tiny_cfg(tmp_path, "tiny_fashion_mnist", "model.unet_config.in_channels=3",
                   "model.unet_config.out_channels=3")
    with pytest.raises(Exception, match="1-channel inputs but the UNet takes 3"):
        run_local(monkeypatch, cfg, CheckpointFolder(tmp_path / "ckpt"))

