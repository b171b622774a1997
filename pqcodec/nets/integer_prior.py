"""The integer-exact MIM prior: what the range coder's frequencies come from.

A range decoder needs the encoder's frequencies bit for bit. Float inference gives other last bits
on another CPU family, thread split, batch shape or GPU, so the coder runs this integer version of
`MIMPrior` (nets/prior.py), made from a trained float prior by `calibrate`: every number that
decides a frequency is an integer computed exactly, on any machine (docs/bitstream.md, "Why the
prior is exact", goes step by step). After Ballé et al. 2019 ("Integer networks for data
compression") and I-BERT (Kim et al. 2021):

- Integers are carried in float32 (exact below 2^24) or float64 (exact below 2^53) tensors, and
  every operation is one whose exact result is representable, so IEEE arithmetic gives that exact
  result on every machine, in any order.
- Matrix products: 7-bit weights (|w| <= WEIGHT_MAX = 63) times operands of magnitude at most
  ACT = 127 (0.4.0's model: 8-bit weights, operands up to 255); the weights are checked at
  calibration so that every partial sum stays below 2^24. In float32, any summation order, SIMD
  width, thread split or GPU kernel then gives the same integer, and operands of 8 significant bits
  survive the bf16 or TF32 rounding a caller's `set_float32_matmul_precision` allows. Where oneDNN's
  int8 products are at hand and pass a worst-case check (`int8_products`), the same sums come from
  int32 accumulation, several times faster; 7-bit weights keep even the int16 pair sums of CPUs
  without VNNI from saturating (2 x 255 x 63 < 2^15).
- Requantization: (sum + bias) times an integer multiplier over a power of two, rounded, in float64.
  The residual stream is float64 integers in units of 2^-RESID_FRAC.
- LayerNorm: integer mean, sum of squares, exact integer square root, exact floor division.
- GELU and every exponential: lookup tables, built at calibration and stored in the weights file.
  Softmax: max subtraction, a table, integer sums, an exact floor division.
- The output is an integer frequency table per index (every symbol at least 1, total 2^PROB_BITS),
  handed to the range coder exactly (entropy.py).

Tensors: C model width, H heads, d = C / H, N window positions, M sub-quantizers, K codewords.
"""
import functools
import math
import os

import torch
from torch import nn
import torch.nn.functional as F

from ..bitstream import PROB_BITS
from ..numerics import OPERAND_EXACT

ACT = 127                 # |matmul operand| <= ACT (int8)
LEGACY_ACT = 255          # ... in integer priors of pqcodec 0.4.0, whose files do not store it
WEIGHT_MAX = 63           # |weight| <= WEIGHT_MAX: int8 pair sums stay below 2^15 (see above)
ACC_LIMIT = 1 << 24       # float32 holds every integer below this exactly
RESID_FRAC = 12           # residual stream: integers in units of 2^-12
RESID_LIMIT = 1 << 21     # |residual| clamp: keeps LayerNorm's sum of squares below 2^53
LN_FRAC = 16              # LayerNorm's fixed-point gain
REQUANT_BITS = 20         # requantization multipliers have about 20 significant bits
ATT_EXP_MAX, ATT_RANGE = 255, 12      # attention weights: at most 255 exp(-x), 0 beyond x = 12 nats
PROB_EXP_BITS, PROB_RANGE = 22, 17    # output distributions: 2^22 exp(-x), 0 beyond 17 nats
TABLE_MAX = 1 << 18       # entries of a lookup table, at most
GELU_MIN = -0.17          # GELU(x) >= -0.16997
MASKED = -float(1 << 30)  # added to a masked key's score: it lands beyond every table (weight 0)
BATCH = 8                 # windows per batch in `frequencies`: any split gives the same integers


def _int8_is_faster(kernel: str, g: torch.Generator, rows: int, inner: int, out: int, margin: float) -> float | None:
    """The time of `kernel`'s int8 product of this shape (best of 3) where it beats float32's by
    `margin`; None where it does not."""
    import time
    w = torch.randint(-WEIGHT_MAX, WEIGHT_MAX + 1, (out, inner), generator=g, dtype=torch.int8)
    x = torch.randint(-ACT, ACT + 1, (rows, inner), generator=g, dtype=torch.int8)
    pack, xf, wf = _int8_pack(w, kernel), x.float(), w.float()

    def best(f):
        f()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)
    t = best(lambda: _int8_linear(x, pack, None))
    return t if t * margin < best(lambda: F.linear(xf, wf)) else None


def _int8_is_exact(kernel: str, g: torch.Generator) -> bool:
    """Whether `kernel` gives exactly the int64 sums on worst-case operands: the largest sums, and
    the largest pair sums of CPUs without VNNI (which a saturating kernel gets wrong), in shapes
    from a single row to the coder's own (a kernel may take another path for large products)."""
    for rows, inner, out in ((1, 1024, 32), (37, 256, 96), (300, 1024, 16), (600, 256, 1024)):
        w = torch.randint(-WEIGHT_MAX, WEIGHT_MAX + 1, (out, inner), generator=g, dtype=torch.int8)
        w[0], w[1] = WEIGHT_MAX, -WEIGHT_MAX
        x = torch.randint(-ACT, ACT + 1, (rows, inner), generator=g, dtype=torch.int8)
        x[0] = ACT * torch.sign(w[0].float()).to(torch.int8)
        x[-1] = -ACT
        bias = torch.randint(-1000, 1000, (out,), generator=g).float()
        got = _int8_linear(x, _int8_pack(w, kernel), bias)
        if not torch.equal(got.double(), x.double() @ w.double().t() + bias.double()):
            return False
    return True


INT8_KERNELS = ("int_mm", "onednn")   # torch._int_mm; oneDNN's quantized linear


@functools.cache
def int8_products() -> str | None:
    """Which int8 kernel this process computes the integer prior's products with, or None for
    float32 products (just as exact). A kernel is taken only if it exists in this build, is faster
    than float32 here, and gives exactly the int64 sums on worst-case operands, which rules out any
    kernel that saturates; of those, the fastest. Speed is checked because it is not a given: on an
    Intel CPU with AMX oneDNN's int8 linear of 504 x 256 x 1024 took 0.20 ms against float32's
    1.44 ms; on an AMD EPYC (AVX-512 VNNI, torch 2.13) it took a reference path, 700 times slower
    than float32 (experiments.md, probe-int8-amd), while torch._int_mm there is 4 times faster than
    float32 (int-mm). A tiny probe first, so a slow kernel is known in a millisecond.
    PQCODEC_INT8=0 in the environment turns the int8 products off."""
    if os.environ.get("PQCODEC_INT8", "1") == "0":
        return None
    fastest, best_time = None, float("inf")
    for kernel in INT8_KERNELS:
        try:
            g = torch.Generator().manual_seed(0)
            if _int8_is_faster(kernel, g, 4, 256, 64, 0.25) is None:
                continue
            t = _int8_is_faster(kernel, g, 128, 256, 1024, 1.25)
            if t is not None and t < best_time and _int8_is_exact(kernel, g):
                fastest, best_time = kernel, t
        except (RuntimeError, AttributeError, NotImplementedError):  # not in this build
            continue
    return fastest


def _int8_pack(w: torch.Tensor, kernel: str) -> dict:
    """int8 weights (out, in) packed for `_int8_linear` with `kernel`."""
    if kernel == "int_mm":
        return dict(kernel=kernel, wt=w.t().contiguous())                          # (in, out)
    return dict(kernel=kernel, packed=torch.ops.onednn.qlinear_prepack(w.contiguous(), None),
                ones=torch.ones(w.shape[0]), zeros=torch.zeros(w.shape[0], dtype=torch.int64))


def _int8_linear(x: torch.Tensor, pack: dict, bias: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x (..., in) int8 @ W^T (+ bias), as `dtype` (float32 or float64): the int32 sums (with
    oneDNN: unit scales and zero points), exact below 2^24."""
    x2 = x.reshape(-1, x.shape[-1])
    if pack["kernel"] == "int_mm":
        y = torch._int_mm(x2, pack["wt"]).to(dtype)
        if bias is not None:
            y += bias
    else:
        y = torch.ops.onednn.qlinear_pointwise(x2, 1.0, 0, pack["packed"], pack["ones"], pack["zeros"], bias,
                                               1.0, 0, torch.float32, "none", [], "").to(dtype)
    return y.view(*x.shape[:-1], -1)


def _isqrt(x: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(x)) of float64 x holding integers in [0, 2^53): the correctly rounded square root
    is within one of it, and the two comparisons below make it exact."""
    r = torch.sqrt(x).floor_()
    r -= (r * r > x).to(x.dtype)
    return r.add_(((r + 1) * (r + 1) <= x).to(x.dtype))


def _as_mask(visible: torch.Tensor) -> torch.Tensor:
    """bool -> float32: 0 where visible, MASKED elsewhere (added to attention scores)."""
    return torch.zeros(visible.shape, dtype=torch.float32, device=visible.device).masked_fill_(~visible, MASKED)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index], the index (float32 holding integers of magnitude below 2^31; left as it is)
    clamped to the table."""
    i = index.to(torch.int32).clamp_(0, table.shape[0] - 1)
    return table.index_select(0, i.flatten()).view(i.shape)


class _IntModule(nn.Module):
    """Base of the integer modules. Buffers are stored as calibration wrote them (integers, the
    tables' lengths its own: loading takes the stored length of those named in `_sized`); what the
    arithmetic needs from them (float copies, scales) is derived once by `derived` and forgotten
    whenever the buffers are loaded or moved. `act` is the operands' bound, the integer prior's
    `operand_max`."""
    _sized: tuple[str, ...] = ()
    act = ACT

    def derived(self, key, make):
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def table(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A lookup table as float32 (entries below 2^24: exact), or as `dtype` (entries that fit)."""
        return self.derived((name, dtype), lambda: self._buffers[name].to(dtype))

    @property
    def operand_dtype(self) -> torch.dtype:
        """The dtype matrix operands are made in: int8 where the products take int8 (`int8_products`),
        else float32; `IntLinear` converts what its kernel does not take (e.g. 8-bit weights)."""
        return torch.int8 if self.act <= ACT and int8_products() else torch.float32

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._sized:
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name], device=self._buffers[name].device)
        self.__dict__["_derived"] = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__["_derived"] = {}
        return super()._apply(fn, *args, **kwargs)

    def forget_derived(self):
        """Drop what was derived, here and below (e.g. after `int8_products` changed its mind)."""
        for m in self.modules():
            m.__dict__["_derived"] = {}


class IntLinear(_IntModule):
    """x @ W^T + b for integer operands |x| <= act (float32) and int8 weights W whose rows' absolute
    sums times act stay below 2^24 (calibrate checks), so no partial sum reaches 2^24. Two uses:
    - `forward`: per-output-channel weight scales; the sum requantized to each channel's output
      scale, round((sum + b) m / 2^s), float64 holding integers (the caller clamps);
    - `accumulate`: one weight scale for the layer; the exact sum + b itself (float32, below 2^24),
      the index of a lookup table."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.int64))   # in units of the sum
        self.register_buffer("mult", torch.ones(out_features, dtype=torch.int64))   # below 2^21
        self.register_buffer("shift", torch.zeros((), dtype=torch.int64))

    def _rows(self, rows: slice) -> dict:
        """For output channels `rows`: W (float32, (n, in); float64 for operands wider than
        OPERAND_EXACT) or W packed for int8 products, b (the same dtype), m / 2^s and
        (b m + 2^(s-1)) / 2^s (float64: multiples of 2^-s below 2^53, exact)."""
        start, stop, _ = rows.indices(self.weight.shape[0])

        def make():
            shift, mult = int(self.shift), self.mult[start:stop].to(torch.float64)
            bias = self.bias[start:stop].to(torch.float64)
            w = self.weight[start:stop]
            kernel = (int8_products() if self.act <= ACT and w.device.type == "cpu"
                      and int(w.abs().max()) <= WEIGHT_MAX else None)
            # float32 products are exact under bf16/TF32 input rounding only for operands that keep
            # their value there (numerics.py); wider ones take float64, which no precision setting rounds
            dtype = torch.float32 if self.act <= OPERAND_EXACT else torch.float64
            return dict(wt=w.to(dtype), int8=_int8_pack(w, kernel) if kernel else None,
                        b32=bias.to(dtype),
                        scale=mult * 2.0 ** -shift,
                        offset=(bias * mult + 2.0 ** (shift - 1)) * 2.0 ** -shift)
        return self.derived((start, stop), make)

    @staticmethod
    def _product(x: torch.Tensor, p: dict, bias: torch.Tensor | None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x (operands, float32 or int8) @ W^T (+ bias) as `dtype`, exact: every partial sum, with or
        without the bias, below 2^24 (calibrate, `check_exact`), and int32 sums are exact."""
        if p["int8"] is not None:
            return _int8_linear(x.to(torch.int8), p["int8"], bias, dtype)
        y = F.linear(x.to(p["wt"].dtype), p["wt"])  # the bias added apart: a product may round its inputs
        return (y if bias is None else y.add_(bias)).to(dtype)

    def check_exact(self, name: str, bias_in_sum: bool, extra: torch.Tensor | float = 0.0):
        """ValueError unless every sum this layer makes is exact for any operands |x| <= act: the
        partial sums (plus the bias where `bias_in_sum`, the `accumulate` use, plus `extra` per output
        channel: what a caller adds to the sum in float32) below 2^24; the requantization (`forward`)
        below 2^53."""
        reach = self.weight.abs().double().sum(1) * self.act
        _require(float(reach.max()) < ACC_LIMIT, f"{name}'s partial sums would reach 2^24")
        if bias_in_sum:
            total = reach + self.bias.abs().double() + torch.as_tensor(extra, dtype=torch.float64)
            _require(float(total.max()) < ACC_LIMIT, f"{name}'s sums plus bias would reach 2^24")
        else:
            total = (reach + self.bias.abs().double()) * self.mult.double()
            _require(float(total.max()) < 2.0 ** 53 and int(self.shift) < 53,
                     f"{name}'s requantization would reach 2^53")

    def accumulate(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """rows: the output channels wanted (default all)."""
        p = self._rows(rows)
        return self._product(x, p, p["b32"])

    def forward(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """rows: the output channels wanted (default all)."""
        p = self._rows(rows)
        acc = self._product(x, p, None, torch.float64)
        return torch.addcmul(p["offset"], acc, p["scale"]).floor_()  # exact: floor((sum + b) m / 2^s + 1/2),
                                                                     # every term a multiple of 2^-s below 2^53


class IntLayerNorm(_IntModule):
    """Residual (..., C) -> operands |y| <= act (float32): y = gamma (x - mean) / std + beta in the
    next product's scale, with an exact integer square root and floor division."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("gain", torch.zeros(dim, dtype=torch.int64))    # gamma sqrt(C) / scale 2^LN_FRAC
        self.register_buffer("offset", torch.zeros(dim, dtype=torch.int64))  # beta / scale 2^LN_FRAC

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: float64 holding integers, |h| <= RESID_LIMIT."""
        C = h.shape[-1]
        total = h.sum(-1, keepdim=True)                                 # exact: |h| <= 2^21, C 2^21 < 2^53
        mean = torch.div(total, C).floor_()                             # floor(total / C), made exact:
        mean -= (mean * C > total).to(h.dtype)
        mean += ((mean + 1) * C <= total).to(h.dtype)
        d = h - mean                                                    # |d| <= 2^22
        r = _isqrt(torch.linalg.vecdot(d, d).unsqueeze_(-1)).clamp_min_(1)  # sqrt(C) std, floored: sums < 2^53
        gain, offset = self.derived("float64", lambda: (
            self.gain.to(torch.float64), self.offset.to(torch.float64) + 2.0 ** (LN_FRAC - 1)))
        y = d.mul_(gain).div_(r).floor_()                               # exact floor: |d gain| < 2^53
        y = y.add_(offset).mul_(2.0 ** -LN_FRAC).floor_()               # round((y + beta) / 2^LN_FRAC): exact
        return y.clamp_(-self.act, self.act).to(self.operand_dtype)


class IntBlock(_IntModule):
    _sized = ("att_exp", "gelu")

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.ln1, self.ln2 = IntLayerNorm(dim), IntLayerNorm(dim)
        self.qkv = IntLinear(dim, 3 * dim)          # forward: to the scales of q, k and v
        self.proj = IntLinear(dim, dim)             # forward: to the residual
        self.fc1 = IntLinear(dim, 4 * dim)          # accumulate: the GELU table's index
        self.fc2 = IntLinear(4 * dim, dim)          # forward: to the residual
        # exp(-x) for x in units of the scores, and GELU from fc1's sum to fc2's operand
        self.register_buffer("att_exp", torch.zeros(1, dtype=torch.int16))
        self.register_buffer("gelu", torch.zeros(1, dtype=torch.int16))
        self.register_buffer("out_mult", torch.ones((), dtype=torch.int64))   # weighted values -> operands, < 2^21
        self.register_buffer("out_shift", torch.zeros((), dtype=torch.int64))

    def _split(self, x):  # (B, L, C) -> (B, H, L, d)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _project(self, x, parts: slice):
        """Operands x (B, L, C) -> the qkv parts wanted, as operands (B, L, parts * C)."""
        return self.qkv(x, rows=slice(parts.start * self.dim, parts.stop * self.dim)).clamp_(-self.act, self.act).float()

    def qkv_of(self, h):
        """Content (B, L, C) -> q, k, v (B, H, L, d), operands."""
        return [self._split(t) for t in self._project(self.ln1(h), slice(0, 3)).chunk(3, -1)]

    def query_of(self, h):
        return self._split(self._project(self.ln1(h), slice(0, 1)))

    def kv_of(self, h):
        k, v = self._project(self.ln1(h), slice(1, 3)).chunk(2, -1)
        return self._split(k), self._split(v)

    def attend(self, q, k, v, mask):
        """q (B, H, Lq, d), k and v (B, H, Lk, d) operands; mask float32, 0 or MASKED,
        broadcastable to (B, H, Lq, Lk), with at least one key per query not masked, or None: every
        key visible. -> (B, Lq, C) operands."""
        s = q @ k.transpose(-2, -1)                         # exact: |q.k| <= d act^2 < 2^23
        if mask is not None:
            s.add_(mask)                                    # exact unmasked
        x = torch.sub(s.amax(-1, keepdim=True), s, out=s)   # unmasked: exact, < 2^24; masked: > 2^29
        e = _lookup(self.table("att_exp"), x)                # <= 255, masked keys: the table's final 0
        two_s, m = self.derived("out", lambda: (2.0 ** int(self.out_shift), float(self.out_mult)))
        z = e.sum(-1, keepdim=True).to(torch.float64).mul_(two_s)  # exact, >= 1: the max's
        o = torch.add(z * 0.5, (e @ v).to(torch.float64), alpha=m)  # exact: Lk 255 |v| < 2^24 (calibrate), m < 2^21
        o = o.div_(z).floor_()                               # round(e.v m / (sum 2^s)): exact floor, < 2^53
        return o.clamp_(-self.act, self.act).to(self.operand_dtype).transpose(1, 2).flatten(2)

    def check_exact(self, name: str, keys: int):
        """ValueError unless this block's arithmetic is exact for `keys` keys at most (docstrings
        above): its layers' sums, the attention's float32 products (operands that survive bf16,
        sums below 2^24), its tables' entries within the operands' range."""
        d, act = self.dim // self.heads, self.act
        _require(act <= OPERAND_EXACT, f"{name}: operands up to {act} do not survive bf16 (at most {OPERAND_EXACT})")
        _require(2 * d * act ** 2 < ACC_LIMIT, f"{name}: attention scores would reach 2^24")
        att_max = int(self.att_exp.abs().max())
        _require(att_max <= OPERAND_EXACT and keys * att_max * act < ACC_LIMIT,
                 f"{name}: attention weights up to {att_max} times values would not be exact")
        _require(int(self.gelu.abs().max()) <= act, f"{name}: GELU table beyond the operands' range")
        _require(int(self.out_shift) <= 28 and int(self.out_mult) < 1 << 21,
                 f"{name}: the attention output's requantization would reach 2^53")
        for ln in (self.ln1, self.ln2):
            _require(int(ln.gain.abs().max()) < 1 << 30, f"{name}: a LayerNorm gain would reach 2^53")
        for lin, use in ((self.qkv, False), (self.proj, False), (self.fc1, True), (self.fc2, False)):
            lin.check_exact(name, use)

    def finish(self, h, attended):
        """Residual update after attention, then the MLP; h (B, L, C) float64 holding integers."""
        h = self.proj(attended).add_(h).clamp_(-RESID_LIMIT, RESID_LIMIT)
        g = _lookup(self.table("gelu", self.operand_dtype), self.fc1.accumulate(self.ln2(h)))  # fc1's bias starts the table at 0
        return self.fc2(g).add_(h).clamp_(-RESID_LIMIT, RESID_LIMIT)


class IntCache:
    """Keys and values of the revealed content, per layer, preallocated for a batch of windows:
    the start token, then positions in the order they were revealed."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int, device):
        shape = (batch, heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=torch.float32, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=torch.float32, device=device) for _ in range(layers)]
        self.mask = torch.full((batch, 1, 1, length), MASKED, dtype=torch.float32, device=device)
        self.length = 0


class IntegerPrior(_IntModule):
    """Integer-exact counterpart of MIMPrior, for coding: `start_cache` / `predict` / `reveal` step by
    step with cached keys and values (what the coder runs), or `frequencies` for whole windows in one
    teacher-forced pass (evaluation, calibration reports); both give the same integers."""
    _sized = ("prob_exp",)

    def __init__(self, num_subvectors: int, codebook_size: int, window: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.M, self.K, self.window, self.dim, self.heads = num_subvectors, codebook_size, window, dim, heads
        self.MASK, self.ABSENT = codebook_size, codebook_size + 1
        self.register_buffer("tok_emb", torch.zeros(self.M * (self.K + 2), dim, dtype=torch.int32))  # residual units
        self.register_buffer("pos_emb", torch.zeros(window * window, dim, dtype=torch.int32))
        self.register_buffer("start", torch.zeros(dim, dtype=torch.int32))
        self.blocks = nn.ModuleList(IntBlock(dim, heads) for _ in range(layers))
        self.ln_f = IntLayerNorm(dim)
        self.head = IntLinear(dim, self.M * self.K)   # accumulate: logits in units of the sum
        self.register_buffer("prob_exp", torch.zeros(1, dtype=torch.int32))  # exp(-x), x in those units
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.register_buffer("operand_max", torch.tensor(ACT))   # |matmul operand| <= this
        self.register_load_state_dict_post_hook(lambda module, _: module.set_operand_max(int(module.operand_max)))
        self.register_buffer("offsets", torch.arange(self.M) * (self.K + 2), persistent=False)

    def set_operand_max(self, act: int):
        self.operand_max.fill_(act)
        for m in self.modules():
            m.act = act
        self.forget_derived()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "calibrated" in state_dict and prefix + "operand_max" not in state_dict:
            state_dict[prefix + "operand_max"] = torch.tensor(LEGACY_ACT)  # pqcodec 0.4.0's model
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_exact(self):
        """ValueError naming what is not exact where loaded weights could make the coder's integers
        depend on the machine: every float32 product's operands must survive bf16/TF32 input
        rounding (|x| <= OPERAND_EXACT) and every sum stay below 2^24 (float32) or 2^53 (float64),
        whatever calibration was run. What `calibrate` checks when it writes a prior, checked again
        when one is read."""
        _require(bool(self.calibrated), "not calibrated")
        dim = self.dim
        _require(float(self.tok_emb.view(self.M, self.K + 2, dim).abs().amax(1).double().sum(0).max()) < ACC_LIMIT,
                 "a sum of token embeddings would reach 2^24")
        _require(int(self.start.abs().max()) <= RESID_LIMIT, "the start token is beyond the residual's range")
        for i, blk in enumerate(self.blocks):
            blk.check_exact(f"block {i}", 1 + self.window ** 2)
        _require(int(self.ln_f.gain.abs().max()) < 1 << 30, "the final LayerNorm's gain would reach 2^53")
        self.head.check_exact("the output layer", True)
        _require(0 <= int(self.prob_exp.min()) and int(self.prob_exp.max()) <= 1 << PROB_EXP_BITS,
                 "the output table is beyond 2^22")

    # -- embeddings and output ---------------------------------------------------------------------
    def _embed(self, tokens, positions):
        """tokens (B, n, M) in [0, K+2), positions (n,) -> residual (B, n, C), float64 integers."""
        idx = (tokens + self.offsets).flatten(0, -2)                             # (B n, M)
        e = F.embedding_bag(idx, self.table("tok_emb"), mode="sum")              # exact: below 2^24 (calibrate)
        e = e.view(*tokens.shape[:-1], -1).to(torch.float64).add_(self.table("pos_emb")[positions])
        return e.clamp_(-RESID_LIMIT, RESID_LIMIT)

    def _query(self, batch: int, active: int, positions):
        row = torch.full((self.M,), self.ABSENT, dtype=torch.int64, device=positions.device)
        row[:active] = self.MASK
        return self._embed(row.expand(batch, len(positions), -1), positions)

    def _logits(self, hq, active: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Query stream (..., C) -> logits (..., active, K) float32 integers in the head's unit, and
        the final LayerNorm's output (..., C) operands, which a conditional head reads."""
        f = self.ln_f(hq)
        return self.head.accumulate(f, rows=slice(0, active * self.K)).unflatten(-1, (active, self.K)), f

    def to_frequencies(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (..., K) (float32 or float64 integers in the head's unit; the caller's tensor is
        overwritten) -> frequencies minus one: integers >= 0 summing to 2^PROB_BITS - K in each row
        (the range coder adds one to every symbol)."""
        e = _lookup(self.table("prob_exp"), torch.sub(logits.amax(-1, keepdim=True), logits, out=logits))
        free = float((1 << PROB_BITS) - self.K)
        # c = floor(e floor(free 2^24 / sum e) / 2^24) <= e free / sum e: every product below 2^53
        e = e.to(torch.float64)
        z = e.sum(-1, keepdim=True)                          # exact: below K 2^22 < 2^53
        scale = torch.full_like(z, free * 2.0 ** 24).div_(z).floor_().mul_(2.0 ** -24)  # exact floor: < 2^53
        c = e.mul_(scale).floor_()
        c[..., 0] += free - c.sum(-1)                        # the rounding remainder (< K + 2^8)
        return c

    # -- whole windows in one pass ----------------------------------------------------------------
    def frequencies(self, tokens: torch.Tensor, active: int, step_of: torch.Tensor, valid: torch.Tensor,
                    head=None) -> torch.Tensor:
        """tokens (B, N, M) true indices, ABSENT beyond `active`; step_of (N,) the step revealing each
        position; valid (B, N) positions inside the image; head: a conditional head
        (IntConditionalHead) or None. -> (B, N, active, K) frequencies minus one, each position's
        from the content of earlier steps only (and, with a head, from the indices below it at the
        same position): the integers the coder's step-by-step loop gives (latent.py)."""
        B, N, _ = tokens.shape
        if B > BATCH:  # bounded memory, and tensors small enough for the allocator's fast path
            return torch.cat([self.frequencies(tokens[b:b + BATCH], active, step_of, valid[b:b + BATCH], head)
                              for b in range(0, B, BATCH)])
        pos = torch.arange(N, device=tokens.device)
        hc = torch.cat([self.start.to(torch.float64).expand(B, 1, -1), self._embed(tokens, pos)], 1)
        hq = self._query(B, active, pos)
        step_c = torch.cat([step_of.new_full((1,), -1), step_of])                # (1 + N,)
        key_ok = torch.cat([valid.new_ones(B, 1), valid], 1)[:, None, None, :]  # (B, 1, 1, 1 + N)
        mask_c = _as_mask((step_c[None, :] <= step_c[:, None]) & key_ok)
        mask_q = _as_mask((step_c[None, :] < step_of[:, None]) & key_ok)
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_of(hc)
            hq = blk.finish(hq, blk.attend(blk.query_of(hq), k, v, mask_q))
            if i + 1 < len(self.blocks):  # the last layer's content feeds nothing
                hc = blk.finish(hc, blk.attend(q, k, v, mask_c))
        logits, f = self._logits(hq, active)
        if head is not None and active > 1:
            logits = head.apply(logits.flatten(0, 1), f.flatten(0, 1), tokens.flatten(0, 1)).view(logits.shape)
        return self.to_frequencies(logits)

    # -- step by step with cached keys and values (the coder) -------------------------------------
    def start_cache(self, batch: int) -> IntCache:
        device = self.start.device
        cache = IntCache(len(self.blocks), batch, self.heads, 1 + self.window ** 2, self.dim // self.heads, device)
        h = self.start.to(torch.float64).view(1, 1, -1)  # the same for every window: computed once
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_of(h)
            cache.keys[i][:, :, :1], cache.values[i][:, :, :1] = k, v
            h = blk.finish(h, blk.attend(q, k, v, torch.zeros((), dtype=torch.float32, device=device)))
        cache.mask[..., 0] = 0
        cache.length = 1
        return cache

    @staticmethod
    def _cached(cache: IntCache, i: int, L: int):
        """Layer i's cached keys and values up to L, and their mask (None: no key masked, as in
        every window wholly inside the image)."""
        mask = cache.mask[..., :L]
        return cache.keys[i][:, :, :L], cache.values[i][:, :, :L], mask if bool(mask.any()) else None

    def predict_logits(self, cache: IntCache, active: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, n, active, K) at `positions` (n,) given the cached content, and the features
        (B, n, C) a conditional head reads (`_logits`)."""
        hq = self._query(cache.mask.shape[0], active, positions)
        for i, blk in enumerate(self.blocks):
            hq = blk.finish(hq, blk.attend(blk.query_of(hq), *self._cached(cache, i, cache.length)))
        return self._logits(hq, active)

    def predict(self, cache: IntCache, active: int, positions: torch.Tensor) -> torch.Tensor:
        """Frequencies minus one (B, n, active, K) at `positions` (n,) given the cached content."""
        return self.to_frequencies(self.predict_logits(cache, active, positions)[0])

    def reveal(self, cache: IntCache, tokens: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
        """Adds the content of `tokens` (B, n, M; ABSENT beyond the sub-quantizers in use) at
        `positions` (n,) to the cache; valid (B, n) marks positions inside the image."""
        L0, L = cache.length, cache.length + len(positions)
        cache.mask[:, 0, 0, L0:L] = _as_mask(valid)
        cache.length = L
        h = self._embed(tokens, positions)
        for i, blk in enumerate(self.blocks):
            if i + 1 == len(self.blocks):  # the last layer's content feeds nothing but its keys and values
                cache.keys[i][:, :, L0:L], cache.values[i][:, :, L0:L] = blk.kv_of(h)
                break
            q, k, v = blk.qkv_of(h)
            cache.keys[i][:, :, L0:L], cache.values[i][:, :, L0:L] = k, v
            h = blk.finish(h, blk.attend(q, *self._cached(cache, i, L)))


# -- calibration: a trained float prior -> its integer counterpart --------------------------------
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
    _require(float((w.abs().sum(1) * lin.act).max()) < ACC_LIMIT, "a product's partial sums would reach 2^24")
    if out_scale is None:
        _require(float(reach.max()) < ACC_LIMIT, "a sum plus its bias would reach 2^24")
    else:
        _require(float((reach * lin.mult.double()).max()) < 2.0 ** 53, "a requantization would reach 2^53")
    return float(unit.max())


def _require(ok: bool, what: str):
    """calibrate refuses weights whose integer arithmetic would not be exact, and so does loading
    (`IntegerPrior.check_exact`)."""
    if not ok:
        raise ValueError(f"the integer prior would not be exact on every machine: {what}")


def _set_layernorm(ln: IntLayerNorm, float_ln: nn.LayerNorm, out_scale: float):
    C = float_ln.weight.shape[0]
    ln.gain.copy_(torch.round(float_ln.weight.double() * math.sqrt(C) / out_scale * 2 ** LN_FRAC).to(torch.int64))
    ln.offset.copy_(torch.round(float_ln.bias.double() / out_scale * 2 ** LN_FRAC).to(torch.int64))
    _require(int(ln.gain.abs().max()) < 1 << 30, "a LayerNorm gain times |x - mean| <= 2^22 would reach 2^53")


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
    _require(float(ip.tok_emb.view(prior.M, prior.K + 2, dim).abs().amax(1).sum(0).max()) < ACC_LIMIT,
             "a sum of token embeddings would reach 2^24")
    _require(int(ip.start.abs().max()) <= RESID_LIMIT, "the start token is beyond the residual's range")
    _require(2 * (dim // heads) * act ** 2 < ACC_LIMIT, "attention scores would reach 2^24 (heads too wide)")
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
        _require(shift <= 28, "the attention output's requantization would reach 2^53")
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
