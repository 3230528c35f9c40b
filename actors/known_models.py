"""Built-in configs of the hub models the repository's profiles name, for the memory planner.

The planner (actors/memory/) sizes a model from its config files: a local folder,
the Hugging Face cache, or the hub. Where none of these can be read (no network and
nothing cached), it falls back to this table and says so ("from the built-in table").

Each entry holds the architecture-defining fields of the model's public ``config.json``
(and, for a diffusers pipeline, ``model_index.json`` and each model component's
``config.json``), transcribed from the hub repositories; the planner builds the model on
PyTorch's ``meta`` device from them exactly as from a downloaded file, so the parameter
counts come from the same code either way. Fields that do not change the architecture
(dropout, ...) are mostly left out. Parameter counts this gives (tests/actors/test_memory_plan.py
asserts them within 1% of the published figures): Llama-2-13b-chat 13,015,864,320 (13B);
LLaVA-v1.6-Mistral-7B 7,566,747,648 (its hub page: 7.57B); Qwen2-VL-7B-Instruct 8,291,375,616
(8.29B); BLIP2-OPT-2.7b 3,744,679,936 in memory, where OPT's output embedding is tied to its
input embedding (3,873,376,256 counting both, the hub page's 3.87B); SD1.5 UNet 859,520,964,
VAE 83,653,863, text encoder 123,060,480 (the model card: "860M UNet and 123M text
encoder"), safety checker 303,981,588; SDXL base 1.0 UNet 2,567,463,684, text encoders 123,060,480 and
694,659,840 (the OpenCLIP bigG tower); SD3.5-medium transformer 2,469,663,936 (226,492,416 of them its
positional-embedding buffer, stored with the weights: the ~4.94 GB bf16 file), T5-XXL encoder
4,762,310,656 (SD3.5's and FLUX.1's), FLUX.1-dev transformer 11,901,408,320 ("12 billion parameter"),
the 16-channel VAE 83,819,683; PixArt-α XL-2-1024-MS transformer 611,349,152 (the paper's "0.6B"), with
T5-XXL and SD1.5's VAE. The SDXL, SD3.5, FLUX.1 and PixArt-α entries were transcribed without the hub at
hand; the counts above, which match the published sizes, are their check.
"""
from __future__ import annotations

_SD15_PIPELINE = {
    "model_index.json": {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False, "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "text_encoder/config.json": {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 77,
        "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768, "vocab_size": 49408,
        "torch_dtype": "float32",
    },
    "safety_checker/config.json": {
        "architectures": ["StableDiffusionSafetyChecker"], "model_type": "clip", "projection_dim": 768,
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                        "num_hidden_layers": 12, "max_position_embeddings": 77, "vocab_size": 49408},
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                          "num_hidden_layers": 24, "patch_size": 14, "image_size": 224},
    },
}

_CLIP_L = {  # openai/clip-vit-large-patch14's text tower: SD1.5's, SDXL's and FLUX.1's first encoder
    "model_type": "clip_text_model", "hidden_act": "quick_gelu", "hidden_size": 768, "intermediate_size": 3072,
    "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768,
    "vocab_size": 49408,
}
_CLIP_BIGG = {  # OpenCLIP ViT-bigG/14's text tower with its projection: SDXL's and SD3.5's second encoder
    "architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", "hidden_act": "gelu",
    "hidden_size": 1280, "intermediate_size": 5120, "max_position_embeddings": 77, "num_attention_heads": 20,
    "num_hidden_layers": 32, "projection_dim": 1280, "vocab_size": 49408,
}
_T5_XXL = {  # google/t5-v1_1-xxl's encoder: SD3.5's third encoder and FLUX.1's second
    "architectures": ["T5EncoderModel"], "model_type": "t5", "d_ff": 10240, "d_kv": 64, "d_model": 4096,
    "feed_forward_proj": "gated-gelu", "num_heads": 64, "num_layers": 24, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "vocab_size": 32128, "is_gated_act": True, "dense_act_fn": "gelu_new",
}
_VAE_16 = {  # the 16-channel autoencoder of SD3/SD3.5 and FLUX.1 (no quant convs)
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_quant_conv": False, "use_post_quant_conv": False,
}

_SDXL_PIPELINE = {
    "model_index.json": {
        "_class_name": "StableDiffusionXLPipeline",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "in_channels": 4,
        "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
        "sample_size": 128, "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": True,
    },
    "vae/config.json": {**_SD15_PIPELINE["vae/config.json"], "sample_size": 1024},
    "text_encoder/config.json": {**_CLIP_L, "architectures": ["CLIPTextModel"]},
    "text_encoder_2/config.json": _CLIP_BIGG,
}

_SD35_MEDIUM_PIPELINE = {
    "model_index.json": {
        "_class_name": "StableDiffusion3Pipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_3": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
    },
    "transformer/config.json": {
        "_class_name": "SD3Transformer2DModel", "attention_head_dim": 64, "caption_projection_dim": 1536,
        "dual_attention_layers": list(range(13)), "in_channels": 16, "joint_attention_dim": 4096,
        "num_attention_heads": 24, "num_layers": 24, "out_channels": 16, "patch_size": 2,
        "pooled_projection_dim": 2048, "pos_embed_max_size": 384, "qk_norm": "rms_norm", "sample_size": 128,
    },
    "vae/config.json": _VAE_16,
    "text_encoder/config.json": {**_CLIP_L, "architectures": ["CLIPTextModelWithProjection"]},
    "text_encoder_2/config.json": _CLIP_BIGG,
    "text_encoder_3/config.json": _T5_XXL,
}

_FLUX1_DEV_PIPELINE = {
    "model_index.json": {
        "_class_name": "FluxPipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
    },
    "transformer/config.json": {
        "_class_name": "FluxTransformer2DModel", "attention_head_dim": 128, "axes_dims_rope": [16, 56, 56],
        "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096, "num_attention_heads": 24,
        "num_layers": 19, "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768,
    },
    "vae/config.json": _VAE_16,
    "text_encoder/config.json": {**_CLIP_L, "architectures": ["CLIPTextModel"]},
    "text_encoder_2/config.json": _T5_XXL,
}

_PIXART_ALPHA_PIPELINE = {
    "model_index.json": {
        "_class_name": "PixArtAlphaPipeline",
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
        # the hub's model_index names the generic class; diffusers maps norm_type ada_norm_single to PixArtTransformer2DModel
        "transformer": ["diffusers", "Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
    },
    "transformer/config.json": {
        "_class_name": "Transformer2DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
        "attention_head_dim": 72, "caption_channels": 4096, "cross_attention_dim": 1152, "in_channels": 4,
        "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32, "norm_type": "ada_norm_single",
        "num_attention_heads": 16, "num_embeds_ada_norm": 1000, "num_layers": 28, "out_channels": 8, "patch_size": 2,
        "sample_size": 128, "use_linear_projection": False,
    },
    "vae/config.json": _SD15_PIPELINE["vae/config.json"],  # sd-vae-ft-ema: SD1.5's autoencoder architecture
    "text_encoder/config.json": _T5_XXL,
}

KNOWN_CONFIGS: dict[str, dict[str, dict]] = {
    "meta-llama/Llama-2-13b-chat-hf": {
        "config.json": {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 13824, "max_position_embeddings": 4096,
            "num_attention_heads": 40, "num_hidden_layers": 40, "num_key_value_heads": 40, "rms_norm_eps": 1e-05,
            "tie_word_embeddings": False, "torch_dtype": "float16", "vocab_size": 32000,
        },
    },
    "llava-hf/llava-v1.6-mistral-7b-hf": {
        "config.json": {
            "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
            "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
            "image_token_index": 32000, "projector_hidden_act": "gelu", "torch_dtype": "float16",
            "use_image_newline_parameter": True, "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "vocab_size": 32064,
            "text_config": {
                "architectures": ["MistralForCausalLM"], "model_type": "mistral", "intermediate_size": 14336,
                "max_position_embeddings": 32768, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
                "rope_theta": 1000000.0, "sliding_window": None, "vocab_size": 32064,
            },
            "vision_config": {
                "model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
            },
        },
    },
    "Qwen/Qwen2-VL-7B-Instruct-AWQ": {
        "config.json": {
            "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
            "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 32768,
            "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False,
            "torch_dtype": "float16", "use_sliding_window": False, "vocab_size": 152064,
            "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
            "image_token_id": 151655, "video_token_id": 151656,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                              "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
            "quantization_config": {"bits": 4, "group_size": 128, "modules_to_not_convert": ["visual"],
                                    "quant_method": "awq", "version": "gemm", "zero_point": True},
        },
    },
    "Salesforce/blip2-opt-2.7b": {
        "config.json": {
            "architectures": ["Blip2ForConditionalGeneration"], "model_type": "blip-2", "num_query_tokens": 32,
            "use_decoder_only_language_model": True, "torch_dtype": "float32",
            "text_config": {
                "architectures": ["OPTForCausalLM"], "model_type": "opt", "do_layer_norm_before": True,
                "ffn_dim": 10240, "hidden_size": 2560, "max_position_embeddings": 2048, "num_attention_heads": 32,
                "num_hidden_layers": 32, "vocab_size": 50272, "word_embed_proj_dim": 2560,
            },
            "vision_config": {
                "model_type": "blip_2_vision_model", "hidden_size": 1408, "image_size": 224,
                "intermediate_size": 6144, "num_attention_heads": 16, "num_hidden_layers": 39, "patch_size": 14,
                "qkv_bias": True,
            },
            "qformer_config": {
                "model_type": "blip_2_qformer", "hidden_size": 768, "intermediate_size": 3072,
                "num_attention_heads": 12, "num_hidden_layers": 12, "cross_attention_frequency": 2,
                "encoder_hidden_size": 1408, "vocab_size": 30522,
            },
        },
    },
    "stable-diffusion-v1-5/stable-diffusion-v1-5": _SD15_PIPELINE,
    "runwayml/stable-diffusion-v1-5": _SD15_PIPELINE,
    "stabilityai/stable-diffusion-xl-base-1.0": _SDXL_PIPELINE,
    "stabilityai/stable-diffusion-3.5-medium": _SD35_MEDIUM_PIPELINE,
    "black-forest-labs/FLUX.1-dev": _FLUX1_DEV_PIPELINE,
    "PixArt-alpha/PixArt-XL-2-1024-MS": _PIXART_ALPHA_PIPELINE,
}
