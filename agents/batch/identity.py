"""What a batch job's resume keys on: the output folder's identity and the settings that change results.

``OUT/job.json`` holds a random job id, made when the folder is first used, and the
result-changing settings of the run that last used it. Every checkpoint thread is
named ``<job id>:<settings fingerprint>:<image content id>``, so

* a moved or copied output folder keeps its id and resumes its own threads (paths in
  the graph state are relative to the output folder, so they still point inside it);
* two jobs with different output folders never share a thread, even in one shared
  Postgres database, and cannot advance one thread at once;
* a rerun with settings that change results (framework, models, seeds, steps,
  sampling) is refused with the changed keys named, or — when asked — starts fresh
  threads (and redoes finished images) under the new fingerprint; the old threads are
  left as they were.

Settings that only change speed or placement (resources, batching, engine memory,
caches, time-outs, the job's own limits, Ray) are left out of the fingerprint: changing
them resumes.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agents.batch.errors import SetupError
from agents.config import ArpoConfig
from agents.browser.results import atomic_write_json

JOB_FILE = "job.json"

#: Sections of ArpoConfig whose settings decide what an optimisation produces.
RESULT_SECTIONS = ("agent", "t2i", "llm", "vlm", "captioner", "clip")

#: Keys (by last path component, or a dotted suffix) that change speed or placement only.
NEUTRAL_KEYS = frozenset({
    "resources", "batching", "text_cache_size", "image_cache_size",
    "vllm.gpu_memory_utilization", "vllm.max_num_seqs", "vllm.enforce_eager", "vllm.cpu_kvcache_space_gib",
    "vllm.enable_chunked_prefill", "vllm.max_num_batched_tokens", "vllm.tensor_parallel_size",
    "openai.timeout_s", "openai.max_retries", "openai.api_key_env", "openai.allow_insecure_http",
    # how many ranked prompts a result lists: read from the recorded iterations, no model call
    "prompts_per_image",
})

OnChange = Literal["refuse", "fresh"]


@dataclass(frozen=True)
class JobIdentity:
    job_id: str
    fingerprint: str  # hex digest of the result-changing settings
    restarted: bool = False  # settings changed and the user asked for fresh threads

    def thread_id(self, image_id: str) -> str:
        return f"{self.job_id}:{self.fingerprint[:16]}:{image_id}"


def result_settings(cfg: ArpoConfig) -> dict[str, Any]:
    """The result-changing settings as a flat ``{dotted key: value}`` dict."""
    flat: dict[str, Any] = {}
    for section in RESULT_SECTIONS:
        _flatten(getattr(cfg, section).model_dump(mode="json"), section, flat)
    flat["job.reference_max_side"] = cfg.job.reference_max_side
    return flat


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if _neutral(prefix):
        return
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(sub, f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def _neutral(dotted: str) -> bool:
    parts = dotted.split(".")
    return any(".".join(parts[i:]) in NEUTRAL_KEYS for i in range(1, len(parts)))


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key that differs (added and removed keys too)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            lines.append(f"{key}: {old.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}")
    return lines


def open_job(out_dir: Path, cfg: ArpoConfig, on_change: OnChange = "refuse") -> JobIdentity:
    """Read or create ``OUT/job.json`` and return the identity this run works under.

    Raises :class:`SetupError` when the recorded settings differ and ``on_change`` is
    ``"refuse"`` (the message lists what changed), or when the file is unreadable.
    """
    path = out_dir / JOB_FILE
    settings = result_settings(cfg)
    digest = fingerprint(settings)
    if not path.exists():
        atomic_write_json(path, {"job_id": uuid.uuid4().hex, "fingerprint": digest, "settings": settings})
        return JobIdentity(json.loads(path.read_text())["job_id"], digest)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        job_id, old_digest, old_settings = recorded["job_id"], recorded["fingerprint"], recorded["settings"]
        if not (isinstance(job_id, str) and job_id.isalnum() and isinstance(old_settings, dict)):
            raise ValueError("malformed fields")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"{path}: unreadable job identity ({type(exc).__name__}: {exc}); "
                         "it names this output folder's checkpoint threads — restore it, or use a new output folder") from None
    if old_digest == digest:
        return JobIdentity(job_id, digest)
    # A key the recorded settings lack was added to the config by a later version: its
    # default is what the earlier run used.
    defaults = result_settings(ArpoConfig())
    changes = changed_keys({**{k: defaults.get(k) for k in settings if k not in old_settings}, **old_settings}, settings)
    if not changes:  # the same settings, described by a newer version: keep the threads' fingerprint
        atomic_write_json(path, {"job_id": job_id, "fingerprint": old_digest, "settings": settings})
        return JobIdentity(job_id, old_digest)
    if on_change == "refuse":
        raise SetupError(f"{out_dir}: the settings that decide results changed since this output folder was last used:\n  "
                         + "\n  ".join(changes)
                         + "\nrerun with the old settings to resume, or with --settings-changed fresh to start every "
                           "image again under the new ones (finished results are then redone), or use a new --out")
    atomic_write_json(path, {"job_id": job_id, "fingerprint": digest, "settings": settings,
                             "previous": {"fingerprint": old_digest, "changed": changes}})
    return JobIdentity(job_id, digest, restarted=True)
