"""Top-level config of the ARPO job: the five roles, the agent, the job, Ray."""
from __future__ import annotations

import re
from pathlib import PureWindowsPath
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from actors.config import CaptionerConfig, ClipConfig, LLMConfig, T2IConfig, VLMConfig
from actors.shared_roles import check_name as check_shared_roles_name
from agents.ranked_prompts import MAX_PROMPTS_PER_IMAGE
from agents.training_caption import check_caption_prefix
from core.config import StrictModel
from core.ray_config import RayConfig


class NegativeConfig(StrictModel):
    """A recovered negative prompt (agents.negative_nodes): searched after the positive loop."""

    enabled: bool = Field(False, description="After the positive loop, find a negative prompt: the VLM names what the best prompt's image shows that the reference lacks, the LLM turns that into candidate negative fragments, and each is tried by generating with it (the run's seeds); they are kept greedily while CLIP-I rises. A target on which a negative prompt does not act (FLUX.1, no classifier-free guidance) refuses it at start-up.")
    max_candidates: int = Field(8, ge=1, le=100, description="Most candidate negative fragments tried (at most 100); each costs one generation with the run's seeds.")
    max_fragments: int = Field(4, ge=1, le=100, description="Most fragments kept in the negative prompt (at most 100).")


class AgentConfig(StrictModel):
    """The reverse-prompt optimisation loop (thesis Chapter 4, Algorithm 8)."""

    framework: Literal["vanilla", "enhanced"] = Field("enhanced", description="vanilla: the VLM compares both images directly; enhanced: the VLM describes content and style of each image and the LLM lists their differences.")
    max_steps: int = Field(10, ge=1, le=1000, description="Most optimisation iterations per image (at most 1000).")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=64, description="Generation seeds (1 to 64 of them), the same in every iteration so comparisons are fair.")
    patience: Optional[int] = Field(None, ge=1, le=1000, description="Stop when CLIP-I has not improved for this many iterations, at most 1000 (None: off).")
    init_prompt: Optional[str] = Field(None, description="Start from this prompt instead of the captioner's caption.")
    max_candidates: int = Field(10, ge=1, le=1000, description="Most candidate fragments kept from one proposal (at most 1000).")
    max_reasks: int = Field(2, ge=0, le=100, description="Re-asks of the LLM when its answer cannot be parsed into a list (at most 100).")
    reserved_tokens: int = Field(2, ge=0, le=64, description="At most 64 tokens of the T2I text encoder's limit (t2i.max_prompt_tokens) taken by special tokens that count_tokens leaves out (CLIP: start and end of text, 2); fragments are only added while the prompt's count stays within limit - reserved_tokens.")
    prompts_per_image: int = Field(1, ge=1, le=MAX_PROMPTS_PER_IMAGE, description="How many prompts each result lists (at most 100): the best distinct prompts the optimisation met, ranked by CLIP-I of their generated images (agents.ranked_prompts says what distinct means). Costs no model call: every listed prompt was already generated and scored. Changes no optimisation, so it is not part of the settings fingerprint: a rerun with another value re-ranks the finished images from their recorded iterations.")
    caption_prefix: Optional[str] = Field(None, description="A trigger word or phrase for training captions (e.g. 'ohwx'): each result's caption is '<prefix>, <best prompt>' (added once: not when a fragment already is it). The T2I model never sees it; the token budget counts it once, in the caption text, so every caption fits the text encoder (agents.training_caption). No comma, semicolon or line break; at most 200 characters.")

    negative: NegativeConfig = Field(default_factory=NegativeConfig, description="A recovered negative prompt (off by default).")
    style_only: bool = Field(False, description="Recover the style alone: the prompt keeps only style fragments (P^0 is the style part of the caption or init_prompt, possibly empty; content candidates are recorded as not_style and never added), and the loop maximises a style similarity instead of CLIP-I — the cosine similarity of the per-channel mean and standard deviation of the CLIP vision tower's first-layer features (actors.clip_scorer.ClipModel.style_descriptors), which rearranging the content leaves unchanged. Algorithm 8 still scores fragments by CLIP-T. One more CLIP call per generation. Not with negative.enabled.")

    _v_caption_prefix = field_validator("caption_prefix")(lambda cls, v: check_caption_prefix(v))

    @model_validator(mode="after")
    def _style_only_alone(self) -> "AgentConfig":
        if self.style_only and self.negative.enabled:
            raise ValueError("style_only and negative.enabled do not go together: the negative search raises CLIP-I, "
                             "not the style similarity; turn one off")
        return self


class CheckpointConfig(StrictModel):
    """Durable graph state (LangGraph checkpointer)."""

    kind: Literal["sqlite", "postgres"] = Field("sqlite", description="sqlite: a file in the output folder; postgres: a shared database for several drivers.")
    sqlite_file: str = Field("checkpoints.sqlite", description="SQLite file path inside the output folder, relative to it (no absolute path, no '..').")
    postgres_url_env: str = Field("ARPO_POSTGRES_URL", description="Environment variable holding the Postgres connection URL (never the URL itself).")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="Seconds to wait for the checkpoint database (a Postgres server that does not answer; a SQLite file locked by another process) before start-up fails naming it; checked before any model loads.")
    keep_finished_threads: bool = Field(False, description="Keep a finished image's checkpoints (every step of its graph state) after its result is recorded. Off: they are deleted once its line is in results.jsonl (a rerun skips it by that line, never reads them), so the store holds only the optimisations in flight instead of ~0.3 MB per image of the whole batch. Images that failed keep theirs either way: a rerun resumes them.")

    @field_validator("sqlite_file")
    @classmethod
    def _inside_output_folder(cls, v: str) -> str:
        # Opened as <output folder>/<sqlite_file>: an absolute path or '..' would put the state elsewhere.
        hint = "give a file path relative to the output folder, such as checkpoints.sqlite"
        parts = re.split(r"[\\/]", v)
        if not v.strip():
            raise ValueError(f"is empty; {hint}")
        if v.startswith(("/", "\\", "~")) or PureWindowsPath(v).drive:
            raise ValueError(f"{v!r} is an absolute or home-relative path; {hint}")
        if ".." in parts:
            raise ValueError(f"{v!r} has a '..' component, which leads out of the output folder; {hint}")
        if parts[-1] in ("", "."):
            raise ValueError(f"{v!r} names a folder, not a file; {hint}")
        return v


class JobConfig(StrictModel):
    """The batch job."""

    concurrency: int = Field(256, ge=1, le=100_000, description="Optimisations running at once (at most 100000), all sharing the actors.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Where graph state is persisted.")
    max_image_pixels: int = Field(89_478_485, ge=1, le=1 << 30, description="Images with more pixels are refused as decompression bombs (default: Pillow's limit; at most 1073741824 = 2**30, 3 GiB of RGB pixels).")
    max_file_bytes: int = Field(1 << 30, ge=1, le=1 << 36, description="Image files larger than this many bytes (at most 68719476736 = 64 GiB) are refused (an error record) before they are read or hashed.")
    reference_max_side: int = Field(1024, ge=64, le=8192, description="The reference is stored (reference.png) with its longer side shrunk to at most this many pixels; the models see that copy (CLIP, the captioner and VLMs work far below it), so a huge source is decoded once, not at every step. Changes results: part of the settings fingerprint.")
    group_by: Literal["image", "folder"] = Field("image", description="image: one optimisation per distinct image. folder: each subfolder of --dir is one set, optimised for one prompt shared by its images (mean CLIP scores over the members; the captioner and VLM see a 2×2 grid of them); outputs under OUT/sets/ (agents/batch/sets.py). --group-by overrides.")
    startup_timeout_s: float = Field(1800.0, gt=0, le=86_400, description="Most seconds to wait for every role to load its model (hub downloads included) before the job gives up with exit status 2.")
    shared_roles: Optional[str] = Field(None, description="Share the model-role actors with other jobs on the same Ray cluster under this name (1 to 64 letters, digits, '_', '.', '-'). Each role's actors become named, detached Ray actors '<name>:<role or group>:<replica>' in the namespace 'expectdiff-shared-roles': the first job with this name starts them, later ones join them (the log says which), and no job stops them when it ends — stop them with `python -m actors.shared_roles stop --name NAME`. A job whose role sections (model, engine settings, resources, ...) differ from those the actors were started with is refused, naming the differing keys. Needs a Ray that outlives the job (a cluster, or `ray start --head`): a local Ray the job starts itself ends with it, its roles too. None: the job's own actors, stopped at its end.")

    _v_shared_roles = field_validator("shared_roles")(lambda cls, v: v if v is None else check_shared_roles_name(v))
    summary_refresh_s: float = Field(2.0, ge=0, le=3600, description="Least seconds (at most 3600) between refreshes of report_summary.js (the counts of done / failed / running) and of results.csv rows a retried image replaced (results.jsonl, the per-image folders with their detail pages, the report's rows and new results.csv rows are written as each image finishes; the summaries always catch up within this time and at the end). 0: after every image.")


class ArpoConfig(StrictModel):
    """Everything `python -m agents.batch_reverse` needs."""

    t2i: T2IConfig = Field(default_factory=T2IConfig, description="Text-to-image pipeline role.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="Language model role.")
    vlm: VLMConfig = Field(default_factory=VLMConfig, description="Vision-language model role.")
    captioner: CaptionerConfig = Field(default_factory=CaptionerConfig, description="Captioner role (initial prompt).")
    clip: ClipConfig = Field(default_factory=ClipConfig, description="CLIP scorer role.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Optimisation loop.")
    job: JobConfig = Field(default_factory=JobConfig, description="Batch job.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
