"""Image discovery and robust loading (agents/images.py), on files built with Pillow."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from agents.images import ImageLoadError, discover_images, load_rgb, save_png

LIMIT = 10_000_000


def _rgb(h=12, w=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


# ------------------------------------------------------------------ discovery

def test_discovery_is_recursive_sorted_case_insensitive_and_skips_others(tmp_path):
    for rel in ["b.PNG", "a/z.JpEg", "a/y.jpg", "c.webp", "d.BMP", "e.gif", "f.TIF", "g.tiff"]:
        _save(Image.new("RGB", (4, 4)), tmp_path / rel, format={"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF", "tif": "TIFF", "tiff": "TIFF"}[rel.rsplit(".", 1)[1].lower()])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "data.json").write_text("{}")
    _save(Image.new("RGB", (4, 4)), tmp_path / ".hidden.png")
    _save(Image.new("RGB", (4, 4)), tmp_path / ".cache" / "x.png")
    _save(Image.new("RGB", (4, 4)), tmp_path / "out" / "images" / "ref.png")
    found = discover_images(tmp_path, exclude=tmp_path / "out")
    assert [f.rel for f in found] == ["a/y.jpg", "a/z.JpEg", "b.PNG", "c.webp", "d.BMP", "e.gif", "f.TIF", "g.tiff"]
    assert all(f.path.is_absolute() and f.path.is_file() for f in found)
    # without the exclusion the output folder's images would be picked up
    assert "out/images/ref.png" in [f.rel for f in discover_images(tmp_path)]


def test_discovery_of_missing_folder_is_an_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="nope"):
        discover_images(tmp_path / "nope")


# ------------------------------------------------------------------ formats and modes

@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tiff"), ("WEBP", "webp")])
def test_lossless_formats_round_trip_exactly(tmp_path, fmt, ext):
    pixels = _rgb()
    path = _save(Image.fromarray(pixels), tmp_path / f"x.{ext.upper()}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = load_rgb(path, LIMIT)
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    # a 20 wide x 10 high picture, left half red, stored with "rotate 90 CW to view" (orientation 6)
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:] = (0, 0, 255)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6
    path = _save(img, tmp_path / "rot.jpg", format="JPEG", exif=exif, quality=95)
    out = load_rgb(path, LIMIT)
    assert out.shape == (20, 10, 3)  # upright: taller than wide
    # rotated 90 degrees clockwise: the red (left) half is now on top
    assert out[2, 5, 0] > 200 and out[2, 5, 2] < 60
    assert out[17, 5, 2] > 200 and out[17, 5, 0] < 60


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    img = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(img, tmp_path / "cmyk.jpg", format="JPEG", quality=100)
    out = load_rgb(path, LIMIT)
    assert out.shape == (6, 8, 3)
    r, g, b = out[3, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16).repeat(3, axis=0)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_rgb(path, LIMIT)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 4, 128, 255])  # 65535 -> 255, 32768 -> 128 (not all 255)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 1)  # red, opaque
    img.info["transparency"] = 0  # index 0 (black) is transparent
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    out = load_rgb(path, LIMIT)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 3]) == (255, 255, 255)  # transparent -> white, not black


def test_rgba_and_la_alpha_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)
    rgba[0, 1] = (0, 0, 0, 0)
    rgba[1, 0] = (0, 0, 0, 128)
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out = load_rgb(p, LIMIT)
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert 120 <= out[1, 0, 0] <= 130  # half-transparent black over white -> mid grey
    la = Image.new("LA", (2, 2), (0, 0))
    _save(la, tmp_path / "la.png")
    assert (load_rgb(tmp_path / "la.png", LIMIT) == 255).all()


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.GIF"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_rgb(path, LIMIT)
    assert out.shape == (6, 6, 3)
    assert tuple(out[3, 3]) == (255, 0, 0)


def test_multipage_tiff_first_page_and_grey_and_bilevel(tmp_path):
    pages = [Image.new("L", (5, 4), 77), Image.new("L", (5, 4), 200)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    out = load_rgb(path, LIMIT)
    assert out.shape == (4, 5, 3) and (out == 77).all()
    bilevel = _save(Image.new("1", (3, 3), 1), tmp_path / "bw.bmp")
    assert (load_rgb(bilevel, LIMIT) == 255).all()


# ------------------------------------------------------------------ failures

def test_truncated_file_is_a_clear_error(tmp_path):
    good = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "full.jpg", format="JPEG")
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageLoadError) as err:
        load_rgb(bad, LIMIT)
    assert err.value.path == str(bad) and "cut.jpg" in str(err.value)
    assert "truncated" in err.value.cause or "decode" in err.value.cause


def test_text_file_named_png_is_a_clear_error(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("hello, I am not a picture")
    with pytest.raises(ImageLoadError, match=r"fake\.png: not a readable image"):
        load_rgb(fake, LIMIT)


def test_disallowed_format_behind_image_extension_is_refused(tmp_path):
    path = tmp_path / "really_a.png"
    Image.new("RGB", (4, 4)).save(path, format="PPM")  # a decodable format we do not accept
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_rgb(path, LIMIT)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImageLoadError, match="gone.png: no such file"):
        load_rgb(tmp_path / "gone.png", LIMIT)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match=r"decompression bomb: 100x100 = 10000 pixels, limit 9999"):
        load_rgb(path, max_pixels=9_999)
    assert load_rgb(path, max_pixels=10_000).shape == (100, 100, 3)


def test_pillow_own_bomb_error_is_mapped(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow raises above twice its limit
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(path, max_pixels=LIMIT)


def test_save_png_round_trip():
    pixels = _rgb()
    import io

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(save_png(pixels)))), pixels)


def test_distinct_raw_names_get_distinct_display_names():
    from agents.images import display_name

    names = ["new\nline.png", "new\\x0aline.png", "a\x85b.png", "a" + os.fsdecode(b"\x85") + "b.png", "back\\slash.png"]
    shown = [display_name(n) for n in names]
    assert len(set(shown)) == len(names), shown
    assert shown[0] == "new\\x0aline.png" and shown[1] == "new\\x5cx0aline.png"
    assert all(c.isprintable() for s in shown for c in s)
