"""The .bin container: a small header, then the range coder's payload. docs/bitstream.md documents
every field; keep the two in step.

    magic      2 bytes   b"PQ"
    version    1 byte    FORMAT_VERSION
    model id   1 byte    a shipped model (zoo.py); 0 = weights given by path, named at decode time
    mode       1 byte    bits 0-3: sub-quantizers in use (1..15); bit 4: source was greyscale;
                         bits 5-7: reserved, must be 0
    steps      1 byte    coding steps of the schedule, 1..255
    height     varint    LEB128, 1..MAX_SIDE
    width      varint    LEB128, 1..MAX_SIDE
    checksum   4 bytes   CRC-32 of the decoded token array (little-endian)
    payload    rest      range-coder words, uint32 little-endian
"""
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import CorruptFileError, UnsupportedFileError

MAGIC = b"PQ"
FORMAT_VERSION = 1
MAX_SIDE = 32768
MAX_PIXELS = 1 << 25  # 33.5 MP: the transforms run on the whole image, memory in proportion
_GREY = 0x10


@dataclass(frozen=True)
class Header:
    model_id: int
    active: int        # sub-quantizers in use (the quality level)
    steps: int
    height: int
    width: int
    greyscale: bool
    checksum: int

    def validate(self):
        if not 0 <= self.model_id <= 255:
            raise ValueError(f"model id {self.model_id} out of range")
        if not 1 <= self.active <= 15:
            raise ValueError(f"sub-quantizers in use {self.active} out of range 1..15")
        if not 1 <= self.steps <= 255:
            raise ValueError(f"steps {self.steps} out of range 1..255")
        if not (1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} outside 1..{MAX_SIDE} per side")
        if self.height * self.width > MAX_PIXELS:
            raise ValueError(f"image of {self.height * self.width} pixels exceeds the limit of {MAX_PIXELS}")


def token_checksum(tokens: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(tokens, dtype="<u2").tobytes())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    n = shift = 0
    for i in range(3):  # MAX_SIDE fits in 3 LEB128 bytes
        if pos >= len(data):
            raise CorruptFileError(f"file ends inside the header ({what})")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos
    raise CorruptFileError(f"header field {what} is too long")


def pack(header: Header, payload: bytes) -> bytes:
    header.validate()
    mode = header.active | (_GREY if header.greyscale else 0)
    return (MAGIC + bytes([FORMAT_VERSION, header.model_id, mode, header.steps])
            + _varint(header.height) + _varint(header.width)
            + struct.pack("<I", header.checksum) + payload)


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and validate; raises CorruptFileError / UnsupportedFileError with a one-line reason."""
    if len(data) == 0:
        raise CorruptFileError("empty file")
    if data[:2] != MAGIC:
        raise CorruptFileError("not a pqcodec file (wrong magic bytes)")
    if len(data) < 6:
        raise CorruptFileError("file ends inside the header")
    version, model_id, mode, steps = data[2], data[3], data[4], data[5]
    if version != FORMAT_VERSION:
        raise UnsupportedFileError(f"format version {version} is not supported (this pqcodec reads version {FORMAT_VERSION})")
    if mode & 0xE0:
        raise CorruptFileError("reserved mode bits are set")
    height, pos = _read_varint(data, 6, "height")
    width, pos = _read_varint(data, pos, "width")
    if len(data) < pos + 4:
        raise CorruptFileError("file ends inside the header (checksum)")
    (checksum,) = struct.unpack_from("<I", data, pos)
    header = Header(model_id, mode & 0x0F, steps, height, width, bool(mode & _GREY), checksum)
    try:
        header.validate()
    except ValueError as e:
        raise CorruptFileError(f"invalid header: {e}") from None
    return header, data[pos + 4:]
