"""Finding reference images in a folder and loading any of them as clean RGB pixels.

Discovery is recursive and sorted (so runs are reproducible), matches extensions in
any case, and skips hidden files and folders, non-image files and an excluded subtree
(the job's own output folder when it lies inside the image folder).

Loading accepts JPEG (MPO too: the JPEG decoder opens it), PNG, WebP, BMP, GIF (first frame) and TIFF (first
page) whatever the file's extension says, honours EXIF orientation, converts every
pixel mode to 8-bit RGB (alpha is composited on white; 16-bit and float data are
scaled, not clipped) and refuses images above a pixel limit before decoding them. Any
failure is an :class:`ImageLoadError` naming the file and the cause.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow decoders allowed to open a file; defined in core, shared with training's image folders.
from core.images import ALLOWED_FORMATS

#: File extensions (lower case) that are treated as images; anything else is ignored.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

_WHITE = (255, 255, 255)


class ImageLoadError(Exception):
    """A file could not be used as a reference image; ``path`` and ``cause`` say which and why."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path, self.cause = str(path), cause
        super().__init__(f"{path}: {cause}")


@dataclass(frozen=True)
class FoundImage:
    """One image file found under the image folder."""

    path: Path  # absolute path of the file (as the OS names it: may hold undecodable bytes)
    rel: str  # display-safe path relative to the image folder, '/' separators (see display_name)
    refused: Optional[str] = None  # why the file may not be used (e.g. a symlink leaving the folder)


#: Characters that must never reach a terminal or a log raw: C0/C1 controls, DEL, and the
#: bidirectional overrides that can make a name display as another.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def display_name(name: str) -> str:
    """``name`` as text that is valid UTF-8 and safe to print, log and store in records.

    On Linux a file name is bytes: ones that are not UTF-8 reach Python as lone
    surrogates, which no UTF-8 writer accepts (a record holding one cannot be written).
    They become ``\\xNN`` escapes, and control characters (escape sequences, newlines,
    bidi overrides) become ``\\xNN`` (below 0x80) or ``\\uNNNN``: the name stays
    recognisable, the terminal stays intact. A backslash itself becomes ``\\x5c``, so two
    different names never read the same: ``new<newline>line.png`` is ``new\\x0aline.png``
    and a file literally named ``new\\x0aline.png`` is ``new\\x5cx0aline.png``.
    """
    raw = os.fsencode(name).replace(b"\\", b"\\x5c")
    text = raw.decode("utf-8", "backslashreplace")  # undecodable bytes: \xNN with NN >= 0x80
    return _UNSAFE_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x80 else f"\\u{ord(m.group()):04x}", text)


def image_size(fp: "str | os.PathLike | io.BytesIO") -> Optional[tuple[int, int]]:
    """(width, height) from the header alone, or None when it cannot be read (load_rgb then says why)."""
    try:
        with Image.open(fp, formats=ALLOWED_FORMATS) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any unreadable header: load_rgb gives the error
        return None


def is_image_name(name: str) -> bool:
    """True when ``name`` has one of the image extensions, in any case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def discover_images(root: str | os.PathLike, exclude: Optional[str | os.PathLike] = None) -> list[FoundImage]:
    """Every image file under ``root``, recursively, sorted by relative path.

    Hidden files and folders (leading '.') are skipped, as is the ``exclude`` subtree.
    Folder symlinks are not followed (no cycles). A file symlink is followed only when
    its target lies inside ``root``; one pointing elsewhere is returned with ``refused``
    set (its content is never read: it could be any file on the machine, and its pixels
    would be copied into the report and sent to the models).
    """
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[FoundImage] = []
    for dirpath, dirnames, filenames in os.walk(root_path, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (excluded is None or (here / d).resolve() != excluded))
        for name in filenames:
            if name.startswith(".") or not is_image_name(name):
                continue
            full = here / name
            if not full.is_file():  # broken symlink, socket, ...
                continue
            rel = display_name(full.relative_to(root_path).as_posix())
            refused = None
            if full.is_symlink():
                target = full.resolve()
                if root_path not in target.parents:
                    refused = f"{rel}: refused: a symlink to a file outside the image folder ({display_name(str(target))})"
            found.append(FoundImage(path=full, rel=rel, refused=refused))
    found.sort(key=lambda f: f.rel)
    return found


def configure_pillow_limit(max_pixels: int) -> None:
    """Make Pillow's own decompression-bomb guard agree with ``max_pixels`` (process-wide).

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and raises above twice that; with its
    default a job configured for larger images would have them refused by Pillow first.
    :func:`load_rgb` refuses anything above ``max_pixels`` itself, so Pillow's warning
    adds nothing and is silenced.
    """
    import warnings

    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_rgb(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """Decode ``path`` into a uint8 (H, W, 3) RGB array, upright per its EXIF orientation.

    Raises :class:`ImageLoadError` when the file is missing, not an allowed image format,
    truncated or corrupt, or has more than ``max_pixels`` pixels (checked from the header,
    before the pixels are decoded).
    """
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageLoadError(path, f"refused as a possible decompression bomb: {width}x{height} = {width * height} pixels, limit {max_pixels}")
            img.seek(0)  # first frame of an animation / first page of a multi-page TIFF
            img.load()
            upright = ImageOps.exif_transpose(img)
            return to_rgb_array(upright)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, f"not a readable image (allowed formats: {', '.join(ALLOWED_FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"refused as a possible decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated"),
        # SyntaxError (broken headers) or ValueError.
        raise ImageLoadError(path, f"cannot decode image: {type(exc).__name__}: {exc}") from None


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W, 3) RGB. Transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _gray_to_rgb(_scale_wide_gray(img))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode in ("L", "1"):
        return _gray_to_rgb(np.asarray(img.convert("L"), dtype=np.uint8))
    # P (opaque), CMYK, YCbCr, LAB, HSV, RGBX: Pillow's own conversions.
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _scale_wide_gray(img: Image.Image) -> np.ndarray:
    """16-bit / 32-bit integer or float grey -> uint8, scaled to the data's nominal range."""
    data = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        # Float images are conventionally in [0, 1]; anything larger is taken as 0..255.
        scale = 255.0 if data.size and np.nanmax(data) <= 1.0 else 1.0
        data = data * scale
    elif img.mode.startswith("I;16") or (data.size and data.max() > 255):
        data = data / 257.0  # 0..65535 -> 0..255
    return np.clip(np.nan_to_num(np.rint(data)), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def save_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode a uint8 (H, W, 3) array as PNG bytes (for atomic writing by the caller); ``compress_level``: zlib's,
    0-9 (6, Pillow's default: the smallest files worth their time for a one-off image)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()

