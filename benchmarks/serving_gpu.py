"""Serving throughput of the text-to-image and CLIP roles on one device, without Ray.

Measures the project's plain model classes (``actors.t2i.T2IModel``, ``actors.clip_scorer.ClipModel``)
on real-size architectures with random weights — nothing is downloaded, so the numbers
are speed only, never quality:

* text-to-image: a Stable Diffusion 1.5-size pipeline (UNet2DConditionModel, AutoencoderKL,
  CLIPTextModel built from SD1.5's published config values, written below), 512×512,
  25 DDIM steps, classifier-free guidance, float16 on GPU; images/s at batch 1, 8, 32;
* CLIP: open_clip ViT-L-14 (``pretrained=None``); text encodes/s at batch 1 and 256.

Usage (from the repository root):
    python benchmarks/serving_gpu.py --device cuda            # full run
    python benchmarks/serving_gpu.py --device cuda --quick    # batches 1 and 8, one repeat
    python benchmarks/serving_gpu.py --device cpu --tiny      # tiny kit models: checks the script runs

Third-party imports: torch, diffusers, transformers, open_clip (through the plain classes;
no Ray, no vLLM).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]

# Stable Diffusion 1.5 component configs (the published unet/, vae/ and text_encoder/ config.json values).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT_ENCODER = dict(  # CLIP ViT-L/14 text tower
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)


@dataclass
class Plan:
    """What to measure; presets for full, --quick and --tiny runs."""

    image_size: int
    steps: int
    t2i_batches: tuple[int, ...]
    clip_model: str
    clip_batches: tuple[int, ...]
    repeats: int


FULL = Plan(image_size=512, steps=25, t2i_batches=(1, 8, 32), clip_model="ViT-L-14", clip_batches=(1, 256), repeats=3)
QUICK = Plan(image_size=512, steps=25, t2i_batches=(1, 8), clip_model="ViT-L-14", clip_batches=(1, 256), repeats=1)
TINY = Plan(image_size=64, steps=2, t2i_batches=(1, 2), clip_model="", clip_batches=(1, 8), repeats=1)


@dataclass
class Row:
    role: str
    batch: int
    items_per_s: float
    s_per_batch: float
    unit: str


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Mean seconds per call of ``fn`` after one untimed warm-up call."""
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def prompts(n: int) -> list[str]:
    subjects = ["a red fox", "an old lighthouse", "a bowl of ramen", "a city street at night", "a mountain lake", "a portrait of a sailor"]
    styles = ["oil painting", "35mm photograph", "watercolor", "digital art", "charcoal sketch"]
    return [f"{subjects[i % len(subjects)]}, {styles[i % len(styles)]}, variation {i}" for i in range(n)]


def build_t2i(plan: Plan, device: str, tiny: bool, workdir: Path):
    import torch

    from actors.config import T2IConfig
    from actors.offline_kit import t2i as kit
    from actors.offline_kit.vocab import build_clip_tokenizer
    from actors.t2i import T2IModel

    tokenizer = build_clip_tokenizer(workdir / "tokenizer", model_max_length=77)
    parts = (kit.TINY_UNET, kit.TINY_VAE, kit.TINY_TEXT_ENCODER) if tiny else (SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER)
    torch.manual_seed(0)
    with torch.device(device):  # initialise the random weights on the device directly
        pipe = kit.sd_pipeline(tokenizer, *parts)
    cfg = T2IConfig(
        model="in-memory:random-sd15" if not tiny else "in-memory:tiny-sd",
        device=device,
        dtype="auto",
        num_inference_steps=plan.steps,
        guidance_scale=7.5,
        height=plan.image_size,
        width=plan.image_size,
    )
    return T2IModel(cfg, pipeline=pipe)


def build_clip(plan: Plan, device: str, tiny: bool, workdir: Path):
    from actors.clip_scorer import ClipModel
    from actors.config import ClipConfig

    precision = "fp16" if device.startswith("cuda") else "fp32"
    if tiny:
        from actors.offline_kit.clip import TINY_CLIP_NAME, write_model_config

        config_dir = write_model_config(workdir / "clip_configs")
        cfg = ClipConfig(model_name=TINY_CLIP_NAME, pretrained=None, model_config_dir=str(config_dir), device=device, precision=precision)
    else:
        cfg = ClipConfig(model_name=plan.clip_model, pretrained=None, device=device, precision=precision)
    return ClipModel(cfg)


def run(plan: Plan, device: str, tiny: bool) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        t2i = build_t2i(plan, device, tiny, workdir)
        for b in plan.t2i_batches:
            items = [(p, i) for i, p in enumerate(prompts(b))]
            s = timed(lambda: t2i.generate_batch(items), device, plan.repeats)
            rows.append(Row("t2i", b, b / s, s, "images/s"))
        del t2i
        clip = build_clip(plan, device, tiny, workdir)
        for b in plan.clip_batches:
            texts = prompts(b)
            s = timed(lambda: clip.encode_texts(texts), device, max(plan.repeats, 3))
            rows.append(Row("clip text", b, b / s, s, "texts/s"))
    return rows


def format_table(rows: Sequence[Row], device: str, plan: Plan, tiny: bool) -> str:
    import diffusers
    import open_clip
    import torch
    import transformers

    t2i_model = "tiny kit SD" if tiny else "SD1.5-size UNet/VAE/CLIP-L text (random weights)"
    clip_model = "tiny kit CLIP" if tiny else f"open_clip {plan.clip_model} (random weights)"
    lines = [
        f"device: {device_name(device)}",
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, open_clip {open_clip.__version__}",
        f"t2i: {t2i_model}, {plan.image_size}x{plan.image_size}, {plan.steps} DDIM steps, CFG 7.5; clip: {clip_model}; repeats {plan.repeats}",
        "",
        f"{'role':<10} {'batch':>5} {'throughput':>12} {'unit':<9} {'s/batch':>9}",
    ]
    lines += [f"{r.role:<10} {r.batch:>5} {r.items_per_s:>12.2f} {r.unit:<9} {r.s_per_batch:>9.3f}" for r in rows]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="torch device (cuda, cuda:1, cpu)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="batches 1 and 8 only, one timed repeat")
    mode.add_argument("--tiny", action="store_true", help="tiny kit models at 64x64: a seconds-long check that the script runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> list[Row]:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
        sys.path.insert(0, str(REPO_ROOT))
    from actors.torch_device import resolve_device

    device = resolve_device(args.device)
    plan = TINY if args.tiny else QUICK if args.quick else FULL
    rows = run(plan, device, args.tiny)
    print(format_table(rows, device, plan, args.tiny))
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device_name(device), "plan": asdict(plan), "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


if __name__ == "__main__":
    main()
