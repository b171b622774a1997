"""What the API takes as a source, what its errors call it, and reading a coded file from one.

A source of `pqcodec.encode` (an image) or of `pqcodec.decode` (a .bin file) is one of
- a path: a str or an os.PathLike (pathlib.Path) naming a file;
- file contents: bytes, bytearray or memoryview;
- a binary file object: anything whose .read() gives bytes (open(f, "rb"), io.BytesIO,
  sys.stdin.buffer): one that can seek is read from its start, as Pillow reads images (so a BytesIO
  just written to works), a stream (a pipe) from where it stands, bounded;
and for an image also a PIL image or a numpy array (image.py). Anything else is an InputTypeError
that says what is expected. Every error about a source names it: the path, the file object's .name,
or <bytes> / <file object> (image.py adds <PIL image> and <array>).
"""
import io
import os
from pathlib import Path

from .errors import InputTypeError, PQCodecError, named

PATH, CONTENTS, FILE_OBJECT = "path", "file contents", "file object"
FILE_SOURCES = ("a path (str or pathlib.Path)", "file contents (bytes, bytearray, memoryview)", "a binary file object")


def source_kind(source) -> str | None:
    """PATH, CONTENTS or FILE_OBJECT; None for anything else (including a text-mode file)."""
    if isinstance(source, (str, os.PathLike)):
        return PATH
    if isinstance(source, (bytes, bytearray, memoryview)):
        return CONTENTS
    if callable(getattr(source, "read", None)) and not isinstance(source, io.TextIOBase):
        return FILE_OBJECT
    return None


def source_name(source) -> str:
    """What errors call a path, contents or file-object source."""
    kind = source_kind(source)
    if kind == PATH:
        return os.fsdecode(source)
    if kind == CONTENTS:
        return "<bytes>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else "<file object>"


def wrong_type(source, what: str, kinds: tuple[str, ...]) -> InputTypeError:
    """The error for a source of a type pqcodec does not take: `what` (a thing) must be one of `kinds`,
    what it is instead, and for the usual mistakes how to get there."""
    kind = type(source)
    got = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    hint = ""
    if isinstance(source, io.TextIOBase):
        hint = "; open the file in binary mode ('rb')"
    elif kind.__module__.split(".")[0] == "torch":
        hint = "; for a (3, H, W) tensor in [0, 1] pass tensor.permute(1, 2, 0).numpy()"
    return InputTypeError(f"{what} must be {', '.join(kinds[:-1])} or {kinds[-1]}; got {got}{hint}")


def can_seek(stream) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def rewound(stream):
    """A file object moved to its start if it can seek (as Pillow does with images); else as it is."""
    if can_seek(stream):
        stream.seek(0)
    return stream


def check_regular_file(path: Path, error=PQCodecError):
    """Raises `error` (unnamed) unless `path` is an existing regular file."""
    if not path.exists():
        raise error("no such file")
    if path.is_dir():
        raise error("is a folder, not a file")
    if not path.is_file():
        raise error("not a regular file")


def coded_input(source, name: str | None = None) -> tuple[bytes, str]:
    """(the bytes of a coded file, what errors call it) from a path, contents or a binary file object;
    a path or file object is read bounded (files.read_coded_file). `name` overrides the name."""
    from .bitstream import MAX_FILE_BYTES
    from .files import read_coded_file
    kind = source_kind(source)
    if kind is None:
        raise wrong_type(source, "a coded file", FILE_SOURCES)
    name = name or source_name(source)
    with named(name):
        if kind == CONTENTS:
            return bytes(source), name
        try:
            if kind == PATH:
                path = Path(os.fsdecode(source))
                check_regular_file(path)
                return read_coded_file(path, MAX_FILE_BYTES), name
            data = read_coded_file(rewound(source), MAX_FILE_BYTES)
        except OSError as e:
            raise PQCodecError(e.strerror or str(e)) from None
        if not isinstance(data, (bytes, bytearray)):
            raise InputTypeError(f"the file object gave {type(data).__name__}, not bytes: open it in binary mode ('rb')")
        return bytes(data), name
