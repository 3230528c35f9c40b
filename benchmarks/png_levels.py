"""PNG encode time and size per zlib level at 512×512, for the generated images the batch driver writes.

``python -m benchmarks.png_levels`` prints, for a photograph (scikit-image's astronaut, 512×512) and for noise
(the scale benchmark's stand-in images), the best of 5 encode times and the file size at levels 1, 3, 6 (Pillow's
default) and 9: the figures behind agents.nodes.GENERATED_PNG_LEVEL.
"""
from __future__ import annotations

import argparse
import io
import platform
import time

import numpy as np
from PIL import Image


def encode_ms(image: np.ndarray, level: int, repeats: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeats):
        buf = io.BytesIO()
        started = time.perf_counter()
        Image.fromarray(image).save(buf, format="PNG", compress_level=level)
        best = min(best, time.perf_counter() - started)
        size = len(buf.getvalue())
    return 1000 * best, size


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    from skimage import data

    images = {"astronaut (photo)": data.astronaut(),
              "noise": np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)}
    print(f"PNG encode, 512×512 RGB, best of {a.repeats}; host {platform.node()}, Pillow {Image.__version__}")
    print("| image | level | ms | bytes | ms ÷ level 6 | bytes ÷ level 6 |\n|---|---:|---:|---:|---:|---:|")
    for name, image in images.items():
        rows = {level: encode_ms(image, level, a.repeats) for level in (1, 3, 6, 9)}
        ms6, size6 = rows[6]
        for level, (ms, size) in rows.items():
            print(f"| {name} | {level} | {ms:.1f} | {size:,} | {ms / ms6:.2f} | {size / size6:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
