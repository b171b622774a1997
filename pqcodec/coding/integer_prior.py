"""The integer-exact MIM prior: what the range coder's frequencies come from.

A range decoder needs the encoder's frequencies bit for bit. Float inference gives other last bits
on another CPU family, thread split, batch shape or GPU, so the coder runs this integer version of
`MIMPrior` (nets/prior.py), made from a trained float prior by train/calibrate.py: every number
that decides a frequency is an integer computed exactly, on any machine (docs/bitstream.md, "Why the
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
import torch
from torch import nn
import torch.nn.functional as F

from ..numerics import OPERAND_EXACT
from .kernels import ACT, WEIGHT_MAX, int8_linear, int8_pack, int8_products
from .layout import PROB_BITS

LEGACY_ACT = 255          # ... in integer priors of pqcodec 0.4.0, whose files do not store it
ACC_LIMIT = 1 << 24       # float32 holds every integer below this exactly
RESID_FRAC = 12           # residual stream: integers in units of 2^-12
RESID_LIMIT = 1 << 21     # |residual| clamp: keeps LayerNorm's sum of squares below 2^53
LN_FRAC = 16              # LayerNorm's fixed-point gain
PROB_EXP_BITS = 22        # output distributions: at most 2^22 exp(-x)
MASKED = -float(1 << 30)  # added to a masked key's score: it lands beyond every table (weight 0)
BATCH = 8                 # windows per batch in `frequencies`: any split gives the same integers


def require_exact(ok: bool, what: str):
    """Calibration (train/calibrate.py) refuses weights whose integer arithmetic would not be exact,
    and so does loading (`IntegerPrior.check_exact`)."""
    if not ok:
        raise ValueError(f"the integer prior would not be exact on every machine: {what}")


def _isqrt(x: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(x)) of float64 x holding integers in [0, 2^53): the correctly rounded square root
    is within one of it, and the two comparisons below make it exact."""
    r = torch.sqrt(x).floor_()
    r -= (r * r > x).to(x.dtype)
    return r.add_(((r + 1) * (r + 1) <= x).to(x.dtype))


def _as_mask(visible: torch.Tensor) -> torch.Tensor:
    """bool -> float32: 0 where visible, MASKED elsewhere (added to attention scores)."""
    return torch.zeros(visible.shape, dtype=torch.float32, device=visible.device).masked_fill_(~visible, MASKED)


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index], the index (float32 holding integers of magnitude below 2^31; left as it is)
    clamped to the table."""
    i = index.to(torch.int32).clamp_(0, table.shape[0] - 1)
    return table.index_select(0, i.flatten()).view(i.shape)


class IntModule(nn.Module):
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


class IntLinear(IntModule):
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
        OPERAND_EXACT) and b (the same dtype), or W packed for int8 products and b as int32, m / 2^s and
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
            return dict(wt=None if kernel else w.to(dtype), int8=int8_pack(w, kernel) if kernel else None,
                        b=bias.to(torch.int32 if kernel else dtype),
                        scale=mult * 2.0 ** -shift,
                        offset=(bias * mult + 2.0 ** (shift - 1)) * 2.0 ** -shift)
        return self.derived((start, stop), make)

    @staticmethod
    def _product(x: torch.Tensor, p: dict, bias: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x (operands, float32 or int8) @ W^T (+ b where `bias`) as `dtype` (int32: with the int8
        kernel, its own sums), exact: every partial sum, with or without the bias, below 2^24
        (calibrate, `check_exact`), and int32 sums are exact."""
        if p["int8"] is not None:
            return int8_linear(x.to(torch.int8), p["int8"], p["b"] if bias else None, dtype)
        y = F.linear(x.to(p["wt"].dtype), p["wt"])  # the bias added apart: a product may round its inputs
        return (y.add_(p["b"]) if bias else y).to(dtype)

    def check_exact(self, name: str, bias_in_sum: bool, extra: torch.Tensor | float = 0.0):
        """ValueError unless every sum this layer makes is exact for any operands |x| <= act: the
        partial sums (plus the bias where `bias_in_sum`, the `accumulate` use, plus `extra` per output
        channel: what a caller adds to the sum in float32) below 2^24; the requantization (`forward`)
        below 2^53."""
        reach = self.weight.abs().double().sum(1) * self.act
        require_exact(float(reach.max()) < ACC_LIMIT, f"{name}'s partial sums would reach 2^24")
        if bias_in_sum:
            total = reach + self.bias.abs().double() + torch.as_tensor(extra, dtype=torch.float64)
            require_exact(float(total.max()) < ACC_LIMIT, f"{name}'s sums plus bias would reach 2^24")
        else:
            total = (reach + self.bias.abs().double()) * self.mult.double()
            require_exact(float(total.max()) < 2.0 ** 53 and int(self.shift) < 53,
                     f"{name}'s requantization would reach 2^53")

    def accumulate(self, x: torch.Tensor, rows: slice = slice(None), dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """rows: the output channels wanted (default all); dtype float32, or int32 for a table's
        index (the int8 kernel's own sums, no conversion)."""
        p = self._rows(rows)
        return self._product(x, p, True, dtype)

    def forward(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """rows: the output channels wanted (default all)."""
        p = self._rows(rows)
        acc = self._product(x, p, False, torch.float64)
        return torch.addcmul(p["offset"], acc, p["scale"]).floor_()  # exact: floor((sum + b) m / 2^s + 1/2),
                                                                     # every term a multiple of 2^-s below 2^53


class IntLayerNorm(IntModule):
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
        mean = torch.div(total, C).floor_()                             # floor(total / C), exact as it is for a
        if C & (C - 1):                                                 # power of two; else made exact (a CUDA
            mean -= (mean * C > total).to(h.dtype)                      # division by a number multiplies by its
            mean += ((mean + 1) * C <= total).to(h.dtype)               # rounded reciprocal: n C / C -> n - 1)
        d = h - mean                                                    # |d| <= 2^22
        r = _isqrt(torch.linalg.vecdot(d, d).unsqueeze_(-1)).clamp_min_(1)  # sqrt(C) std, floored: sums < 2^53
        gain, offset = self.derived("float64", lambda: (
            self.gain.to(torch.float64), self.offset.to(torch.float64) + 2.0 ** (LN_FRAC - 1)))
        y = d.mul_(gain).div_(r).floor_()                               # exact floor: |d gain| < 2^53
        y = y.add_(offset).mul_(2.0 ** -LN_FRAC).floor_()               # round((y + beta) / 2^LN_FRAC): exact
        return y.clamp_(-self.act, self.act).to(self.operand_dtype)


class IntBlock(IntModule):
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

    def project(self, y, parts: slice):
        """LayerNorm'd operands y (B, L, C) -> the qkv parts wanted (0: q, 1: k, 2: v), each
        (B, H, L, d) operands."""
        x = self.qkv(y, rows=slice(parts.start * self.dim, parts.stop * self.dim)).clamp_(-self.act, self.act).float()
        return [self._split(t) for t in x.chunk(parts.stop - parts.start, -1)]

    def qkv_of(self, h):
        """Content (B, L, C) -> q, k, v (B, H, L, d), operands."""
        return self.project(self.ln1(h), slice(0, 3))

    def query_of(self, h):
        return self.project(self.ln1(h), slice(0, 1))[0]

    def attend(self, q, k, v, mask):
        """q (B, H, Lq, d), k and v (B, H, Lk, d) operands; mask float32, 0 or MASKED,
        broadcastable to (B, H, Lq, Lk), with at least one key per query not masked, or None: every
        key visible. -> (B, Lq, C) operands."""
        s = q @ k.transpose(-2, -1)                         # exact: |q.k| <= d act^2 < 2^23
        if mask is not None:
            s.add_(mask)                                    # exact unmasked
        x = torch.sub(s.amax(-1, keepdim=True), s, out=s)   # unmasked: exact, < 2^24; masked: > 2^29
        e = lookup(self.table("att_exp"), x)                # <= 255, masked keys: the table's final 0
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
        require_exact(act <= OPERAND_EXACT, f"{name}: operands up to {act} do not survive bf16 (at most {OPERAND_EXACT})")
        require_exact(2 * d * act ** 2 < ACC_LIMIT, f"{name}: attention scores would reach 2^24")
        att_max = int(self.att_exp.abs().max())
        require_exact(att_max <= OPERAND_EXACT and keys * att_max * act < ACC_LIMIT,
                 f"{name}: attention weights up to {att_max} times values would not be exact")
        require_exact(int(self.gelu.abs().max()) <= act, f"{name}: GELU table beyond the operands' range")
        require_exact(int(self.out_shift) <= 28 and int(self.out_mult) < 1 << 21,
                 f"{name}: the attention output's requantization would reach 2^53")
        for ln in (self.ln1, self.ln2):
            require_exact(int(ln.gain.abs().max()) < 1 << 30, f"{name}: a LayerNorm gain would reach 2^53")
        for lin, use in ((self.qkv, False), (self.proj, False), (self.fc1, True), (self.fc2, False)):
            lin.check_exact(name, use)

    def finish(self, h, attended):
        """Residual update after attention, then the MLP; h (B, L, C) float64 holding integers."""
        h = self.proj(attended).add_(h).clamp_(-RESID_LIMIT, RESID_LIMIT)
        g = lookup(self.table("gelu", self.operand_dtype), self.fc1.accumulate(self.ln2(h), dtype=torch.int32))  # fc1's bias starts the table at 0
        return self.fc2(g).add_(h).clamp_(-RESID_LIMIT, RESID_LIMIT)


class IntCache:
    """Keys and values of the revealed content, per layer, preallocated for a batch of windows:
    the start token, then positions in the order they were revealed. Only the first `length` are
    ever read, each written before (so the rest is left as allocated, not zeroed: 25 MB for 12
    windows)."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int, device):
        shape = (batch, heads, length, head_dim)
        self.keys = [torch.empty(shape, dtype=torch.float32, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=torch.float32, device=device) for _ in range(layers)]
        self.mask = torch.full((batch, 1, 1, length), MASKED, dtype=torch.float32, device=device)
        self.length = 0


class IntegerPrior(IntModule):
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
        require_exact(bool(self.calibrated), "not calibrated")
        dim = self.dim
        require_exact(float(self.tok_emb.view(self.M, self.K + 2, dim).abs().amax(1).double().sum(0).max()) < ACC_LIMIT,
                 "a sum of token embeddings would reach 2^24")
        require_exact(int(self.start.abs().max()) <= RESID_LIMIT, "the start token is beyond the residual's range")
        for i, blk in enumerate(self.blocks):
            blk.check_exact(f"block {i}", 1 + self.window ** 2)
        require_exact(int(self.ln_f.gain.abs().max()) < 1 << 30, "the final LayerNorm's gain would reach 2^53")
        self.head.check_exact("the output layer", True)
        require_exact(0 <= int(self.prob_exp.min()) and int(self.prob_exp.max()) <= 1 << PROB_EXP_BITS,
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

    def logits(self, f: torch.Tensor, subq: slice) -> torch.Tensor:
        """Features (..., C) (`predict_features`) -> logits (..., len(subq), K) of sub-quantizers `subq`,
        float32 integers in the head's unit: a conditional head's coder asks for one sub-quantizer's
        at a time (a table's rows each), which keeps a large step's logits out of memory."""
        start, stop, _ = subq.indices(self.M)
        return self.head.accumulate(f, rows=slice(start * self.K, stop * self.K)).unflatten(-1, (stop - start, self.K))

    def to_frequencies(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (..., K) (float32 or float64 integers in the head's unit; the caller's tensor is
        overwritten) -> frequencies minus one: integers >= 0 summing to 2^PROB_BITS - K in each row
        (the range coder adds one to every symbol)."""
        e = lookup(self.table("prob_exp"), torch.sub(logits.amax(-1, keepdim=True), logits, out=logits))
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
        same position): the integers the coder's step-by-step loop gives (token_coder.py)."""
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
        f = self.ln_f(hq)                                                        # (B, N, C) operands
        logits = self.logits(f, slice(0, active))                                # (B, N, active, K)
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

    def _advance(self, cache: IntCache, h: torch.Tensor | None, hq: torch.Tensor | None) -> torch.Tensor | None:
        """One pass through the blocks for content h (B, n, C) just revealed (None: none), whose keys
        and values each layer writes to the cache after its `cache.length` keys (the caller has
        written their mask), and query rows hq (B, n', C) (None: none). Both attend to the cache up to
        the revealed content's end, content and query rows in one batch per layer: the same keys and
        mask, and every row's integers its own (each operation is row by row), so joining them
        changes no integer and halves the operations. The last layer's content feeds nothing but its
        keys and values. -> the query stream after the last layer (B, n', C), or None."""
        n = 0 if h is None else h.shape[1]
        L0, L = cache.length, cache.length + n
        cache.length = L
        mask = cache.mask[..., :L]
        mask = mask if bool(mask.any()) else None  # None: no key masked, as in every window wholly inside the image
        x = h if hq is None else hq if h is None else torch.cat([h, hq], 1)   # (B, n + n', C)
        for i, blk in enumerate(self.blocks):
            y = blk.ln1(x)
            if n:
                cache.keys[i][:, :, L0:L], cache.values[i][:, :, L0:L] = blk.project(y[:, :n], slice(1, 3))
            if i + 1 == len(self.blocks):
                if hq is None:
                    return None
                x, y = x[:, n:], y[:, n:]
            q = blk.project(y, slice(0, 1))[0]
            x = blk.finish(x, blk.attend(q, cache.keys[i][:, :, :L], cache.values[i][:, :, :L], mask))
        return x

    def predict_features(self, cache: IntCache, active: int, positions: torch.Tensor) -> torch.Tensor:
        """The features (B, n, C) at `positions` (n,) given the cached content: operands, the final
        LayerNorm's output, which `logits` and a conditional head read."""
        return self.ln_f(self._advance(cache, None, self._query(cache.mask.shape[0], active, positions)))

    def predict(self, cache: IntCache, active: int, positions: torch.Tensor) -> torch.Tensor:
        """Frequencies minus one (B, n, active, K) at `positions` (n,) given the cached content."""
        return self.to_frequencies(self.logits(self.predict_features(cache, active, positions), slice(0, active)))

    def _reveal_content(self, cache: IntCache, tokens: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
        """Writes the mask of the positions revealed after the cache's keys; -> their content (B, n, C)."""
        cache.mask[:, 0, 0, cache.length:cache.length + len(positions)] = _as_mask(valid)
        return self._embed(tokens, positions)

    def reveal(self, cache: IntCache, tokens: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
        """Adds the content of `tokens` (B, n, M; ABSENT beyond the sub-quantizers in use) at
        `positions` (n,) to the cache; valid (B, n) marks positions inside the image."""
        self._advance(cache, self._reveal_content(cache, tokens, positions, valid), None)

    def reveal_and_predict(self, cache: IntCache, tokens: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                           active: int, next_positions: torch.Tensor) -> torch.Tensor:
        """`reveal(cache, tokens, positions, valid)`, then `predict_features(cache, active,
        next_positions)`: the same integers, in one pass through the blocks (`_advance`)."""
        h = self._reveal_content(cache, tokens, positions, valid)
        hq = self._query(cache.mask.shape[0], active, next_positions)
        return self.ln_f(self._advance(cache, h, hq))
