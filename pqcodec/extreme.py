"""The extreme mode below the lowest level: an image in a few hundred bytes (`pqcodec encode
--max-bytes 200`), after PQ-MIM's hybrid compression/generation.

A generated file (bitstream.Generated, format version 4) codes the image shrunk to a small token
grid, and of that grid only the indices of the first `sent` steps of the coding schedule; the
decoder draws the rest from the prior (integer-exact, seeded: coding.schedule.sample_symbols), decodes
the grid and resizes it to the image's size. Encoder side, this module searches the shrink, the
level, the steps sent and the sampler for the best PSNR whose file fits the budget; every file it
returns is one it coded and measured, so it never exceeds the budget.

The search, for each sub-quantizer count in ACTIVE (the model's lowest levels):
1. a bracketing search over the grid's long side k (1 .. the image's own grid) for the largest grid
   whose plain file (every step sent) fits: from k = 16, the next k guessed from the file's size
   (payload ~ k^2) up to PREDICTED times, then bisection: 4-6 coder passes on a Kodak image;
2. with `hybrid` (`pqcodec encode --generative`), for each grid HYBRID_GROWTH times larger, bisection
   over the steps sent for the most that fit (the size does not depend on the sampler: the drawn
   indices come after the coded ones in every window), then one pass per sampler in SAMPLERS;
3. every candidate is decoded and the one with the highest PSNR against the input is kept.

By default only step 1's candidates compete: on 8 training photos at 200 bytes the best partly
drawn grid was 2.4-5.8 dB below the plain shrink every time (docs/ratecontrol.md, "The extreme
mode"): the drawn indices add texture but not the image's content. `hybrid` keeps only the partly
drawn candidates, for those who want PQ-MIM's generative look.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import bitstream, flat as flat_blocks
from .bitstream import Generated
from .codec import Codec, resize
from .metrics import psnr

ACTIVE = (1, 2)                          # sub-quantizers in use tried (the shipped model's levels 1 and 2)
HYBRID_GROWTH = (1.25, 1.5)              # grids this much larger than the plain one, partly drawn
SAMPLERS = ((0, 0), (2, 0), (2, 1))      # (sharpening, seed): the most probable symbol, two draws of p^2
FIRST_SIDE = 16                          # the plain search's first grid: 16 tokens (128 px) on the long side
PREDICTED = 4                            # passes whose next grid is guessed from the file's size


@dataclass
class Candidate:
    data: bytes
    psnr: float           # of the decoded file against the input (RGB)
    active: int           # sub-quantizers in use
    generated: Generated  # the header's fields: grid, steps sent (all: nothing drawn), sampler


def grid_for(height: int, width: int, long_side: int, full: tuple[int, int]) -> tuple[int, int]:
    """The token grid whose long side is `long_side` tokens, of the image's aspect ratio, each side at
    least 1 and at most the image's own grid `full`."""
    scale = long_side / max(full)
    return (min(full[0], max(1, round(full[0] * scale))), min(full[1], max(1, round(full[1] * scale))))


class GeneratedSearch:
    """One image's search (see the module's docstring); `passes` counts coder passes."""

    def __init__(self, codec: Codec, rgb: np.ndarray, greyscale: bool, max_bytes: int, steps: int,
                 hybrid: bool = False, flat: flat_blocks.FlatBlocks | None = None):
        """flat: the image's flat blocks, which every file carries (flat.py), or None."""
        self.codec, self.rgb, self.grey, self.N, self.steps = codec, rgb, greyscale, max_bytes, steps
        self.flat = flat
        self.hybrid_only = hybrid
        self.H, self.W = rgb.shape[:2]
        self.full = codec.grid_size(self.H, self.W)
        self.actives = [a for a in ACTIVE if a in codec.config.active_levels]
        self.passes, self.smallest = 0, None
        self._tokens = {}  # grid -> plain indices of the shrunken image, every active count tried

    def tokens(self, grid: tuple[int, int], active: int) -> np.ndarray:
        if grid not in self._tokens:
            s = self.codec.config.stride
            self._tokens[grid] = self.codec.image_to_tokens(resize(self.rgb, grid[0] * s, grid[1] * s), max(self.actives))
        return self._tokens[grid][:active]

    def code(self, grid, active, sent, sharpen=0, seed=0) -> tuple[bytes, np.ndarray]:
        self.passes += 1
        generated = Generated(grid[0], grid[1], sent, sharpen, seed)
        layer = None if self.flat is None else self.flat.layer
        data, coded = self.codec.encode_generated(self.tokens(grid, active), (self.H, self.W), self.grey,
                                                  self.steps, generated, layer)
        self.smallest = len(data) if self.smallest is None else min(self.smallest, len(data))
        return data, coded

    def candidate(self, grid, active, sent, sharpen=0, seed=0, coded=None) -> Candidate | None:
        data, coded = coded or self.code(grid, active, sent, sharpen, seed)
        if len(data) > self.N:
            return None
        image = flat_blocks.paint(self.codec.render_generated(coded, self.H, self.W), self.flat)
        return Candidate(data, psnr(self.rgb, image), active, Generated(*grid, sent, sharpen, seed))

    def plain(self, active) -> tuple[int, Candidate | None]:
        """The largest grid (long side k) whose file with every step sent fits: a bracketing search
        whose first PREDICTED passes guess k from the last file (payload ~ k^2), then bisection."""
        lo, hi, best = 0, max(self.full) + 1, None   # lo fits (0: none known), hi does not
        k, passes = min(FIRST_SIDE, max(self.full)), 0
        while hi - lo > 1:
            grid = grid_for(self.H, self.W, k, self.full)
            data, coded = self.code(grid, active, self.steps)
            if len(data) <= self.N:
                lo, best = k, (grid, data, coded)
            else:
                hi = k
            passes += 1
            if passes <= PREDICTED:
                payload = len(bitstream.unpack(data)[1])
                room = self.N - (len(data) - payload)
                guess = round(k * math.sqrt(max(room, 1) / max(payload, 1)))
            else:
                guess = (lo + hi) // 2
            k = min(max(guess, lo + 1), hi - 1)
        if best is None:
            return 0, None
        grid, data, coded = best
        return lo, self.candidate(grid, active, self.steps, coded=(data, coded))

    def hybrid(self, grid, active) -> list[Candidate]:
        """The most steps of `grid` that fit, by bisection over 0..steps-1, with each sampler."""
        lo, hi = -1, self.steps   # sent = lo fits (-1: none known), hi does not (or is the plain file)
        while hi - lo > 1:
            sent = (lo + hi) // 2
            data, _ = self.code(grid, active, sent)
            if len(data) <= self.N:
                lo = sent
            else:
                hi = sent
        if lo < 0:
            return []
        return [c for c in (self.candidate(grid, active, lo, sharpen, seed) for sharpen, seed in SAMPLERS) if c]

    def run(self) -> Candidate | None:
        plains, hybrids = [], []
        for active in self.actives:
            k, plain = self.plain(active)
            plains += [plain] if plain else []
            if self.hybrid_only:
                for growth in HYBRID_GROWTH:
                    k_big = max(k + 1, math.ceil(k * growth))
                    if k_big <= max(self.full):
                        hybrids += self.hybrid(grid_for(self.H, self.W, k_big, self.full), active)
        found = hybrids or plains  # a tiny image's own grid fits whole: nothing is left to draw
        return max(found, key=lambda c: c.psnr) if found else None
