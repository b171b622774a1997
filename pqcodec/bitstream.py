"""Everything that defines the .bin bitstream, next to its version: the header, the window layout
and chunking, the coding schedule, the probability precision and the checks. docs/bitstream.md
documents every field; keep the two in step. Changing anything here changes files: bump
FORMAT_VERSION and keep the golden files of tests/data/golden decoding (tests/test_golden.py).

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

The payload codes the token grid window by window (WINDOW x WINDOW positions of the model's
window, row-major over windows), WINDOW_CHUNK windows at a time; inside a chunk, step by step of
the schedule, the indices revealed at that step (windows in order, then positions in schedule
order, then sub-quantizers), each with the prior's integer frequency table (PROB_BITS). After every
chunk but the last, CHUNK_CHECK_BYTES of the CRC-32 of that chunk's tokens follow, coded as
uniform bytes: a damaged or forged payload fails there, after one chunk's work, not after the
whole image its header claims.

A generated file (the extreme mode below the lowest level, pqcodec/extreme.py) codes a shrunken
image's token grid (grid h x grid w) and only the first `sent` steps of its schedule; the decoder
draws the indices of the later steps from the prior's frequency tables with `sample_symbols`
(integer arithmetic and a counter-based splitmix64 stream: the same draws on every machine), then
decodes the grid and resizes it to height x width with Pillow's RESIZE_FILTER. The token checksum
covers the whole grid, drawn indices included.

A mapped file (version 5, rate control's level map, pqcodec/levelmap.py) gives each window a level
of its own: the payload starts with the level map, one symbol per window (row-major), the index of
the window's count in the model's level table, uniform over the levels up to the header's count
(`map_weights`); then the windows are coded in groups of one count each, the lowest count first,
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
(nets/integer_conditional.py). A generated file's draws follow the same order.

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
from functools import cached_property

import numpy as np

from .errors import CorruptFileError, UnsupportedFileError
from .words import counted

# -- the payload's layout -----------------------------------------------------------------------
WINDOW_CHUNK = 32        # windows coded together (bounds memory; a chunk check follows each but the last)
CHUNK_CHECK_BYTES = 2    # low bytes of the CRC-32 of a chunk's tokens, coded as uniform symbols
PROB_BITS = 24           # every frequency table totals 2^24 (constriction's default precision)

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
MAX_SIDE = 32768
GRID_STRIDE = 8          # pixels per token: the transforms of every model (nets/autoencoder.py)
MAX_PIXELS = 1 << 25  # 33.5 MP: the transforms are tiled, but the image, token grid and time still scale
_GREY = 0x10
_GENERATED = 0x20
_MAPPED = 0x40
_FEATURE_CONDITIONAL = 0x01  # version 7's features byte
_FEATURE_FLAT = 0x02
UNUSED = -1              # a decoded index a window of a mapped file does not use (0xFFFF in the checksum)
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


def max_payload_bytes(indices: int) -> int:
    """The range coder's fixed-point probabilities (24 bits) cost any index at most 3 bytes: a longer
    payload is damage. Plus the chunk checks (at most one per WINDOW_CHUNK indices, as every window
    has one) and a few words of coder state. A mapped file: count its map's symbols as indices too."""
    return 3 * indices + CHUNK_CHECK_BYTES * (indices // WINDOW_CHUNK + 1) + 16


def map_weights(windows: int, choices: int) -> np.ndarray:
    """The level map's tables (windows, choices): each of `choices` symbols 2^PROB_BITS // choices,
    the remainder to symbol 0 (as frequency - 1, the range coder's weights)."""
    freq = np.full((windows, choices), (1 << PROB_BITS) // choices, dtype=np.int64)
    freq[:, 0] += (1 << PROB_BITS) % choices
    return (freq - 1).astype(np.float64)


# The longest a file can be: MAX_PIXELS at stride 8, 15 sub-quantizers. Readers refuse longer inputs
# before reading them whole.
MAX_FILE_BYTES = (64 + max_payload_bytes(16 * (MAX_PIXELS // 64 + 2 * MAX_SIDE // 8 + 1))  # 15 + a level map's
                  + max_flat_bytes(MAX_PIXELS // 64 + 2 * MAX_SIDE // 8 + 1, 3))


def model_hash_of(sha256_hex: str) -> bytes:
    """The model field of files made with the weights whose SHA-256 (hex) is given."""
    return bytes.fromhex(sha256_hex)[:MODEL_HASH_BYTES]


def token_checksum(tokens: np.ndarray) -> int:
    """CRC-32 of the indices as uint16 little-endian, C order; UNUSED (-1) counts as 0xFFFF."""
    return zlib.crc32(np.ascontiguousarray(np.asarray(tokens).astype("<u2")).tobytes())


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


def chunk_check(tokens: np.ndarray) -> np.ndarray:
    """The CHUNK_CHECK_BYTES symbols (byte values) that follow a chunk whose windows hold `tokens`:
    the low bytes of their token_checksum."""
    crc = token_checksum(tokens)
    return np.array([(crc >> (8 * i)) & 0xFF for i in range(CHUNK_CHECK_BYTES)], dtype=np.int64)


# -- the coding schedule ------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


_GAMMA = 0x9E3779B97F4A7C15


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on uint64 arrays (arithmetic modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64: (the next state, its output)."""
    state = (state + _GAMMA) & _MASK64
    return state, int(_mix64(np.array([state], dtype=np.uint64))[0])


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    order = list(range(n))
    state = seed
    for i in range(n - 1, 0, -1):
        state, r = _splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int64)


def cosine_boundaries(n: int, steps: int) -> list[int]:
    """Positions revealed after each step, b[t] for t = 0..steps: strictly increasing from 0 to n,
    following 1 - cos(pi/2 * t/steps)."""
    b = [0]
    for t in range(1, steps + 1):
        target = round(n * (1 - math.cos(math.pi / 2 * t / steps)))
        # at least one position per step, and room left for the steps still to come
        b.append(min(max(target, b[-1] + 1), n - (steps - t)))
    return b


@dataclass(frozen=True)
class Schedule:
    """In which order, and in how many steps, the positions of a window are revealed; encoder and
    decoder derive it from (window, steps, seed) alone. The order is a seeded shuffle computed with
    integer arithmetic only (splitmix64 + Fisher-Yates), so it is the same with every numpy or
    torch version; step sizes follow MaskGIT's cosine curve: few positions in the first steps
    (coded with little context), ever more once context exists."""
    window: int
    steps: int
    seed: int

    def __post_init__(self):
        if not 1 <= self.steps <= self.window ** 2:
            raise ValueError(f"steps must be in 1..{self.window ** 2}, got {self.steps}")

    @cached_property
    def order(self) -> np.ndarray:
        """Window positions (row-major indices) in the order they are revealed."""
        return seeded_permutation(self.window ** 2, self.seed)

    @cached_property
    def boundaries(self) -> list[int]:
        return cosine_boundaries(self.window ** 2, self.steps)

    def step_of(self) -> np.ndarray:
        """The step (0-based) revealing each window position (row-major), (window^2,) int64."""
        out = np.empty(self.window ** 2, dtype=np.int64)
        for t in range(self.steps):
            out[self.positions(t)] = t
        return out

    def positions(self, step: int) -> np.ndarray:
        """The window positions revealed at `step` (0-based)."""
        return self.order[self.boundaries[step]:self.boundaries[step + 1]]


# -- a generated file's drawn indices ---------------------------------------------------------------
def sample_symbols(weights: np.ndarray, sharpen: int, seed: int, counter: int) -> np.ndarray:
    """The indices a generated file's decoder draws from frequency tables `weights` (m, K) (float64
    integers f - 1, as the range coder takes them): the counter-th to (counter+m-1)-th draws of the
    file. Integer arithmetic only, so every machine draws the same:
    - sharpen 0: the most probable symbol (the lowest index among equals);
    - sharpen n >= 1: symbol i with probability v_i / sum(v), v_i = ((f_i >> s) + 1)^n, s the
      smallest shift that keeps the sum below 2^63; the uniform integer is r mod sum(v), r the
      splitmix64 output for (seed, counter + j)."""
    f = weights.astype(np.int64) + 1                                    # (m, K), 1..2^PROB_BITS
    if sharpen == 0:
        return np.argmax(f, axis=1).astype(np.int64)
    m, K = f.shape
    shift = max(0, PROB_BITS + 1 - (63 - math.ceil(math.log2(K))) // sharpen)
    v = ((f >> shift) + 1) ** sharpen                                   # each < 2^(63 - log2 K)
    cdf = np.cumsum(v, axis=1)                                          # exact int64
    key = np.uint64(_splitmix64(seed)[1])
    with np.errstate(over="ignore"):
        r = _mix64(key + (np.arange(m, dtype=np.uint64) + np.uint64(counter + 1)) * np.uint64(_GAMMA))
    u = (r % cdf[:, -1].astype(np.uint64)).astype(np.int64)             # (m,) in 0..sum-1
    return (cdf <= u[:, None]).sum(axis=1).astype(np.int64)
