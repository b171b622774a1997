"""The integer-exact conditional head: what the coder adds to sub-quantizer j's logits from the
indices 0..j-1 already coded at the same position, bit for bit the same on every machine. The
integer counterpart of `ConditionalHead` (nets/conditional.py), made from a trained one by
`calibrate_conditional` (train/calibrate.py), with the integer prior's tools (integer_prior.py):

- f, the integer prior's final LayerNorm output (operands |f| <= 127), enters inner_j as a product
  (its scale folded into the weights); s_j, the sum of int8 embeddings of indices 0..j-1
  (|s_j| <= `lower_max`, 957 in v5's head), enters as W_j s_j = sum over i < j of W_j e_i(index_i):
  for each pair (i, j) a table of what each index of sub-quantizer i adds (`lower_table`, K x Hd
  integers made once, exactly), so the coder looks rows up where it would multiply s_j, whose
  values pass what a float32 product takes exactly (numerics.py). Calibration (and loading,
  `check_exact`) checks that every partial and total sum of inner_j stays below 2^24, so any order
  of the additions gives the same integer;
- GELU is a lookup table indexed by that sum (as in the prior's blocks);
- out_j requantizes to the prior's logit unit, so the head's term adds exactly to the prior's
  logits before the prior's own softmax table (`IntegerPrior.to_frequencies`).

Tensors: m positions, M sub-quantizers, K codewords, C the prior's width, E the embedding width,
Hd the hidden width.
"""
import torch

from ..numerics import OPERAND_EXACT
from .integer_prior import ACT, IntLinear, IntModule, lookup, require_exact

DELTA_LIMIT = 1 << 22    # |the head's term| in logit units: sums with the prior's logits stay far below 2^31


class IntConditionalHead(IntModule):
    _sized = ("gelu",)

    def __init__(self, num_subvectors: int, codebook_size: int, dim: int, embed: int, hidden: int):
        super().__init__()
        self.M, self.K, self.hidden = num_subvectors, codebook_size, hidden
        self.register_buffer("embed", torch.zeros(self.M * self.K, embed, dtype=torch.int8))
        self.from_features = IntLinear(dim, (self.M - 1) * hidden)  # accumulate: f's part of inner_j + its bias
        self.from_lower = IntLinear(embed, (self.M - 1) * hidden)   # s_j's part, the same unit (`lower_table`)
        self.out = IntLinear(hidden, (self.M - 1) * self.K)         # forward: to the prior's logit unit
        self.register_buffer("gelu", torch.zeros(1, dtype=torch.int16))
        self.register_buffer("lower_max", torch.tensor(ACT))       # |s_j| <= this
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.register_load_state_dict_post_hook(lambda module, _: module.set_lower_max(int(module.lower_max)))

    def set_lower_max(self, bound: int):
        self.lower_max.fill_(bound)
        self.forget_derived()

    def check_exact(self):
        """ValueError naming what is not exact (`IntegerPrior.check_exact`'s rule): s_j's bound
        covers the embeddings' sums, inner_j's partial and total sums (f's product, its bias, s_j's
        table rows and from_lower's bias, in any order) stay below 2^24 for any operands, the GELU
        table within the operands' range, out_j's requantization below 2^53."""
        require_exact(bool(self.calibrated), "the conditional head is not calibrated")
        E = self.embed.shape[1]
        col_max = self.embed.abs().double().view(self.M, self.K, E).amax(1)            # (M, E)
        lower_bound = col_max.cumsum(0)[:-1]                                           # (M-1, E): |s_j|, j = 1..M-1
        require_exact(float(lower_bound.max()) <= int(self.lower_max),
                 "the conditional head's sums of embeddings exceed its stated bound")
        require_exact(self.from_features.act <= OPERAND_EXACT, "the conditional head's features do not survive bf16")
        w_lower = self.from_lower.weight.abs().double().view(self.M - 1, self.hidden, E)
        lower_reach = (w_lower * lower_bound[:, None, :]).sum(-1).flatten()           # ((M-1) Hd,)
        self.from_features.check_exact("the conditional head's inner layer", True,
                                       lower_reach + self.from_lower.bias.abs().double())
        require_exact(int(self.gelu.abs().max()) <= ACT, "the conditional head's GELU table is beyond the operands' range")
        self.out.check_exact("the conditional head's output layer", False)

    def features(self, f: torch.Tensor, active: int) -> torch.Tensor:
        """f (m, C) operands -> (m, (active-1) Hd) float32: f's part of inner_j for j = 1..active-1,
        its bias included (from_lower's is in `lower_table`)."""
        return self.from_features.accumulate(f, rows=slice(0, (active - 1) * self.hidden))

    def lower_table(self, i: int, j: int) -> torch.Tensor:
        """(K, Hd) float32 for sub-quantizers i < j: row k is what index k of sub-quantizer i adds to
        inner_j, W_j e_i(k) (e_i(k) its embedding row), plus from_lower's bias for i = 0 (every j
        has an i = 0; the bias is 0 as calibrated, and counted all the same). Exact integers: made in
        float64 (sums far below 2^53), each below 2^24 (its absolute sum is part of what check_exact
        bounds)."""
        def make():
            rows = slice((j - 1) * self.hidden, j * self.hidden)
            emb = self.embed[i * self.K:(i + 1) * self.K].to(torch.float64)                   # (K, E)
            table = emb @ self.from_lower.weight[rows].to(torch.float64).t()                  # (K, Hd)
            return (table + self.from_lower.bias[rows].to(torch.float64) if i == 0 else table).to(torch.float32)
        return self.derived(("lower", i, j), make)

    def term(self, pre: torch.Tensor, lower: list[torch.Tensor], j: int) -> torch.Tensor:
        """pre (m, >= j Hd) from `features`, lower the indices (m,) of sub-quantizers 0..j-1 at the
        same positions -> (m, K) float64 integers: what sub-quantizer j >= 1 adds to its logits."""
        acc = pre[:, (j - 1) * self.hidden:j * self.hidden].clone()
        for i in range(j):                                            # exact: every partial sum below 2^24
            acc.add_(self.lower_table(i, j).index_select(0, lower[i]))
        g = lookup(self.table("gelu", self.operand_dtype), acc)       # from_features' bias starts it at 0
        return self.out(g, rows=slice((j - 1) * self.K, j * self.K)).clamp_(-DELTA_LIMIT, DELTA_LIMIT)

    def apply(self, logits: torch.Tensor, f: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced, all sub-quantizers at once: logits (m, active, K) the prior's, f (m, C),
        tokens (m, >= active) the true indices -> (m, active, K) float64 logits with the head's
        terms: the integers the coder's sub-quantizer-by-sub-quantizer loop gives."""
        out = logits.to(torch.float64)
        tokens = tokens.clamp(max=self.K - 1)  # MASK at positions outside an image: any index (discarded)
        pre = self.features(f, logits.shape[1])
        lower = [tokens[:, i] for i in range(logits.shape[1] - 1)]
        for j in range(1, logits.shape[1]):
            out[:, j] += self.term(pre, lower, j)
        return out
