"""Flat blocks: 8x8 pixel blocks of one colour, sent beside the tokens and painted over the decoded
image, so that flat regions (a logo's fill, a diagram's background, a letterbox) come back exact
(within 1 level where a block's channels span 1-2 levels), but for the up to 7 px at their edges.

Why: the transforms cannot make most flat colours. The first codebook holds no code for them, the
filler of unused sub-quantizers drops part of a saturated colour, and the transposed convolutions
leave a ripple (docs/quality.md, section 3): a flat grey 128 came back 13-16 levels off at levels
1-3, pure red up to 29 inside a 16 px border, 78 at the image's edge (eval/flat_colours.py
--no-flat). Retraining would narrow that (`pqcodec-train ae --synthetic`), not close it.
The flat layer closes it whatever the model: the encoder finds the blocks of the image grid
(bitstream.GRID_STRIDE pixels a side, the tokens' own grid; blocks at the right and bottom edge
clipped to the image) whose every channel spans at most FLAT_SPREAD levels (`find`) and sends them
with their colours (the middle of the range: every pixel within 1 of it; `layer_of`); the decoder
paints them after the synthesis (`paint`), whichever decoder, on any machine. So every pixel of a
flat block comes back within 1 level of its source (exactly, when the block is one colour), at
every level; a flat patch of any size and place comes back so except in the outer 7 px along an
edge that is not on the block grid (blocks straddling the edge are the transforms'). Not covered:
files without the layer (`flat=False`, `--no-flat`; rate control leaves it out where it does not
gain PSNR), and near-flat regions whose channels span more than FLAT_SPREAD. Images without a flat
block (most photos) have no layer: their files are what pqcodec 0.10.0 wrote.

Why every flat block and not only those the synthesis misses: the synthesis is float (a pixel may
differ by a level between CPU families) and the perceptual decoder paints grain where the MSE
decoder is flat, so a block the encoder's synthesis gets right may still come back wrong elsewhere;
and a layer that is a function of the image alone costs no decode at encode time. What it costs:
where the transforms got a block right anyway, its bytes (on Kodak, docs/experiments.md kodak-0.11).

The layer's syntax (inside the header, format version 7: bitstream.py; docs/bitstream.md "Flat
blocks" has the whole of it): the blocks in raster order as maximal runs of one state, not sent or
sent with one colour, in MSB-first bits: the first run's kind (1 bit); per run, its length - 1
(exp-Golomb), a flat run's colour as per-channel exp-Golomb zigzag differences to a predictor (the
block above the run's first block if flat, else the previous flat run's colour, else 128), and
after a flat run that is not the last, 1 bit: is the next run flat; zero padding to a byte. A reader
refuses anything `encode` does not write, so a layer's bytes and its blocks are one-to-one.
"""
import functools
from dataclasses import dataclass

import numpy as np

from .bitstream import GRID_STRIDE
from .errors import CorruptFileError
from .words import counted

FLAT_SPREAD = 2        # a block is flat when no channel's max - min exceeds this (every pixel within 1)
_GOLOMB_ZEROS = 24     # exp-Golomb prefixes longer than this cannot occur (runs < 2^24 blocks, deltas < 256)
_PREDICTOR = 128       # the colour predicted before any flat run


@dataclass
class FlatBlocks:
    """Which blocks of the image grid are flat, and their colours."""
    mask: np.ndarray      # (h, w) bool: the block is flat
    colours: np.ndarray   # (h, w, C) uint8, C = 1 (greyscale) or 3; meaningful where mask

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    @functools.cached_property
    def layer(self) -> bytes:
        """The layer's bytes (the syntax above), made once."""
        return encode(self)


def find(rgb: np.ndarray, greyscale: bool = False) -> FlatBlocks | None:
    """The flat blocks of a uint8 (H, W, 3) image, or None when it has none."""
    H, W = rgb.shape[:2]
    s = GRID_STRIDE
    h, w = -(-H // s), -(-W // s)
    mask = np.zeros((h, w), dtype=bool)
    colours = np.zeros((h, w, 3), dtype=np.uint8)
    for y in range(0, h, 256):  # bands of 256 block rows: bounded memory on large images
        band = rgb[y * s:(y + 256) * s]
        band = np.pad(band, ((0, -band.shape[0] % s), (0, -W % s), (0, 0)), mode="edge")  # edge copies keep max, min
        blocks = band.reshape(band.shape[0] // s, s, w, s, 3)
        # each block's max and min: over its rows first (whole rows at a time), then its columns; numpy
        # reduces over both axes at once 8x slower (6.7 ms against 0.8 ms for a Kodak image)
        hi, lo = blocks.max(axis=1).max(axis=2), blocks.min(axis=1).min(axis=2)  # (rows, w, 3)
        mask[y:y + hi.shape[0]] = ((hi - lo) <= FLAT_SPREAD).all(axis=-1)
        colours[y:y + hi.shape[0]] = ((hi.astype(np.uint16) + lo + 1) // 2).astype(np.uint8)
    if greyscale:  # one channel is coded: a block whose channels differ (never, from image.load_image) is not flat
        mask &= (colours == colours[..., :1]).all(axis=-1)
        colours = colours[..., :1]
    if not mask.any():
        return None
    colours[~mask] = 0
    return FlatBlocks(mask, np.ascontiguousarray(colours))


def layer_of(rgb: np.ndarray, greyscale: bool = False) -> bytes | None:
    """The flat layer of a uint8 (H, W, 3) image (what a file's header carries), or None: no flat block."""
    blocks = find(rgb, greyscale)
    return None if blocks is None else blocks.layer


def of_header(header) -> FlatBlocks | None:
    """The flat blocks of a file (its bitstream.Header), or None when it has none. Parsed once per
    layer (the decoder checks it before the tokens' work and paints it after)."""
    if header.flat is None:
        return None
    return _parsed(header.flat, header.image_grid(), 1 if header.greyscale else 3)


@functools.lru_cache(maxsize=2)
def _parsed(data: bytes, grid: tuple[int, int], channels: int) -> FlatBlocks:
    return decode(data, grid, channels)


def _runs(blocks: FlatBlocks):
    """Maximal runs in raster order: (first block, length, colour tuple or None)."""
    flat = blocks.mask.ravel()
    colours = blocks.colours.reshape(flat.size, -1)
    state = np.where(flat[:, None], colours.astype(np.int16), -1)                   # (n, C)
    starts = np.flatnonzero(np.r_[True, (state[1:] != state[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], flat.size]
    for a, b in zip(starts, ends):
        yield int(a), int(b - a), tuple(int(v) for v in colours[a]) if flat[a] else None


def encode(blocks: FlatBlocks) -> bytes:
    """The layer's bytes (the syntax above)."""
    h, w = blocks.mask.shape
    bits = _Bits()
    runs = list(_runs(blocks))
    bits.put(runs[0][2] is not None, 1)
    previous = (_PREDICTOR,) * blocks.colours.shape[2]
    for i, (start, length, colour) in enumerate(runs):
        bits.golomb(length - 1)
        if colour is not None:
            pred = _predict(blocks.mask, blocks.colours, start, w, previous)
            for c, p in zip(colour, pred):
                d = (c - p + 128) % 256 - 128                                          # -128..127
                bits.golomb(2 * d if d >= 0 else -2 * d - 1)                           # zigzag
            previous = colour
            if i + 1 < len(runs):
                bits.put(runs[i + 1][2] is not None, 1)
    return bits.to_bytes()


def decode(data: bytes, grid: tuple[int, int], channels: int) -> FlatBlocks:
    """The blocks of a layer over a grid (h, w) of blocks; CorruptFileError for anything but a layer
    `encode` writes."""
    h, w = grid
    n = h * w
    mask = np.zeros((h, w), dtype=bool)
    colours = np.zeros((h, w, channels), dtype=np.uint8)
    bits = _Reader(data)
    flat = bits.get(1)
    previous, done, last = (_PREDICTOR,) * channels, 0, None
    while done < n:
        length = bits.golomb() + 1
        if length > n - done:
            raise CorruptFileError(f"flat layer: a run of {counted(length, 'block')} with {counted(n - done, 'block')} left")
        if flat:
            pred = _predict(mask, colours, done, w, previous)
            colour = []
            for p in pred:
                z = bits.golomb()
                if z > 255:
                    raise CorruptFileError("flat layer: a colour difference out of range")
                colour.append((p + (z >> 1 if z % 2 == 0 else -(z + 1 >> 1))) % 256)
            colour = tuple(colour)
            if colour == last:
                raise CorruptFileError("flat layer: two neighbouring runs of the same colour")
            idx = np.unravel_index(np.arange(done, done + length), (h, w))
            mask[idx], colours[idx] = True, colour
            previous = last = colour
        else:
            last = None
        done += length
        if done < n:
            flat = bits.get(1) if flat else 1
    bits.finish()
    if not mask.any():
        raise CorruptFileError("flat layer without a flat block")
    return FlatBlocks(mask, colours)


def _predict(mask: np.ndarray, colours: np.ndarray, start: int, w: int, previous: tuple) -> tuple:
    """A flat run's predicted colour: the block above its first block if flat, else `previous`."""
    y, x = divmod(start, w)
    if y > 0 and mask[y - 1, x]:
        return tuple(int(v) for v in colours[y - 1, x])
    return previous


def paint(rgb: np.ndarray, blocks: FlatBlocks | None) -> np.ndarray:
    """A decoded uint8 (H, W, 3) image as the decoder gives it: the flat blocks (if any) painted over
    it, in place (on a copy when it is read-only, e.g. a generated file's resized image)."""
    s = GRID_STRIDE
    if blocks is None:
        return rgb
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    H, W = rgb.shape[:2]
    for by in np.flatnonzero(blocks.mask.any(axis=1)):
        rows = rgb[by * s:(by + 1) * s]                                               # (<=s, W, 3)
        cols = np.repeat(blocks.mask[by], s)[:W]                                       # (W,)
        colour = np.repeat(blocks.colours[by], s, axis=0)[:W]                          # (W, C)
        rows[:, cols] = colour[cols][None]                                             # C = 1 broadcasts
    return rgb


class _Bits:
    """An MSB-first bit string, packed into bytes as it grows."""

    def __init__(self):
        self.out, self.acc, self.count = bytearray(), 0, 0   # whole bytes; the bits after them

    def put(self, value: int, n: int):
        self.acc, self.count = self.acc << n | (int(value) & ((1 << n) - 1)), self.count + n
        while self.count >= 8:
            self.count -= 8
            self.out.append(self.acc >> self.count & 0xFF)
        self.acc &= (1 << self.count) - 1

    def golomb(self, v: int):
        """exp-Golomb of order 0 of v >= 0: (bit length of v+1) - 1 zeros, then v+1."""
        v += 1
        self.put(0, v.bit_length() - 1)
        self.put(v, v.bit_length())

    def to_bytes(self) -> bytes:
        """The bits, zero-padded to a whole byte."""
        return bytes(self.out) + (bytes([self.acc << (8 - self.count) & 0xFF]) if self.count else b"")


class _Reader:
    """MSB-first bits of a layer, read from its bytes in place."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.end = data, 0, 8 * len(data)

    def get(self, n: int) -> int:
        if self.pos + n > self.end:
            raise CorruptFileError("flat layer ends early")
        v = 0
        for p in range(self.pos, self.pos + n):
            v = v << 1 | (self.data[p >> 3] >> (7 - (p & 7))) & 1
        self.pos += n
        return v

    def golomb(self) -> int:
        zeros = 0
        while self.get(1) == 0:
            zeros += 1
            if zeros > _GOLOMB_ZEROS:
                raise CorruptFileError("flat layer: a number too long")
        return (1 << zeros | self.get(zeros)) - 1

    def finish(self):
        """Only zero padding, less than a byte, may follow the last run."""
        if self.end - self.pos >= 8 or self.get(self.end - self.pos):
            raise CorruptFileError("flat layer: bytes left over after its last run")
