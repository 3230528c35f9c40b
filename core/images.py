"""Which image formats may be decoded at all: shared by the agent's reference images
(agents/images.py) and training's image folders (training/data.py)."""
from __future__ import annotations

#: Pillow decoders allowed to open a file (``PIL.Image.open(path, formats=ALLOWED_FORMATS)``).
#: Restricting them keeps a renamed file from reaching decoders that shell out or parse far
#: more than a photo needs (EPS runs Ghostscript; PDF, PSD, ...).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
