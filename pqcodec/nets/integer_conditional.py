"""The integer-exact conditional head: what the coder adds to sub-quantizer j's logits from the
indices 0..j-1 already coded at the same position, bit for bit the same on every machine. The
integer counterpart of `ConditionalHead` (nets/conditional.py), made from a trained one by
`calibrate_conditional`, with the integer prior's tools (nets/integer_prior.py):

- f, the integer prior's final LayerNorm output (operands |f| <= 127), and s_j, the exact sum of
  int8 embeddings of indices 0..j-1 (|s_j| <= (M-1) 127), enter inner_j as two products with one
  weight unit (each operand's scale folded into its weights): sums whose partial and total sums
  calibration (and loading, `check_exact`) checks to stay below 2^24, so any summation order gives
  the same integer. s_j's product is in float64 where s_j can pass OPERAND_EXACT (957 in v5's
  head): a float32 product of it would lose bits where a caller's matmul precision rounds its
  inputs to bf16 (numerics.py);
- GELU is a lookup table indexed by that sum (as in the prior's blocks);
- out_j requantizes to the prior's logit unit, so the head's term adds exactly to the prior's
  logits before the prior's own softmax table (`IntegerPrior.to_frequencies`).

Tensors: m positions, M sub-quantizers, K codewords, C the prior's width, E the embedding width,
Hd the hidden width.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from ..numerics import OPERAND_EXACT
from .integer_prior import (ACC_LIMIT, ACT, GELU_MIN, LN_FRAC, WEIGHT_MAX, IntLinear, _IntModule, _fit,
                            _lookup, _require, _set_linear, _weight_scales)

DELTA_LIMIT = 1 << 22    # |the head's term| in logit units: sums with the prior's logits stay far below 2^31


class IntConditionalHead(_IntModule):
    _sized = ("gelu",)

    def __init__(self, num_subvectors: int, codebook_size: int, dim: int, embed: int, hidden: int):
        super().__init__()
        self.M, self.K, self.hidden = num_subvectors, codebook_size, hidden
        self.register_buffer("embed", torch.zeros(self.M * self.K, embed, dtype=torch.int8))
        self.from_features = IntLinear(dim, (self.M - 1) * hidden)  # accumulate: f's part of inner_j + its bias
        self.from_lower = IntLinear(embed, (self.M - 1) * hidden)   # accumulate: s_j's part, the same unit
        self.out = IntLinear(hidden, (self.M - 1) * self.K)         # forward: to the prior's logit unit
        self.register_buffer("gelu", torch.zeros(1, dtype=torch.int16))
        self.register_buffer("lower_max", torch.tensor(ACT))       # |s_j| <= this
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.register_load_state_dict_post_hook(lambda module, _: module._set_lower_max(int(module.lower_max)))

    def _set_lower_max(self, bound: int):
        self.lower_max.fill_(bound)
        self.from_lower.act = bound   # beyond int8 and bf16: float64 products (IntLinear), exact (check_exact)
        self.forget_derived()

    def check_exact(self):
        """ValueError naming what is not exact (`IntegerPrior.check_exact`'s rule): s_j's bound
        covers the embeddings' sums, inner_j's two products and their sum stay below 2^24 for any
        operands (the wide s_j in a float64 product, IntLinear), the GELU table within the operands'
        range, out_j's requantization below 2^53."""
        _require(bool(self.calibrated), "the conditional head is not calibrated")
        E = self.embed.shape[1]
        col_max = self.embed.abs().double().view(self.M, self.K, E).amax(1)            # (M, E)
        lower_bound = col_max.cumsum(0)[:-1]                                           # (M-1, E): |s_j|, j = 1..M-1
        _require(float(lower_bound.max()) <= int(self.lower_max),
                 "the conditional head's sums of embeddings exceed its stated bound")
        _require(self.from_features.act <= OPERAND_EXACT, "the conditional head's features do not survive bf16")
        w_lower = self.from_lower.weight.abs().double().view(self.M - 1, self.hidden, E)
        lower_reach = (w_lower * lower_bound[:, None, :]).sum(-1).flatten()           # ((M-1) Hd,)
        self.from_features.check_exact("the conditional head's inner layer", True, lower_reach)
        _require(int(self.gelu.abs().max()) <= ACT, "the conditional head's GELU table is beyond the operands' range")
        self.out.check_exact("the conditional head's output layer", False)

    def features(self, f: torch.Tensor, active: int) -> torch.Tensor:
        """f (m, C) operands -> (m, (active-1) Hd) float32: f's part of inner_j for j = 1..active-1,
        bias included."""
        return self.from_features.accumulate(f, rows=slice(0, (active - 1) * self.hidden))

    def embedding(self, j: int, symbols: torch.Tensor) -> torch.Tensor:
        """(m,) indices of sub-quantizer j -> (m, E) float32: their rows of the embedding."""
        return self.table("embed").index_select(0, symbols + j * self.K)

    def term(self, pre: torch.Tensor, lower: torch.Tensor, j: int) -> torch.Tensor:
        """pre (m, >= j Hd) from `features`, lower (m, E) s_j -> (m, K) float64 integers: what
        sub-quantizer j >= 1 adds to its logits."""
        rows = slice((j - 1) * self.hidden, j * self.hidden)
        acc = pre[:, rows] + self.from_lower.accumulate(lower, rows)  # exact: every sum below 2^24 (calibrate)
        g = _lookup(self.table("gelu", self.operand_dtype), acc)       # from_features' bias starts it at 0
        return self.out(g, rows=slice((j - 1) * self.K, j * self.K)).clamp_(-DELTA_LIMIT, DELTA_LIMIT)

    def apply(self, logits: torch.Tensor, f: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced, all sub-quantizers at once: logits (m, active, K) the prior's, f (m, C),
        tokens (m, >= active) the true indices -> (m, active, K) float64 logits with the head's
        terms: the integers the coder's sub-quantizer-by-sub-quantizer loop gives."""
        out = logits.to(torch.float64)
        tokens = tokens.clamp(max=self.K - 1)  # MASK at positions outside an image: any index (discarded)
        pre = self.features(f, logits.shape[1])
        lower = torch.zeros(len(f), self.embed.shape[1], dtype=torch.float32, device=f.device)
        for j in range(1, logits.shape[1]):
            lower = lower + self.embedding(j - 1, tokens[:, j - 1])
            out[:, j] += self.term(pre, lower, j)
        return out


# -- calibration ------------------------------------------------------------------------------------
def feature_scale(prior, int_prior) -> float:
    """The real value of one unit of the integer prior's final LayerNorm output (its operands f),
    from the float LayerNorm's gains and the integer gains calibration made of them
    (gain = gamma sqrt(C) / scale 2^LN_FRAC)."""
    C = prior.ln_f.weight.shape[0]
    gain = int_prior.ln_f.gain.double()
    big = gain.abs() >= 1 << 10
    _require(bool(big.any()), "the integer prior's final LayerNorm has no usable gain")
    return float((prior.ln_f.weight.double()[big] * math.sqrt(C) * 2 ** LN_FRAC / gain[big]).median())


def logit_unit(prior, int_prior, feature: float) -> float:
    """The real value of one unit of the integer prior's logits: f's scale times the head's one
    weight scale, whose largest weight calibration mapped to the largest integer weight."""
    return feature * float(prior.head.weight.abs().max()) / float(int_prior.head.weight.abs().max())


@torch.no_grad()
def calibrate_conditional(head, prior, int_prior, f: torch.Tensor, tokens: torch.Tensor,
                          active: torch.Tensor, weight_max: int = WEIGHT_MAX) -> IntConditionalHead:
    """The integer head of a trained float `ConditionalHead`, for the calibrated `int_prior` of the
    float `prior` it was trained on; scales from what the float head shows on calibration positions:
    f (n, C) the float prior's final features, tokens (n, M) their indices, active (n,). ValueError
    where the integer arithmetic could leave the exact range."""
    head = head.float().eval()
    M, K, E = head.M, head.K, head.embed.weight.shape[1]
    Hd = head.out[0].weight.shape[1]
    _require(int(int_prior.operand_max) == ACT, "the conditional head needs an integer prior of int8 operands")
    sf = feature_scale(prior, int_prior)
    unit_logit = logit_unit(prior, int_prior, sf)
    ih = IntConditionalHead(M, K, f.shape[1], E, Hd)

    # embeddings: one scale, |e| <= ACT; s_j's bound per column from the largest rows below j
    se = float(head.embed.weight.abs().max()) / ACT
    emb = torch.round(head.embed.weight.double() / se).clamp_(-ACT, ACT)
    ih.embed.copy_(emb.to(torch.int8))
    col_max = emb.abs().view(M, K, E).amax(1)                                  # (M, E)
    lower_bound = torch.cat([torch.zeros(1, E, dtype=torch.float64), col_max.cumsum(0)[:-1]])  # (M, E)
    ih._set_lower_max(int(lower_bound.max()))

    # what the float head shows: the largest GELU output over every j and calibration position
    gelu_max = 1e-3
    for fb, tb, ab in zip(f.split(8192), tokens.split(8192), active.split(8192)):
        lower = head.lower_sums(tb.clamp(0, K - 1))                            # (b, M, E)
        for j in range(1, M):
            use = ab > j
            if use.any():
                x = torch.cat([fb[use].float(), lower[use, j]], -1)
                gelu_max = max(gelu_max, float(F.gelu(head.inner[j - 1](x)).max()))

    # inner_j: the real contribution of one operand unit, f's (sf) and s_j's (se), folded into one
    # weight scale for all j, so every sum is in one unit and indexes one GELU table
    inner_w = torch.cat([lin.weight.double() for lin in head.inner])          # ((M-1) Hd, C + E)
    inner_b = torch.cat([lin.bias.double() for lin in head.inner])
    C = f.shape[1]
    folded = torch.cat([inner_w[:, :C] * sf, inner_w[:, C:] * se], 1)
    sw = float(_weight_scales(folded, False, weight_max)[0])
    sg = (gelu_max - GELU_MIN) / (2 * ACT)
    span = 4 + gelu_max + sg
    sw *= _fit(sw, span)                                                       # the table's length
    lo = math.floor(-4 / sw)
    w = torch.round(folded / sw).clamp_(-weight_max, weight_max)
    bias = torch.round(inner_b / sw) - lo
    bound = torch.cat([torch.full((C,), float(ACT), dtype=torch.float64)[None].expand(M - 1, -1),
                       lower_bound[1:]], 1).repeat_interleave(Hd, 0)           # ((M-1) Hd, C + E)
    reach = (w.abs() * bound).sum(1) + bias.abs()
    _require(float(reach.max()) < ACC_LIMIT, "the conditional head's inner sums would reach 2^24")
    ih.from_features.weight.copy_(w[:, :C].to(torch.int8))
    ih.from_features.bias.copy_(bias.to(torch.int64))
    ih.from_lower.weight.copy_(w[:, C:].to(torch.int8))
    u = torch.arange(lo, lo + math.ceil(span / sw) + 1, dtype=torch.float64) * sw
    offset = math.floor(GELU_MIN / sg) + ACT
    ih.gelu = (torch.round(F.gelu(u) / sg) - offset).clamp_(-ACT, ACT).to(torch.int16)

    # out_j: GELU outputs real (q + offset) sg, requantized per channel to the prior's logit unit
    out = nn.Linear(Hd, (M - 1) * K).double()
    out.weight.copy_(torch.cat([lin.weight.double() for lin in head.out]))
    out.bias.copy_(torch.cat([lin.bias.double() for lin in head.out]))
    _set_linear(ih.out, out, sg, weight_max, unit_logit, in_offset=offset)
    ih.calibrated.fill_(True)
    ih.forget_derived()
    return ih
