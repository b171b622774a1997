"""Reading any image a user may hand us into 8-bit sRGB, and writing decoded images.

The contract (docs/inputs.md tabulates every input kind tried; eval/input_contract.py makes the table):
- Sources: a path, file contents (bytes, bytearray, memoryview), a binary file object (sources.py),
  a PIL image or a numpy array; anything else is an InputTypeError. Every error names the source.
- Bit depth follows the image mode or the array's dtype, never its values:
  8-bit modes and uint8 as they are; 1-bit and bool as 0 / 255;
  16-bit modes (I;16...) and uint16 as value / 257, rounded; mode I read from a file (Pillow's mode
  for 16-bit PGM) likewise, refused outside 0..65535; mode I made in memory (fromarray of int32) is
  refused: it says nothing of its depth;
  float (mode F, float arrays) as [0, 1], times 255, rounded; NaN, inf or a value outside [0, 1]
  is refused (clip first, if clipping is what you mean).
  Other dtypes (signed or wider integers, complex, object) are refused: they carry no bit depth.
  Arrays are (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), channels last.
- Colour: an embedded ICC profile is applied (converted to sRGB by LittleCMS, perceptual intent); a
  profile that cannot be read or does not fit the image is refused, since the colours it defines
  cannot be reproduced (remove it to code the pixels as sRGB). Without a profile, pixels are sRGB.
  CMYK without a profile is converted by Pillow (naively); YCbCr, LAB and HSV are converted to RGB.
- Orientation: the EXIF orientation tag is applied, so the coded image is the one a viewer shows.
- Alpha is not coded: RGBA, LA, PA, transparent palette images and 4-channel arrays lose their alpha
  channel; the colour underneath is kept (premultiplied RGBa / La are un-premultiplied first).
- Greyscale sources (1, L, LA, I;16..., I, F, 2-D arrays) are coded as RGB and decoded back to
  greyscale (a header flag).
- One image per input: animations and multi-page files (GIF, WebP, APNG, TIFF) are refused, naming
  the frame count, so that no frame is dropped without a word. MPO (a camera JPEG carrying extra
  preview or depth images) is the exception: its primary image is the photo, and it is coded.
"""
import io
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .limits import MAX_PIXELS, MAX_SIDE
from .errors import ImageError, named
from .files import read_image_stream
from .sources import (CONTENTS, FILE_SOURCES, PATH, can_seek, check_regular_file, source_kind, source_name,
                      wrong_type)

IMAGE_SOURCES = (*FILE_SOURCES, "a PIL image", "a numpy array")
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
COLOUR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
ARRAY_DTYPES = "uint8 (0..255), uint16 (0..65535), bool, or float (0..1)"
# the image modes an ICC profile's colour space applies to
_PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}


SUPPORTED_SIZE = f"{MAX_SIDE} px per side, {MAX_PIXELS} pixels"


def _check_size(width: int, height: int):
    if width < 1 or height < 1:
        raise ImageError(f"empty image ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(f"{width}x{height} exceeds the supported size ({SUPPORTED_SIZE})")


def _opened(fp) -> Image.Image:
    """Image.open(fp) without Pillow's decompression-bomb warning, which it gives for an image of
    over 89 MP: pqcodec's own limit (_check_size, on the image it returns) is lower and says so in
    its words."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(fp)


def _too_large(e: Exception) -> ImageError:
    """pqcodec's words for Pillow's DecompressionBombError (an image of over 179 MP)."""
    found = re.search(r"\((\d+) pixels\)", str(e))
    pixels = f"{int(found[1])} pixels" if found else f"over {2 * Image.MAX_IMAGE_PIXELS} pixels"
    return ImageError(f"an image of {pixels} exceeds the supported size ({SUPPORTED_SIZE})")


# -- bit depth: by dtype (arrays, and the arrays of PIL images) ---------------------------------------
def to_uint8(a: np.ndarray) -> np.ndarray:
    """Sample values -> 8 bits by the array's dtype alone (module docstring); refuses values outside
    the dtype's range and dtypes with no bit depth."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "u" and size == 1:
        return a
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if kind == "u" and size == 2:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(a / 257), exactly
    if kind == "f":
        _check_unit_range(a)
        return np.rint(a * a.dtype.type(255)).astype(np.uint8)
    raise ImageError(f"{a.dtype} samples have no bit depth pqcodec can go by: it takes {ARRAY_DTYPES}; "
                     "convert first (e.g. a.astype(np.uint8) for values in 0..255)")


def _check_unit_range(a: np.ndarray):
    if not np.isfinite(a).all():
        raise ImageError(f"float samples contain {'NaN' if np.isnan(a).any() else 'infinity'}")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        raise ImageError(f"float samples must lie in [0, 1], found {lo:.6g}..{hi:.6g} "
                         "(clip them first if that is what you mean)")


def from_array(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> (uint8 (H, W, 3), was_greyscale)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"array of shape {a.shape}: pqcodec takes (H, W) or (H, W, C) with C = 1, 3 or 4 "
                         "(channels last; a 4th channel is alpha, which is not coded)")
    _check_size(a.shape[1], a.shape[0])
    grey = a.ndim == 2
    a = to_uint8(a if grey else a[:, :, :3])
    return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2) if grey else a), grey


# -- PIL images ----------------------------------------------------------------------------------------
def _grey_samples(img: Image.Image) -> np.ndarray:
    """A greyscale-mode image's samples, in a dtype that says their bit depth (alpha dropped)."""
    if img.mode in ("LA", "La"):
        img = img.convert("LA").getchannel(0)  # un-premultiplies La
    a = np.asarray(img)
    if img.mode == "I":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageError(f"mode I samples {lo}..{hi}: pqcodec reads a mode I file as 16-bit (0..65535), "
                             "as Pillow decodes 16-bit PGM and PPM; other integer images have no white level")
        a = a.astype(np.uint16)
    return a


def _check_mode(img: Image.Image):
    """Refuses the modes with no known bit depth or colour space: unknown ones, and mode I (32-bit
    integer) made in memory (Image.fromarray of an int32 array, convert("I")): only a file's mode I
    is known to be 16-bit."""
    if img.mode not in GREY_MODES | COLOUR_MODES:
        raise ImageError(f"image mode {img.mode} is not supported")
    if img.mode == "I" and img.format is None:
        raise ImageError("a mode I (32-bit integer) image made in memory has no bit depth to go by: "
                         "convert it to I;16 for 16-bit values or to L for 8-bit ones")


def _colour_base(img: Image.Image) -> Image.Image:
    """A colour-mode image as RGB (or CMYK, which its ICC profile, if any, converts), alpha dropped."""
    if img.mode in ("P", "PA", "RGBa"):
        img = img.convert("RGBA")
    return img if img.mode in ("RGB", "CMYK") else img.convert("RGB")


def _check_single_frame(img: Image.Image):
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        raise ImageError(f"has {frames} frames (an animation or a multi-page file); pqcodec codes one image: "
                         "pass one frame (with PIL: img.seek(i), then img.copy())")


def to_srgb(img: Image.Image, icc_profile: bytes) -> Image.Image:
    """img (L, RGB or CMYK) converted from its embedded ICC profile to sRGB: an RGB image (a greyscale
    one has R = G = B). Refuses a profile that cannot be read or does not fit the image."""
    advice = "remove the profile to code the pixels as sRGB"
    try:
        from PIL import ImageCms
    except ImportError:
        raise ImageError("has an ICC colour profile, and this Pillow was built without LittleCMS "
                         f"(ImageCms) to apply it; {advice}") from None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as e:
        raise ImageError(f"its ICC colour profile cannot be read ({e}); {advice}") from None
    space = profile.profile.xcolor_space.strip()
    if img.mode == "L" and space == "RGB":  # a grey image tagged with an RGB profile: (v, v, v) in it
        img = img.convert("RGB")
    if _PROFILE_MODES.get(space) != img.mode:
        raise ImageError(f"its ICC colour profile is for {space} images, not {img.mode} ones; {advice}")
    try:
        return ImageCms.profileToProfile(img, profile, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        raise ImageError(f"its ICC colour profile cannot be applied ({e}); {advice}") from None


@lru_cache(maxsize=1)
def _srgb_profile():
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def from_pil(img: Image.Image) -> tuple[np.ndarray, bool]:
    """PIL image -> (uint8 sRGB array (H, W, 3), was_greyscale) by the module's contract; errors
    unnamed (load_image names them)."""
    _check_size(*img.size)
    _check_single_frame(img)
    _check_mode(img)
    icc_profile = img.info.get("icc_profile")
    img.load()
    img = _upright(img)
    grey = img.mode in GREY_MODES
    base = Image.fromarray(to_uint8(_grey_samples(img)), "L") if grey else _colour_base(img)
    if icc_profile:
        base = to_srgb(base, icc_profile)
    if grey:
        a = np.asarray(base) if base.mode == "L" else np.rint(np.asarray(base).mean(axis=2)).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2), True
    return _rgb_array(base if base.mode == "RGB" else base.convert("RGB")), False


def _upright(img: Image.Image) -> Image.Image:
    """img turned as its EXIF orientation tag says (a new image), or img itself where it needs no
    turn (ImageOps.exif_transpose would copy it: 96 MB for 24 MP)."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        return ImageOps.exif_transpose(img)
    return img


_BAND_BYTES = 4 << 20


def _rgb_array(img: Image.Image) -> np.ndarray:
    """An RGB image's pixels as a new uint8 (H, W, 3) array, a band of rows at a time:
    np.asarray(img) goes through img.tobytes(), which holds the pixels twice while it joins them."""
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // (3 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = np.asarray(img.crop((0, top, width, bottom)))
    return out


# -- any source ----------------------------------------------------------------------------------------
def image_source_name(source) -> str:
    """What errors call an image source: the path, the file object's name or file name, or <bytes>,
    <file object>, <PIL image>, <array>."""
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return source_name(source)


def _open(source, kind: str) -> Image.Image:
    if kind == CONTENTS:
        data = bytes(source)
        if not data:
            raise ImageError("empty file")
        return _opened(io.BytesIO(data))
    if kind == PATH:
        path = Path(os.fsdecode(source))
        check_regular_file(path, ImageError)
        if path.stat().st_size == 0:
            raise ImageError("empty file")
        return _opened(path)
    if not can_seek(source):  # Pillow would read it whole, without a limit
        return _opened(io.BytesIO(read_image_stream(source)))
    return _opened(source)  # from its start: Pillow seeks there


def load_image(source, name: str | None = None) -> tuple[np.ndarray, bool]:
    """(uint8 sRGB array (H, W, 3), was_greyscale) of an image source, by the module's contract.
    Bad input raises a one-line PQCodecError that starts with `name` (default: image_source_name)."""
    is_image = isinstance(source, (Image.Image, np.ndarray))
    kind = None if is_image else source_kind(source)
    if not is_image and kind is None:
        raise wrong_type(source, "an image", IMAGE_SOURCES)
    with named(name or image_source_name(source)):
        try:
            if isinstance(source, Image.Image):
                return from_pil(source)
            if isinstance(source, np.ndarray):
                return from_array(source)
            with _open(source, kind) as img:
                return from_pil(img)
        except UnidentifiedImageError:
            raise ImageError("not an image in a format Pillow can read") from None
        except Image.DecompressionBombError as e:
            raise _too_large(e) from None
        except OSError as e:
            raise ImageError(f"cannot read image ({e.strerror or e})") from None
        except (ValueError, SyntaxError) as e:
            raise ImageError(f"cannot read image ({e})") from None


def to_pil(rgb: np.ndarray, greyscale: bool) -> Image.Image:
    """Decoded uint8 (H, W, 3) -> PIL image, greyscale ('L') when the source was."""
    if greyscale:
        grey = np.rint(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        return Image.fromarray(grey, "L")
    return Image.fromarray(rgb, "RGB")


def image_bytes(img: Image.Image, fmt: str) -> bytes:
    """A decoded image as the bytes of a file in Pillow format `fmt` (written whole, then atomically),
    with pqcodec's options for it (formats.save_options: WebP lossless)."""
    from .formats import save_options
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_options(fmt))
    return buf.getvalue()
