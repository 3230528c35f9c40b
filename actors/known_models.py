"""Built-in configs of the hub models the repository's profiles name, for the memory planner.

The planner (actors/memory_plan.py) sizes a model from its config files: a local folder,
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
encoder"), safety checker 303,981,588.
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
}
