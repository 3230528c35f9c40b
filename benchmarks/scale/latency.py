"""The latency model of the simulated cluster: what each role's GPU work would cost, and the
ideal throughput those costs allow.

SIMULATION. Nothing here ran on a GPU. Every figure is either a published measurement or
derived from published model sizes and GPU datasheets with an assumed efficiency; each
carries its source in :data:`SOURCES` (also printed in docs/scale.md). Uncertain figures
are assumptions: the benchmark's ``--latency-scale`` re-runs with every cost ×0.5 or ×2.

Two cost shapes:

* :class:`BatchedCost` — a role behind a MicroBatcher (T2I, CLIP, captioner): one call of
  batch size b costs ``a + c·b`` seconds on a whole GPU.
* :class:`EngineCost` — a continuous-batching chat engine (vLLM): a request's prompt costs
  ``prefill_s_per_token`` per prompt token (plus ``vision_s`` per image) of engine time,
  during which decoding pauses; then every decode step of ``n`` running sequences costs
  ``t(n) = t0 + t1·n`` and gives each of them one token. At most ``max_seqs`` sequences
  run at once (vLLM's ``max_num_seqs``, further limited by how many contexts the KV cache
  holds).

GPU sharing: a replica holding ``num_gpus = f < 1`` runs at ``f`` of the GPU's speed (a
static partition, as with MIG). That is exact when every tenant of the GPU is busy and
pessimistic when its neighbours idle; it keeps a GPU's total capacity what the published
figure says whatever the placement.

Time dilation: every cost is multiplied by ``dilation`` (k) and so are the batchers' waits
(``max_wait_ms``), so simulated throughput = real throughput / k. Per-call overheads that
are not latency-model sleeps (Ray RPCs, the driver's own work) are not dilated: they are
what is measured.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Optional


@dataclass(frozen=True)
class BatchedCost:
    """``a + c·b`` seconds for a batch of ``b`` on a whole GPU."""

    a_s: float
    c_s: float

    def seconds(self, b: int, share: float = 1.0) -> float:
        return (self.a_s + self.c_s * b) / share

    def scaled(self, factor: float) -> "BatchedCost":
        return BatchedCost(self.a_s * factor, self.c_s * factor)


@dataclass(frozen=True)
class EngineCost:
    """A continuous-batching chat engine on a whole GPU (see the module docstring)."""

    t0_s: float  # decode step, fixed part (weights read once per step)
    t1_s: float  # decode step, per running sequence (its KV cache read + its compute)
    prefill_s_per_token: float
    vision_s: float  # per image in the prompt (vision tower), 0 for a text model
    image_tokens: int  # prompt tokens one image becomes
    kv_tokens: int  # KV cache capacity in tokens
    max_num_seqs: int  # the engine's own limit (vLLM max_num_seqs)
    chars_per_token: float = 4.0

    def step_s(self, n: int, share: float = 1.0) -> float:
        return (self.t0_s + self.t1_s * n) / share

    def prefill_s(self, prompt_tokens: int, images: int = 0, share: float = 1.0) -> float:
        return (self.prefill_s_per_token * prompt_tokens + self.vision_s * images) / share

    def seq_cap(self, mean_context_tokens: float) -> int:
        """Sequences that run at once: max_num_seqs, or fewer when their KV caches do not fit."""
        return max(1, min(self.max_num_seqs, int(self.kv_tokens // max(mean_context_tokens, 1.0))))

    def scaled(self, factor: float) -> "EngineCost":
        return replace(self, t0_s=self.t0_s * factor, t1_s=self.t1_s * factor,
                       prefill_s_per_token=self.prefill_s_per_token * factor, vision_s=self.vision_s * factor)


@dataclass(frozen=True)
class AnswerTokens:
    """Completion tokens of the chat answers (assumptions: the stand-in texts have about these lengths)."""

    describe: int = 150  # VLM: content or style description (B.5 / B.6)
    differences: int = 150  # LLM: differences of one aspect (B.8)
    propose: int = 60  # LLM: a python list of fragments (B.3)
    other: int = 100  # anything else (re-asks; vanilla compare)


@dataclass(frozen=True)
class LatencyModel:
    """Costs of the five roles of configs/gpu_cluster.yaml, on the GPUs of cluster.yaml."""

    t2i: BatchedCost
    clip_text: BatchedCost
    clip_image: BatchedCost
    captioner: BatchedCost
    llm: EngineCost
    vlm: EngineCost
    answers: AnswerTokens = field(default_factory=AnswerTokens)
    dilation: float = 1.0  # k: every cost (and batching wait) × k

    def scaled(self, factor: float) -> "LatencyModel":
        """Every cost × ``factor`` (the sensitivity check); the dilation is unchanged."""
        return replace(self, t2i=self.t2i.scaled(factor), clip_text=self.clip_text.scaled(factor),
                       clip_image=self.clip_image.scaled(factor), captioner=self.captioner.scaled(factor),
                       llm=self.llm.scaled(factor), vlm=self.vlm.scaled(factor))

    def scaled_roles(self, factors: dict[str, float]) -> "LatencyModel":
        """Each role's costs × its factor (``clip`` scales text and image encodes)."""
        f = {r: factors.get(r, 1.0) for r in ("t2i", "llm", "vlm", "captioner", "clip")}
        return replace(self, t2i=self.t2i.scaled(f["t2i"]), clip_text=self.clip_text.scaled(f["clip"]),
                       clip_image=self.clip_image.scaled(f["clip"]), captioner=self.captioner.scaled(f["captioner"]),
                       llm=self.llm.scaled(f["llm"]), vlm=self.vlm.scaled(f["vlm"]))

    def with_dilation(self, k: float) -> "LatencyModel":
        if not k > 0:
            raise ValueError(f"dilation must be positive, got {k}")
        return replace(self, dilation=k)

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- published figures

# NVIDIA datasheets (dense, no sparsity).
A10_FP16_TFLOPS = 125.0  # NVIDIA A10 datasheet: FP16 Tensor Core 125 TFLOPS (250 with sparsity)
A10_MEM_GBPS = 600.0  # NVIDIA A10 datasheet: 600 GB/s GDDR6
L40S_FP16_TFLOPS = 362.05  # NVIDIA L40S datasheet: FP16 Tensor Core 362.05 TFLOPS (733 with sparsity)
L40S_MEM_GBPS = 864.0  # NVIDIA L40S datasheet: 864 GB/s GDDR6
L40S_MEM_GB = 48.0

# Assumed achieved fractions of peak (ranges in SOURCES; the sensitivity run covers them).
BW_EFFICIENCY = 0.7  # memory-bound decode reaches ~70% of peak bandwidth
FLOP_EFFICIENCY_LARGE = 0.5  # large GEMMs (prefill) reach ~50% of tensor peak
FLOP_EFFICIENCY_SMALL = 0.4  # ViT encoders at modest batch in eager PyTorch ~40%

# SD1.5 fp16 512x512, diffusers with PyTorch 2.0 SDPA, NVIDIA A10, 50 steps, seconds per batch:
# batch 4: 10.01, batch 8: 19.53, batch 16: 38.31 (diffusers docs, optimization/torch2.0, v0.14-v0.15
# table "time reported in seconds", PR huggingface/diffusers#2764; same numbers in huggingface
# diffusers/tools plot_bench.py). Least-squares line: 0.62 s + 2.357 s per image for 50 steps.
SD15_A10_50STEPS = ((4, 10.01), (8, 19.53), (16, 38.31))


def fit_line(points) -> tuple[float, float]:
    """Least-squares (intercept, slope) of (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx
    return my - slope * mx, slope


def sd15_a10(steps: int) -> BatchedCost:
    """SD1.5 on an A10 at ``steps`` denoising steps, scaled from the 50-step measurements.

    Scaling the whole call by steps/50 also scales the text encoder and VAE decode, which do
    not depend on the steps: at 25 steps this underestimates a call by their share (a few %)."""
    a, c = fit_line(SD15_A10_50STEPS)
    return BatchedCost(a * steps / 50, c * steps / 50)


def clip_vit_l14_a10() -> tuple[BatchedCost, BatchedCost]:
    """CLIP ViT-L/14 fp16 on an A10: (text, image) encode costs.

    FLOPs per input from open_clip docs/model_profile.csv (ViT-L-14: image 162.03 GFLOPs at 224 px,
    text 13.3 GFLOPs), at FLOP_EFFICIENCY_SMALL of the A10's FP16 peak; a fixed 5 ms per forward
    (assumed: kernel launches of a 24-layer / 12-layer transformer at small batch)."""
    eff = A10_FP16_TFLOPS * 1e12 * FLOP_EFFICIENCY_SMALL
    return BatchedCost(0.005, 13.3e9 / eff), BatchedCost(0.005, 162.03e9 / eff)


def blip2_opt27b_a10(max_new_tokens: int = 30) -> BatchedCost:
    """BLIP2 OPT-2.7b fp16 captioning on an A10 (derived; assumption).

    a: ``max_new_tokens`` greedy decode steps, each reading OPT-2.7b's 5.4 GB of fp16 weights at
    BW_EFFICIENCY of 600 GB/s (a batch runs until its longest caption ends).
    c: per image, the EVA ViT-g/14 vision encoder (~1.0e9 parameters x 257 tokens x 2 FLOPs) plus
    OPT prefill of 32 query tokens and the image's share of decode compute (2 x 2.7e9 FLOPs per token)."""
    step = 2.7e9 * 2 / (A10_MEM_GBPS * 1e9 * BW_EFFICIENCY)
    eff = A10_FP16_TFLOPS * 1e12 * FLOP_EFFICIENCY_SMALL
    per_image = (2 * 1.0e9 * 257 + 2 * 2.7e9 * (32 + max_new_tokens)) / eff
    return BatchedCost(step * max_new_tokens, per_image)


def _kv_budget(weights_gb: float, gpu_memory_utilization: float, overhead_gb: float = 2.0) -> float:
    """Bytes left for the KV cache: vLLM's share of an L40S minus weights and activations (assumed 2 GB)."""
    return (L40S_MEM_GB * gpu_memory_utilization - weights_gb - overhead_gb) * 1e9


def llama2_13b_l40s(max_num_seqs: int, gpu_memory_utilization: float, mean_context: float = 500) -> EngineCost:
    """Llama-2-13b-chat fp16 served by vLLM on an L40S (derived; assumption).

    t0: 26 GB of weights read per decode step at BW_EFFICIENCY of 864 GB/s (~43 ms).
    t1: per running sequence, its KV cache (40 layers x 2 x 5120 x 2 bytes = 819 KB per token) over
    ``mean_context`` tokens at the same bandwidth, plus 26 GFLOPs of compute at FLOP_EFFICIENCY_LARGE.
    Prefill: 26 GFLOPs per prompt token at FLOP_EFFICIENCY_LARGE of 362 TFLOPS (~0.14 ms/token).
    KV capacity: (48 GB x gpu_memory_utilization - 26 GB - 2 GB) / 819 KB per token."""
    bw = L40S_MEM_GBPS * 1e9 * BW_EFFICIENCY
    flops = L40S_FP16_TFLOPS * 1e12 * FLOP_EFFICIENCY_LARGE
    kv_per_token = 2 * 40 * 5120 * 2
    return EngineCost(t0_s=26e9 / bw, t1_s=kv_per_token * mean_context / bw + 26e9 / flops,
                      prefill_s_per_token=26e9 / flops, vision_s=0.0, image_tokens=0,
                      kv_tokens=int(_kv_budget(26.0, gpu_memory_utilization) // kv_per_token), max_num_seqs=max_num_seqs)


def llava_next_mistral7b_l40s(max_num_seqs: int, gpu_memory_utilization: float, mean_context: float = 3100,
                               image_tokens: int = 2880) -> EngineCost:
    """LLaVA-v1.6-Mistral-7B fp16 served by vLLM on an L40S (derived; assumption).

    Weights ~15.1 GB (Mistral-7B 7.24e9 parameters + CLIP ViT-L/14-336 + projector, fp16).
    t0: weights per step at BW_EFFICIENCY of 864 GB/s (~25 ms). KV per token with grouped-query
    attention: 32 layers x 2 x 8 heads x 128 x 2 bytes = 131 KB. An image: ``image_tokens`` prompt
    tokens (LLaVA-NeXT 'anyres': up to 5 crops x 576 = 2880) and its vision tower pass (5 crops x
    381.92 GFLOPs, open_clip model_profile.csv ViT-L-14-336). Prefill 2 x 7.24e9 FLOPs per token."""
    bw = L40S_MEM_GBPS * 1e9 * BW_EFFICIENCY
    flops = L40S_FP16_TFLOPS * 1e12 * FLOP_EFFICIENCY_LARGE
    kv_per_token = 2 * 32 * 8 * 128 * 2
    return EngineCost(t0_s=15.1e9 / bw, t1_s=kv_per_token * mean_context / bw + 2 * 7.24e9 / flops,
                      prefill_s_per_token=2 * 7.24e9 / flops, vision_s=5 * 381.92e9 / flops, image_tokens=image_tokens,
                      kv_tokens=int(_kv_budget(15.1, gpu_memory_utilization) // kv_per_token), max_num_seqs=max_num_seqs)


def default_model(cfg, dilation: float = 1.0) -> LatencyModel:
    """The latency model for an ArpoConfig like configs/gpu_cluster.yaml (its steps, engine limits)."""
    clip_text, clip_image = clip_vit_l14_a10()
    return LatencyModel(
        t2i=sd15_a10(cfg.t2i.num_inference_steps),
        clip_text=clip_text, clip_image=clip_image,
        captioner=blip2_opt27b_a10(cfg.captioner.max_new_tokens),
        llm=llama2_13b_l40s(cfg.llm.vllm.max_num_seqs, cfg.llm.vllm.gpu_memory_utilization),
        vlm=llava_next_mistral7b_l40s(cfg.vlm.vllm.max_num_seqs, cfg.vlm.vllm.gpu_memory_utilization),
        dilation=dilation,
    )


#: Where each number comes from (printed in docs/scale.md and the benchmark's output).
SOURCES = {
    "t2i": "SD1.5 fp16 512x512 on NVIDIA A10, diffusers + PyTorch 2.0 SDPA, 50 steps: 10.01 s (batch 4), "
           "19.53 s (batch 8), 38.31 s (batch 16) — Hugging Face diffusers docs 'Accelerated PyTorch 2.0 "
           "support in Diffusers' (docs/source/en/optimization/torch2.0.mdx, v0.14/v0.15, table in seconds; "
           "huggingface/diffusers PR #2764). Line fit 0.62 s + 2.357 s/image, scaled to the config's 25 steps. "
           "A10G (AWS g5) taken as an A10. Measured, not assumed (the steps scaling is an approximation).",
    "clip": "CLIP ViT-L/14: 162.03 GFLOPs per 224 px image, 13.3 GFLOPs per text (open_clip docs/model_profile.csv); "
            "A10 FP16 tensor peak 125 TFLOPS (NVIDIA A10 datasheet) at an ASSUMED 40% (range 20-60%); fixed 5 ms "
            "per forward ASSUMED (range 2-10 ms).",
    "captioner": "BLIP2 OPT-2.7b: DERIVED, ASSUMPTION — 30 decode steps each reading 5.4 GB of fp16 weights at 70% "
                 "of the A10's 600 GB/s (NVIDIA A10 datasheet); per image the ViT-g/14 encoder (~1.0e9 params x "
                 "257 tokens) and OPT prefill/decode FLOPs at 40% of 125 TFLOPS. No published latency found; range x0.5-x2.",
    "llm": "Llama-2-13b fp16 on vLLM, NVIDIA L40S (864 GB/s, 362 TFLOPS FP16, 48 GB: NVIDIA L40S datasheet): DERIVED, "
           "ASSUMPTION — decode step = 26 GB weights / (70% of 864 GB/s) + per sequence its KV cache (819 KB/token "
           "x 500 tokens) + 26 GFLOPs at 50% of peak; prefill 26 GFLOPs/token at 50% of peak; KV capacity from "
           "gpu_memory_utilization 0.9. Continuous batching as in vLLM (Kwon et al., SOSP 2023). Range x0.5-x2.",
    "vlm": "LLaVA-v1.6-Mistral-7B fp16 on vLLM, L40S: DERIVED, ASSUMPTION — 15.1 GB weights per decode step at 70% of "
           "864 GB/s; GQA KV 131 KB/token x 3100 tokens; an image = 2880 prompt tokens (LLaVA-NeXT anyres, 5 x 576) "
           "plus 5 x 381.92 GFLOPs of ViT-L/14-336 (open_clip model_profile.csv); prefill 14.5 GFLOPs/token at 50%. "
           "Range x0.5-x2 (image tokens 576-2880).",
    "answers": "Completion lengths ASSUMED: descriptions 150 tokens, differences 150, fragment lists 60; ~4 characters "
               "per token (English rule of thumb) for prompt text.",
    "gpu_share": "A replica with num_gpus f runs at f of the GPU's speed (static partition) — ASSUMPTION; "
                 "pessimistic when neighbours on the GPU idle.",
}


# --------------------------------------------------------------------------- ideal throughput

@dataclass
class RoleDemand:
    """What one image asks of a role, measured from the stand-ins' counters (per image)."""

    items: float = 0.0  # batched roles: items; chat: requests
    text_items: float = 0.0  # CLIP only
    image_items: float = 0.0  # CLIP only
    prompt_tokens: float = 0.0  # chat: prompt tokens (images included)
    completion_tokens: float = 0.0  # chat
    images: float = 0.0  # chat: images in prompts (vision tower passes)


@dataclass
class RoleCapacity:
    role: str
    replicas: int
    share: float  # GPU fraction per replica
    busy_s_per_image: float  # GPU seconds one image needs at the role's best batching, per replica-share
    images_per_s: float  # replicas / busy_s_per_image (real time, before dilation)
    note: str = ""


def batched_capacity(role: str, cost: BatchedCost, replicas: int, share: float, items_per_image: float,
                     best_batch: int) -> RoleCapacity:
    per_item = cost.seconds(best_batch, share) / best_batch
    busy = per_item * items_per_image
    return RoleCapacity(role, replicas, share, busy, replicas / busy if busy > 0 else math.inf,
                        f"batch {best_batch}: {per_item * 1000:.1f} ms/item")


def clip_capacity(text: BatchedCost, image: BatchedCost, replicas: int, share: float, demand: RoleDemand,
                  best_batch: int) -> RoleCapacity:
    """Text and image encodes share the replica's GPU (one lock in the stand-in)."""
    busy = (text.seconds(best_batch, share) / best_batch * demand.text_items
            + image.seconds(best_batch, share) / best_batch * demand.image_items)
    return RoleCapacity("clip", replicas, share, busy, replicas / busy if busy > 0 else math.inf, f"batch {best_batch}")


def engine_capacity(role: str, cost: EngineCost, replicas: int, share: float, demand: RoleDemand) -> RoleCapacity:
    """At saturation the engine runs ``seq_cap`` sequences: each token costs t(n)/n, each prompt its prefill."""
    if demand.items <= 0:
        return RoleCapacity(role, replicas, share, 0.0, math.inf, "unused")
    mean_context = (demand.prompt_tokens + demand.completion_tokens) / demand.items
    n = cost.seq_cap(mean_context)
    decode = demand.completion_tokens * cost.step_s(n, share) / n
    prefill = (cost.prefill_s_per_token * demand.prompt_tokens + cost.vision_s * demand.images) / share
    busy = decode + prefill
    return RoleCapacity(role, replicas, share, busy, replicas / busy if busy > 0 else math.inf,
                        f"{n} sequences at once: {cost.step_s(n, share) * 1000:.0f} ms/step")


@dataclass
class Ideal:
    images_per_s: float  # real time
    bound: str  # "concurrency" or the busiest role
    concurrency_bound: float
    role_bound: float
    critical_path_s: float
    capacities: list[RoleCapacity]
    shared: Optional[dict] = None  # --gpu-sharing time: the linear programme's bound, node loads and split

    def as_dict(self) -> dict:
        out = {"images_per_s": self.images_per_s, "bound": self.bound, "concurrency_bound": self.concurrency_bound,
               "role_bound": self.role_bound, "critical_path_s": self.critical_path_s,
               "capacities": [asdict(c) for c in self.capacities]}
        if self.shared is not None:
            out["shared"] = self.shared
        return out


def ideal_throughput(concurrency: int, critical_path_s: float, capacities: list[RoleCapacity]) -> Ideal:
    """X_ideal = min(C / T_path, min over roles of replicas / busy-seconds-per-image) (images per real second).

    The first term: C optimisations, each needing at least T_path seconds when nothing queues.
    The second: each role's replicas can serve at most 1/busy images per second at its best batching.
    (Operational-analysis asymptotic bounds: no real system exceeds either; near the knee,
    C ~ T_path x role bound, even a perfect system stays below both.)"""
    conc = concurrency / critical_path_s if critical_path_s > 0 else math.inf
    busiest = min(capacities, key=lambda c: c.images_per_s)
    role_bound = busiest.images_per_s
    bound = "concurrency" if conc < role_bound else busiest.role
    return Ideal(min(conc, role_bound), bound, conc, role_bound, critical_path_s, capacities)


@dataclass(frozen=True)
class PathStep:
    name: str
    seconds: float


def critical_path(model: LatencyModel, cfg, shares: dict[str, float], *, max_steps: int, candidates: int,
                  describe_prompt_tokens: int, differences_prompt_tokens: int, propose_prompt_tokens: int,
                  image_batch_first: int = 2) -> list[PathStep]:
    """The stages one image passes through in an empty system (real seconds, batch 1, no waits).

    ``candidates`` per iteration are scored in rounds of candidates, candidates-1, ... texts
    (Algorithm 8, every candidate accepted by the stand-in CLIP). Enhanced framework, one seed."""
    a = model.answers
    steps = [PathStep("caption", model.captioner.seconds(1, shares["captioner"]))]
    vlm, llm = model.vlm, model.llm
    for t in range(max_steps + 1):
        steps.append(PathStep(f"t2i[{t}]", model.t2i.seconds(1, shares["t2i"])))
        if t == 0:  # generated + reference image in one batch, and the prompt's text, on one GPU
            clip = model.clip_image.seconds(image_batch_first, shares["clip"]) + model.clip_text.seconds(1, shares["clip"])
        else:  # the prompt was scored in the last selection round and the reference is cached
            clip = model.clip_image.seconds(1, shares["clip"])
        steps.append(PathStep(f"clip[{t}]", clip))
        if t == max_steps:
            break
        n_desc = 4 if t == 0 else 2
        steps.append(PathStep(f"describe[{t}]", n_desc * vlm.prefill_s(describe_prompt_tokens, 1, shares["vlm"])
                              + a.describe * vlm.step_s(n_desc, shares["vlm"])))
        steps.append(PathStep(f"diff[{t}]", 2 * llm.prefill_s(differences_prompt_tokens, 0, shares["llm"])
                              + a.differences * llm.step_s(2, shares["llm"])))
        steps.append(PathStep(f"propose[{t}]", 2 * llm.prefill_s(propose_prompt_tokens, 0, shares["llm"])
                              + a.propose * llm.step_s(2, shares["llm"])))
        steps.append(PathStep(f"select[{t}]", sum(model.clip_text.seconds(k, shares["clip"])
                                                  for k in range(candidates, 0, -1))))
    return steps


def efficiency(measured_images_per_s: float, ideal: Ideal) -> Optional[float]:
    return measured_images_per_s / ideal.images_per_s if ideal.images_per_s > 0 else None
