"""Stand-in models for the simulated cluster: the real role servers (T2IServer, ClipServer,
CaptionerServer, LLMServer, VLMServer: their batchers, caches, validation and interfaces) with
the model compute replaced by the latency model (benchmarks/scale/latency.py): a call sleeps
for what the GPU work would take, then returns a cheap stand-in output.

STAND-IN OUTPUTS — treat them as random-weight roles: noise images from a seeded RNG, fixed
caption and description texts, prompt fragments from a fixed vocabulary, CLIP embeddings made
up so that a longer prompt scores higher (every candidate is accepted, so every image runs
exactly ``agent.max_steps`` iterations: a fixed amount of work per image; the stop rules are
not exercised). None of it means anything; it exists so the real agent, checkpointer,
writer and report run at the rates a GPU cluster would impose.

Job tags: so that two batch jobs sharing these actors can be told apart at the roles, a
job's reference images carry their job number in their first row (:func:`tag_image`); the
captioner writes it into the caption (``scalejob<N>``), the T2I stand-in into its images'
first row, the VLM into its descriptions; each stand-in counts, per batch (per engine step
for chat), the items of each job.
"""
from __future__ import annotations

import asyncio
import collections
import math
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from actors.captioner import CaptionerServer
from actors.chat.base import ChatBackend, ChatResult
from actors.chat.messages import ChatMessage
from actors.chat.server import LLMServer, VLMServer
from actors.clip_scorer import ClipServer
from actors.prompt_budget import PromptBudget
from actors.t2i import T2IServer
from agents.prompts import REASK
from benchmarks.scale.faults import load_pause
from benchmarks.scale.gpu_clock import NodeGPU
from benchmarks.scale.latency import AnswerTokens, BatchedCost, EngineCost

TAG_RE = re.compile(r"scalejob(\d+)")
EMBED_DIM = 32
OUTPUT_SIDE = 32  # stand-in images are 32x32 by default (the latency model charges for the config's 512x512)
GENERATED_MARK = 0x77  # second row of every stand-in T2I image: tells CLIP's stand-in it is not a reference


# --------------------------------------------------------------------------- job tags

def tag_image(image: np.ndarray, job: int) -> np.ndarray:
    """A copy of ``image`` whose first row says ``job`` (0..14): every pixel 16*job + 5."""
    if not 0 <= job <= 14:
        raise ValueError("job tags are 0..14")
    out = np.array(image, dtype=np.uint8, copy=True)
    out[0, :, :] = 16 * job + 5
    return out


def image_job(image: np.ndarray) -> Optional[int]:
    row = np.asarray(image)[0]
    v = int(row.flat[0])
    if v % 16 == 5 and (row == v).all():
        return v // 16
    return None


def text_job(text: str) -> Optional[int]:
    m = TAG_RE.search(text)
    return int(m.group(1)) if m else None


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode("utf-8"))


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


# --------------------------------------------------------------------------- bookkeeping

class Ledger:
    """What a stand-in did: calls, batch sizes, items per job, time asleep (busy), sleep overshoot."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.items = 0
        self.sizes: collections.Counter = collections.Counter()
        self.job_items: collections.Counter = collections.Counter()
        self.mixed_calls = 0  # calls holding items of more than one job
        self.busy_s = 0.0  # latency-model time slept (simulated clock)
        self.overshoot_s = 0.0  # real sleep minus asked sleep
        self.first = self.last = None

    def record(self, jobs: Sequence[Optional[int]], asked: float, slept: float) -> None:
        now = time.time()
        with self.lock:
            self.calls += 1
            self.items += len(jobs)
            self.sizes[len(jobs)] += 1
            self.job_items.update(j for j in jobs if j is not None)
            if len({j for j in jobs if j is not None}) > 1:
                self.mixed_calls += 1
            self.busy_s += asked
            self.overshoot_s += max(0.0, slept - asked)
            self.first = now if self.first is None else self.first
            self.last = now

    def as_dict(self) -> dict:
        with self.lock:
            sizes = dict(sorted(self.sizes.items()))
            return {"calls": self.calls, "items": self.items, "mean_batch": self.items / self.calls if self.calls else 0.0,
                    "max_batch": max(sizes) if sizes else 0, "batch_sizes": {str(k): v for k, v in sizes.items()},
                    "job_items": {str(k): v for k, v in sorted(self.job_items.items())}, "mixed_calls": self.mixed_calls,
                    "busy_s": round(self.busy_s, 4), "overshoot_s": round(self.overshoot_s, 4)}


def _sleep(seconds: float) -> float:
    start = time.perf_counter()
    if seconds > 0:
        time.sleep(seconds)
    return time.perf_counter() - start


def _busy(cost: BatchedCost, b: int, share: float, dilation: float, gpu: Optional[NodeGPU]) -> tuple[float, float]:
    """Spend one batch's GPU time: (asked, slept) in real seconds. ``partition``: sleep the cost at this
    replica's share. ``time`` (a NodeGPU): hand the whole-GPU cost to the node's clock, which serves it beside
    the other calls on that GPU; what it took is both the asked and the slept time (no sleep overshoot
    to tell apart)."""
    if gpu is None:
        asked = cost.seconds(b, share) * dilation
        return asked, _sleep(asked)
    took = gpu.run(cost.seconds(b, 1.0) * dilation)
    return took, took


# --------------------------------------------------------------------------- batched roles

class LatencyT2IModel:
    """Stand-in for actors.t2i.T2IModel: sleeps ``a + c·b`` (× dilation / GPU share), returns noise images."""

    device = "simulated"

    def __init__(self, cost: BatchedCost, share: float, dilation: float, side: int = OUTPUT_SIDE,
                 gpu: Optional[NodeGPU] = None):
        self.cost, self.share, self.dilation, self.side, self.gpu = cost, share, dilation, side, gpu
        self.ledger = Ledger()

    def generate_batch(self, items: Sequence[tuple[str, int]]) -> list[np.ndarray]:
        asked, slept = _busy(self.cost, len(items), self.share, self.dilation, self.gpu)
        jobs = [text_job(p) for p, _ in items]
        out = []
        for (prompt, seed), job in zip(items, jobs):
            rng = np.random.default_rng(_seed(prompt, seed))
            img = rng.integers(0, 256, (self.side, self.side, 3), dtype=np.uint8)
            img[1, :, :] = GENERATED_MARK
            out.append(tag_image(img, job) if job is not None else img)
        self.ledger.record(jobs, asked, slept)
        return out

    #: What T2IServer.prompt_budget reports (actors.prompt_budget): a CLIP-like limit, as SD1.5's.
    budget = PromptBudget("tokenizer", "CLIP", 77, 2, None, "stand-in: a CLIP-like word count, 77 tokens")
    #: Why agent.negative is refused here (T2IModel.negative_refusal): its noise images ignore any prompt.
    negative_refusal = "the scale simulation's stand-in draws noise whatever the prompt, so a negative prompt cannot act"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Words and punctuation marks (about what CLIP's BPE gives for plain English prompts)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not a single str")
        return [len(re.findall(r"\w+|[^\w\s]", t)) for t in texts]


class LatencyCaptionerModel:
    """Stand-in for actors.captioner.CaptionerModel: one fixed caption per image, with its job tag and a content hash."""

    device = "simulated"

    def __init__(self, cost: BatchedCost, share: float, dilation: float, gpu: Optional[NodeGPU] = None):
        self.cost, self.share, self.dilation, self.gpu = cost, share, dilation, gpu
        self.ledger = Ledger()

    def caption_batch(self, images: Sequence[np.ndarray]) -> list[str]:
        asked, slept = _busy(self.cost, len(images), self.share, self.dilation, self.gpu)
        jobs = [image_job(im) for im in images]
        out = [f"scalejob{job if job is not None else 0} photo {zlib.crc32(np.ascontiguousarray(im).tobytes()):08x} of a quiet street"
               for im, job in zip(images, jobs)]
        self.ledger.record(jobs, asked, slept)
        return out


@dataclass(frozen=True)
class Behaviour:
    """How often the stand-ins say no (issue #24 item 4), so the agent's stop rules and re-asks run.

    ``reject_share``: the share of the LLM stand-in's vocabulary that CLIP's stand-in scores as a worse
    prompt (each such fragment turns the text :data:`REJECT_ANGLE` further from the reference, more than its
    words bring it closer): Algorithm 8 keeps none of them, and an iteration whose candidates are all of them
    stops the image (``no_improvement``). Which fragments: a fixed hash of the text, so runs repeat.
    ``unreadable_share``: the share of proposal requests the LLM stand-in first answers with prose, not a
    list: the agent re-asks (``agent.max_reasks``), and the re-ask gets a list. 0 and 0: every candidate is
    kept, every image runs exactly ``agent.max_steps`` iterations (the runs before this existed)."""

    reject_share: float = 0.0
    unreadable_share: float = 0.0

    def __post_init__(self):
        for name in ("reject_share", "unreadable_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")

    def rejected(self, fragment: str) -> bool:
        return _seed("reject", fragment) % 10_000 < 10_000 * self.reject_share

    def unreadable(self, request: str) -> bool:
        return _seed("unreadable", request) % 10_000 < 10_000 * self.unreadable_share


#: How much further from the reference a rejected fragment turns a text (radians; a two-word fragment's own
#: words bring it at most about 0.05 closer).
REJECT_ANGLE = 0.15


class LatencyClipModel:
    """Stand-in for actors.clip_scorer.ClipModel. Text and image encodes share one lock (one GPU).

    Embeddings: a reference image (no GENERATED_MARK row) is e0; a generated image is at a
    seeded random angle from e0; a text is at angle 1.2 / (1 + words / 10) from e0, so a
    longer prompt scores higher against the reference (fixed work per image) — plus
    :data:`REJECT_ANGLE` for each vocabulary fragment :class:`Behaviour` rejects."""

    device = "simulated"
    identity = "standin-clip|latency-model"

    def __init__(self, text: BatchedCost, image: BatchedCost, share: float, dilation: float,
                 gpu: Optional[NodeGPU] = None, behaviour: Optional[Behaviour] = None):
        self.text_cost, self.image_cost, self.share, self.dilation = text, image, share, dilation
        self.behaviour = behaviour or Behaviour()
        self.lock, self.node_gpu = threading.Lock(), gpu
        self.text_ledger, self.image_ledger = Ledger(), Ledger()
        self.text_forward_passes = self.texts_encoded = self.image_forward_passes = self.images_encoded = 0

    @staticmethod
    def _at_angle(theta: float, seed: int) -> np.ndarray:
        u = np.random.default_rng(seed).standard_normal(EMBED_DIM - 1)
        u /= np.linalg.norm(u)
        return _unit(np.concatenate([[math.cos(theta)], math.sin(theta) * u]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            raise ValueError("encode_texts needs at least one text")
        with self.lock:
            asked, slept = _busy(self.text_cost, len(texts), self.share, self.dilation, self.node_gpu)
        self.text_ledger.record([text_job(t) for t in texts], asked, slept)
        self.text_forward_passes += 1
        self.texts_encoded += len(texts)
        return np.stack([self._at_angle(self.text_angle(t), _seed("t", t)) for t in texts])

    def text_angle(self, text: str) -> float:
        rejected = sum(1 for f in text.split(",") if f.strip() in VOCABULARY_SET and self.behaviour.rejected(f.strip()))
        return 1.2 / (1 + len(text.split()) / 10) + REJECT_ANGLE * rejected

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        images = list(images)
        if not images:
            raise ValueError("encode_images needs at least one image")
        with self.lock:
            asked, slept = _busy(self.image_cost, len(images), self.share, self.dilation, self.node_gpu)
        self.image_ledger.record([image_job(im) for im in images], asked, slept)
        self.image_forward_passes += 1
        self.images_encoded += len(images)
        rows = []
        for im in images:
            generated = bool((np.asarray(im)[1] == GENERATED_MARK).all())
            seed = _seed("i", zlib.crc32(np.ascontiguousarray(im).tobytes()))
            theta = 0.3 + 0.9 * (seed % 1000) / 1000 if generated else 0.0
            rows.append(self._at_angle(theta, seed))
        return np.stack(rows)

    def counters(self) -> dict:
        return {"text_forward_passes": self.text_forward_passes, "texts_encoded": self.texts_encoded,
                "image_forward_passes": self.image_forward_passes, "images_encoded": self.images_encoded}


# --------------------------------------------------------------------------- chat engine

@dataclass(eq=False)
class _Seq:
    context: int  # prompt + completion tokens (KV reserved at admission)
    prompt_tokens: int
    images: int
    remaining: float  # tokens still to decode
    job: Optional[int]
    future: asyncio.Future = field(repr=False, default=None)


class SimEngine:
    """A continuous-batching engine on the simulated clock (event driven, not one sleep per token).

    Admission (FIFO) while fewer than ``max_num_seqs`` run and their contexts fit the KV cache;
    admitted prompts are prefilled (engine time, decoding paused); then all running sequences
    decode together at ``t(n)`` per token each, until one finishes or a request arrives.
    """

    def __init__(self, cost: EngineCost, share: float, dilation: float):
        self.cost, self.share, self.k = cost, share, dilation
        self.waiting: collections.deque[_Seq] = collections.deque()
        self.active: list[_Seq] = []
        self.kv_used = 0
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        # statistics (simulated seconds)
        self.requests = 0
        self.busy_s = 0.0
        self.seq_seconds = 0.0  # integral of running sequences over decode time
        self.decode_s = 0.0
        self.prefill_s = 0.0
        self.max_running = 0
        self.admissions = 0
        self.mixed_admissions = 0  # admissions while sequences of another job were running
        self.job_requests: collections.Counter = collections.Counter()
        self.prompt_tokens = self.completion_tokens = self.images = 0

    async def generate(self, prompt_tokens: int, completion_tokens: int, images: int, job: Optional[int]) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        context = min(prompt_tokens + completion_tokens, self.cost.kv_tokens)
        seq = _Seq(context, prompt_tokens, images, float(completion_tokens), job, loop.create_future())
        self.requests += 1
        self.job_requests[job] += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.images += images
        self.waiting.append(seq)
        self._wake.set()
        await seq.future

    def _admit(self) -> float:
        prefill = 0.0
        while self.waiting and len(self.active) < self.cost.max_num_seqs and (
                not self.active or self.kv_used + self.waiting[0].context <= self.cost.kv_tokens):
            seq = self.waiting.popleft()
            jobs = {s.job for s in self.active}
            self.admissions += 1
            if jobs - {seq.job}:
                self.mixed_admissions += 1
            self.active.append(seq)
            self.kv_used += seq.context
            prefill += self.cost.prefill_s(seq.prompt_tokens, seq.images, self.share)
        self.max_running = max(self.max_running, len(self.active))
        return prefill

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.active and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            prefill = self._admit()
            if prefill > 0:
                await asyncio.sleep(prefill * self.k)
                self.prefill_s += prefill
                self.busy_s += prefill
                continue
            if not self.active:  # nothing admissible (cannot happen: an empty engine admits one)
                await asyncio.sleep(0)
                continue
            n = len(self.active)
            step = self.cost.step_s(n, self.share)
            horizon = min(s.remaining for s in self.active) * step
            self._wake.clear()
            start = loop.time()
            try:
                await asyncio.wait_for(self._wake.wait(), horizon * self.k)
            except asyncio.TimeoutError:
                pass
            elapsed = min((loop.time() - start) / self.k, horizon)
            self.decode_s += elapsed
            self.busy_s += elapsed
            self.seq_seconds += elapsed * n
            tokens = elapsed / step
            still = []
            for s in self.active:
                s.remaining -= tokens
                if s.remaining <= 1e-6:
                    self.kv_used -= s.context
                    if not s.future.done():
                        s.future.set_result(None)
                else:
                    still.append(s)
            self.active = still

    def as_dict(self) -> dict:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "images": self.images, "busy_s": round(self.busy_s, 4), "prefill_s": round(self.prefill_s, 4),
                "decode_s": round(self.decode_s, 4),
                "mean_running": round(self.seq_seconds / self.decode_s, 2) if self.decode_s else 0.0,
                "max_running": self.max_running, "admissions": self.admissions, "mixed_admissions": self.mixed_admissions,
                "job_requests": {str(k): v for k, v in sorted(self.job_requests.items(), key=lambda kv: str(kv[0]))}}


#: Fragments in each of the stand-in LLM's proposal answers (one per aspect: 2 x this many candidates per iteration).
PROPOSED_PER_ANSWER = 3
#: Fragments the stand-in LLM proposes: two words each, none of them in the stand-in texts.
ADJECTIVES = ("amber", "bright", "calm", "dusty", "faded", "gentle", "hazy", "icy", "jade", "lush", "misty", "narrow")
NOUNS = ("harbour", "kite", "lantern", "meadow", "orchard", "pier", "quarry", "ridge", "spire", "tram", "valley", "willow")
VOCABULARY = tuple(f"{a} {n}" for a in ADJECTIVES for n in NOUNS)
VOCABULARY_SET = frozenset(VOCABULARY)
#: The stand-in LLM's answer to a proposal request it answers with prose first (Behaviour.unreadable_share).
UNREADABLE_ANSWER = "Here are some ideas: the harbour could look calmer and the light could be warmer."

CONTENT_DESCRIPTION = ("The image shows {tag}: a quiet street scene with a row of low buildings on the left, a few parked "
                       "cars along the kerb, bare trees with thin branches, a narrow pavement in the foreground and an "
                       "overcast sky filling the upper third of the frame. No people are visible and nothing moves; "
                       "the windows are dark and the shop signs are too small to read at this size.")
STYLE_DESCRIPTION = ("The image of {tag} looks like a low-resolution digital photograph with strong noise, muted colours "
                     "dominated by greys and browns, flat diffuse lighting without hard shadows, a slightly soft focus, "
                     "a wide-angle perspective from eye level and a cool colour balance; it has the casual, unposed "
                     "feel of a snapshot rather than a composed or edited image.")
DIFFERENCES = ("For {tag}, Image 1 shows more texture on the buildings, warmer light and a clearer sky than Image 2; "
               "Image 2 is noisier, its colours are duller, the cars are missing and the trees look flatter. The "
               "perspective of Image 2 is lower and its horizon is tilted; the pavement in Image 1 is wider and the "
               "shop signs there are more visible.")
OTHER_ANSWER = "For {tag}, the two images differ in lighting, colour and the objects in the street."


class SimChatBackend(ChatBackend):
    """A ChatBackend whose answers are fixed stand-in texts and whose timing is :class:`SimEngine`'s.

    Prompt tokens: the messages' characters / chars_per_token, plus ``image_tokens`` per image.
    Completion tokens: :class:`~benchmarks.scale.latency.AnswerTokens` by kind of request."""

    name = "standin"

    def __init__(self, cost: EngineCost, answers: AnswerTokens, share: float, dilation: float, vision: bool,
                 behaviour: Optional[Behaviour] = None):
        self.cost, self.answers, self.vision = cost, answers, vision
        self.behaviour = behaviour or Behaviour()
        self.unreadable_answers = 0  # proposal requests answered with prose (the agent re-asks)
        self.engine = SimEngine(cost, share, dilation)
        self.kinds: dict[str, list[int]] = {}  # kind -> [requests, prompt tokens]

    def _answer(self, messages: Sequence[ChatMessage]) -> tuple[str, str, Optional[int]]:
        text = "\n".join(m.text for m in messages)
        images = [im for m in messages for im in m.images]
        job = next((j for j in (image_job(im) for im in images) if j is not None), None)
        if job is None:
            job = text_job(text)
        tag = f"scalejob{job if job is not None else 0}"
        last = messages[-1].text
        if "describe the content" in last:
            return "describe", CONTENT_DESCRIPTION.format(tag=tag), job
        if "describe the style" in last:
            return "describe", STYLE_DESCRIPTION.format(tag=tag), job
        if last.startswith("I have descriptions of the"):
            return "differences", DIFFERENCES.format(tag=tag), job
        request = next((m.text for m in messages if m.role == "user" and "Generate image prompts" in m.text), None)
        if request is not None and (last == request or last == REASK):
            if last == request and self.behaviour.unreadable(request):
                self.unreadable_answers += 1
                return "propose", UNREADABLE_ANSWER, job
            start = _seed(request) % len(VOCABULARY)
            lowered = text.lower()
            picks = [f for f in (VOCABULARY[(start + i) % len(VOCABULARY)] for i in range(len(VOCABULARY)))
                     if f not in lowered][:PROPOSED_PER_ANSWER]
            return "propose", "[" + ", ".join(f'"{f}"' for f in picks) + "]", job
        return "other", OTHER_ANSWER.format(tag=tag), job

    async def chat(self, messages: Sequence[ChatMessage], sampling) -> ChatResult:
        kind, answer, job = self._answer(messages)
        images = sum(len(m.images) for m in messages)
        chars = sum(len(m.text) for m in messages)
        prompt_tokens = math.ceil(chars / self.cost.chars_per_token) + images * self.cost.image_tokens
        counts = self.kinds.setdefault(kind, [0, 0])
        counts[0] += 1
        counts[1] += prompt_tokens
        completion = min(getattr(self.answers, kind), sampling.max_new_tokens)
        await self.engine.generate(prompt_tokens, completion, images, job)
        return ChatResult(answer, prompt_tokens, completion)

    def stats(self) -> dict:
        return {"engine": self.engine.as_dict(), "unreadable_answers": self.unreadable_answers,
                "kinds": {k: {"requests": n, "prompt_tokens": t} for k, (n, t) in self.kinds.items()}}


# --------------------------------------------------------------------------- the servers Ray runs

@dataclass(frozen=True)
class RoleSpec:
    """Everything a stand-in server needs: the role's config section, its costs, GPU share, dilation."""

    role: str
    cfg: Any  # the role's section of the ArpoConfig (T2IConfig, ...)
    cost: Any  # BatchedCost, (text, image) BatchedCosts for CLIP, EngineCost for chat
    share: float
    dilation: float
    answers: AnswerTokens = AnswerTokens()
    image_side: int = OUTPUT_SIDE  # side of the T2I stand-in's images (512: the size the latency model charges for)
    #: ``--gpu-sharing time``: (prefix, namespace) of the node GPU clocks (benchmarks/scale/gpu_clock.py); None:
    #: ``partition``, the replica runs at its num_gpus share
    gpu_clocks: Optional[tuple[str, str]] = None
    behaviour: Behaviour = Behaviour()  # how often CLIP and the LLM stand-ins say no
    load_s: float = 0.0  # the stand-in's model load in real seconds (× dilation), at every (re)start

    def node_gpu(self) -> Optional[NodeGPU]:
        return NodeGPU(*self.gpu_clocks) if self.gpu_clocks else None


def _where() -> dict:
    import os

    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


class SimT2IServer(T2IServer):
    def __init__(self, spec: RoleSpec):
        load_pause(spec.load_s, spec.dilation)  # a restarted replica loads its model again
        super().__init__(spec.cfg, model=LatencyT2IModel(spec.cost, spec.share, spec.dilation, side=spec.image_side,
                                                           gpu=spec.node_gpu()))

    async def where(self) -> dict:
        return _where()

    async def stats(self) -> dict:
        return {**await super().stats(), "standin": self.model.ledger.as_dict()}


class SimCaptionerServer(CaptionerServer):
    def __init__(self, spec: RoleSpec):
        load_pause(spec.load_s, spec.dilation)  # a restarted replica loads its model again
        super().__init__(spec.cfg, model=LatencyCaptionerModel(spec.cost, spec.share, spec.dilation, gpu=spec.node_gpu()))

    async def where(self) -> dict:
        return _where()

    async def stats(self) -> dict:
        return {**await super().stats(), "standin": self.model.ledger.as_dict()}


class SimClipServer(ClipServer):
    def __init__(self, spec: RoleSpec):
        load_pause(spec.load_s, spec.dilation)  # a restarted replica loads its model again
        text, image = spec.cost
        super().__init__(spec.cfg, model=LatencyClipModel(text, image, spec.share, spec.dilation, gpu=spec.node_gpu(),
                                                        behaviour=spec.behaviour))

    async def where(self) -> dict:
        return _where()

    async def stats(self) -> dict:
        return {**await super().stats(), "standin": {"text": self.model.text_ledger.as_dict(),
                                                     "image": self.model.image_ledger.as_dict()}}


class SimLLMServer(LLMServer):
    def __init__(self, spec: RoleSpec):
        load_pause(spec.load_s, spec.dilation)  # a restarted replica loads its model again
        super().__init__(spec.cfg, backend=SimChatBackend(spec.cost, spec.answers, spec.share, spec.dilation, vision=False,
                                                        behaviour=spec.behaviour))

    async def where(self) -> dict:
        return _where()


class SimVLMServer(VLMServer):
    def __init__(self, spec: RoleSpec):
        load_pause(spec.load_s, spec.dilation)  # a restarted replica loads its model again
        super().__init__(spec.cfg, backend=SimChatBackend(spec.cost, spec.answers, spec.share, spec.dilation, vision=True))

    async def where(self) -> dict:
        return _where()


SERVERS = {"t2i": SimT2IServer, "llm": SimLLMServer, "vlm": SimVLMServer, "captioner": SimCaptionerServer,
           "clip": SimClipServer}
