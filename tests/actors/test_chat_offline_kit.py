"""The offline kit's tiny chat models: on-disk layout that both transformers and vLLM load."""
import json

from actors.config import LLMConfig, VLMConfig
from tests.actors.conftest_chat import tiny_llm_section, tiny_vlm_section  # noqa: F401


def test_tiny_llm_folder_has_chat_template_and_vllm_compatible_head_dim(tiny_llm_section):
    from transformers import AutoConfig, AutoTokenizer

    cfg = LLMConfig.model_validate(tiny_llm_section)  # the section is a valid config
    assert cfg.device == "cpu" and cfg.resources.num_gpus == 0 and cfg.vllm.enforce_eager
    config = AutoConfig.from_pretrained(cfg.model)
    assert config.head_dim == 32
    tok = AutoTokenizer.from_pretrained(cfg.model)
    prompt = tok.apply_chat_template([{"role": "user", "content": "a red cat"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\na red cat<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok("a red cat, 4k")["input_ids"]) == "a red cat, 4k"


def test_tiny_vlm_is_saved_in_the_real_llava_hf_layout_and_loads_completely(tiny_vlm_section):
    from safetensors import safe_open
    from transformers import LlavaNextForConditionalGeneration

    cfg = VLMConfig.model_validate(tiny_vlm_section)
    assert cfg.vllm.limit_images_per_prompt == 2
    folder = cfg.model
    assert json.loads(open(f"{folder}/config.json").read())["text_config"]["head_dim"] == 32
    with safe_open(f"{folder}/model.safetensors", "pt") as f:
        keys = list(f.keys())
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"language_model", "vision_tower", "multi_modal_projector", "image_newline"}
    assert all(k.startswith("vision_tower.vision_model.") for k in keys if k.startswith("vision_tower"))
    _, info = LlavaNextForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
