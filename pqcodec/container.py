"""The .bin container: a small header, then the range coder's payload. docs/bitstream.md documents
every field; keep the two in step.

    magic      2 bytes   b"PQ"
    version    1 byte    FORMAT_VERSION
    model      4 bytes   the first 4 bytes of the SHA-256 of the weights file that made it
    mode       1 byte    bits 0-3: sub-quantizers in use (1..15); bit 4: source was greyscale;
                         bits 5-7: reserved, must be 0
    steps      1 byte    coding steps of the schedule, 1..255
    height     varint    LEB128, 1..MAX_SIDE
    width      varint    LEB128, 1..MAX_SIDE
    checksum   4 bytes   CRC-32 of the decoded token array (little-endian)
    check      2 bytes   low 16 bits of the CRC-32 of the header bytes before it (little-endian)
    payload    rest      range-coder words, uint32 little-endian
"""
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import CorruptFileError, UnsupportedFileError

MAGIC = b"PQ"
FORMAT_VERSION = 2  # 1: pqcodec 0.1.0, a one-byte model id instead of the hash
MODEL_HASH_BYTES = 4
MAX_SIDE = 32768
MAX_PIXELS = 1 << 25  # 33.5 MP: the transforms are tiled, but the image, token grid and time still scale
_GREY = 0x10


@dataclass(frozen=True)
class Header:
    model_hash: bytes  # MODEL_HASH_BYTES of the weights' SHA-256 (model_hash_of)
    active: int        # sub-quantizers in use (the model's levels say which quality that is)
    steps: int
    height: int
    width: int
    greyscale: bool
    checksum: int

    def validate(self):
        if len(self.model_hash) != MODEL_HASH_BYTES:
            raise ValueError(f"model hash must be {MODEL_HASH_BYTES} bytes")
        if not 1 <= self.active <= 15:
            raise ValueError(f"sub-quantizers in use {self.active} out of range 1..15")
        if not 1 <= self.steps <= 255:
            raise ValueError(f"steps {self.steps} out of range 1..255")
        if not (1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} outside 1..{MAX_SIDE} per side")
        if self.height * self.width > MAX_PIXELS:
            raise ValueError(f"image of {self.height * self.width} pixels exceeds the limit of {MAX_PIXELS}")


def max_payload_bytes(indices: int) -> int:
    """The range coder's fixed-point probabilities (24 bits) cost any index at most 3 bytes: a longer
    payload is damage. Plus a few words of coder state."""
    return 3 * indices + 16


# The longest a file can be: MAX_PIXELS at stride 8, 15 sub-quantizers. Readers refuse longer inputs
# before reading them whole.
MAX_FILE_BYTES = 64 + max_payload_bytes(15 * (MAX_PIXELS // 64 + 2 * MAX_SIDE // 8 + 1))


def model_hash_of(sha256_hex: str) -> bytes:
    """The model field of files made with the weights whose SHA-256 (hex) is given."""
    return bytes.fromhex(sha256_hex)[:MODEL_HASH_BYTES]


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


def header_check(header_bytes: bytes) -> bytes:
    """Checks the header before any decoding work: a damaged size field would otherwise cost the
    decoding time of the image it claims (up to MAX_PIXELS) before the token checksum fails."""
    return struct.pack("<H", zlib.crc32(header_bytes) & 0xFFFF)


def pack(header: Header, payload: bytes) -> bytes:
    header.validate()
    mode = header.active | (_GREY if header.greyscale else 0)
    head = (MAGIC + bytes([FORMAT_VERSION]) + header.model_hash + bytes([mode, header.steps])
            + _varint(header.height) + _varint(header.width) + struct.pack("<I", header.checksum))
    return head + header_check(head) + payload


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and validate; raises CorruptFileError / UnsupportedFileError with a one-line reason."""
    if len(data) == 0:
        raise CorruptFileError("empty file")
    if data[:2] != MAGIC:
        raise CorruptFileError("not a pqcodec file (wrong magic bytes)")
    if len(data) < 3:
        raise CorruptFileError("file ends inside the header")
    version = data[2]
    if version == 1:
        raise UnsupportedFileError("format version 1 was written by pqcodec 0.1.0, which is needed to decode it")
    if version != FORMAT_VERSION:
        raise UnsupportedFileError(f"format version {version} is not supported (this pqcodec reads version {FORMAT_VERSION})")
    pos = 3 + MODEL_HASH_BYTES
    if len(data) < pos + 2:
        raise CorruptFileError("file ends inside the header")
    model_hash, mode, steps = data[3:pos], data[pos], data[pos + 1]
    if mode & 0xE0:
        raise CorruptFileError("reserved mode bits are set")
    height, pos = _read_varint(data, pos + 2, "height")
    width, pos = _read_varint(data, pos, "width")
    if len(data) < pos + 6:
        raise CorruptFileError("file ends inside the header (checksums)")
    (checksum,) = struct.unpack_from("<I", data, pos)
    if data[pos + 4:pos + 6] != header_check(data[:pos + 4]):
        raise CorruptFileError("header is damaged (header check mismatch)")
    header = Header(bytes(model_hash), mode & 0x0F, steps, height, width, bool(mode & _GREY), checksum)
    try:
        header.validate()
    except ValueError as e:
        raise CorruptFileError(f"invalid header: {e}") from None
    return header, data[pos + 6:]
