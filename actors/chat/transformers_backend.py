"""transformers backend: the CPU (or single-GPU) fallback when vLLM is not available.

Concurrent chats are coalesced by actors.batching.MicroBatcher into one left-padded
``generate`` call, which runs in a worker thread under the batcher's lock (generation
is not re-entrant) while the event loop keeps accepting requests. Sampling is done per
row with its own seed (actors.chat.seeded_sampling), so an answer is reproducible
whatever shares its batch. Vision requests are grouped by image count before batching.
"""
from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from actors.batching import MicroBatcher
from actors.chat.base import ChatBackend, ChatResult
from actors.chat.messages import ChatMessage, all_images, count_images
from actors.chat.prompt import ChatPrompter, as_id_list
from actors.chat.seeded_sampling import SeededRowSampler
from actors.config import LLMConfig, SamplingConfig
from actors.torch_device import resolve_device, resolve_dtype


@dataclass
class _Job:
    messages: Sequence[ChatMessage]
    sampling: SamplingConfig


class TransformersChatBackend(ChatBackend):
    name = "transformers"

    def __init__(self, cfg: LLMConfig, vision: bool):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

        if vision and cfg.gguf_file:
            raise ValueError("gguf_file is supported for text models only (the LLM role), not the VLM")
        self.vision = vision
        self.device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, self.device, gpu_default="bfloat16")
        self.prompter = ChatPrompter(cfg.model, vision=vision, tokenizer=cfg.tokenizer,
                                     chat_template=cfg.chat_template, gguf_file=cfg.gguf_file)
        loader = AutoModelForImageTextToText if vision else AutoModelForCausalLM
        kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
        self.model = loader.from_pretrained(cfg.model, dtype=dtype, **kwargs).to(self.device).eval()
        self._torch = torch
        tok = self.prompter.tokenizer
        tok.padding_side = "left"  # decoder-only batching: pad on the left so answers start aligned
        self.eos_ids = sorted(set(as_id_list(self.model.generation_config.eos_token_id)) | set(self.prompter.stop_token_ids))
        pad = tok.pad_token_id if tok.pad_token_id is not None else (self.eos_ids[0] if self.eos_ids else None)
        if pad is None:
            raise ValueError(f"model {cfg.model!r}: tokenizer has neither a pad nor an eos token; batching needs one")
        if tok.pad_token_id is None:
            tok.pad_token_id = pad
        self.pad_id = pad
        # generate() fills every field our GenerationConfig leaves unset from the checkpoint's
        # generation_config.json (Qwen2-VL-Instruct: repetition_penalty 1.05, top_k 1, ...): the role's own
        # sampling is all that applies, as on vLLM, so only the token ids are kept.
        self.model.generation_config = GenerationConfig(bos_token_id=self.model.generation_config.bos_token_id,
                                                        eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id)
        self.batcher: MicroBatcher[_Job, ChatResult] = MicroBatcher(
            self._run_batch, cfg.batching.max_batch_size, cfg.batching.max_wait_ms, name="chat")

    async def chat(self, messages: Sequence[ChatMessage], sampling: SamplingConfig) -> ChatResult:
        return await self.batcher.submit(_Job(messages, sampling))

    def stats(self) -> dict:
        return {"batching": self.batcher.stats.as_dict()}

    # --- runs in the batcher's worker thread -------------------------------------------
    def _run_batch(self, jobs: list[_Job]) -> list[ChatResult]:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            groups[count_images(job.messages)].append(i)
        results: list[ChatResult | None] = [None] * len(jobs)
        for idx in groups.values():
            for i, res in zip(idx, self._generate([jobs[i] for i in idx])):
                results[i] = res
        return results  # type: ignore[return-value]

    def _encode(self, prompts: list[str], jobs: list[_Job]):
        add_special = self.prompter.adds_special_tokens(prompts[0])
        images = [all_images(j.messages) for j in jobs]
        if self.vision and images[0]:
            return self.prompter.processor(text=prompts, images=images, padding=True, return_tensors="pt",
                                           add_special_tokens=add_special)
        return self.prompter.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=add_special)

    def _generate(self, jobs: list[_Job]) -> list[ChatResult]:
        from transformers import GenerationConfig, LogitsProcessorList

        torch = self._torch
        prompts = [self.prompter.render(j.messages) for j in jobs]
        inputs = self._encode(prompts, jobs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        seeds = [j.sampling.seed if j.sampling.seed is not None else secrets.randbits(63) for j in jobs]
        sampler = SeededRowSampler([j.sampling.temperature for j in jobs], [j.sampling.top_p for j in jobs], seeds)
        gen_cfg = GenerationConfig(max_new_tokens=max(j.sampling.max_new_tokens for j in jobs), do_sample=False,
                                   num_beams=1, eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id)
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=gen_cfg, logits_processor=LogitsProcessorList([sampler]))
        new_tokens = out[:, inputs["input_ids"].shape[1]:].tolist()
        prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for job, toks, plen in zip(jobs, new_tokens, prompt_lens):
            toks = toks[: job.sampling.max_new_tokens]  # the batch ran to its longest request's limit
            for k, t in enumerate(toks):
                if t in self.eos_ids:
                    toks = toks[:k]
                    break
            text = self.prompter.tokenizer.decode(toks, skip_special_tokens=True)
            results.append(ChatResult(text=text, prompt_tokens=int(plen), completion_tokens=len(toks), token_ids=tuple(toks)))
        return results
