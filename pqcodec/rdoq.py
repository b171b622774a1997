"""Rate-distortion optimised quantization (RDOQ): the encoder chooses, for each coded index, among
the few nearest codewords of its sub-vector, the one that minimises distortion + λ · bits, where
bits = −log2 p is what the integer prior's frequency table at that coding step charges for it.

Encoder side only: the choice is made inside the token coder's loop (coding/token_coder.py, `TokenCoder.compress`'s
`choose` hook), where each step's frequency tables are known before its symbols are coded; the
decoder reads the chosen indices like any others, the file format does not change and λ is not in
the file. The choice is greedy per step: it charges a symbol its own bits, not what it changes in
the prior's predictions of later steps (the file sizes, which rate control measures, include that).

Units: cost = D / D̄ + λ · bits, where D is the distortion of a candidate and D̄ the mean distortion
of the plain (nearest-codeword) choice over the image's coded indices, so λ is dimensionless: λ = 1
trades one bit for one mean quantization error, whatever the level or image. λ = 0 is the plain
quantizer (Codec skips this module then, so its files are byte-identical to a plain encode).

Distortion (docs/ratecontrol.md measures both):
- "latent": ||z − c||², the squared error against the encoder's unquantized sub-vector z;
- "pixel": the same, weighted per sub-quantizer by a gain measured on the image itself, g_m = pixel
  squared error / latent squared error when sub-quantizer m's indices of a crop move to their second
  nearest codeword (active + 1 decodes of a crop of at most 32 x 32 positions): a cheap proxy of
  the decoder's sensitivity to each sub-vector.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from .coding.layout import PROB_BITS

CANDIDATES = 8          # nearest codewords considered per index
DISTORTIONS = ("latent", "pixel")
GAIN_CROP = 32          # positions per side of the crop the pixel gains are measured on


def to_bfloat16(d: torch.Tensor) -> np.ndarray:
    """float32 distances -> their bfloat16 bit patterns (uint16; rounded to nearest): what an
    Analysis holds, half of float32's memory (72 MB less at 24 MP). Eight significant bits are
    plenty for a greedy rate-distortion choice: on Kodak (every other image, levels 3 and 5, λ 0.3
    and 2) files and PSNR equal float32's to 0.01 % and 0.002 dB (docs/experiments.md, bf16-dist-28)."""
    return d.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    """`to_bfloat16`'s bit patterns -> float32 (exact: a bfloat16 is a float32's upper half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass
class Analysis:
    """An image's quantization with its alternatives, for the sub-quantizers 0..M'-1 analysed:
    tokens (M', h, w) the plain (nearest) indices (int16); cand (M', h, w, L) the L nearest codewords, nearest
    first; dist (M', h, w, L) their squared error against the unquantized latent, as bfloat16 bit
    patterns (`to_bfloat16`)."""
    tokens: np.ndarray
    cand: np.ndarray
    dist: np.ndarray

    def at(self, active: int) -> "Analysis":
        """The same for the first `active` sub-quantizers (their choices do not depend on the others)."""
        return Analysis(self.tokens[:active], self.cand[:active], self.dist[:active])


def pixel_gains(codec, analysis: Analysis, active: int) -> np.ndarray:
    """(active,) pixel squared error per unit of latent squared error, per sub-quantizer, measured
    on a central crop of the token grid by moving each sub-quantizer's indices to their second
    nearest codeword (the move RDOQ makes most)."""
    _, h, w = analysis.tokens.shape
    ch, cw = min(h, GAIN_CROP), min(w, GAIN_CROP)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    tokens = analysis.tokens[:active, y0:y0 + ch, x0:x0 + cw].astype(np.int64)  # a copy, to index codebooks
    second = analysis.cand[:active, y0:y0 + ch, x0:x0 + cw, min(1, analysis.cand.shape[-1] - 1)]
    cb = codec.model.quantizer.codebooks.double()
    s = codec.config.stride
    base = codec.tokens_to_image(tokens, ch * s, cw * s).astype(np.float64)
    gains = np.ones(active)
    for m in range(active):
        moved = tokens.copy()
        moved[m] = second[m]
        latent = float((cb[m][torch.from_numpy(moved[m])] - cb[m][torch.from_numpy(tokens[m])]).square().sum())
        if latent > 0:
            pixels = float(np.square(codec.tokens_to_image(moved, ch * s, cw * s) - base).sum())
            gains[m] = pixels / latent
    if gains.max() > 0:
        gains = np.maximum(gains, gains.max() * 1e-3)  # a sub-vector that seems not to matter still costs
    return gains


def check_lambda(rd_lambda) -> float:
    real = isinstance(rd_lambda, (int, float, np.integer, np.floating)) and not isinstance(rd_lambda, (bool, np.bool_))
    value = float(rd_lambda) if real else math.nan
    if not math.isfinite(value) or value < 0:
        from .errors import InputTypeError
        raise InputTypeError(f"rd_lambda must be a finite number >= 0, got {rd_lambda!r}")
    return value


class Chooser:
    """The `choose` hook of TokenCoder.compress for one image and level; `rd_lambda` may be changed
    between passes (rate control's λ search reuses the tables). It holds no copy of the analysis:
    the token coder takes each window chunk's share of `per_position` as it codes it."""

    def __init__(self, analysis: Analysis, rd_lambda: float, gains: np.ndarray | None = None):
        a, h, w = analysis.cand.shape[:3]
        self.rd_lambda = rd_lambda
        self.gains = None if gains is None else np.asarray(gains, np.float64)
        # distortions are divided by the mean of the plain choice's (module docstring)
        plain = from_bfloat16(analysis.dist[..., 0]).astype(np.float64)                  # (a, h, w)
        if self.gains is not None:
            plain *= self.gains[:, None, None]
        self.mean = float(plain.mean()) if plain.size else 0.0
        gain = np.broadcast_to((np.ones(a) if self.gains is None else self.gains)[:, None, None, None], (a, h, w, 1))
        # (a, h, w, L) each: what TokenCoder.compress picks for __call__, without a copy
        self.per_position = (analysis.cand, analysis.dist, gain)

    def __call__(self, weights: np.ndarray, symbols: np.ndarray, cand: np.ndarray, dist: np.ndarray,
                 gain: np.ndarray) -> np.ndarray:
        """weights (m, K) and symbols (m,) of the indices coded at a step; cand and dist (m, L) their
        candidates and latent distortions (bfloat16 bit patterns), gain (m, 1) their sub-quantizer's pixel gain -> the
        symbols to code (m,)."""
        cost = from_bfloat16(dist).astype(np.float64)
        if self.gains is not None:
            cost = cost * gain
        if self.mean > 0:
            cost = cost / self.mean
        bits = PROB_BITS - np.log2(np.take_along_axis(weights, cand, 1) + 1)
        best = np.argmin(cost + self.rd_lambda * bits, axis=1)
        return cand[np.arange(len(cand)), best].astype(np.int64)


def chooser(codec, analysis: Analysis, active: int, rd_lambda: float, distortion: str = "latent") -> Chooser:
    if distortion not in DISTORTIONS:
        from .errors import PQCodecError
        raise PQCodecError(f"distortion must be one of {', '.join(DISTORTIONS)}, got {distortion!r}")
    a = analysis.at(active)
    gains = pixel_gains(codec, a, active) if distortion == "pixel" else None
    return Chooser(a, rd_lambda, gains)
