"""Reading any image a user may hand us into 8-bit RGB, and writing decoded images.

Orientation: the EXIF orientation tag is applied, so the coded image is the one a viewer shows.
Alpha is not coded: RGBA, LA and transparent palette images lose their alpha channel.
Greyscale sources (1, L, I;16 ...) are coded as RGB and decoded back to greyscale (a header flag).
16-bit sources are reduced to 8 bits with rounding.
"""
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .bitstream import MAX_PIXELS, MAX_SIDE
from .errors import ImageError

_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64)
    if a.max(initial=0) > 255:  # 16-bit data (Pillow loads 16-bit greyscale as I or I;16)
        a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _check_size(width: int, height: int, what: str):
    if width < 1 or height < 1:
        raise ImageError(f"{what}: empty image ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(f"{what}: {width}x{height} exceeds the supported size "
                         f"({MAX_SIDE} px per side, {MAX_PIXELS} pixels)")


def from_pil(img: Image.Image, what: str = "image") -> tuple[np.ndarray, bool]:
    """PIL image -> (uint8 array (H, W, 3), was_greyscale), orientation applied, alpha dropped."""
    _check_size(*img.size, what)
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        grey = img.mode in _GREY_MODES
        if grey:
            a = _to_uint8(np.asarray(img.getchannel(0) if img.mode in ("LA", "La") else img))
            return np.repeat(a[:, :, None], 3, axis=2), True
        if img.mode == "P":
            img = img.convert("RGBA")
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))), False
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{what}: cannot read image data ({e})") from None


def load_image(source) -> tuple[np.ndarray, bool]:
    """source: a path, bytes, a binary file object, a PIL image or a uint8 array (H, W[, 3])."""
    if isinstance(source, Image.Image):
        return from_pil(source)
    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            source = np.repeat(source[:, :, None], 3, axis=2)
            grey = True
        else:
            grey = False
        if source.ndim != 3 or source.shape[2] != 3:
            raise ImageError(f"array image must be (H, W) or (H, W, 3), got {source.shape}")
        _check_size(source.shape[1], source.shape[0], "array")
        return np.ascontiguousarray(_to_uint8(source)), grey
    what = str(source) if isinstance(source, (str, Path)) else "input"
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("input: empty file")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise ImageError(f"{p}: no such file" if not p.exists() else f"{p}: not a regular file")
        if p.stat().st_size == 0:
            raise ImageError(f"{p}: empty file")
    try:
        with Image.open(source) as img:
            return from_pil(img, what)
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image in a format Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{what}: cannot read image ({e})") from None


def to_pil(rgb: np.ndarray, greyscale: bool) -> Image.Image:
    """Decoded uint8 (H, W, 3) -> PIL image, greyscale ('L') when the source was."""
    if greyscale:
        grey = np.rint(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        return Image.fromarray(grey, "L")
    return Image.fromarray(rgb, "RGB")


def image_bytes(img: Image.Image, fmt: str) -> bytes:
    """A decoded image as the bytes of a file in Pillow format `fmt` (written whole, then atomically)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()
