"""Rate control: the best quality whose file fits in N bytes (`pqcodec encode --max-bytes N`,
`--bpp B` for N = floor(B * H * W / 8); `pqcodec.encode(..., max_bytes=, bpp=)`, `encode_to_size(codec, ...)`).

A bounded search, not a sweep. The encoder's transform gives the image's indices once; each trial
after that is one pass of the token coder (the prior and the range coder), which gives the exact
file. RDOQ's nearest codewords (rdoq.py) come from a second run of the transform, once the
bisection has said which level the λ search codes, for that level's sub-quantizers only (the
memory of all of them, 108 MB at 24 MP with the distances as bfloat16, is the search's largest array):

1. level 1 at λ = 0, then bisection over the levels above for the highest level whose file fits
   (at most 1 + ceil(log2(levels)) passes: 4 for five levels, 1 when level 1 does not fit);
2. if that is not the top level, RDOQ at the next level up: its file at λ = LAMBDA_MAX first (does
   it fit at all?), then at most LAMBDA_STEPS passes of a bracketing search on log λ (false
   position on log size, bisection when it stalls) for the smallest λ that fits; below level 1
   only when N is at least RDOQ_REACH of level 1's size (RDOQ cannot reach further);
3. when level 1 fits and the top level does not, the level map (levelmap.py): a level per prior
   window over levels 1 to the one above the next, from the plain passes of those levels (those the
   bisection did not make are made) and a decode of each; a mapped file (format version 5), coded
   at most levelmap.ATTEMPTS times;
4. when not even the lowest level fits at λ = 0, the extreme mode (extreme.py): the image shrunk
   to the largest token grid whose file fits (levels 1 and 2, bisection over the grid's size), a
   generated file (format version 4);
5. the candidates (the level that fits at λ = 0, the next level at that λ, the level map's, the
   extreme mode's) are decoded and the one with the highest PSNR against the input is kept.

An image with flat blocks (flat.py) is searched twice, with and without its flat layer (which
every candidate of the first search carries, and its decodes paint, as the decoder will), and the
best of both searches' candidates wins: the layer is worth its bytes where it makes enough pixels
exact, not in a photo at 200 bytes whose four flat blocks would take a tenth of them (kodim23:
−0.6 dB). A layer longer than FLAT_SHARE of N is not tried. Both searches bisect before either's λ search, so
the transform runs at most twice in all.

At most 5 + 1 + LAMBDA_STEPS + ATTEMPTS = 15 coder passes for the shipped model's five levels,
plus 4-6 small ones per level tried below level 1 (a Kodak image at 200 bytes: grids of ~1/20 of its positions).
Where N leaves fewer than MIN_BITS_PER_INDEX bits per index of level 1 (a 12 MP photo in 200 bytes),
no level can fit and only the extreme mode runs, without the full-size analysis. Every file
returned is one the search coded and measured, so it never exceeds N. When nothing fits (N below
the extreme mode's header and one word, ~27 bytes), RateError names the smallest size reached.
"""
import math
import time
from dataclasses import dataclass

import numpy as np

from . import flat as flat_blocks, levelmap, rdoq
from .bitstream import Generated
from .codec import Codec
from .extreme import GeneratedSearch
from .errors import InputTypeError, PQCodecError, named
from .image import image_source_name, load_image
from .metrics import psnr, psnr_of_mse
from .words import counted

LAMBDA_MAX = 16.0    # past this, RDOQ's sizes hardly move (docs/ratecontrol.md)
LAMBDA_MIN = 1 / 256
LAMBDA_STEPS = 6     # coder passes of the λ search after the one at LAMBDA_MAX
CLOSE_ENOUGH = 0.99  # a file of at least this fraction of N ends the λ search
RDOQ_REACH = 0.5     # below level 1, the λ search runs only when N is at least this fraction of its size
# RDOQ's distortion in the λ search: the pixel proxy (rdoq.py). On Kodak, BD-rate of the --max-bytes
# curve against the levels +0.9 % PSNR / +19.3 % MS-SSIM with it, +1.7 % / +20.3 % with latent
# distortion, for ~10 % more encode time (docs/ratecontrol.md)
RD_DISTORTION = "pixel"
MIN_BITS_PER_INDEX = 0.02  # no level is tried when N would leave fewer bits than this per index of level 1
FLAT_SHARE = 0.5           # a flat layer longer than this fraction of N is left out


class RateError(PQCodecError):
    """No file this codec can make fits the size asked for."""


@dataclass
class RateResult:
    data: bytes
    max_bytes: int
    level: int            # the level chosen
    rd_lambda: float      # RDOQ's λ at that level (0: plain quantization)
    encodes: int          # token-coder passes the search made (the analysis transform ran once)
    seconds: float        # the whole search, analysis and decodes included
    psnr: float | None    # of the file chosen, when the search decoded it (RGB, against the input)
    generated: Generated | None = None  # the extreme mode's fields, when it won (level: the level of its grid)
    steps: int = 0                      # of the coding schedule
    window_levels: np.ndarray | None = None  # a level map's levels per window, when it won (level: the highest)

    def setting(self) -> str:
        """What the search chose, in words."""
        g, m = self.generated, self.window_levels
        if m is not None:
            used = np.unique(m, return_counts=True)
            return "levels by window: " + ", ".join(f"{n} at {q}" for q, n in zip(*used))
        if g is None:
            return f"level {self.level}" + (f", RDOQ λ {self.rd_lambda:.3g}" if self.rd_lambda else "")
        return (f"level {self.level} shrunk to a {g.grid_width}x{g.grid_height} token grid"
                + (f", {g.sent} of {counted(self.steps, 'step')} sent, the rest drawn" if g.sent < self.steps else ""))

    def summary(self) -> str:
        return (f"{counted(len(self.data), 'byte')} (at most {self.max_bytes}) at {self.setting()}; "
                f"{counted(self.encodes, 'encode')} in {self.seconds:.2f} s")


@dataclass
class _Candidate:
    """A file the search found that fits, and what RateResult says of it."""
    level: int
    rd_lambda: float
    data: bytes
    tokens: np.ndarray | None = None         # to decode it (None: `psnr` is known)
    window_levels: np.ndarray | None = None
    generated: Generated | None = None
    psnr: float | None = None                # known without a decode (a plain level the level map decoded)
    flat: flat_blocks.FlatBlocks | None = None  # the flat blocks it carries, painted when it is decoded

    def __post_init__(self):  # held until the end of the search: int16 (K <= 2^15), not a view of the analysis
        if self.tokens is not None:
            self.tokens = self.tokens.astype(np.int16, copy=False)  # the λ search's are int16 already


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
                   steps: int | None = None, name: str | None = None, distortion: str = RD_DISTORTION,
                   generative: bool = False, flat: bool = True) -> RateResult:
    """The file of the best quality that fits in max_bytes (or bpp), found as the module says.
    generative: below the lowest level, only partly drawn grids (extreme.py's `hybrid`).
    flat: send the image's flat blocks (flat.py)."""
    start = time.perf_counter()
    steps = codec.check_steps(steps)
    rgb, grey = load_image(image, name)
    H, W = rgb.shape[:2]
    with named(name or image_source_name(image)):
        N = budget(max_bytes, bpp, H, W)
    variants = [None]  # the flat blocks each search's files carry: none, and the image's when it has some
    blocks = flat_blocks.find(rgb, grey) if flat else None
    if blocks is not None and len(blocks.layer) <= FLAT_SHARE * N:
        variants.insert(0, blocks)
    h, w = codec.grid_size(H, W)
    # 1. every variant's bisection first, from the plain indices alone (unless N is hopelessly small
    #    for the levels: a large image in a few hundred bytes, where the full-size analysis would be
    #    wasted); then RDOQ's nearest codewords, for the sub-quantizers of the highest level any
    #    variant's λ search codes (the analysis transform's second run: at 24 MP, 72 MB less held
    #    than all twelve sub-quantizers' when that level is 3), held only through the λ searches
    searches, encodes = {}, 0
    if 8 * N >= MIN_BITS_PER_INDEX * h * w * codec.active_at(1):
        tokens = codec.image_to_tokens(rgb, codec.active_at(codec.num_levels())).astype(np.int16)  # (M, h, w)
        for i, blocks in enumerate(variants):
            searches[i] = _LevelSearch(codec, tokens, rgb, grey, N, steps, distortion, blocks)
            searches[i].bisect()
        del tokens  # the searches hold it
        rdoq_levels = [ls.rdoq_level for ls in searches.values() if ls.rdoq_level]
        if rdoq_levels:
            analysis = codec.image_to_tokens(rgb, codec.active_at(max(rdoq_levels)), candidates=rdoq.CANDIDATES)
            for level_search in searches.values():
                level_search.analysis = analysis
            del analysis
        # 2. every variant's λ search, before any level map decodes (the analysis is let go first)
        for level_search in searches.values():
            level_search.search_lambda()
    candidates, smallest = [], None
    for i, blocks in enumerate(variants):
        found = []
        # 3. the level map, and the files of steps 1 and 2
        if i in searches:
            found, passes, least = searches.pop(i).candidates()
            encodes, smallest = encodes + passes, min(s for s in (smallest, least) if s is not None)
        # 4. below the lowest level: the extreme mode
        if not any(c.rd_lambda == 0 for c in found):
            search = GeneratedSearch(codec, rgb, grey, N, steps, hybrid=generative, flat=blocks)
            extreme = search.run()
            encodes += search.passes
            smallest = min(s for s in (smallest, search.smallest) if s is not None)
            if extreme is not None:
                level = codec.config.active_levels.index(extreme.active) + 1
                found.append(_Candidate(level, 0.0, extreme.data, generated=extreme.generated, psnr=extreme.psnr))
        candidates += found
    if not candidates:
        shown = name or image_source_name(image)
        raise RateError(f"{shown}: cannot fit in {counted(N, 'byte')}: the smallest file this model reaches is "
                        f"{counted(smallest, 'byte')}")
    # 5. the best candidate by PSNR (decoded only when there is a choice)
    if len(candidates) > 1:
        for c in candidates:
            if c.psnr is None:
                c.psnr = psnr(rgb, flat_blocks.paint(codec.tokens_to_image(c.tokens, H, W), c.flat))
    best = max(candidates, key=lambda c: -math.inf if c.psnr is None else c.psnr)
    assert len(best.data) <= N
    return RateResult(best.data, N, best.level, best.rd_lambda, encodes, time.perf_counter() - start, best.psnr,
                      best.generated, steps, best.window_levels)


class _LevelSearch:
    """Steps 1 to 3 for one variant (the image with its flat blocks `blocks`, or without: None):
    `bisect()` finds the highest level whose plain file fits, `search_lambda()` the smallest λ at the
    level above it, then `candidates()` the files that fit ([_Candidate]: that level's at λ = 0, the
    level above it with RDOQ, the level map).
    tokens: the image's plain indices at the top level (M, h, w); `analysis` (rdoq.Analysis, of at
    least `rdoq_level`'s sub-quantizers) must be set before `search_lambda()` when rdoq_level is not None."""

    def __init__(self, codec: Codec, tokens: np.ndarray, rgb, grey, N: int, steps: int, distortion: str,
                 blocks: flat_blocks.FlatBlocks | None):
        self.codec, self.tokens, self.rgb, self.grey, self.N = codec, tokens, rgb, grey, N
        self.steps, self.distortion, self.blocks = steps, distortion, blocks
        self.layer = None if blocks is None else blocks.layer
        self.levels = codec.num_levels()
        self.analysis: rdoq.Analysis | None = None
        self.encodes, self.choosers = 0, {}  # one Chooser per level (its tables, and the pixel gains), λ set per pass
        self.plain, self.sse = {}, {}        # level -> (file, CodingStats) at λ = 0, and its decode's window_sse: made once each
        self.lo = self.hi = None             # level lo fits at λ = 0 (0: none), level hi does not (levels + 1: past the top)
        self.rdoq = (None, None)             # step 2's (λ, file, tokens) that fits or None, and the smallest size met

    def code(self, level: int, lam: float):
        self.encodes += 1
        active, choose = self.codec.active_at(level), None
        if lam > 0:
            if active not in self.choosers:
                self.choosers[active] = rdoq.chooser(self.codec, self.analysis, active, lam, self.distortion)
            choose = self.choosers[active]
            choose.rd_lambda = lam
        return self.codec.encode_analysed(self.tokens[:active], self.rgb.shape[:2], self.grey, self.steps, choose,
                                          flat=self.layer)

    def plain_pass(self, level: int):
        if level not in self.plain:
            self.plain[level] = self.code(level, 0.0)
        return self.plain[level]

    def plain_sse(self, level: int) -> np.ndarray:
        if level not in self.sse:
            H, W = self.rgb.shape[:2]
            image = flat_blocks.paint(self.codec.tokens_to_image(self.plain_pass(level)[1].tokens, H, W), self.blocks)
            self.sse[level] = levelmap.window_sse(self.rgb, image, self.codec.config.window * self.codec.config.stride)
        return self.sse[level]

    def size(self, level: int) -> int:
        return len(self.plain_pass(level)[0])

    def bisect(self):
        """1. The highest level that fits at λ = 0 (sizes grow with the level): level 1 first, then bisection."""
        lo, hi, mid = 0, self.levels + 1, 1
        while hi - lo > 1:
            lo, hi = (mid, hi) if self.size(mid) <= self.N else (lo, mid)
            mid = (lo + hi) // 2
        self.lo, self.hi = lo, hi

    @property
    def rdoq_level(self) -> int | None:
        """The level step 2's λ search codes, or None: the level above the one that fits (below
        level 1 only where RDOQ can reach N: it saves at most ~30 % of a level's bytes,
        docs/ratecontrol.md)."""
        if self.hi <= self.levels and (self.lo > 0 or self.N >= RDOQ_REACH * self.size(1)):
            return self.hi
        return None

    def search_lambda(self):
        """2. The level above it, with RDOQ (when rdoq_level says so); then the analysis is let go."""
        if self.rdoq_level is not None:
            self.rdoq = _lambda_search(self.code, self.hi, self.N, self.size(self.hi))
        self.analysis, self.choosers = None, {}

    def candidates(self):
        """Step 3, after `search_lambda`: ([_Candidate] of the files found that fit, the coder passes
        made in all, the smallest size met)."""
        lo, hi, N = self.lo, self.hi, self.N
        candidates, smallest = [], self.size(1)
        found, smallest_rdoq = self.rdoq
        if found:
            candidates.append(_Candidate(hi, *found, flat=self.blocks))
        smallest = min(smallest, smallest_rdoq or smallest)
        # 3. a level per window, levels 1 to the one above the next (levelmap.py)
        if lo and hi <= self.levels:
            def code_mapped(counts):
                self.encodes += 1
                return self.codec.encode_mapped(self.tokens, counts, self.rgb.shape[:2], self.grey, self.steps,
                                                flat=self.layer)

            found = levelmap.fit(self.codec, self.rgb.shape[:2], self.plain_pass, self.plain_sse, code_mapped, N,
                                 min(self.levels, hi + 1))
            if found:
                data, tokens, window_levels = found
                candidates.append(_Candidate(int(window_levels.max()), 0.0, data, tokens, window_levels,
                                             flat=self.blocks))
        if lo:  # the plain level (decoded already when the level map ran)
            known = psnr_of_mse(self.sse[lo].sum() / self.rgb.size) if lo in self.sse else None  # exact integer sums
            candidates.insert(0, _Candidate(lo, 0.0, self.plain[lo][0], self.plain[lo][1].tokens, psnr=known,
                                            flat=self.blocks))
        return candidates, self.encodes, smallest


def _lambda_search(code, level: int, N: int, plain_size: int):
    """((λ, data, tokens) of the smallest λ found whose file at `level` fits in N, or None;
    the smallest size met). code(level, λ) -> (file, CodingStats); plain_size: the file's size at
    λ = 0, known to be over N."""
    def coded(lam: float):
        """The file at λ and its tokens as int16, which the search keeps: the pass's int64 ones (36 MB
        at 24 MP) are let go before the next pass runs."""
        data, stats = code(level, lam)
        return data, stats.tokens.astype(np.int16)

    data, tokens = coded(LAMBDA_MAX)
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
        data, tokens = coded(lam)
        side = "hi" if len(data) <= N else "lo"
        if side == "hi":
            hi = (x, len(data))
            if lam < best[0]:
                best = (lam, data, tokens)
        else:
            lo = (x, len(data))
        last_side = (side, last_side[1] + 1 if last_side and last_side[0] == side else 1)
    return best, None
