"""The level map: a level per prior window, chosen to fit a size (rate control's rates between the
levels, docs/ratecontrol.md).

The prior codes each window of 16 x 16 tokens on its own, so a window costs the same bits in a file
whose other windows use other levels as in the plain file of its own level: the bits of every
window at every level are known from the plain passes (`CodingStats.window_bits`). The squared
error of every window at every level is measured on the decoded plain files. The encoder then
chooses each window's level to minimise the image's squared error within the budget:

1. Lagrangian: each window takes the level minimising SSE + mu * bits, for the smallest mu
   (bisection on log mu) whose total fits;
2. greedy fill: while the budget allows, the window upgrade with the most SSE saved per bit.

Flat sky then stays at level 1 while foliage gets level 4: rate goes where it buys the most
PSNR. The file is a mapped file (bitstream.py, format version 5); the decoder gives the
sub-vectors a window does not use the quantizer's filler, as it does beyond a plain level. The
squared errors are those of whole-image decodes, so a window's error in the mixed decode differs a
little at its borders (the decoder's receptive field spans ~7 tokens); the search measures the file
it returns.
"""
import math

import numpy as np

from .coding.layout import CHUNK_CHECK_BYTES, WINDOW_CHUNK, window_grid

MU_STEPS = 60   # bisection steps on log mu (numpy on a few hundred windows: microseconds each)
ATTEMPTS = 3    # mapped files coded at most, each after one over N lowered the budget


def window_sse(rgb: np.ndarray, decoded: np.ndarray, window_px: int) -> np.ndarray:
    """(windows high, windows wide) squared error of `decoded` against `rgb` (uint8 (H, W, 3)) summed
    over each window's pixels (window_px x window_px, the last row and column clipped): integer sums,
    a row of windows at a time (not float64 copies of the whole image: 1.2 GB at 24 MP)."""
    H, W = rgb.shape[:2]
    nh, nw = math.ceil(H / window_px), math.ceil(W / window_px)
    sse = np.zeros((nh, nw))
    for i in range(nh):
        rows = slice(i * window_px, (i + 1) * window_px)
        d = rgb[rows].astype(np.int64) - decoded[rows]
        err = np.zeros((d.shape[0], nw * window_px), dtype=np.int64)
        err[:, :W] = np.einsum("ijk,ijk->ij", d, d)                                    # (rows, W)
        sse[i] = err.reshape(d.shape[0], nw, window_px).sum((0, 2))
    return sse


def allocate(bits: np.ndarray, sse: np.ndarray, budget_bits: float) -> np.ndarray | None:
    """bits, sse (levels, windows...) -> the level index of each window (windows...) minimising the
    total sse with total bits <= budget_bits, or None when not even the cheapest choice fits.
    bits must grow and sse should fall with the level index (a level that does not lower a window's
    sse is never worth its bits there, and the Lagrangian skips it)."""
    L = bits.shape[0]
    b, d = bits.reshape(L, -1), sse.reshape(L, -1)
    cols = np.arange(b.shape[1])
    cheapest = b.argmin(0)
    if b[cheapest, cols].sum() > budget_bits:
        return None

    def pick(mu):
        return np.argmin(d + mu * b, axis=0)

    lo, hi = -30.0, 30.0    # log mu: at e^30 every window takes its cheapest level, at e^-30 its best
    if b[pick(math.exp(hi)), cols].sum() > budget_bits:
        choice = cheapest
    else:
        for _ in range(MU_STEPS):
            mid = (lo + hi) / 2
            if b[pick(math.exp(mid)), cols].sum() <= budget_bits:
                hi = mid
            else:
                lo = mid
        choice = pick(math.exp(hi))
    # greedy fill of what the Lagrangian's last step left: the best SSE saved per bit that fits
    spent = b[choice, cols].sum()
    while True:
        extra = b - b[choice, cols]                                    # (L, windows)
        saved = d[choice, cols] - d
        ok = (extra > 0) & (saved > 0) & (extra <= budget_bits - spent)
        if not ok.any():
            break
        gain = np.where(ok, saved / np.where(ok, extra, 1), -np.inf)
        level, window = np.unravel_index(np.argmax(gain), gain.shape)
        spent += extra[level, window]
        choice[window] = level
    return choice.reshape(bits.shape[1:])


def fit(codec, size: tuple[int, int], plain_pass, plain_sse, code_mapped, N: int, top: int):
    """A mapped file of levels 1..top that fits in N bytes, by the allocation above:
    (file, the tokens coded (UNUSED beyond each window's count), levels per window (1-based,
    (windows high, windows wide))), or None when no map with two levels or more fits.
    size: the image's (H, W). plain_pass(level) -> (file, CodingStats) and plain_sse(level) -> the
    window_sse of its decode: the plain files of the image (rate control makes and decodes each
    once); code_mapped(counts (windows high, windows wide) sub-quantizers) -> (file, CodingStats):
    Codec.encode_mapped of the image.
    Up to ATTEMPTS mapped files are coded: a file over N (the estimate of the coder's last words
    was short) lowers the budget by its excess."""
    h, w = codec.grid_size(*size)
    windows = math.prod(window_grid(h, w, codec.config.window))
    if windows < 2:  # nothing to map: no plain pass or decode is made for it
        return None
    levels = range(1, top + 1)
    stats = [plain_pass(q)[1] for q in levels]
    bits = np.stack([s.window_bits for s in stats])                                    # (L, nh, nw)
    sse = np.stack([plain_sse(q) for q in levels])                                      # (L, nh, nw)
    # what a payload costs beyond its windows' ideal bits: the coder's last words (and a plain
    # file's own checks, counted again below for the map's groups: a safe overestimate)
    slack = max(8 * (s.file_bytes - s.header_bytes) - s.bits_model for s in stats)
    worst = windows * math.log2(top) + 8 * CHUNK_CHECK_BYTES * (math.ceil(windows / WINDOW_CHUNK) + top - 1)
    budget = 8 * (N - stats[0].header_bytes) - slack - worst
    active_levels = np.array(codec.config.active_levels)
    for _ in range(ATTEMPTS):
        choice = allocate(bits, sse, budget)
        if choice is None or len(np.unique(choice)) < 2:  # one level: a plain file the search has tried
            return None
        data, coded = code_mapped(active_levels[choice])
        if len(data) <= N:
            return data, coded.tokens, choice + 1
        budget -= 8 * (len(data) - N) + 32
    return None
