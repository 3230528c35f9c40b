"""The five role sections of a batch profile, validated by actors' own config classes: what the plan is made of."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass
class RoleSections:
    """The five role sections of a config file, validated by actors' own config classes."""

    t2i: Any
    llm: Any
    vlm: Any
    captioner: Any
    clip: Any


def role_sections(data: Mapping[str, Any], source: str = "<config>") -> RoleSections:
    """Validate the role sections of a batch profile's dict (other top-level keys are ignored)."""
    from actors.config import CaptionerConfig, ClipConfig, LLMConfig, T2IConfig, VLMConfig
    from core.config import validate

    classes = dict(t2i=T2IConfig, llm=LLMConfig, vlm=VLMConfig, captioner=CaptionerConfig, clip=ClipConfig)
    out = {}
    for role, cls in classes.items():
        section = data.get(role) or {}
        try:
            out[role] = validate(cls, section, source)
        except Exception as exc:
            from core.config import ConfigError

            if isinstance(exc, ConfigError):
                raise ConfigError(exc.source, f"{role}.{exc.key}", exc.reason) from None
            raise
    return RoleSections(**out)
