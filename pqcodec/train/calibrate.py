"""Calibration: a trained float prior (nets/prior.py) and conditional head (nets/conditional.py) ->
their integer counterparts, which the coder runs (pqcodec/coding/integer_prior.py,
integer_conditional.py). Static scales from the activations the float nets show on calibration
windows; every integer range is checked as it is set, so weights whose arithmetic could leave the
exact range are refused here (and again when they are loaded, `check_exact`). Run by
`pqcodec-train quantize` and `pqcodec-train conditional` (train/quantize.py, train/conditional.py).
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from ..coding.integer_conditional import IntConditionalHead
from ..coding.integer_prior import (ACC_LIMIT, LN_FRAC, PROB_EXP_BITS, RESID_FRAC, RESID_LIMIT, IntegerPrior,
                                    IntLayerNorm, IntLinear, require_exact)
from ..coding.kernels import ACT, WEIGHT_MAX

REQUANT_BITS = 20         # requantization multipliers have about 20 significant bits
ATT_EXP_MAX, ATT_RANGE = 255, 12      # attention weights: at most 255 exp(-x), 0 beyond x = 12 nats
PROB_RANGE = 17           # output distributions: 0 beyond 17 nats
TABLE_MAX = 1 << 18       # entries of a lookup table, at most
GELU_MIN = -0.17          # GELU(x) >= -0.16997


def _clip(samples: list[torch.Tensor], quantile: float) -> float:
    """The `quantile` of |x| over the recorded samples (1.0: the largest)."""
    x = torch.cat([s.flatten() for s in samples]).abs().double()
    if quantile >= 1:
        return float(x.max())
    if x.numel() > 1 << 22:
        x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:1 << 22]]
    return float(torch.quantile(x, quantile))


def _weight_scales(w: torch.Tensor, per_channel: bool, weight_max: int) -> torch.Tensor:
    """max |w| / weight_max per output channel (floored at 2^-10 of the largest: rows of zeros), or
    one for the layer, as a column."""
    top = w.abs().amax(1).double()
    top = top.clamp_min(float(top.max()) * 2.0 ** -10) if per_channel else top.max().expand(len(top))
    return (top.clamp_min(1e-30) / weight_max)[:, None]


def _multiplier(ratio: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Integer multipliers m and one shift s with m / 2^s ~ ratio (positive, per channel)."""
    shift = REQUANT_BITS - math.ceil(math.log2(float(ratio.max())))
    return torch.round(ratio.double() * 2.0 ** shift).to(torch.int64), shift


def _set_linear(lin: IntLinear, layer: nn.Linear, in_scale: float, weight_max: int, out_scale=None,
                in_offset: int = 0, table_start: int = 0) -> float:
    """Quantize a float layer to weights |w| <= weight_max for operands |q| <= lin.act at `in_scale`
    (real = (q + in_offset) in_scale). With
    `out_scale` (one number or per channel): per-channel weights, requantized to it (`forward`).
    Without: one weight scale, the exact sum minus `table_start` (`accumulate`). Returns the unit of
    the sum (per channel: the largest)."""
    sw = _weight_scales(layer.weight, out_scale is not None, weight_max)
    w = torch.round(layer.weight.double() / sw).clamp_(-weight_max, weight_max)
    unit = in_scale * sw[:, 0]
    bias = torch.round(layer.bias.double() / unit) + in_offset * w.sum(1) - table_start
    lin.weight.copy_(w.to(torch.int8))
    lin.bias.copy_(bias.to(torch.int64))
    if out_scale is not None:
        mult, shift = _multiplier(unit / torch.as_tensor(out_scale, dtype=torch.float64))
        lin.mult.copy_(mult)
        lin.shift.fill_(shift)
    reach = w.abs().sum(1) * lin.act + bias.abs()  # the largest |sum + bias| any operands can give
    require_exact(float((w.abs().sum(1) * lin.act).max()) < ACC_LIMIT, "a product's partial sums would reach 2^24")
    if out_scale is None:
        require_exact(float(reach.max()) < ACC_LIMIT, "a sum plus its bias would reach 2^24")
    else:
        require_exact(float((reach * lin.mult.double()).max()) < 2.0 ** 53, "a requantization would reach 2^53")
    return float(unit.max())



def _set_layernorm(ln: IntLayerNorm, float_ln: nn.LayerNorm, out_scale: float):
    C = float_ln.weight.shape[0]
    ln.gain.copy_(torch.round(float_ln.weight.double() * math.sqrt(C) / out_scale * 2 ** LN_FRAC).to(torch.int64))
    ln.offset.copy_(torch.round(float_ln.bias.double() / out_scale * 2 ** LN_FRAC).to(torch.int64))
    require_exact(int(ln.gain.abs().max()) < 1 << 30, "a LayerNorm gain times |x - mean| <= 2^22 would reach 2^53")


def _exp_table(unit: float, range_nats: float, top: int, dtype) -> torch.Tensor:
    """round(top exp(-i unit)) while i unit < range_nats, then a final 0."""
    i = torch.arange(math.ceil(range_nats / unit), dtype=torch.float64)
    return torch.cat([torch.round(torch.exp(-i * unit) * top), torch.zeros(1, dtype=torch.float64)]).to(dtype)


def _fit(unit: float, span: float) -> float:
    """The factor (>= 1) by which to coarsen `unit` so that a table over `span` has TABLE_MAX entries."""
    return max(1.0, span / unit / (TABLE_MAX - 2))


@torch.no_grad()
def calibrate(prior, tokens: torch.Tensor, active: torch.Tensor, step_of: torch.Tensor,
              quantile: float = 1.0, operand_max: int = ACT, weight_max: int = WEIGHT_MAX) -> IntegerPrior:
    """The integer prior of a trained float `MIMPrior` (put in eval mode), with static scales from
    the activations it shows on calibration windows: tokens (B, N, M), active (B,), step_of (B, N),
    as in training. quantile: where each operand's range is clipped (1.0: the largest value seen in
    a 1-in-7 sample of every activation). operand_max, weight_max: the operands' and weights'
    integer ranges (the defaults fit int8 products; 255 and 127 were pqcodec 0.4.0's). Raises
    ValueError for weights whose integer arithmetic could leave the exact range (docs/bitstream.md,
    "Why the prior is exact")."""
    prior = prior.float().eval()
    records: dict[str, list] = {}

    def keep(name, *xs):  # returns None: a forward hook's result would replace the output
        for x in xs:
            records.setdefault(name, []).append(x.detach().float().flatten()[::7].clone())

    def keep_qkv(i, y):
        for name, part in zip("qkv", y.chunk(3, -1)):
            keep(f"{name}.{i}", part)

    hooks = []
    for i, blk in enumerate(prior.blocks):
        hooks += [blk.ln1.register_forward_hook(lambda m, a, y, i=i: keep(f"ln1.{i}", y)),
                  blk.qkv.register_forward_hook(lambda m, a, y, i=i: keep_qkv(i, y)),
                  blk.proj.register_forward_pre_hook(lambda m, a, i=i: keep(f"att.{i}", a[0])),
                  blk.ln2.register_forward_hook(lambda m, a, y, i=i: keep(f"ln2.{i}", y)),
                  blk.mlp[1].register_forward_hook(lambda m, a, y, i=i: keep(f"gelu.{i}", y)),
                  blk.register_forward_hook(lambda m, a, y: keep("resid", *y))]
        orig = blk.query_of
        blk.query_of = (lambda h, orig=orig, i=i: (lambda q: (keep(f"q.{i}", q), q)[1])(orig(h)))
    hooks.append(prior.ln_f.register_forward_hook(lambda m, a, y: keep("ln_f", y)))
    try:
        for b in range(0, len(tokens), 32):
            prior(tokens[b:b + 32], active[b:b + 32], step_of[b:b + 32])
    finally:
        for h in hooks:
            h.remove()
        for blk in prior.blocks:
            del blk.query_of
    clip = {name: _clip(x, quantile) for name, x in records.items()}
    if clip["resid"] >= RESID_LIMIT / 2 ** RESID_FRAC / 2:
        raise ValueError(f"residual stream reaches {clip['resid']:.1f}: beyond the integer prior's range")

    dim, layers, heads = prior.pos_emb.shape[1], len(prior.blocks), prior.blocks[0].heads
    ip = IntegerPrior(prior.M, prior.K, prior.window, dim, layers, heads)
    ip.set_operand_max(act := operand_max)
    to_resid = lambda t: torch.round(t.double() * 2 ** RESID_FRAC).to(torch.int32)  # noqa: E731
    ip.tok_emb.copy_(to_resid(prior.tok_emb.weight))
    ip.pos_emb.copy_(to_resid(prior.pos_emb))
    ip.start.copy_(to_resid(prior.start))
    require_exact(float(ip.tok_emb.view(prior.M, prior.K + 2, dim).abs().amax(1).sum(0).max()) < ACC_LIMIT,
             "a sum of token embeddings would reach 2^24")
    require_exact(int(ip.start.abs().max()) <= RESID_LIMIT, "the start token is beyond the residual's range")
    require_exact(2 * (dim // heads) * act ** 2 < ACC_LIMIT, "attention scores would reach 2^24 (heads too wide)")
    resid = 2.0 ** -RESID_FRAC
    keys = 1 + prior.window ** 2  # weights times values summed over every key stay below 2^24
    att_max = min(ATT_EXP_MAX, (ACC_LIMIT - 1) // (keys * act))
    top = lambda layer: float(_weight_scales(layer.weight, False, weight_max)[0])  # noqa: E731
    for i, (fb, ib) in enumerate(zip(prior.blocks, ip.blocks)):
        s1, s2 = clip[f"ln1.{i}"] / act, clip[f"ln2.{i}"] / act
        sq, sk, sv, so = (clip[f"{n}.{i}"] / act for n in ("q", "k", "v", "att"))
        # attention: the exp table is indexed by score differences, in units of sq sk / sqrt(d) nats
        sq, sk = (x * math.sqrt(_fit(sq * sk / math.sqrt(dim // heads), ATT_RANGE)) for x in (sq, sk))
        ib.att_exp = _exp_table(sq * sk / math.sqrt(dim // heads), ATT_RANGE, att_max, torch.int16)
        mult, shift = _multiplier(torch.tensor([sv / so]))
        ib.out_mult.fill_(int(mult))
        ib.out_shift.fill_(shift)
        require_exact(shift <= 28, "the attention output's requantization would reach 2^53")
        # GELU: outputs in [GELU_MIN, clip] on 2 act + 1 levels, real = (q + offset) sg; the table is
        # indexed by fc1's sum from -4 (GELU below half a level) to past the clip
        sg = (clip[f"gelu.{i}"] - GELU_MIN) / (2 * act)
        offset = math.floor(GELU_MIN / sg) + act
        span = 4 + clip[f"gelu.{i}"] + sg
        s2 *= _fit(s2 * top(fb.mlp[0]), span)
        unit = s2 * top(fb.mlp[0])
        lo = math.floor(-4 / unit)
        u = torch.arange(lo, lo + math.ceil(span / unit) + 1, dtype=torch.float64) * unit
        ib.gelu = (torch.round(F.gelu(u) / sg) - offset).clamp_(-act, act).to(torch.int16)
        _set_layernorm(ib.ln1, fb.ln1, s1)
        _set_layernorm(ib.ln2, fb.ln2, s2)
        _set_linear(ib.qkv, fb.qkv, s1, weight_max, torch.tensor([sq] * dim + [sk] * dim + [sv] * dim))
        _set_linear(ib.proj, fb.proj, so, weight_max, resid)
        _set_linear(ib.fc1, fb.mlp[0], s2, weight_max, table_start=lo)
        _set_linear(ib.fc2, fb.mlp[2], sg, weight_max, resid, in_offset=offset)
    # output: the probability table is indexed by logit differences, in units of the head's sum
    sf = clip["ln_f"] / act
    sf *= _fit(sf * top(prior.head), PROB_RANGE)
    _set_layernorm(ip.ln_f, prior.ln_f, sf)
    _set_linear(ip.head, prior.head, sf, weight_max)
    ip.prob_exp = _exp_table(sf * top(prior.head), PROB_RANGE, 1 << PROB_EXP_BITS, torch.int32)
    ip.calibrated.fill_(True)
    return ip


def feature_scale(prior, int_prior) -> float:
    """The real value of one unit of the integer prior's final LayerNorm output (its operands f),
    from the float LayerNorm's gains and the integer gains calibration made of them
    (gain = gamma sqrt(C) / scale 2^LN_FRAC)."""
    C = prior.ln_f.weight.shape[0]
    gain = int_prior.ln_f.gain.double()
    big = gain.abs() >= 1 << 10
    require_exact(bool(big.any()), "the integer prior's final LayerNorm has no usable gain")
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
    require_exact(int(int_prior.operand_max) == ACT, "the conditional head needs an integer prior of int8 operands")
    sf = feature_scale(prior, int_prior)
    unit_logit = logit_unit(prior, int_prior, sf)
    ih = IntConditionalHead(M, K, f.shape[1], E, Hd)

    # embeddings: one scale, |e| <= ACT; s_j's bound per column from the largest rows below j
    se = float(head.embed.weight.abs().max()) / ACT
    emb = torch.round(head.embed.weight.double() / se).clamp_(-ACT, ACT)
    ih.embed.copy_(emb.to(torch.int8))
    col_max = emb.abs().view(M, K, E).amax(1)                                  # (M, E)
    lower_bound = torch.cat([torch.zeros(1, E, dtype=torch.float64), col_max.cumsum(0)[:-1]])  # (M, E)
    ih.set_lower_max(int(lower_bound.max()))

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
    require_exact(float(reach.max()) < ACC_LIMIT, "the conditional head's inner sums would reach 2^24")
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
