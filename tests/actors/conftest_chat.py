"""Fixtures for the chat (LLM/VLM) tests; test files import them explicitly.

The tiny models are built once per test session into pytest's base temp folder (the
folder, not the fixture, is shared, so several test modules importing these fixtures
reuse one build).
"""
from __future__ import annotations

import json

import numpy as np
import pytest


def _built(tmp_path_factory, name: str, builder) -> dict:
    out = tmp_path_factory.getbasetemp() / name
    done = out / "section.json"  # written last: a finished build
    if done.is_file():
        return json.loads(done.read_text())
    section = builder(out, seed=0)
    done.write_text(json.dumps(section))
    return section


@pytest.fixture(scope="module")
def tiny_llm_section(tmp_path_factory) -> dict:
    from actors.offline_kit import llm

    return _built(tmp_path_factory, "chat_tiny_llm", llm.build)


@pytest.fixture(scope="module")
def tiny_vlm_section(tmp_path_factory) -> dict:
    from actors.offline_kit import vlm

    return _built(tmp_path_factory, "chat_tiny_vlm", vlm.build)


def section_with(section: dict, **changes) -> dict:
    """A copy of a config section with top-level keys replaced (nested dicts merged one level)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in section.items()}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def images(seed: int = 0) -> list[np.ndarray]:
    """Three distinct uint8 RGB test images of different sizes and aspect ratios."""
    rs = np.random.RandomState(seed)
    return [
        rs.randint(0, 256, (40, 60, 3), dtype=np.uint8),
        rs.randint(0, 256, (32, 32, 3), dtype=np.uint8),
        np.tile(np.linspace(0, 255, 30, dtype=np.uint8)[None, :, None], (50, 1, 3)),
    ]


def vision_chat(imgs, text: str = "Describe the image.") -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image", "image": im} for im in imgs), {"type": "text", "text": text}]}]
