"""Files in and out. Outputs: nothing the user had is lost (a temporary file beside the target,
renamed into place only when complete). Coded inputs: bounded before they are read whole."""
import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_coded_file(source: Path | BinaryIO) -> bytes:
    """A .bin file's bytes, from a path or a binary stream (stdin); input longer than any pqcodec
    file can be is refused without reading it whole."""
    from .bitstream import MAX_FILE_BYTES
    from .errors import CorruptFileError
    if isinstance(source, Path):
        if source.stat().st_size > MAX_FILE_BYTES:
            raise CorruptFileError(f"{source.stat().st_size} bytes is longer than any pqcodec file can be")
        return source.read_bytes()
    data = source.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CorruptFileError(f"longer than any pqcodec file can be ({MAX_FILE_BYTES} bytes)")
    return data
