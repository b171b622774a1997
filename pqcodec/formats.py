"""Image formats as Pillow knows them, asked in one place.

`readable_suffixes()` is THE list of what pqcodec reads by name: folder runs pick their inputs by it
and training reads its images by it (a single file or stdin is read by its content, whatever its name).
`output_format` and `check_holds` decide, before any decoding, whether an output file name leads to
an image file that holds the decoded image at its size and in its mode; `changes_pixels` whether
the format keeps its pixels exactly (JPEG, AVIF and GIF's 256 colours do not), `save_options` how
pqcodec writes each format (WebP lossless).
"""
import inspect
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import EpsImagePlugin, Image, ImageFile

from .files import OutputError

# how pqcodec writes a format where Pillow's default would lose pixels that the format can keep
_SAVE_OPTIONS = {"WEBP": {"lossless": True}}
# what a format that changes the pixels does to them, where it is not lossy compression
_HOW_IT_CHANGES = {"GIF": "a palette of at most 256 colours"}
LOSSLESS_CHOICES = ".png, .tif, .webp, .bmp"  # named in the messages; any format changes_pixels passes will do
_PROBE_SIDE = 32  # the probe image: 1024 pixels of random colours, more than a palette holds

# Pillow registers these to identify files, but cannot decode their pixels
_IDENTIFY_ONLY = {"MPEG"}


def _decodes(fmt: str) -> bool:
    """Whether Pillow can decode the pixels of format `fmt` here."""
    if fmt not in Image.OPEN or fmt in _IDENTIFY_ONLY:
        return False
    factory = Image.OPEN[fmt][0]
    if inspect.isclass(factory) and issubclass(factory, ImageFile.StubImageFile):
        return False  # BUFR, GRIB, HDF5, WMF: need a handler plugin Pillow does not ship
    if fmt == "EPS":
        return bool(EpsImagePlugin.has_ghostscript())
    return True


@lru_cache(maxsize=1)
def readable_suffixes() -> frozenset[str]:
    """File name extensions (lower case, with the dot) of every format Pillow can decode here."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if _decodes(fmt))


def is_image_name(path: Path) -> bool:
    """Whether a file's extension is one of `readable_suffixes()` (in any case: a.PNG, a.Jpg)."""
    return path.suffix.lower() in readable_suffixes()


def is_image_extension(path: Path) -> bool:
    """Whether a name ends in an extension Pillow knows for an image format (read or written)."""
    return path.suffix.lower() in Image.registered_extensions()


def output_format(path: Path) -> str:
    """The Pillow format that an output named `path` is written in (by its extension); an
    OutputError naming the path when there is none, or Pillow cannot write it (.psd)."""
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise OutputError(f"{path}: unknown image extension {ext or '(none)'} "
                          "(use .png for a lossless copy of the decoded image)")
    if fmt not in Image.SAVE:
        raise OutputError(f"{path}: Pillow reads {fmt} files ({ext}) but cannot write them "
                          "(use .png for a lossless copy of the decoded image)")
    return fmt


def check_holds(path: Path | str, fmt: str, width: int, height: int, greyscale: bool):
    """Fails (OutputError naming `path`) unless Pillow's writer for `fmt` stores a width x height
    image of the decoded mode (L for greyscale, else RGB) at its size. Tried on a blank image of that
    size, in memory, before the decode: a WebP side over 16383 px, an icon format that shrinks the
    image (.ico, .icns), a mode the format cannot take (greyscale QOI, RGB XBM) all fail here."""
    mode = "L" if greyscale else "RGB"
    what = f"a {width}x{height} {'greyscale' if greyscale else 'RGB'} image"
    buf = io.BytesIO()
    try:
        Image.new(mode, (width, height)).save(buf, format=fmt, **save_options(fmt))
        buf.seek(0)
        with Image.open(buf) as back:
            size = back.size
    except Exception as e:  # each Pillow writer and reader raises its own types
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OutputError(f"{path}: {fmt} files cannot hold {what} ({reason}); use .png") from None
    if size != (width, height):
        raise OutputError(f"{path}: {fmt} files cannot hold {what}: Pillow would write it as "
                          f"{size[0]}x{size[1]}; use .png")


def save_options(fmt: str) -> dict:
    """The options pqcodec passes Pillow's writer of `fmt`: WebP is written lossless."""
    return dict(_SAVE_OPTIONS.get(fmt, {}))


@lru_cache(maxsize=None)
def changes_pixels(fmt: str) -> bool:
    """Whether an RGB image written in `fmt` (with save_options) reads back with other pixel values:
    tried on a 32x32 image of random colours, in memory. False where Pillow cannot write or read it
    back, or gives it another size: check_holds says why those are refused."""
    probe = Image.fromarray(np.random.default_rng(0).integers(0, 256, (_PROBE_SIDE, _PROBE_SIDE, 3), dtype=np.uint8))
    buf = io.BytesIO()
    try:
        probe.save(buf, format=fmt, **save_options(fmt))
        buf.seek(0)
        with Image.open(buf) as back:
            if back.size != probe.size:
                return False
            return not np.array_equal(np.asarray(back.convert("RGB")), np.asarray(probe))
    except Exception:  # each Pillow writer and reader raises its own types
        return False


def how_it_changes(fmt: str) -> str:
    """What a format that changes_pixels does to them, in words."""
    return _HOW_IT_CHANGES.get(fmt, "lossy compression")
