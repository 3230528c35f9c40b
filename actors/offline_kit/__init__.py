"""Offline model kit: tiny random-weight models in each real on-disk format.

Each module builds one role's model under a folder and returns that role's config
section (a dict for agents.config.ArpoConfig); ``python -m agents.offline_kit`` builds
them all and writes a config profile pointing every role at them. Their outputs are
meaningless (random weights): they exist to exercise the real loading and serving code
paths offline, and for plumbing and speed measurements only.
"""
from pathlib import Path
from typing import Optional

#: A file with this name in a model's folder, or in one of the two folders above it (the
#: kit's root), marks the model as one of the offline kit's random-weight models.
OFFLINE_KIT_MARKER = "OFFLINE_KIT_RANDOM_WEIGHTS"
#: A file with this name in a model's own folder overrides the kit marker: real weights
#: (the SmolLM2 LLM converted from its GGUF).
REAL_WEIGHTS_MARKER = "REAL_WEIGHTS"


def is_random_weight_model(path: Optional[str]) -> bool:
    """True when ``path`` is a local model (folder or file) that the offline kit built with random weights."""
    if not path:
        return False
    p = Path(path)
    if not p.exists():  # a hub id or pretrained tag, not a local model
        return False
    folder = p if p.is_dir() else p.parent
    if (folder / REAL_WEIGHTS_MARKER).is_file():
        return False
    return any((f / OFFLINE_KIT_MARKER).is_file() for f in (folder, folder.parent, folder.parent.parent))
