"""Every kind of input image round-trips to the right size, orientation and mode."""
import io

import numpy as np
import pytest
from PIL import Image

from pqcodec.errors import ImageError
from pqcodec.image import load_image
from conftest import random_image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _round_trip(codec, source) -> Image.Image:
    return codec.decode(codec.encode(source, 2))


@pytest.mark.parametrize("h, w", [(1, 1), (17, 31), (3, 1000), (1000, 3)])
def test_odd_sizes(tiny_codec, h, w):
    out = _round_trip(tiny_codec, _png(Image.fromarray(random_image(h, w))))
    assert out.size == (w, h) and out.mode == "RGB"


def test_greyscale_comes_back_greyscale(tiny_codec):
    grey = Image.fromarray(random_image(20, 30)[:, :, 0], "L")
    out = _round_trip(tiny_codec, _png(grey))
    assert out.mode == "L" and out.size == (30, 20)


def test_palette_and_rgba(tiny_codec):
    rgb = Image.fromarray(random_image(24, 36))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rgba = rgb.copy()
    rgba.putalpha(128)
    for img in (pal, rgba):
        out = _round_trip(tiny_codec, _png(img))
        assert out.mode == "RGB" and out.size == (36, 24)  # alpha is not coded
    # the colour of an RGBA image is kept as it was, alpha dropped
    assert np.array_equal(load_image(_png(rgba))[0], np.asarray(rgb))


def test_16_bit_png_is_scaled_not_clipped(tiny_codec):
    a = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    img = Image.fromarray(a)  # mode I;16
    rgb, grey = load_image(_png(img))
    assert grey and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 120 < rgb[20, 25, 0] < 135
    assert _round_trip(tiny_codec, _png(img)).size == (50, 40)


def test_exif_orientation_is_applied(tiny_codec):
    img = Image.fromarray(random_image(20, 40))  # 40 wide, 20 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed: shown 20 wide, 40 high
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    out = _round_trip(tiny_codec, buf.getvalue())
    assert out.size == (20, 40)


@pytest.mark.parametrize("data, message", [(b"", "empty"), (b"hello, not an image", "not an image"),
                                           (_png(Image.new("RGB", (30, 30)))[:60], "cannot read")])
def test_bad_images(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_rgb_pixels_are_read_in_bands_and_upright(tmp_path, monkeypatch):
    """The pixels come out whole whatever the band height, and an EXIF orientation still turns them."""
    import pqcodec.image as image_module
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (45, 31, 3), dtype=np.uint8)
    monkeypatch.setattr(image_module, "_BAND_BYTES", 3 * 31 * 4)  # 4 rows a band
    assert np.array_equal(load_image(Image.fromarray(rgb))[0], rgb)
    exif = Image.Exif()
    exif[0x0112] = 6                                                # turned 90 degrees: shown rotated
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "turned.jpg") as img:
        expected = np.asarray(img.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(load_image(tmp_path / "turned.jpg")[0], expected)
