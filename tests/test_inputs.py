"""The input contract (docs/inputs.md), checked on the values pqcodec codes (`load_image`, what the
coder is handed): bit depth by mode and dtype, never by value; floats as [0, 1]; ICC profiles
converted to sRGB; animations refused; and docs/inputs.md's table is what eval/input_contract.py
measures now."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pqcodec.errors import ImageError
from pqcodec.image import load_image
from conftest import random_image
from input_builders import (ADOBE_RGB_GAMMA, ADOBE_RGB_PRIMARIES, SRGB_PRIMARIES, adobe_rgb_profile,
                            linear_grey_profile, png_16bit, rgb_to_xyz, srgb_profile)



def _file(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _one_line_error(source, *fragments):
    with pytest.raises(ImageError) as e:
        load_image(source)
    message = str(e.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


# -- bit depth ----------------------------------------------------------------------------------------
def test_16_bit_grey_png_with_dark_values_is_read_by_its_depth_not_its_values():
    """The bug: a 16-bit PNG whose brightest pixel was <= 255 was taken for 8-bit (257x too bright)."""
    a = np.linspace(0, 200, 30 * 40).reshape(30, 40).astype(np.uint16)
    rgb, grey = load_image(_file(Image.fromarray(a)))
    assert grey and Image.open(io.BytesIO(_file(Image.fromarray(a)))).mode == "I;16"
    assert np.array_equal(rgb[:, :, 0], np.rint(a / 257).astype(np.uint8))  # 0 or 1, not 0..200
    assert rgb.max() == 1


def test_uint16_arrays_are_16_bit_whatever_their_values():
    a = np.array([[0, 128, 129, 200, 385, 386, 65535]], np.uint16)
    expected = np.array([0, 0, 1, 1, 1, 2, 255], np.uint8)  # round(v / 257)
    for arr in (a, a.astype(">u2"), np.repeat(a[:, :, None], 3, axis=2)):
        assert np.array_equal(load_image(arr)[0][0, :, 0], expected)


def test_16_bit_pgm_is_read_as_16_bit():
    """Pillow gives a 16-bit PGM as mode I scaled to 0..65535: coded value / 257, not clipped."""
    values = np.array([[0, 250, 500, 1000]], dtype=">u2")
    pgm = b"P5 4 1 1000\n" + values.tobytes()
    assert Image.open(io.BytesIO(pgm)).mode == "I"
    assert list(load_image(pgm)[0][0, :, 0]) == [0, 64, 128, 255]


def test_mode_i_outside_16_bits_and_mode_i_made_in_memory_are_refused():
    tiff = _file(Image.fromarray(np.array([[-5, 7]], np.int32), "I"), "TIFF")
    _one_line_error(tiff, "<bytes>", "mode I", "-5..7")
    _one_line_error(Image.fromarray(np.array([[3, 7]], np.int32), "I"), "<PIL image>", "no bit depth")


def test_16_bit_rgb_png_keeps_pillows_high_byte():
    """Pillow reads 16-bit RGB as 8 bits, the high byte (documented; at most a level below rounding)."""
    a = np.array([[[0x1280, 0x12FF, 0xFEFF], [0, 65535, 257 * 77]]], np.uint16)
    rgb, grey = load_image(png_16bit(a))
    assert not grey and np.array_equal(rgb, (a >> 8).astype(np.uint8))


def test_float_arrays_and_mode_f_are_taken_as_0_to_1():
    """The bug: float32 in [0, 1] (arrays and float TIFFs) came back black."""
    rgb = random_image(12, 20)
    for dtype in (np.float16, np.float32, np.float64):
        coded = load_image((rgb / 255).astype(dtype))[0]
        assert np.abs(coded.astype(int) - rgb).max() <= (1 if dtype == np.float16 else 0), dtype
    grey = rgb[:, :, 0]
    tiff = _file(Image.fromarray((grey / 255).astype(np.float32)), "TIFF")
    assert Image.open(io.BytesIO(tiff)).mode == "F"
    coded, is_grey = load_image(tiff)
    assert is_grey and np.array_equal(coded[:, :, 0], grey)


@pytest.mark.parametrize("value, message", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity"),
                                            (-0.001, "-0.001..1"), (1.0001, "0..1.0001"), (255.0, "0..255")])
def test_float_values_outside_0_1_are_refused(value, message):
    a = np.linspace(0, 1, 50, dtype=np.float32).reshape(5, 10)
    a[2, 3] = value
    _one_line_error(a, "<array>", message)
    _one_line_error(_file(Image.fromarray(a), "TIFF"), "<bytes>", message)  # mode F likewise


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64,
                                   np.complex64, np.complex128, object])
def test_dtypes_without_a_bit_depth_are_refused(dtype):
    a = np.full((4, 6, 3), 100).astype(dtype)
    _one_line_error(a, "<array>", str(np.dtype(dtype)), "uint8", "uint16")


def test_bool_and_mode_1_are_0_or_255():
    mask = random_image(8, 8)[:, :, 0] > 128
    rgb, grey = load_image(mask)
    assert grey and np.array_equal(rgb[:, :, 0], mask.astype(np.uint8) * 255)
    assert np.array_equal(load_image(Image.fromarray(mask))[0], rgb)  # mode 1


@pytest.mark.parametrize("shape, grey", [((6, 8), True), ((6, 8, 1), True), ((6, 8, 3), False),
                                         ((6, 8, 4), False)])
def test_array_shapes(shape, grey):
    a = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
    rgb, is_grey = load_image(a)
    assert is_grey == grey and rgb.shape == (6, 8, 3)
    assert np.array_equal(rgb, np.repeat(a.reshape(6, 8, 1), 3, 2) if grey else a[:, :, :3])


@pytest.mark.parametrize("shape", [(6, 8, 2), (3, 6, 8), (6, 8, 3, 1), (8,), (0, 5, 3)])
def test_other_array_shapes_are_refused(shape):
    _one_line_error(np.zeros(shape, np.uint8), "<array>")


# -- colour -------------------------------------------------------------------------------------------
def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def _adobe_rgb_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """The colorimetric conversion, computed here from the two spaces' definitions (not by LittleCMS):
    the reference pqcodec's conversion is held to."""
    linear = (rgb / 255.0) ** ADOBE_RGB_GAMMA
    to_srgb = np.linalg.inv(rgb_to_xyz(SRGB_PRIMARIES)) @ rgb_to_xyz(ADOBE_RGB_PRIMARIES)
    return 255 * _srgb_encode(np.clip(linear @ to_srgb.T, 0, 1))


def _saturation(rgb: np.ndarray) -> float:
    top = rgb.max(axis=-1).astype(float)
    return float(np.mean((top - rgb.min(axis=-1)) / np.maximum(top, 1)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_adobe_rgb_is_converted_to_srgb(fmt):
    """The bug: ICC profiles were ignored, and an Adobe RGB photo lost its saturation. Colours inside
    the sRGB gamut, so that the conversion is not hidden by clipping."""
    y, x = np.mgrid[0:16, 0:24]
    raw = np.stack([90 + 4 * x, 110 + 3 * y, 140 - 2 * x], -1).astype(np.uint8)
    data = _file(Image.fromarray(raw), fmt, icc_profile=adobe_rgb_profile(), **({"quality": 100} if fmt == "JPEG" else {}))
    as_stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    coded, grey = load_image(data)
    expected = _adobe_rgb_to_srgb(as_stored)
    assert not grey and np.abs(coded - expected).max() <= 1.5
    assert _saturation(coded) > 1.1 * _saturation(as_stored)
    assert np.abs(coded.astype(int) - as_stored).max() >= 10  # not a near-identity


def test_srgb_profile_leaves_values_as_they_are():
    rgb = random_image(32, 32, seed=4)
    assert np.array_equal(load_image(_file(Image.fromarray(rgb), icc_profile=srgb_profile()))[0], rgb)


def test_grey_with_a_grey_profile_is_converted_and_stays_grey():
    """Linear-light grey 0.5 is sRGB 188: the grey path applies the profile too."""
    grey = np.array([[0, 64, 128, 255]], np.uint8)
    rgb, is_grey = load_image(_file(Image.fromarray(grey), icc_profile=linear_grey_profile()))
    expected = np.rint(255 * _srgb_encode(grey / 255.0))
    assert is_grey and np.abs(rgb[0, :, 0] - expected).max() <= 1 and rgb[0, 2, 0] in (187, 188, 189)


@pytest.mark.parametrize("profile, message", [(b"not an ICC profile" * 8, "cannot be read"),
                                              (linear_grey_profile(), "for GRAY images, not RGB ones")])
def test_unusable_profiles_are_refused(tmp_path, profile, message):
    path = tmp_path / "tagged.png"
    path.write_bytes(_file(Image.fromarray(random_image(8, 8)), icc_profile=profile))
    _one_line_error(path, str(path), "ICC", message, "remove the profile")
    img = Image.open(path)
    img.info.pop("icc_profile")  # the documented way to code the numbers as they are
    assert np.array_equal(load_image(img)[0], random_image(8, 8))


# -- frames -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, suffix", [("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png"), ("TIFF", "tiff")])
def test_animations_and_multi_page_files_are_refused_with_their_frame_count(tmp_path, fmt, suffix):
    """The bug: only the first frame was coded, without a word."""
    frames = [Image.fromarray(random_image(16, 24, seed=i)) for i in range(3)]
    path = tmp_path / f"anim.{suffix}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    _one_line_error(path, str(path), "has 3 frames")
    with open(path, "rb") as f:
        _one_line_error(f, str(path), "has 3 frames")
    img = Image.open(path)
    img.seek(2)
    assert load_image(img.copy())[0].shape == (16, 24, 3)  # the documented way to code one frame


def test_mpo_codes_its_primary_image():
    """A camera JPEG with an extra image after the photo: the photo is coded, not refused."""
    data = _file(Image.new("RGB", (24, 16), (200, 30, 40)), "MPO", save_all=True,
                 append_images=[Image.new("RGB", (8, 6), (0, 0, 255))])
    mpo = Image.open(io.BytesIO(data))
    assert mpo.format == "MPO" and mpo.n_frames == 2
    coded = load_image(data)[0]
    assert coded.shape == (16, 24, 3) and np.abs(coded.astype(int) - (200, 30, 40)).max() <= 3


# -- modes --------------------------------------------------------------------------------------------
def test_colour_modes_are_converted_to_rgb():
    rgb = random_image(10, 12, seed=2)
    img = Image.fromarray(rgb)
    for mode, tolerance in [("CMYK", 0), ("HSV", 8), ("YCbCr", 3), ("RGBX", 0), ("RGBa", 0)]:  # 8-bit hue: coarse
        coded, grey = load_image(img.convert(mode))
        assert not grey and np.abs(coded.astype(int) - rgb).max() <= tolerance, mode
    lab = Image.merge("LAB", [Image.new("L", (2, 2), 255), Image.new("L", (2, 2), 128), Image.new("L", (2, 2), 128)])
    assert np.abs(load_image(lab)[0].astype(int) - 255).max() <= 2  # L* = 100: white


def test_premultiplied_grey_alpha_is_unpremultiplied():
    la = Image.merge("LA", [Image.new("L", (2, 1), 200), Image.new("L", (2, 1), 128)])
    assert np.abs(load_image(la.convert("La"))[0].astype(int) - 200).max() <= 1


def test_palette_transparency_keeps_the_palette_colour():
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 255, 0])
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1
    rgb, grey = load_image(_file(p))
    assert not grey and rgb[0].tolist() == [[255, 0, 0], [0, 255, 0]]


# -- the table ----------------------------------------------------------------------------------------
def test_docs_table_is_what_the_code_does(tiny_codec):
    """docs/inputs.md's table against a fresh run of eval/input_contract.py (with the tiny model: the
    table does not depend on the model). On other Pillow or numpy versions than the table was made
    with, only the columns that say what happened are compared (messages and values may differ)."""
    from eval import input_contract
    doc = input_contract.current_table(input_contract.DOC.read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs: a thread pool only slows inputs this small
    try:
        fresh = input_contract.table(tiny_codec)
    finally:
        torch.set_num_threads(threads)
    if input_contract.versions() in doc:
        assert fresh == doc, "docs/inputs.md is out of date: run python -m eval.input_contract --write"
    else:
        def outcomes(text):
            return [row.split(" | ")[:3] for row in text.splitlines() if row.startswith("| ")]
        assert outcomes(fresh) == outcomes(doc)
