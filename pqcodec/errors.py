"""Errors a user can cause (bad input, corrupt file): the CLI prints them as one line."""
from contextlib import contextmanager


class PQCodecError(Exception):
    """Base class: any error caused by the input rather than by a bug."""


class CorruptFileError(PQCodecError):
    """A .bin file that is truncated, altered or not a pqcodec file."""


class UnsupportedFileError(PQCodecError):
    """A valid-looking file this version cannot decode (unknown version or model)."""


class ModelFilesError(UnsupportedFileError):
    """A shipped model's weights (or a file they need: a head file's base, a decoder) missing from
    the models folder, or not the file recorded for it (zoo.py): the installation's problem, not the
    input's, so its message names the model and the folder and never an image or a .bin file
    (`named` leaves it as it is). An UnsupportedFileError too, as earlier versions raised for it."""


class ImageError(PQCodecError):
    """An input that is not a readable image, one outside the supported limits, or one pqcodec cannot
    code faithfully (docs/inputs.md)."""


class InputTypeError(PQCodecError, TypeError):
    """An argument of a type pqcodec does not take (an image source that is None or a list, a quality
    of 2.5): also a TypeError."""


@contextmanager
def named(source_name: str):
    """PQCodecErrors raised inside come out with `source_name: ` in front of their message (the same
    error, class and traceback), so that every error names the file or source it is about; but a
    ModelFilesError, which is about the installed models, not the source, keeps its own message."""
    try:
        yield
    except ModelFilesError:
        raise
    except PQCodecError as e:
        e.args = (f"{source_name}: {e}",)
        raise
