"""Which kind of profile a YAML file is, validated as that kind: a batch profile (agents.config.ArpoConfig),
an evaluation profile (agents.eval.config.EvalConfig, a batch profile plus its evaluation sections) or an MDSS
training profile (training.config.TrainConfig). Shared by the commands that take any profile."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from pydantic import BaseModel

from core.config import apply_overrides, read_yaml, validate


@dataclass
class Profile:
    kind: str  # "batch", "evaluation" or "mdss"
    config: BaseModel
    data: dict  # the file's mapping with the overrides applied, before validation

    @property
    def model_name(self) -> str:
        return f"{type(self.config).__module__}.{type(self.config).__name__}"


#: Top-level sections only an evaluation profile has.
EVALUATION_SECTIONS = frozenset({"evaluation", "dino", "vit"})


def profile_kind(data: dict) -> str:
    if "strategy" in data:  # every MDSS profile names its training strategy
        return "mdss"
    return "evaluation" if EVALUATION_SECTIONS & set(data) else "batch"


def load_profile(path: Optional[str], overrides: Iterable[str] = ()) -> Profile:
    """Read ``path`` (None: the batch job's defaults), apply ``--set`` overrides and validate it as its kind;
    a bad profile raises core.config.ConfigError naming the file, the key and why."""
    overrides = list(overrides)
    data = apply_overrides(read_yaml(path) if path is not None else {}, overrides)
    source = str(path) if path is not None else "<defaults>"
    kind = profile_kind(data)
    if kind == "mdss":
        from training.config import TrainConfig as model
    elif kind == "evaluation":
        from agents.eval.config import EvalConfig as model
    else:
        from agents.config import ArpoConfig as model
    return Profile(kind, validate(model, data, source, overrides), data)
