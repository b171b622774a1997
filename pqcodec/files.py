"""Writing outputs so that nothing the user had is lost: a temporary file beside the target, renamed
into place only when complete; an existing target is replaced only when asked."""
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_coded_file(path: Path) -> bytes:
    """A .bin file's bytes; one longer than any pqcodec file can be is refused before it is read."""
    from .container import MAX_FILE_BYTES
    from .errors import CorruptFileError
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CorruptFileError(f"{size} bytes is longer than any pqcodec file can be")
    return path.read_bytes()
