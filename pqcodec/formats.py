"""Image formats as Pillow knows them, asked in one place.

`readable_suffixes()` is THE list of what pqcodec reads by name: folder runs pick their inputs by it
and training reads its images by it (a single file or stdin is read by its content, whatever its name).
`output_format` and `check_holds` decide, before any decoding, whether an output file name leads to
an image file that holds the decoded image exactly at its size and in its mode.
"""
import inspect
import io
from functools import lru_cache
from pathlib import Path

from PIL import EpsImagePlugin, Image, ImageFile

from .files import OutputError

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
        Image.new(mode, (width, height)).save(buf, format=fmt)
        buf.seek(0)
        with Image.open(buf) as back:
            size = back.size
    except Exception as e:  # each Pillow writer and reader raises its own types
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OutputError(f"{path}: {fmt} files cannot hold {what} ({reason}); use .png") from None
    if size != (width, height):
        raise OutputError(f"{path}: {fmt} files cannot hold {what}: Pillow would write it as "
                          f"{size[0]}x{size[1]}; use .png")
