"""Tiny random-weight twins of today's text-to-image models: SDXL, SD3.5, FLUX.1-dev, PixArt-α.

Each twin has its real repository's pipeline class, component classes and folder layout
(model_index.json, unet/ or transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/),
the real scheduler configuration, and the real tokenizers' kind: CLIP BPE with 77
positions (vocab.py) and a T5 SentencePiece Unigram (t5_tokenizer.py). So
``AutoPipelineForText2Image`` and ``T2IModel`` go through the same loading and calling code
as for the real checkpoints, offline. Only the sizes are tiny (component configs follow
diffusers' own ``get_dummy_components``, with the real wiring between them: text widths
feed the cross-attention, the VAE downsamples 8× with the real latent channels and
scaling), so a 2-step 64×64 batch takes well under a second on two CPU cores.

The images are meaningless (random weights). The caller writes the kit's root marker
(``OFFLINE_KIT_MARKER``) in ``out_dir`` or the folder above it, which covers
``out_dir/<target>``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from actors.offline_kit.t2i import TINY_VAE

TARGETS = ("sdxl", "sd3", "flux", "pixart")
IMAGE_SIZE = 64

# Each pipeline's own default guidance_scale (its __call__ signature).
GUIDANCE_SCALE = {"sdxl": 5.0, "sd3": 7.0, "flux": 3.5, "pixart": 4.5}

# Text encoders. CLIP hidden states go to the denoiser's cross-attention (concatenated
# for SDXL and SD3); SD3 pads the two CLIPs' 64 features to the T5 width, so T5 is 64 wide.
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
TINY_T5 = dict(
    d_model=64, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=32,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False,  # T5 v1.1, as the real targets
)
CLIP_WIDTH = TINY_CLIP["hidden_size"]
T5_WIDTH = TINY_T5["d_model"]

# VAE: the SD1.5 twin's (t2i.py), four blocks downsampling 8× like the real ones, with each
# target's real latent channels and scaling.
SDXL_VAE = dict(TINY_VAE, latent_channels=4, scaling_factor=0.13025)
SD3_VAE = dict(TINY_VAE, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
               use_quant_conv=False, use_post_quant_conv=False)
FLUX_VAE = dict(TINY_VAE, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False)
PIXART_VAE = dict(TINY_VAE, latent_channels=4, scaling_factor=0.18215)  # sd-vae-ft-ema

SDXL_TIME_EMBED_DIM = 8
SDXL_UNET = dict(
    sample_size=IMAGE_SIZE // 8,  # the pipeline's default size is sample_size × 8
    in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=32,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    cross_attention_dim=2 * CLIP_WIDTH,  # both text encoders' penultimate states, concatenated
    addition_embed_type="text_time",
    addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
    # 6 size/crop numbers, each embedded, plus text_encoder_2's pooled projection.
    projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + TINY_CLIP["projection_dim"],
)
SD3_TRANSFORMER = dict(
    sample_size=IMAGE_SIZE // 8, patch_size=2, in_channels=16, out_channels=16,
    num_layers=2, num_attention_heads=2, attention_head_dim=16,
    caption_projection_dim=32,  # = heads × head dim
    joint_attention_dim=T5_WIDTH,
    pooled_projection_dim=2 * TINY_CLIP["projection_dim"],
    pos_embed_max_size=32,  # images up to 32 patches (512 px) a side
    qk_norm="rms_norm", dual_attention_layers=(0,),  # SD3.5 (Medium's MMDiT-X block in layer 0)
)
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=4 * 16,  # 2×2-packed 16-channel latents
    num_layers=1, num_single_layers=2, num_attention_heads=2, attention_head_dim=16,
    axes_dims_rope=(4, 4, 8),  # sums to the head dim
    joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH,
    guidance_embeds=True,  # FLUX.1-dev (guidance-distilled); schnell has none
)
PIXART_TRANSFORMER = dict(
    # PixArtAlphaPipeline bins sizes by sample_size: 32 (256-px bins) is the smallest it
    # accepts, so a 64×64 request is generated at 256×256 and resized back to 64×64.
    sample_size=32, patch_size=2, in_channels=4, out_channels=8,  # learned sigma
    num_layers=2, num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
    caption_channels=T5_WIDTH,
    attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
    norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
)

# The real repositories' scheduler configurations (stabilityai/stable-diffusion-xl-base-1.0,
# stabilityai/stable-diffusion-3.5-*, black-forest-labs/FLUX.1-dev; PixArt-α's converter
# saves DPMSolverMultistepScheduler's defaults).
SDXL_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon", interpolation_type="linear", steps_offset=1, timestep_spacing="leading",
    use_karras_sigmas=False,
)
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
FLUX_SCHEDULER = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
    base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)
PIXART_SCHEDULER: dict = {}

# Tokenizer kind per folder, in each real repository.
TOKENIZERS = {
    "sdxl": {"tokenizer": "clip", "tokenizer_2": "clip"},
    "sd3": {"tokenizer": "clip", "tokenizer_2": "clip", "tokenizer_3": "t5"},
    "flux": {"tokenizer": "clip", "tokenizer_2": "t5"},
    "pixart": {"tokenizer": "t5"},
}
T5_MAX_LENGTH = 512  # the real T5 tokenizers' model_max_length; the pipelines pass their own max lengths


def clip_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # pooled output is taken at the first EOS
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CLIP,
    )


def t5_encoder(tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **TINY_T5,
    ))


def sdxl_pipeline(tokenizer, tokenizer_2):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**SDXL_VAE),
        text_encoder=CLIPTextModel(clip_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(clip_config(tokenizer_2)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=UNet2DConditionModel(**SDXL_UNET),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
    )


def sd3_pipeline(tokenizer, tokenizer_2, tokenizer_3):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**SD3_TRANSFORMER),
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=AutoencoderKL(**SD3_VAE),
        text_encoder=CLIPTextModelWithProjection(clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_config(tokenizer_2)),
        tokenizer_2=tokenizer_2,
        text_encoder_3=t5_encoder(tokenizer_3),
        tokenizer_3=tokenizer_3,
    )


def flux_pipeline(tokenizer, tokenizer_2):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=AutoencoderKL(**FLUX_VAE),
        text_encoder=CLIPTextModel(clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=t5_encoder(tokenizer_2),
        tokenizer_2=tokenizer_2,
        transformer=FluxTransformer2DModel(**FLUX_TRANSFORMER),
    )


def pixart_pipeline(tokenizer):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    return PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=t5_encoder(tokenizer),
        vae=AutoencoderKL(**PIXART_VAE),
        transformer=PixArtTransformer2DModel(**PIXART_TRANSFORMER),
        scheduler=DPMSolverMultistepScheduler(**PIXART_SCHEDULER),
    )


PIPELINES = {"sdxl": sdxl_pipeline, "sd3": sd3_pipeline, "flux": flux_pipeline, "pixart": pixart_pipeline}


def build_tokenizers(folder: Path, target: str) -> dict:
    """Each tokenizer of ``target`` built in its own subfolder of ``folder`` (named as in the real repository)."""
    from actors.offline_kit.t5_tokenizer import build_t5_tokenizer
    from actors.offline_kit.vocab import build_clip_tokenizer

    build = {"clip": lambda d: build_clip_tokenizer(d, model_max_length=77),
             "t5": lambda d: build_t5_tokenizer(d, model_max_length=T5_MAX_LENGTH)}
    return {name: build[kind](folder / name) for name, kind in TOKENIZERS[target].items()}


def build(out_dir: Path, target: str, seed: int = 0) -> dict:
    """Save the tiny ``target`` pipeline under ``out_dir/<target>``; return the T2I config section for it.

    The folder is emptied first, so it holds exactly this build (the tokenizers' spiece.model
    and vocab files are written there before save_pretrained adds the rest).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown text-to-image target {target!r}; expected one of {TARGETS}")
    import torch

    from actors.config import T2IConfig

    folder = Path(out_dir) / target
    shutil.rmtree(folder, ignore_errors=True)
    tokenizers = build_tokenizers(folder, target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = PIPELINES[target](**tokenizers)
    pipe.save_pretrained(str(folder))
    section = {
        "model": str(folder),
        "pipeline_class": "AutoPipelineForText2Image",
        "device": "cpu",
        "dtype": "float32",
        "num_inference_steps": 2,
        "guidance_scale": GUIDANCE_SCALE[target],
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "negative_prompt": None,
        "batching": {"max_batch_size": 4, "max_wait_ms": 20.0},
        "resources": {"num_gpus": 0, "num_cpus": 0.25},
    }
    return T2IConfig.model_validate(section).model_dump(mode="json")
