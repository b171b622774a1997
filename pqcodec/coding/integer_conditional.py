"""The integer-exact conditional head: what the coder adds to sub-quantizer j's logits from the
indices 0..j-1 already coded at the same position, bit for bit the same on every machine. The
integer counterpart of `ConditionalHead` (nets/conditional.py), made from a trained one by
`calibrate_conditional` (train/calibrate.py), with the integer prior's tools (integer_prior.py):

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
        self.from_lower = IntLinear(embed, (self.M - 1) * hidden)   # accumulate: s_j's part, the same unit
        self.out = IntLinear(hidden, (self.M - 1) * self.K)         # forward: to the prior's logit unit
        self.register_buffer("gelu", torch.zeros(1, dtype=torch.int16))
        self.register_buffer("lower_max", torch.tensor(ACT))       # |s_j| <= this
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.register_load_state_dict_post_hook(lambda module, _: module.set_lower_max(int(module.lower_max)))

    def set_lower_max(self, bound: int):
        self.lower_max.fill_(bound)
        self.from_lower.act = bound   # beyond int8 and bf16: float64 products (IntLinear), exact (check_exact)
        self.forget_derived()

    def check_exact(self):
        """ValueError naming what is not exact (`IntegerPrior.check_exact`'s rule): s_j's bound
        covers the embeddings' sums, inner_j's two products and their sum stay below 2^24 for any
        operands (the wide s_j in a float64 product, IntLinear), the GELU table within the operands'
        range, out_j's requantization below 2^53."""
        require_exact(bool(self.calibrated), "the conditional head is not calibrated")
        E = self.embed.shape[1]
        col_max = self.embed.abs().double().view(self.M, self.K, E).amax(1)            # (M, E)
        lower_bound = col_max.cumsum(0)[:-1]                                           # (M-1, E): |s_j|, j = 1..M-1
        require_exact(float(lower_bound.max()) <= int(self.lower_max),
                 "the conditional head's sums of embeddings exceed its stated bound")
        require_exact(self.from_features.act <= OPERAND_EXACT, "the conditional head's features do not survive bf16")
        w_lower = self.from_lower.weight.abs().double().view(self.M - 1, self.hidden, E)
        lower_reach = (w_lower * lower_bound[:, None, :]).sum(-1).flatten()           # ((M-1) Hd,)
        self.from_features.check_exact("the conditional head's inner layer", True, lower_reach)
        require_exact(int(self.gelu.abs().max()) <= ACT, "the conditional head's GELU table is beyond the operands' range")
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
        g = lookup(self.table("gelu", self.operand_dtype), acc)       # from_features' bias starts it at 0
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
