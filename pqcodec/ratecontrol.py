"""Rate control: the best quality whose file fits in N bytes (`pqcodec encode --max-bytes N`,
`--bpp B` for N = floor(B * H * W / 8); `Codec.encode(..., max_bytes=, bpp=)`).

A bounded search, not a sweep. The image is analysed once (the encoder's transform, and each
sub-vector's nearest codewords for RDOQ, rdoq.py); each trial after that is one pass of the token
coder (the prior and the range coder), which gives the exact file:

1. bisection over the quality levels at λ = 0 for the highest level whose file fits
   (at most ceil(log2(levels + 1)) passes: 3 for five levels);
2. if that is not the top level, RDOQ at the next level up: its file at λ = LAMBDA_MAX first (does
   it fit at all?), then at most LAMBDA_STEPS passes of a bracketing search on log λ (false
   position on log size, bisection when it stalls) for the smallest λ that fits;
3. the two candidates (the level that fits at λ = 0, the next level at that λ) are decoded and the
   one with the higher PSNR against the input is kept.

At most 3 + 1 + LAMBDA_STEPS = 10 coder passes for the shipped model's five levels. Every file
returned is one the search coded and measured, so it never exceeds N. When even level 1 at
LAMBDA_MAX does not fit, RateError names the smallest size reached; the extreme mode below the
lowest level (issue 12) is a later step.
"""
import math
import time
from dataclasses import dataclass

import numpy as np

from . import rdoq
from .codec import Codec
from .errors import InputTypeError, PQCodecError, named
from .image import image_source_name, load_image
from .metrics import psnr

LAMBDA_MAX = 16.0    # past this, RDOQ's sizes hardly move (docs/ratecontrol.md)
LAMBDA_MIN = 1 / 256
LAMBDA_STEPS = 6     # coder passes of the λ search after the one at LAMBDA_MAX
CLOSE_ENOUGH = 0.99  # a file of at least this fraction of N ends the λ search


class RateError(PQCodecError):
    """No file this codec can make fits the size asked for."""


@dataclass
class RateResult:
    data: bytes
    max_bytes: int
    quality: int          # the level chosen
    rd_lambda: float      # RDOQ's λ at that level (0: plain quantization)
    encodes: int          # token-coder passes the search made (the analysis transform ran once)
    seconds: float        # the whole search, analysis and decodes included
    psnr: float | None    # of the file chosen, when the search decoded it (RGB, against the input)

    def summary(self) -> str:
        return (f"{len(self.data)} bytes (at most {self.max_bytes}) at quality {self.quality}, λ {self.rd_lambda:.3g}; "
                f"{self.encodes} encodes in {self.seconds:.2f} s")


def budget(max_bytes=None, bpp=None, height: int = 0, width: int = 0) -> int:
    """N: max_bytes, or floor(bpp * height * width / 8). Exactly one of the two."""
    if (max_bytes is None) == (bpp is None):
        raise PQCodecError("give one size: max_bytes or bpp")
    if max_bytes is not None:
        if isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, (int, np.integer)):
            raise InputTypeError(f"max_bytes must be a whole number, got {max_bytes!r} ({type(max_bytes).__name__})")
        if max_bytes < 1:
            raise PQCodecError(f"max_bytes must be at least 1, got {max_bytes}")
        return int(max_bytes)
    if isinstance(bpp, (bool, np.bool_)) or not isinstance(bpp, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"bpp must be a number, got {bpp!r} ({type(bpp).__name__})")
    if not math.isfinite(bpp) or bpp <= 0:
        raise PQCodecError(f"bpp must be a positive number, got {bpp}")
    return math.floor(bpp * height * width / 8)


def encode_to_size(codec: Codec, image, *, max_bytes: int | None = None, bpp: float | None = None,
                   steps: int | None = None, name: str | None = None, distortion: str = "latent") -> RateResult:
    """The file of the best quality that fits in max_bytes (or bpp), found as the module says."""
    start = time.perf_counter()
    steps = codec._check_steps(steps)
    rgb, grey = load_image(image, name)
    H, W = rgb.shape[:2]
    with named(name or image_source_name(image)):
        N = budget(max_bytes, bpp, H, W)
    levels = codec.levels()
    analysis = codec.image_to_tokens(rgb, codec.active_at(levels), candidates=rdoq.CANDIDATES)
    encodes, choosers = 0, {}  # one Chooser per level (its tables, and the pixel gains), λ set per pass

    def code(quality: int, lam: float):
        nonlocal encodes
        encodes += 1
        active = codec.active_at(quality)
        choose = None
        if lam > 0:
            if active not in choosers:
                choosers[active] = rdoq.chooser(codec, analysis, active, lam, distortion)
            choose = choosers[active]
            choose.rd_lambda = lam
        data, stats = codec.encode_analysed(analysis.tokens[:active], (H, W), grey, steps, choose)
        return data, stats.tokens

    # 1. the highest level that fits at λ = 0 (sizes grow with the level)
    fits, sizes, lo, hi = {}, {}, 0, levels + 1   # level lo fits (0: none known), level hi does not (levels+1: past the top)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        data, tokens = code(mid, 0.0)
        sizes[mid] = len(data)
        if len(data) <= N:
            lo, fits[mid] = mid, (data, tokens)
        else:
            hi = mid
    candidates = [(lo, 0.0, *fits[lo])] if lo else []
    smallest = None
    # 2. the level above it, with RDOQ
    if hi <= levels:
        found, smallest = _lambda_search(code, hi, N, sizes[hi])
        if found:
            candidates.append((hi, *found))
    if not candidates:
        shown = name or image_source_name(image)
        raise RateError(f"{shown}: cannot fit in {N} bytes: the smallest file this model reaches is {smallest} bytes "
                        f"(quality 1 at the strongest RDOQ); a mode below the lowest level is not built yet")
    # 3. the better of the two candidates, by PSNR
    best_psnr = None
    if len(candidates) > 1:
        scored = [(psnr(rgb, codec.tokens_to_image(c[3], H, W)), i) for i, c in enumerate(candidates)]
        best_psnr, best = max(scored)
        candidates = [candidates[best]]
    quality, lam, data, _ = candidates[0]
    assert len(data) <= N
    return RateResult(data, N, quality, lam, encodes, time.perf_counter() - start, best_psnr)


def _lambda_search(code, quality: int, N: int, plain_size: int):
    """((λ, data, tokens) of the smallest λ found whose file at `quality` fits in N, or None;
    the smallest size met). plain_size: the file's size at λ = 0, known to be over N."""
    data, tokens = code(quality, LAMBDA_MAX)
    if len(data) > N:
        return None, len(data)
    best = (LAMBDA_MAX, data, tokens)
    # bracket in log λ: lo does not fit (λ = 0 is taken as LAMBDA_MIN), hi fits
    lo, hi = (math.log(LAMBDA_MIN), plain_size), (math.log(LAMBDA_MAX), len(data))
    last_side = None
    for _ in range(LAMBDA_STEPS):
        if len(best[1]) >= CLOSE_ENOUGH * N:
            break
        if last_side is not None and last_side[1] >= 2:
            x = (lo[0] + hi[0]) / 2        # bisection when the same end has moved twice running
        else:                               # false position on log size
            ylo, yhi, t = math.log(lo[1]), math.log(hi[1]), math.log(N)
            x = lo[0] + (hi[0] - lo[0]) * (ylo - t) / (ylo - yhi) if ylo > yhi else (lo[0] + hi[0]) / 2
            x = min(max(x, lo[0] + 0.05 * (hi[0] - lo[0])), hi[0] - 0.05 * (hi[0] - lo[0]))
        lam = math.exp(x)
        data, tokens = code(quality, lam)
        side = "hi" if len(data) <= N else "lo"
        if side == "hi":
            hi = (x, len(data))
            if lam < best[0]:
                best = (lam, data, tokens)
        else:
            lo = (x, len(data))
        last_side = (side, last_side[1] + 1 if last_side and last_side[0] == side else 1)
    return best, None
