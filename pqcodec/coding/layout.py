"""The payload's layout: how the token grid is cut into the prior's windows and the windows into
chunks, the probability precision, and the checks and tables between chunks. Changing anything here
changes files (bump bitstream.FORMAT_VERSION; tests/test_golden.py).

The payload codes the token grid window by window (WINDOW x WINDOW positions of the model's
window, row-major over windows), WINDOW_CHUNK windows at a time; inside a chunk, step by step of
the schedule, the indices revealed at that step (windows in order, then positions in schedule
order, then sub-quantizers), each with the prior's integer frequency table (PROB_BITS). After every
chunk but the last, CHUNK_CHECK_BYTES of the CRC-32 of that chunk's tokens follow, coded as
uniform bytes: a damaged or forged payload fails there, after one chunk's work, not after the
whole image its header claims.

Tensors: C channels (sub-quantizers), h x w tokens, N = window^2 positions of a window.
"""
from __future__ import annotations  # torch.Tensor in the signatures below is only a name

import math
import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

WINDOW_CHUNK = 32        # windows coded together (bounds memory; a chunk check follows each but the last)
CHUNK_CHECK_BYTES = 2    # low bytes of the CRC-32 of a chunk's tokens, coded as uniform symbols
PROB_BITS = 24           # every frequency table totals 2^24 (constriction's default precision)
UNUSED = -1              # a decoded index a window of a mapped file does not use (0xFFFF in the checksum)


def window_grid(h: int, w: int, window: int) -> tuple[int, int]:
    """(windows high, windows wide) that cover an h x w token grid, the last ones cut at its edges."""
    return math.ceil(h / window), math.ceil(w / window)


def to_windows(grid: torch.Tensor, window: int) -> torch.Tensor:
    """(C, h, w) -> (windows, window*window, C): zero-padded to whole windows, windows row-major."""
    C, h, w = grid.shape
    nh, nw = window_grid(h, w, window)
    padded = grid.new_zeros(C, nh * window, nw * window)
    padded[:, :h, :w] = grid
    return padded.view(C, nh, window, nw, window).permute(1, 3, 2, 4, 0).reshape(nh * nw, window * window, C)


def windows_of(grid: np.ndarray, window: int, ids) -> np.ndarray:
    """(C, h, w, L) -> (len(ids), window*window, C, L): the windows numbered `ids` (row-major, as
    to_windows numbers them), zero-padded past the grid's edges; a chunk's share of a whole-grid
    array, without a copy of the rest."""
    C, h, w, L = grid.shape
    nw = window_grid(h, w, window)[1]
    out = np.zeros((len(ids), window, window, C, L), dtype=grid.dtype)
    for i, k in enumerate(ids):
        y, x = (window * v for v in divmod(int(k), nw))
        block = grid[:, y:y + window, x:x + window]                                  # (C, <=window, <=window, L)
        out[i, :block.shape[1], :block.shape[2]] = block.transpose(1, 2, 0, 3)
    return out.reshape(len(ids), window * window, C, L)


def window_validity(h: int, w: int, window: int) -> torch.Tensor:
    """(windows, window*window) bool: which positions of each window lie inside an h x w grid."""
    import torch  # here alone: the rest of the module works on the tensors it is given, and stays light
    return to_windows(torch.ones(1, h, w, dtype=torch.bool), window)[..., 0]


def from_windows(windows: torch.Tensor, h: int, w: int, window: int) -> torch.Tensor:
    """Inverse of to_windows: (windows, window*window, C) -> (C, h, w)."""
    C = windows.shape[-1]
    nh, nw = window_grid(h, w, window)
    grid = windows.view(nh, nw, window, window, C).permute(4, 0, 2, 1, 3)
    return grid.reshape(C, nh * window, nw * window)[:, :h, :w]


def inside(x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """x[sel] for x (b, n, ...) and sel (b, n) bool, without a copy when every position is inside."""
    return x if bool(sel.all()) else x[sel]


def position_counts(tokens: np.ndarray) -> np.ndarray:
    """(h, w) the sub-quantizers each position of `tokens` (active, h, w) uses: its leading indices
    that are not UNUSED (a mapped file's, bitstream.py). ValueError where an unused index comes
    before a used one."""
    used = tokens >= 0
    counts = used.sum(0)
    if not np.array_equal(used, np.arange(tokens.shape[0])[:, None, None] < counts):
        raise ValueError(f"unused indices ({UNUSED}) must follow the used ones at every position")
    return counts


def token_checksum(tokens: np.ndarray) -> int:
    """CRC-32 of the indices as uint16 little-endian, C order; UNUSED (-1) counts as 0xFFFF."""
    return zlib.crc32(np.ascontiguousarray(np.asarray(tokens).astype("<u2")).tobytes())


def chunk_check(tokens: np.ndarray) -> np.ndarray:
    """The CHUNK_CHECK_BYTES symbols (byte values) that follow a chunk whose windows hold `tokens`:
    the low bytes of their token_checksum."""
    crc = token_checksum(tokens)
    return np.array([(crc >> (8 * i)) & 0xFF for i in range(CHUNK_CHECK_BYTES)], dtype=np.int64)


def map_weights(windows: int, choices: int) -> np.ndarray:
    """The level map's tables (windows, choices): each of `choices` symbols 2^PROB_BITS // choices,
    the remainder to symbol 0 (as frequency - 1, the range coder's weights)."""
    freq = np.full((windows, choices), (1 << PROB_BITS) // choices, dtype=np.int64)
    freq[:, 0] += (1 << PROB_BITS) % choices
    return (freq - 1).astype(np.float64)


def max_payload_bytes(indices: int) -> int:
    """The range coder's fixed-point probabilities (24 bits) cost any index at most 3 bytes: a longer
    payload is damage. Plus the chunk checks (at most one per WINDOW_CHUNK indices, as every window
    has one) and a few words of coder state. A mapped file: count its map's symbols as indices too."""
    return 3 * indices + CHUNK_CHECK_BYTES * (indices // WINDOW_CHUNK + 1) + 16
