"""Errors a user can cause (bad input, corrupt file): the CLI prints them as one line."""


class PQCodecError(Exception):
    """Base class: any error caused by the input rather than by a bug."""


class CorruptFileError(PQCodecError):
    """A .bin file that is truncated, altered or not a pqcodec file."""


class UnsupportedFileError(PQCodecError):
    """A valid-looking file this version cannot decode (unknown version or model)."""


class ImageError(PQCodecError):
    """An input that is not a readable image, or one outside the supported limits."""
