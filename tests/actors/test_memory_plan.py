"""The GPU memory planner (actors/memory/, CLI actors/plan.py): parameter counts from config
files alone, vLLM budgets, per-GPU sums, and the two one-GPU profiles against 24 GiB.

Real-size configs are written here (the architecture fields of the public config.json files);
their parameter counts are checked against the published figures: Llama-2-13B "13B" (Llama 2
paper), LLaVA-v1.6-Mistral-7B 7.57B (its hub page), SD1.5 "860M UNet and 123M text encoder"
(its model card). The offline kit's tiny models check the count against the loaded model exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.config import ResourceConfig
from actors.memory.needs import GroupNeed
from actors.memory.placement import place
from actors.memory.plan import MemoryPlan, make_plan
from actors.memory.sections import role_sections
from actors.memory.sizes import GiB, parse_size
from actors.memory.startup_check import gpu_memory_check
from actors.role_groups import RoleGroup
from tests.actors.conftest_chat import section_with, tiny_llm_section, tiny_vlm_section  # noqa: F401

REPO = Path(__file__).resolve().parents[2]

LLAMA2_13B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
    "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float16",
}
LLAVA_NEXT_MISTRAL_7B = {
    "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next", "image_token_index": 32000,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "projector_hidden_act": "gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
    "vocab_size": 32064, "use_image_newline_parameter": True,
    "text_config": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32064,
                    "max_position_embeddings": 32768},
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                      "projection_dim": 768},
}
SD15 = {
    "model_index.json": {"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
                         "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                         "safety_checker": [None, None]},
    "unet/config.json": {"_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
                         "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
                         "attention_head_dim": 8,
                         "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                         "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]},
    "vae/config.json": {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512], "latent_channels": 4,
                        "layers_per_block": 2, "down_block_types": ["DownEncoderBlock2D"] * 4,
                        "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 512},
    "text_encoder/config.json": {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 768,
                                 "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                                 "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu"},
    "scheduler/scheduler_config.json": {"_class_name": "DDIMScheduler"},
}


def write_model(folder: Path, files: dict) -> str:
    for rel, content in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps(content))
    return str(folder)


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path, monkeypatch):
    """No model of the hub is cached, and the hub is not asked (conftest sets HF_HUB_OFFLINE)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def on_gpu(section: dict, num_gpus: float = 0.2, **changes) -> dict:
    return section_with(section, resources={"num_gpus": num_gpus}, **({"device": "auto"} if "device" in section else {}), **changes)


def sections(**roles) -> object:
    """Role sections with every role off the GPU except those given."""
    off = {"resources": {"num_gpus": 0}}
    data = {r: dict(off) for r in ("t2i", "llm", "vlm", "captioner", "clip")}
    data["llm"]["model"] = "/absent/llm"  # distinct, so llm and vlm do not share one engine
    data.update(roles)
    return role_sections(data)


def need(plan: MemoryPlan, group: str) -> GroupNeed:
    return next(n for n in plan.needs if n.group.name == group)


# --- units -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("24GiB", 24 * GiB), ("80 GB", 80 * 10**9), ("81559MiB", 81559 << 20),
                                         ("1.5gib", 3 * GiB // 2), ("512 B", 512)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["24", "24 GiBs", "-1GiB", "0GB", ""])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


# --- parameter counts at real sizes, from written config files ---------------------------------

def test_real_size_chat_configs_count_the_published_parameters(tmp_path):
    llama = write_model(tmp_path / "llama", {"config.json": LLAMA2_13B})
    llava = write_model(tmp_path / "llava", {"config.json": LLAVA_NEXT_MISTRAL_7B})
    vllm = {"max_model_len": 4096, "gpu_memory_utilization": 0.9, "max_num_seqs": 16}
    plan = make_plan(sections(llm={"model": llama, "dtype": "float16", "vllm": vllm, "resources": {"num_gpus": 0.5}},
                              vlm={"model": llava, "dtype": "float16", "vllm": vllm, "resources": {"num_gpus": 0.5}}),
                     80 * GiB, gpus=2)
    llm, vlm = need(plan, "llm"), need(plan, "vlm")
    assert llm.params == pytest.approx(13.0e9, rel=0.01) and llm.source == "local folder"
    assert vlm.params == pytest.approx(7.57e9, rel=0.01)
    assert llm.weights == 2 * llm.params  # float16
    assert llm.budget == int(0.9 * 80 * GiB) and llm.kv == llm.budget - llm.weights - llm.activations
    assert llm.kv > 0 and not llm.problems
    # KV cache per token: 2 × 40 layers × 40 heads × 128 × 2 bytes = 800 KiB; the note states the ceiling for 16 × 4096.
    assert "ceiling 2 × 40 layers × 40 KV heads × 128 × 2 B × 16 × 4096 = 50.00 GiB" in " ".join(llm.notes)
    assert [p.gpus for p in plan.placed if p.need.where == "gpu"] == [(0,), (0,)]  # best fit: 0.5 + 0.5 on GPU 0


def test_real_size_sd15_pipeline_counts_the_model_card_figures(tmp_path):
    folder = write_model(tmp_path / "sd15", SD15)
    plan = make_plan(sections(t2i={"model": folder, "dtype": "float16", "height": 512, "width": 512,
                                   "batching": {"max_batch_size": 8}, "resources": {"num_gpus": 0.5}}), 24 * GiB)
    t2i = need(plan, "t2i")
    parts = dict(item.rsplit(" ", 1) for item in t2i.notes[0].split(":")[0].split(", "))
    assert set(parts) == {"unet", "vae", "text_encoder"}  # scheduler and tokenizer hold no weights
    from actors.memory.counting import count_pipeline_component

    unet = count_pipeline_component("diffusers", "UNet2DConditionModel", SD15["unet/config.json"])
    text = count_pipeline_component("transformers", "CLIPTextModel", SD15["text_encoder/config.json"])
    assert unet == pytest.approx(860e6, rel=0.01) and text == pytest.approx(123e6, rel=0.01)
    assert t2i.weights == 2 * t2i.params and t2i.params > unet + text
    # The VAE decodes 8 images of 512×512: 8 × 512 × 512 × 256 channels × 2 bytes × 4 live tensors.
    assert t2i.activations == 8 * 512 * 512 * 256 * 2 * 4


def test_a_4bit_awq_model_takes_between_a_quarter_and_a_half_of_its_fp16_bytes():
    from actors.known_models import KNOWN_CONFIGS
    from actors.memory.counting import count_transformers

    d = KNOWN_CONFIGS["Qwen/Qwen2-VL-7B-Instruct-AWQ"]["config.json"]
    awq, _ = count_transformers(d, "image-text", 2)
    plain, _ = count_transformers({k: v for k, v in d.items() if k != "quantization_config"}, "image-text", 2)
    assert awq.params == plain.params == pytest.approx(8.29e9, rel=0.01)
    assert plain.weight_bytes == 2 * plain.params
    assert plain.weight_bytes / 4 < awq.weight_bytes < plain.weight_bytes / 2
    assert awq.quantization == "awq 4-bit"


def test_hub_ids_that_cannot_be_read_fall_back_to_the_built_in_table_and_say_so():
    cfg = role_sections({
        "t2i": {"model": "stable-diffusion-v1-5/stable-diffusion-v1-5", "dtype": "float16", "resources": {"num_gpus": 0.2}},
        "llm": {"model": "meta-llama/Llama-2-13b-chat-hf", "resources": {"num_gpus": 0.2}},
        "vlm": {"model": "llava-hf/llava-v1.6-mistral-7b-hf", "resources": {"num_gpus": 0.2}},
        "captioner": {"model": "Salesforce/blip2-opt-2.7b", "resources": {"num_gpus": 0.2}},
        "clip": {"resources": {"num_gpus": 0}},
    })
    plan = make_plan(cfg, 80 * GiB, gpus=4)
    params = {n.group.name: n.params for n in plan.needs if n.where == "gpu"}
    assert all(n.source == "built-in table; the hub was not asked: HF_HUB_OFFLINE" for n in plan.needs if n.where == "gpu")
    assert params["llm"] == pytest.approx(13.0e9, rel=0.01) and params["vlm"] == pytest.approx(7.57e9, rel=0.01)
    # BLIP2's OPT ties its output embedding to the input one (50272 × 2560): 3.87B stored, 3.74B in memory.
    assert params["captioner"] == pytest.approx(3.87e9 - 50272 * 2560, rel=0.01)
    assert params["t2i"] == pytest.approx(860e6 + 123e6 + 83.7e6 + 304e6, rel=0.01)  # with the safety checker
    assert plan.format().count("(from the built-in table; the hub was not asked: HF_HUB_OFFLINE)") == 4


# --- the offline kit's tiny models: the planner's count equals the loaded model's ----------------

def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tiny_kit_counts_equal_the_loaded_models(tiny_llm_section, tiny_vlm_section, t2i_section,  # noqa: F811
                                                 captioner_section, clip_section):
    import open_clip
    from diffusers import AutoPipelineForText2Image
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    plan = make_plan(sections(t2i=on_gpu(t2i_section), llm=on_gpu(tiny_llm_section, backend="vllm"),
                              vlm=on_gpu(tiny_vlm_section, backend="vllm"), captioner=on_gpu(captioner_section),
                              clip=on_gpu(clip_section)), 8 * GiB)
    assert not plan.unknown
    pipe = AutoPipelineForText2Image.from_pretrained(t2i_section["model"])
    loaded_t2i = sum(_numel(c) for c in pipe.components.values() if hasattr(c, "parameters"))
    clip = open_clip.create_model(clip_section["model_name"], pretrained=clip_section["pretrained"])
    expected = {
        "t2i": loaded_t2i,
        "llm": _numel(AutoModelForCausalLM.from_pretrained(tiny_llm_section["model"])),
        "vlm": _numel(AutoModelForImageTextToText.from_pretrained(tiny_vlm_section["model"])),
        "captioner": _numel(AutoModelForImageTextToText.from_pretrained(captioner_section["model"])),
        "clip": _numel(clip),
    }
    assert {n.group.name: n.params for n in plan.needs} == expected
    assert all(n.source for n in plan.needs)
    # float32 sections: 4 bytes per parameter
    assert need(plan, "llm").weights == 4 * expected["llm"]


def test_roles_off_the_gpu_take_nothing_there(tiny_llm_section):  # noqa: F811
    plan = make_plan(sections(llm=tiny_llm_section), 1 * GiB)
    assert need(plan, "llm").where == "cpu" and plan.used(0) == 0 and plan.problems() == []


def test_a_hub_id_in_the_hugging_face_cache_is_read_from_there(tmp_path, empty_hf_cache, tiny_llm_section):  # noqa: F811
    snapshot = empty_hf_cache / "models--someone--tiny-chat" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(Path(tiny_llm_section["model"], "config.json").read_text())
    (empty_hf_cache / "models--someone--tiny-chat" / "refs").mkdir()
    (empty_hf_cache / "models--someone--tiny-chat" / "refs" / "main").write_text("a" * 40)
    from_cache = make_plan(sections(llm=on_gpu(tiny_llm_section, backend="vllm", model="someone/tiny-chat")), 8 * GiB)
    from_folder = make_plan(sections(llm=on_gpu(tiny_llm_section, backend="vllm")), 8 * GiB)
    assert need(from_cache, "llm").source == "Hugging Face cache"
    assert need(from_cache, "llm").params == need(from_folder, "llm").params > 0


def test_an_unknown_hub_id_leaves_the_plan_incomplete_and_says_why(tiny_llm_section):  # noqa: F811
    plan = make_plan(sections(llm=on_gpu(tiny_llm_section, backend="vllm", model="nobody/unknown-model")), 8 * GiB)
    assert need(plan, "llm").unknown and "not in the built-in table" in plan.unknown[0]
    assert "size unknown" in plan.format()


# --- vLLM budgets, certain and estimated problems --------------------------------------------------

def test_a_vllm_budget_too_small_for_the_weights_is_a_certain_problem(tmp_path):
    llama = write_model(tmp_path / "llama", {"config.json": LLAMA2_13B})
    plan = make_plan(sections(llm={"model": llama, "dtype": "float16", "resources": {"num_gpus": 0.5},
                                   "vllm": {"gpu_memory_utilization": 0.2, "max_model_len": 4096}}), 80 * GiB)
    (problem,) = plan.problems(certain_only=True)
    assert problem.startswith("llm: the vLLM budget 0.2 × 80.00 GiB = 16.00 GiB cannot hold its weights (24.24 GiB), let alone "
                              "the KV cache of one max_model_len (4096) sequence (3.12 GiB): short by 11.37 GiB")
    # the GPU then needs what the engine would: weights and that sequence, not the budget
    assert plan.used(0, certain=True) == need(plan, "llm").weights + 4096 * 819200


def test_a_budget_that_fits_only_without_room_for_activations_is_an_estimated_problem(tmp_path):
    llama = write_model(tmp_path / "llama", {"config.json": LLAMA2_13B})
    # 24.24 GiB weights + 3.12 GiB for one 4096-token sequence = 27.37 GiB; a budget of 27.5 GiB leaves
    # no room for the ~0.7 GiB of activations and CUDA graphs.
    plan = make_plan(sections(llm={"model": llama, "dtype": "float16", "resources": {"num_gpus": 0.5},
                                   "vllm": {"gpu_memory_utilization": 27.5 / 80, "max_model_len": 4096}}), 80 * GiB)
    assert plan.problems(certain_only=True) == []
    (problem,) = plan.problems()
    assert "less than one max_model_len (4096) sequence needs (3.12 GiB): vLLM would refuse to start" in problem


def test_best_fit_placement_and_whole_gpu_actors():
    def fake(name, num_gpus, replicas=1, budget=GiB):
        return GroupNeed(RoleGroup(name, (name,), ResourceConfig(num_gpus=num_gpus, num_replicas=replicas)), "gpu",
                         budget=budget)

    placed = place([fake("a", 0.5), fake("b", 0.7), fake("c", 0.3), fake("d", 1), fake("e", 0.5, replicas=2)], gpus=3)
    assert [(p.need.group.name, p.gpus) for p in placed] == [
        ("a", (0,)), ("b", (1,)), ("c", (1,)),  # best fit: c goes where 0.3 is left, not to the first GPU that fits
        ("d", (2,)), ("e", (0,)), ("e", ())]  # the second replica finds no GPU with 0.5 free
    plan = MemoryPlan(2 * GiB, 3, [p.need for p in placed], placed)
    assert "e (replica 2): no GPU has num_gpus 0.5 free after the actors before it" in plan.problems()
    assert plan.used(1) == 2 * GiB and not any(p.startswith("GPU 1") for p in plan.problems())
    plan.gpu_memory = 2 * GiB - 1
    assert any(p.startswith("GPU 1 (2.00 GiB): the roles need 2.00 GiB, over by 0.00 GiB: b 1.00 GiB, c 1.00 GiB")
               for p in plan.problems())


# --- the two one-GPU profiles, through the CLI ------------------------------------------------------

def run_cli(capsys, *args) -> tuple[int, str]:
    from actors.plan import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_the_24gb_profile_fits_24gib(capsys):
    rc, out = run_cli(capsys, "--config", str(REPO / "configs/one_gpu_24gb.yaml"), "--gpu-memory", "24GiB")
    assert rc == 0, out
    assert "llm+vlm+captioner [Qwen/Qwen2-VL-7B-Instruct-AWQ] (from the built-in table; the hub was not asked: HF_HUB_OFFLINE)" in out
    assert "one engine serves llm, vlm, captioner" in out and out.rstrip().endswith("Fits.")


def test_the_80gb_profile_does_not_fit_24gib_and_the_overflow_is_named(capsys):
    rc, out = run_cli(capsys, "--config", str(REPO / "configs/one_gpu_80gb.yaml"), "--gpu-memory", "24GiB")
    assert rc == 1, out
    overflow = next(line.strip() for line in out.splitlines() if line.strip().startswith("GPU 0 (24.00 GiB)"))
    assert "over by" in overflow
    for role in ("t2i", "llm", "vlm", "captioner", "clip"):
        assert f" {role} " in overflow + " "
    # the engines' budgets are fractions of 24 GiB now, too small for their weights
    assert "llm: the vLLM budget 0.45 × 24.00 GiB = 10.80 GiB cannot hold its weights" in out


def test_the_80gb_profile_fits_an_80gb_card(capsys):
    rc, out = run_cli(capsys, "--config", str(REPO / "configs/one_gpu_80gb.yaml"), "--gpu-memory", "81559MiB")
    assert rc == 0, out


def test_the_cli_refuses_a_size_without_unit_and_an_unknown_key(capsys, tmp_path):
    rc, out = run_cli(capsys, "--config", str(REPO / "configs/one_gpu_24gb.yaml"), "--gpu-memory", "24")
    assert rc == 2 and "give a number and a unit" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm:\n  modell: x\n")
    rc, out = run_cli(capsys, "--config", str(bad), "--gpu-memory", "24GiB")
    assert rc == 2 and "llm.modell: unknown key" in out


# --- the batch job's start-up check ---------------------------------------------------------------

def _profile(name: str):
    from agents.config import ArpoConfig
    from core.config import load_config

    return load_config(ArpoConfig, REPO / "configs" / name)


def test_plan_problems_of_both_profiles_on_24gib():
    from actors.memory.plan import plan_problems

    assert plan_problems(_profile("one_gpu_24gb.yaml"), 24 * GiB) == []
    problems = plan_problems(_profile("one_gpu_80gb.yaml"), 24 * GiB)
    assert problems[-1].startswith("GPU 0 (24.00 GiB): the roles need 61.20 GiB, over by 37.20 GiB: t2i 7.05 GiB, llm 28.06 GiB")


def test_start_up_check_refuses_certain_overflows_and_passes_a_fitting_profile():
    check = gpu_memory_check(_profile("one_gpu_80gb.yaml"), 1.0, [24 * GiB])
    assert any(p.startswith("GPU 0 (24.00 GiB): weights and vLLM budgets alone need") for p in check.problems)
    check = gpu_memory_check(_profile("one_gpu_24gb.yaml"), 1.0, [24 * GiB])
    assert check.problems == [] and check.warnings == []
    assert check.info and check.info[0].startswith("GPU memory plan: the roles fit 1 GPU(s) of 24.00 GiB")


def test_start_up_check_is_skipped_when_the_gpu_memory_is_unknown_or_elsewhere():
    cfg = _profile("one_gpu_80gb.yaml")
    for memories, why in ([], "cannot tell its GPUs' memory"), ([80 * GiB], "the cluster has 2 GPUs, this machine sees 1"):
        check = gpu_memory_check(cfg, 2.0 if memories else 1.0, memories)
        assert check.problems == [] and why in check.info[0]


@pytest.mark.parametrize("ref, parts", [
    # published sizes: SDXL's UNet 2.6B with CLIP-L and OpenCLIP bigG; SD3.5-medium's 2.5B MMDiT-X with two
    # CLIPs and T5-XXL (4.76B); FLUX.1-dev's 12B transformer with CLIP-L and T5-XXL
    ("stabilityai/stable-diffusion-xl-base-1.0",
     {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840, "vae": 83_653_863}),
    ("stabilityai/stable-diffusion-3.5-medium",
     {"transformer": 2_469_663_936, "text_encoder": 123_650_304, "text_encoder_2": 694_659_840,
      "text_encoder_3": 4_762_310_656, "vae": 83_819_683}),
    ("black-forest-labs/FLUX.1-dev",
     {"transformer": 11_901_408_320, "text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656, "vae": 83_819_683}),
    ("PixArt-alpha/PixArt-XL-2-1024-MS", {"transformer": 611_349_152, "text_encoder": 4_762_310_656, "vae": 83_653_863}),
])
def test_the_t2i_targets_in_the_built_in_table_have_their_published_sizes(ref, parts):
    """T5's encoder embedding is its shared one (counted once) and SD3.5's positional table is a stored
    buffer (counted: it is in the weights file and on the GPU)."""
    from actors.known_models import KNOWN_CONFIGS
    from actors.memory.counting import count_pipeline_component

    entry = KNOWN_CONFIGS[ref]
    counted = {name: count_pipeline_component(*entry["model_index.json"][name], entry[f"{name}/config.json"])
               for name in parts}
    assert counted == parts


@pytest.mark.parametrize("config, gpu, t2i_weights", [
    ("one_gpu_24gb_sdxl.yaml", "24GiB", "6.46 GiB"),
    ("one_gpu_80gb_sd35.yaml", "81559MiB", "15.15 GiB"),
    ("one_gpu_80gb_flux1.yaml", "81559MiB", "31.42 GiB"),
])
def test_each_target_profile_fits_its_gpu(capsys, config, gpu, t2i_weights):
    rc, out = run_cli(capsys, "--config", str(REPO / "configs" / config), "--gpu-memory", gpu)
    assert rc == 0, out
    t2i_row = next(line for line in out.splitlines() if line.strip().startswith("t2i "))
    assert t2i_weights in t2i_row and "Fits." in out
