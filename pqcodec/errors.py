"""Errors a user can cause (bad input, corrupt file): the CLI prints them as one line."""
from contextlib import contextmanager


class PQCodecError(Exception):
    """Base class: any error caused by the input rather than by a bug."""


class CorruptFileError(PQCodecError):
    """A .bin file that is truncated, altered or not a pqcodec file."""


class UnsupportedFileError(PQCodecError):
    """A valid-looking file this version cannot decode (unknown version or model)."""


class ImageError(PQCodecError):
    """An input that is not a readable image, one outside the supported limits, or one pqcodec cannot
    code faithfully (docs/inputs.md)."""


class InputTypeError(PQCodecError, TypeError):
    """An argument of a type pqcodec does not take (an image source that is None or a list, a quality
    of 2.5): also a TypeError."""


@contextmanager
def named(source_name: str):
    """PQCodecErrors raised inside come out with `source_name: ` in front of their message (the same
    error, class and traceback), so that every error names the file or source it is about."""
    try:
        yield
    except PQCodecError as e:
        e.args = (f"{source_name}: {e}",)
        raise
