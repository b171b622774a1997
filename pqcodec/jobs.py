"""One file's work, the same for a single file (cli.py) and for each file of a folder (batch.py):
code it, say what went wrong in one line that names the file, and fold Pillow's warnings into one
line."""
import os
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFilesError, PQCodecError
from .files import OutputError
from .request import EncodeRequest

# what the library calls a source it has no name for (bytes, arrays): the CLI says which file it was
_UNNAMED = ("<bytes>: ", "<file object>: ", "input: ")


@dataclass(frozen=True)
class CodingOptions:
    """The coding settings of a run (picklable: folder workers get a copy)."""
    model: str | None = None
    request: EncodeRequest = EncodeRequest()  # encode: to what (request.py)
    decoder: str = "mse"            # decode: which decoder (decoders.py)
    device: str = "cpu"             # where the networks run (devices.py)


def encode_image(source, name: str, options: CodingOptions, notes: list | None = None) -> bytes:
    """The .bin bytes of an image (a path, or the bytes read from stdin); errors call it `name`.
    With a size (max_bytes or bpp), a line on what the search chose and cost goes to `notes`."""
    from .zoo import codec_to_encode
    encoded = options.request.file_of(codec_to_encode(options.model, options.device), source, name)
    if notes is not None and encoded.summary:
        notes.append(encoded.summary)
    return encoded.data


def decode_image(source, name: str, output: Path | str, fmt: str, options: CodingOptions,
                 lost: list | None = None) -> bytes:
    """The bytes of an image file in Pillow format `fmt` from a .bin file (a path or a binary stream,
    read bounded; errors call it `name`). Whether `fmt` holds the image (size, mode) is checked from
    the header, before the decode. In a format that changes the pixels (formats.changes_pixels: the
    caller allowed it), a line on what the file lost goes to `lost`."""
    import pqcodec
    from .bitstream import unpack
    from .formats import changes_pixels, check_holds
    from .image import image_bytes
    from .sources import coded_input
    data, _ = coded_input(source, name)
    header = unpack(data)[0]
    check_holds(output, fmt, header.width, header.height, header.greyscale)
    img = pqcodec.decode(data, model=options.model, name=name, decoder=options.decoder, device=options.device)
    try:
        written = image_bytes(img, fmt)
    except (OSError, ValueError) as e:
        raise OutputError(f"{output}: Pillow cannot write this image as {fmt} ({e})") from None
    if lost is not None and changes_pixels(fmt):
        loss = _what_it_lost(img, written, fmt)
        if loss:
            lost.append(loss)
    return written


def _what_it_lost(img, written: bytes, fmt: str) -> str | None:
    """One line on how far the file `written` (format `fmt`) reads back from the decoded image
    `img`, or None where it holds it exactly (a greyscale image in a GIF's 256 colours)."""
    import io
    import numpy as np
    from PIL import Image
    from .formats import LOSSLESS_CHOICES, how_it_changes
    from .metrics import psnr
    with Image.open(io.BytesIO(written)) as back:
        db = psnr(np.asarray(img.convert("RGB")), np.asarray(back.convert("RGB")))
    if db == float("inf"):
        return None
    return (f"{fmt} ({how_it_changes(fmt)}) changed the decoded pixels: the file is {db:.1f} dB PSNR from them "
            f"(--lossy-output; {LOSSLESS_CHOICES} keep them exactly)")


def failure_line(name: str, error: BaseException) -> str:
    """`NAME: reason`, one line, for an error met while working on the file `name` ('stdin' for
    standard input). An OutputError names its output itself, and a ModelFilesError its model (the
    installation's problem, not the file's); a library message that names `name`, or a nameless
    source ('input: ...'), is not named twice."""
    if isinstance(error, (OutputError, ModelFilesError)):
        message = str(error)
    elif isinstance(error, PQCodecError):
        message = _without_name(str(error), name)
        message = f"{name}: {message}"
    elif isinstance(error, OSError):
        message = f"{error.filename or name}: {error.strerror or error}"
    elif isinstance(error, MemoryError):
        message = f"{name}: out of memory"
    else:
        message = f"{name}: internal error ({type(error).__name__}: {error}); please report it " \
                  "(the details: --debug or PQCODEC_DEBUG=1)"
    return " ".join(message.split("\n"))


def is_internal(error: BaseException) -> bool:
    """Whether an error is a bug rather than bad input or a system condition."""
    return not isinstance(error, (PQCodecError, OSError, MemoryError))


def details(error: BaseException) -> str:
    """The traceback of an error, for --debug."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _without_name(message: str, name: str) -> str:
    for prefix in (f"{name}: ", *_UNNAMED):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


@contextmanager
def folded_warnings(lines: list, show_others: bool = False):
    """Collects the warnings raised in the block; appends to `lines` one line for Pillow's (the
    first, and how many more), e.g. 'Pillow: Corrupt EXIF data. (and 1 more warning)'. Others
    (torch's) are shown as Python shows them when `show_others` (--debug), else dropped."""
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        _fold(caught, lines, show_others)


def _fold(caught: list, lines: list, show_others: bool):
    pillow = [w for w in caught if f"{os.sep}PIL{os.sep}" in (w.filename or "")]
    if pillow:
        first = " ".join(str(pillow[0].message).split())
        more = len(pillow) - 1
        lines.append(f"Pillow: {first}" + (f" (and {more} more warning{'s' if more > 1 else ''})" if more else ""))
    if show_others:
        for w in caught:
            if w not in pillow:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
