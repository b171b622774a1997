"""The .bin container, next to its version: the header, its checks and the layers it carries; the
payload inside is the coding core's (pqcodec/coding: the window layout and chunks, the schedule,
the probability precision, the range coder). docs/bitstream.md documents every field; keep the two
in step. Changing anything here or in pqcodec/coding changes files: bump FORMAT_VERSION and keep
the golden files of tests/data/golden decoding (tests/test_golden.py).

    magic      2 bytes   b"PQ"
    version    1 byte    PLAIN_VERSION..FORMAT_VERSION (3..7): the lowest that holds the file
                         (Header.version)
    model      4 bytes   the first 4 bytes of the SHA-256 of the weights file that made it
    mode       1 byte    bits 0-3: sub-quantizers in use (1..15; a mapped file: the most any window
                         uses); bit 4: source was greyscale; bit 5: generated (set in every version 4
                         file; in versions 6 and 7 set in their generated files; refused in versions
                         3 and 5); bit 6: mapped (set in every version 5 file; in versions 6 and 7
                         set in their mapped files; refused in versions 3 and 4; never with bit 5);
                         bit 7: reserved, must be 0
    steps      1 byte    coding steps of the schedule, 1..255
    height     varint    LEB128, 1..MAX_SIDE
    width      varint    LEB128, 1..MAX_SIDE
  generated files only (mode bit 5):
    grid h     varint    token rows of the coded (shrunken) image, 1..ceil(height/8)
    grid w     varint    token columns, 1..ceil(width/8)
    sent       1 byte    schedule steps whose indices the payload holds, 0..steps
    sampler    1 byte    bits 0-2: sharpening n (0: the most probable symbol); bits 3-7: seed
  version 7 only (a file with flat blocks):
    features   1 byte    bit 0: coded with a conditional head (as version 6); bit 1: flat blocks,
                         set in every version 7 file; bits 2-7 reserved, 0
    flat len   varint    LEB128, 1..4 bytes: the flat layer's bytes, 1..max_flat_bytes(blocks)
    flat layer           the flat blocks (pqcodec/flat.py: 8x8 blocks of one colour, painted over
                         the decoded image)
    checksum   4 bytes   CRC-32 of the decoded token array (little-endian)
    check      2 bytes   low 16 bits of the CRC-32 of the header bytes before it (little-endian)
    payload    rest      range-coder words, uint32 little-endian

The header is 17-21 bytes (15 fixed, height and width 1-3 bytes each; 19 for 768x512), plus 4-6 in
a generated file and, in version 7, 2-5 (features, flat len) plus the layer (1..max_flat_bytes).

The payload is the coding core's (pqcodec/coding): the token grid window by window, chunk by
chunk, step by step of the schedule, each index with the integer prior's frequency table, and a
check after every chunk but the last.

A generated file (the extreme mode below the lowest level, pqcodec/extreme.py) codes a shrunken
image's token grid (grid h x grid w) and only the first `sent` steps of its schedule; the decoder
draws the indices of the later steps from the prior's frequency tables with `coding.schedule.sample_symbols`
(integer arithmetic and a counter-based splitmix64 stream: the same draws on every machine), then
decodes the grid and resizes it to height x width with Pillow's RESIZE_FILTER. The token checksum
covers the whole grid, drawn indices included.

A mapped file (version 5, rate control's level map, pqcodec/levelmap.py) gives each window a level
of its own: the payload starts with the level map, one symbol per window (row-major), the index of
the window's count in the model's level table, uniform over the levels up to the header's count
(`coding.layout.map_weights`); then the windows are coded in groups of one count each, the lowest count first,
windows in row-major order within a group, WINDOW_CHUNK at a time, a chunk check after every chunk
but the payload's last. In the decoded token array (and its checksum) the indices a window does not
use are -1 (0xFFFF as uint16). Files that need neither (of a model without a conditional head,
without flat blocks) are written as version 3, which earlier releases read.

Version 6 (pqcodec 0.10.0 and later) is the format of models with a conditional head
(nets/conditional.py; ModelConfig.conditional), and only of theirs: the header is version 5's, plain,
generated or mapped; in the payload, each step's indices are coded sub-quantizer by sub-quantizer:
at a step, first sub-quantizer 0's indices of every position revealed there (windows in order, then
positions in schedule order), then sub-quantizer 1's, and so on, each table from the prior's logits
plus the head's term from the indices of the lower sub-quantizers at the same position
(coding/integer_conditional.py). A generated file's draws follow the same order.

Version 7 (pqcodec 0.11.0 and later) is the format of files with **flat blocks** (pqcodec/flat.py),
and only of theirs: the blocks of the image grid (GRID_STRIDE pixels a side) whose every channel
spans at most flat.FLAT_SPREAD levels, with their colours, which the decoder paints over the
decoded image. The header is version 6's (plain, generated or mapped; with or without a conditional
head, said by the features byte) with the features byte and the flat layer before the checksums,
so the header check covers the layer; the payload is what version 3, 4, 5 or 6 would hold. A file
of an image without a flat block is written as that version, byte for byte.
"""
import math
import struct
import zlib
from dataclasses import dataclass

from .coding.layout import max_payload_bytes
from .errors import CorruptFileError, UnsupportedFileError
from .limits import MAX_PIXELS, MAX_SIDE
from .words import counted

MAGIC = b"PQ"
FORMAT_VERSION = 7       # the newest version; a file is written as the lowest version that holds it
PLAIN_VERSION = 3        # files without generated indices or a level map (pqcodec 0.4.0 and later read them)
GENERATED_VERSION = 4    # generated files, the extreme mode (pqcodec 0.7.0 and later)
MAPPED_VERSION = 5       # a level per window, rate control's level map (pqcodec 0.9.0 and later)
CONDITIONAL_VERSION = 6  # a model with a conditional head: sub-quantizer by sub-quantizer (pqcodec 0.10.0 and later)
FLAT_VERSION = 7         # a file with flat blocks painted over the image (pqcodec/flat.py; pqcodec 0.11.0 and later)
# earlier versions, and the release that reads them
RETIRED_VERSIONS = {1: "pqcodec 0.1.0 (a one-byte model id)",
                    2: "pqcodec 0.3.0 (a float prior: its files decode only on the CPU family that made them)"}
MODEL_HASH_BYTES = 4
GRID_STRIDE = 8          # pixels per token: the transforms of every model (nets/autoencoder.py)
_GREY = 0x10
_GENERATED = 0x20
_MAPPED = 0x40
_FEATURE_CONDITIONAL = 0x01  # version 7's features byte
_FEATURE_FLAT = 0x02
SHARPEN_MAX = 7          # sampler byte: bits 0-2
SEED_MAX = 31            # sampler byte: bits 3-7
RESIZE_FILTER = "LANCZOS"  # Pillow's filter from a generated file's grid to the image size (uint8, fixed point)


@dataclass(frozen=True)
class Generated:
    """What a generated file adds to the header: the coded grid of the shrunken image, how many
    schedule steps the payload holds, and the sampler that draws the rest."""
    grid_height: int   # token rows of the coded image (its pixels: 8 x this)
    grid_width: int
    sent: int          # steps 0..sent-1 are in the payload; steps sent..steps-1 are drawn
    sharpen: int       # 0: the most probable symbol; n >= 1: draw with probability ~ f^n
    seed: int

    def validate(self, steps: int, full_grid: tuple[int, int]):
        if not (1 <= self.grid_height <= full_grid[0] and 1 <= self.grid_width <= full_grid[1]):
            raise ValueError(f"generated grid {self.grid_width}x{self.grid_height} outside "
                             f"1..{full_grid[1]} x 1..{full_grid[0]} tokens")
        if not 0 <= self.sent <= steps:
            raise ValueError(f"sent steps {self.sent} out of range 0..{steps}")
        if not 0 <= self.sharpen <= SHARPEN_MAX:
            raise ValueError(f"sharpening {self.sharpen} out of range 0..{SHARPEN_MAX}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed {self.seed} out of range 0..{SEED_MAX}")


@dataclass(frozen=True)
class Header:
    model_hash: bytes  # MODEL_HASH_BYTES of the weights' SHA-256 (model_hash_of)
    active: int        # sub-quantizers in use (the model's levels say which quality that is)
    steps: int
    height: int
    width: int
    greyscale: bool
    checksum: int
    generated: Generated | None = None  # a generated file's fields (version 4)
    mapped: bool = False               # a level per window, `active` the most any uses (version 5)
    conditional: bool = False          # coded with a conditional head (version 6)
    flat: bytes | None = None          # the flat layer (version 7; pqcodec/flat.py)

    @property
    def version(self) -> int:
        """The lowest format version that holds this header."""
        if self.flat:
            return FLAT_VERSION
        if self.conditional:
            return CONDITIONAL_VERSION
        return MAPPED_VERSION if self.mapped else GENERATED_VERSION if self.generated else PLAIN_VERSION

    def image_grid(self) -> tuple[int, int]:
        """The image's own token grid (GRID_STRIDE pixels a token)."""
        return math.ceil(self.height / GRID_STRIDE), math.ceil(self.width / GRID_STRIDE)

    def grid(self) -> tuple[int, int]:
        """The coded token grid: the image's, or a generated file's shrunken one."""
        if self.generated:
            return self.generated.grid_height, self.generated.grid_width
        return self.image_grid()

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
        if self.generated:
            if self.mapped:
                raise ValueError("a file cannot be both generated and mapped")
            self.generated.validate(self.steps, self.image_grid())
        if self.flat is not None and not 1 <= len(self.flat) <= self.max_flat_bytes():
            raise ValueError(f"flat layer of {len(self.flat)} bytes outside 1..{self.max_flat_bytes()}")

    def max_flat_bytes(self) -> int:
        """The longest flat layer of this image's grid of blocks."""
        return max_flat_bytes(math.prod(self.image_grid()), 1 if self.greyscale else 3)


def max_flat_bytes(blocks: int, channels: int) -> int:
    """The longest flat layer (pqcodec/flat.py's syntax) over `blocks` blocks of `channels` coded
    channels: every block a run of its own (a kind bit, an exp-Golomb length, exp-Golomb colours of
    at most 17 bits each)."""
    golomb = 2 * max(int(blocks), 1).bit_length() + 1
    return -(-blocks * (1 + golomb + channels * 17) // 8) + 1


# The longest a file can be: MAX_PIXELS at stride 8, 15 sub-quantizers. Readers refuse longer inputs
# before reading them whole.
MAX_FILE_BYTES = (64 + max_payload_bytes(16 * (MAX_PIXELS // 64 + 2 * MAX_SIDE // 8 + 1))  # 15 + a level map's
                  + max_flat_bytes(MAX_PIXELS // 64 + 2 * MAX_SIDE // 8 + 1, 3))


def model_hash_of(sha256_hex: str) -> bytes:
    """The model field of files made with the weights whose SHA-256 (hex) is given."""
    return bytes.fromhex(sha256_hex)[:MODEL_HASH_BYTES]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str, longest: int = 3) -> tuple[int, int]:
    n = shift = 0
    for i in range(longest):  # MAX_SIDE fits in 3 LEB128 bytes, a flat layer's length in 4
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
    g = header.generated
    mode = (header.active | (_GREY if header.greyscale else 0) | (_GENERATED if g else 0)
            | (_MAPPED if header.mapped else 0))
    head = (MAGIC + bytes([header.version]) + header.model_hash + bytes([mode, header.steps])
            + _varint(header.height) + _varint(header.width))
    if g:
        head += _varint(g.grid_height) + _varint(g.grid_width) + bytes([g.sent, g.sharpen | g.seed << 3])
    if header.flat:
        head += bytes([_FEATURE_FLAT | (_FEATURE_CONDITIONAL if header.conditional else 0)])
        head += _varint(len(header.flat)) + header.flat
    head += struct.pack("<I", header.checksum)
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
    if version in RETIRED_VERSIONS:
        raise UnsupportedFileError(f"format version {version} was written by {RETIRED_VERSIONS[version]}; "
                                   "decode it with that release")
    if version not in (PLAIN_VERSION, GENERATED_VERSION, MAPPED_VERSION, CONDITIONAL_VERSION, FLAT_VERSION):
        raise UnsupportedFileError(f"format version {version} is not supported (this pqcodec reads versions "
                                   f"{PLAIN_VERSION} to {FORMAT_VERSION}: a newer pqcodec wrote it?)")
    pos = 3 + MODEL_HASH_BYTES
    if len(data) < pos + 2:
        raise CorruptFileError("file ends inside the header")
    model_hash, mode, steps = data[3:pos], data[pos], data[pos + 1]
    if (mode & 0x80 or mode & _MAPPED and version not in (MAPPED_VERSION, CONDITIONAL_VERSION, FLAT_VERSION)
            or mode & _GENERATED and version not in (GENERATED_VERSION, CONDITIONAL_VERSION, FLAT_VERSION)):
        raise CorruptFileError("reserved mode bits are set")
    if version == MAPPED_VERSION and not mode & _MAPPED:
        raise CorruptFileError(f"a version {version} file without a level map (those are written as version {PLAIN_VERSION})")
    height, pos = _read_varint(data, pos + 2, "height")
    width, pos = _read_varint(data, pos, "width")
    generated = None
    if mode & _GENERATED:
        grid_height, pos = _read_varint(data, pos, "grid height")
        grid_width, pos = _read_varint(data, pos, "grid width")
        if len(data) < pos + 2:
            raise CorruptFileError("file ends inside the header (generated fields)")
        generated = Generated(grid_height, grid_width, data[pos], data[pos + 1] & SHARPEN_MAX, data[pos + 1] >> 3)
        pos += 2
    elif version == GENERATED_VERSION:
        raise CorruptFileError(f"a version {version} file without generated indices (those are written as version {PLAIN_VERSION})")
    conditional, flat = version == CONDITIONAL_VERSION, None
    if version == FLAT_VERSION:
        if len(data) < pos + 1:
            raise CorruptFileError("file ends inside the header (features)")
        features = data[pos]
        if features & ~(_FEATURE_CONDITIONAL | _FEATURE_FLAT) or not features & _FEATURE_FLAT:
            raise CorruptFileError(f"invalid features byte {features:#04x} in a version {version} file")
        conditional = bool(features & _FEATURE_CONDITIONAL)
        length, pos = _read_varint(data, pos + 1, "flat layer length", longest=4)
        if not 1 <= length <= len(data) - pos:
            raise CorruptFileError(f"file ends inside the flat layer ({counted(length, 'byte')} claimed)")
        flat, pos = bytes(data[pos:pos + length]), pos + length
    if len(data) < pos + 6:
        raise CorruptFileError("file ends inside the header (checksums)")
    (checksum,) = struct.unpack_from("<I", data, pos)
    if data[pos + 4:pos + 6] != header_check(data[:pos + 4]):
        raise CorruptFileError("header is damaged (header check mismatch)")
    header = Header(bytes(model_hash), mode & 0x0F, steps, height, width, bool(mode & _GREY), checksum, generated,
                    bool(mode & _MAPPED), conditional, flat)
    try:
        header.validate()
    except ValueError as e:
        raise CorruptFileError(f"invalid header: {e}") from None
    return header, data[pos + 6:]
