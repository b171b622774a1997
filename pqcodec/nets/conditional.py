"""The conditional head: each sub-quantizer's distribution given the lower sub-quantizers' indices
at the same position, on top of the MIM prior's (nets/prior.py).

The prior predicts a position's M indices from the context (earlier coding steps) only, each on its
own. Sub-quantizer j's index also depends on indices 0..j-1 of the same position, which the decoder
knows by the time it decodes j if a step's indices are coded sub-quantizer by sub-quantizer
(bitstream.py, format 6): measured on Kodak, sub-quantizers 4-7 are partly predictable from 0-3
(docs/quality.md, section 6). This head adds to sub-quantizer j's logits (j >= 1)

    out_j(GELU(inner_j([f, s_j])))      f: the prior's final query features (after ln_f), (C,)
                                        s_j = sum over i < j of embed[i K + k_i], (E,)

one small MLP per j; `out_j` starts at zero, so an untrained head is the prior alone. It trains on
the frozen prior's features (train/conditional.py, minutes on a CPU); the coder runs its
integer-exact counterpart (coding/integer_conditional.py), calibrated from it
(train/calibrate.py).

Tensors: n positions, M sub-quantizers, K codewords, C the prior's width, E the embedding width,
Hd the hidden width.
"""
import torch
from torch import nn
import torch.nn.functional as F


class ConditionalHead(nn.Module):
    def __init__(self, num_subvectors: int, codebook_size: int, dim: int, embed: int, hidden: int):
        super().__init__()
        self.M, self.K, self.dim = num_subvectors, codebook_size, dim
        self.embed = nn.Embedding(self.M * self.K, embed)
        self.inner = nn.ModuleList(nn.Linear(dim + embed, hidden) for _ in range(self.M - 1))
        self.out = nn.ModuleList(nn.Linear(hidden, self.K) for _ in range(self.M - 1))
        for lin in self.out:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.register_buffer("offsets", torch.arange(self.M) * self.K, persistent=False)

    def lower_sums(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (..., M) in [0, K) -> (..., M, E): row j the sum of the embeddings of indices 0..j-1."""
        e = self.embed(tokens + self.offsets)                                        # (..., M, E)
        return torch.cat([torch.zeros_like(e[..., :1, :]), e[..., :-1, :].cumsum(-2)], -2)

    def forward(self, f: torch.Tensor, tokens: torch.Tensor, active: int) -> torch.Tensor:
        """f (..., C) features, tokens (..., M) true indices (those from `active` on are not read) ->
        (..., active, K) logits to add to the prior's; row j depends on tokens[..., :j] only, row 0 is 0."""
        lower = self.lower_sums(tokens.clamp(0, self.K - 1))
        rows = [f.new_zeros(*f.shape[:-1], self.K)]
        for j in range(1, active):
            hidden = F.gelu(self.inner[j - 1](torch.cat([f, lower[..., j, :]], -1)))
            rows.append(self.out[j - 1](hidden))
        return torch.stack(rows, -2)
