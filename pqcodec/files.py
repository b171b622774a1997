"""Files in and out, so that nothing the user had is lost.

Outputs (`write_atomic`, `replacing`): the bytes go to a temporary file beside the target,
`.NAME.PID-XXXXXXXX.part`, created with the permissions the umask gives (0644 under umask 022), are
flushed to disk (fsync), and the file is then put in place in one step, so that the target is at any
moment absent, its old self or complete; on any failure or interrupt the temporary file is removed.
- Without `force` that last step refuses to replace anything: a file that appeared at the target
  while we worked (another process writing the same output) is kept, and the write fails.
- With `force` only a regular file (or a symbolic link, itself replaced) is replaced, keeping its
  permissions; never a folder, a device node, a FIFO or a socket, and never an input of the run.

Inputs: bounded before they are read whole.
"""
import errno
import glob
import hashlib
import os
import secrets
import select
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .limits import MAX_PIXELS
from .errors import CorruptFileError, ImageError, PQCodecError

TEMP_SUFFIX = ".part"
# The longest image input read from a stream (stdin): the largest uncompressed image of the supported
# size, MAX_PIXELS (33.5 MP) of 4 channels of 32 bits (16 bytes a pixel), plus 16 MiB of headers and
# metadata: 528 MiB. Files are opened by Pillow, which reads only what it decodes.
MAX_IMAGE_STREAM_BYTES = 16 * MAX_PIXELS + (16 << 20)


class OutputError(PQCodecError):
    """An output that cannot or may not be written; the message starts with its path. `errno`: the
    system's error number when a write failed (ENOSPC: the disk is full), else None."""

    def __init__(self, message: str, error_number: int | None = None):
        super().__init__(message)
        self.errno = error_number


def is_disk_full(error: BaseException) -> bool:
    """Whether a failed write failed for want of space: the disk (ENOSPC) or the user's quota (EDQUOT)."""
    return getattr(error, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def write_all(fd: int, data) -> None:
    """Writes every byte of `data` to the descriptor `fd`, or raises OSError (ENOSPC on a full disk,
    EPIPE when a pipe's reader is gone). A single write may take only part of the bytes (a disk that
    fills up, a pipe whose reader left): this goes on until the system says why it takes no more,
    where a BufferedWriter may report the part written and no error."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[written:]


# -- outputs --------------------------------------------------------------------------------------
def check_output(path: Path, force: bool, inputs=()):
    """Before any work: fails (OutputError) unless `path` can be written (`check_folder_of`) and
    `check_replaceable` allows it."""
    check_folder_of(path)
    check_replaceable(path, force, inputs)


def check_folder_of(path: Path):
    """Fails (OutputError naming `path`) unless the folder `path` goes in exists, is a folder and
    is writable."""
    parent = path.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"{path}: {folder} is not a folder")
            break
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist")
    check_writable_folder(parent, f"{path}: ")


def check_writable_folder(folder: Path, prefix: str = ""):
    """Fails (OutputError) when this process may not create files in `folder`."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{prefix}cannot write in folder {folder} (permission denied or read-only)")


def check_replaceable(path: Path, force: bool, inputs=()):
    """Fails (OutputError) if writing `path` would replace something it may not: anything without
    `force`; with it, a folder, anything but a regular file or a symbolic link, or one of `inputs`."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a folder")
    if not force:
        raise OutputError(f"{path}: exists (use --force to replace it)")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputError(f"{path}: is not a regular file (--force replaces only regular files)")
    for source in inputs:
        if _same_file(path, source):
            raise OutputError(f"{path}: is the input {source} itself (choose another output)")


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing or unreadable, or a dangling link: not the same file
        return False


def write_atomic(path: Path, data: bytes, force: bool = False, inputs=()):
    """Writes `data` at `path` as the module says: complete or not at all; without `force` never
    over anything, with it only over what `check_replaceable` allows. Errors are OutputErrors naming
    `path` (never the temporary file)."""
    try:
        fd, tmp = _create_temp(path)
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            _put_in_place(tmp, path, force, inputs)
        finally:
            _remove_quietly(tmp)  # gone after a rename; after a link, the target holds the data
    except OSError as e:
        raise OutputError(f"{path}: cannot write it ({e.strerror or e})", e.errno) from None
    _sync_folder(path.parent)


def _put_in_place(tmp: Path, path: Path, force: bool, inputs):
    if force:
        check_replaceable(path, True, inputs)  # again: something else may have appeared meanwhile
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) & 0o777)  # a replaced file keeps its permissions
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # unlike a rename, fails when the target exists
    except FileExistsError:
        raise OutputError(f"{path}: was created by another process while pqcodec worked; kept, not "
                          "replaced (use --force to replace it)") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        # a file system without hard links (FAT, some network shares): check, then rename; the
        # window between the two is the only place where a concurrent writer can be replaced
        if os.path.lexists(path):
            raise OutputError(f"{path}: was created by another process while pqcodec worked; kept, "
                              "not replaced (use --force to replace it)") from None
        os.rename(tmp, path)


@contextmanager
def replacing(path: Path):
    """A temporary path beside `path` for writers that take a path (torch.save, safetensors): when
    the block ends without error the file is flushed to disk and renamed over `path`; otherwise it
    is removed and `path` keeps what it had."""
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        _remove_quietly(tmp)
    _sync_folder(path.parent)


def temp_files_of(path: Path, pid: int) -> list[Path]:
    """The temporary files that process `pid` may have left beside `path` (when it was killed)."""
    return [Path(p) for p in glob.glob(os.path.join(glob.escape(str(path.parent)),
                                                    f".{glob.escape(path.name)}.{pid}-*{TEMP_SUFFIX}"))]


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, opened for writing, permissions from the umask."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def _remove_quietly(path: Path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sync_folder(folder: Path):
    """Makes a rename in `folder` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- inputs ---------------------------------------------------------------------------------------
def read_coded_file(source: Path | BinaryIO, longest: int) -> bytes:
    """A .bin file's bytes, from a path or a binary stream (stdin); input longer than `longest`, the
    longest a pqcodec file can be (bitstream.MAX_FILE_BYTES), is refused without reading it whole."""
    if isinstance(source, Path):
        size = source.stat().st_size
        if size > longest:
            raise CorruptFileError(f"{size} bytes is longer than any pqcodec file can be")
        return source.read_bytes()
    return read_bounded(source, longest, CorruptFileError(
        f"longer than any pqcodec file can be ({longest} bytes)"))


def read_image_stream(stream: BinaryIO) -> bytes:
    """An image file's bytes from a stream (stdin), refused past MAX_IMAGE_STREAM_BYTES."""
    return read_bounded(stream, MAX_IMAGE_STREAM_BYTES, ImageError(
        f"longer than any image pqcodec codes can be ({MAX_IMAGE_STREAM_BYTES} bytes: "
        f"{MAX_PIXELS} pixels of 16 bytes, plus headers)"))


def read_bounded(stream: BinaryIO, limit: int, too_long: Exception) -> bytes:
    """Reads to the end of `stream`, raising `too_long` past `limit` bytes, never reading more than
    limit + 1. In chunks of what is there (read1): one long read would hold back a Ctrl-C until its
    end, which a pipe may never give. A chunk that is not bytes (a text stream) is returned as it
    is, for the caller to refuse."""
    read = getattr(stream, "read1", stream.read)
    fd = _pipe_fd(stream)
    chunks, size = [], 0
    while size <= limit:
        if fd is not None:
            _wait_readable(fd)
        chunk = read(min(1 << 20, limit + 1 - size))
        if not isinstance(chunk, (bytes, bytearray)):
            return chunk
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_long
    return b"".join(chunks)


def _pipe_fd(stream) -> int | None:
    """The descriptor under `stream` when a read of it can block for good (a pipe, FIFO, socket or
    terminal) and select() can wait on it (not on Windows); None otherwise."""
    if os.name == "nt":
        return None
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) else None


def _wait_readable(fd: int, slice_s: float = 0.1) -> None:
    """Waits until a read of `fd` will not block (data, or its end), in slices of `slice_s`, so that a
    signal's Python handler runs within a slice even when the signal did not interrupt this thread's
    system call: when it reached another thread (torch's), or came just before the call. A blocking
    read() would sleep through it until the writer writes or closes. Data a buffered stream already
    holds is no exception: reading to the end has to wait for the writer all the same."""
    while not select.select([fd], [], [], slice_s)[0]:
        pass


def sha256_of(path: Path | str) -> str:
    """The SHA-256 (hex) of a file, read in 1 MB blocks: how weights and decoder files are checked."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
