"""The masked-image-modeling prior: a transformer over a window of token positions that gives, for
each position, M categorical distributions over the K codewords, given the positions revealed in
earlier steps of the coding schedule. This float model is what trains; the coder runs its
integer-exact counterpart (coding/integer_prior.py), calibrated from it
(train/calibrate.py).

It is a two-stream transformer with attention that is causal over schedule steps (the idea of M2T,
Mentzer et al. 2023; the two streams as in XLNet):
- the content stream carries revealed tokens; a token revealed at step t attends to the tokens of
  steps <= t. Its keys and values never change once computed, so the coder caches them;
- the query stream carries, for a position to be predicted at step t, only "which position, which
  sub-quantizers in use"; it attends to the content of steps < t and its output gives the logits.
Training computes both streams for a whole window in one pass (with a random order and step split
per sample); coding runs step by step with the cache and costs about two passes for any number of
steps. A learned start token is always visible, so the first step is coded from it alone.

Input per position: the sum over sub-quantizers m of an embedding of the index (content) or of a
per-m [MASK] (query), with a per-m [ABSENT] for sub-quantizers not in use at this rate, plus a learned
position embedding over the fixed window. Images are coded window by window (bitstream.py): DESIGN.md's
prototype lost most of the prior's gain on a grid larger than the windows it was trained on.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F


def _attend(q, k, v, visible):
    """Plain softmax attention written out, as the integer prior mirrors it. visible: bool,
    broadcastable to (B, heads, Lq, Lk)."""
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    att = att.masked_fill(~visible, float("-inf"))
    return att.softmax(-1) @ v


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def _split(self, x):  # (B, L, C) -> (B, heads, L, C/heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _merge(self, x):
        return x.transpose(1, 2).flatten(2)

    def qkv_of(self, h):
        return [self._split(t) for t in self.qkv(self.ln1(h)).chunk(3, -1)]

    def query_of(self, h):
        C = h.shape[-1]
        return self._split(F.linear(self.ln1(h), self.qkv.weight[:C], self.qkv.bias[:C]))

    def finish(self, h, attended):
        h = h + self.proj(self._merge(attended))
        return h + self.mlp(self.ln2(h))

    def forward(self, hc, hq, visible_c, visible_q):
        """Training: content hc (B, 1+N, C), queries hq (B, N, C); visibility masks (B, 1, Lq, 1+N)."""
        q, k, v = self.qkv_of(hc)
        hc_next = self.finish(hc, _attend(q, k, v, visible_c))
        hq_next = self.finish(hq, _attend(self.query_of(hq), k, v, visible_q))
        return hc_next, hq_next


class MIMPrior(nn.Module):
    def __init__(self, num_subvectors: int, codebook_size: int, window: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.M, self.K, self.window = num_subvectors, codebook_size, window
        self.MASK, self.ABSENT = codebook_size, codebook_size + 1
        self.tok_emb = nn.Embedding(self.M * (self.K + 2), dim)
        self.pos_emb = nn.Parameter(0.02 * torch.randn(window * window, dim))
        self.start = nn.Parameter(0.02 * torch.randn(dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.M * self.K)
        self.register_buffer("offsets", torch.arange(self.M) * (self.K + 2), persistent=False)

    # -- embeddings --------------------------------------------------------------------------------
    def _embed(self, tokens, positions):
        """tokens (B, n, M) in [0, K+2), positions (n,) -> (B, n, dim)."""
        return self.tok_emb(tokens + self.offsets).sum(2) + self.pos_emb[positions]

    def _query_tokens(self, active: torch.Tensor, n: int) -> torch.Tensor:
        """(B,) sub-quantizers in use -> (B, n, M) of MASK / ABSENT."""
        in_use = torch.arange(self.M, device=active.device) < active[:, None]
        row = torch.where(in_use, self.MASK, self.ABSENT)
        return row[:, None, :].expand(-1, n, -1)

    # -- training: both streams of a whole window in one pass -------------------------------------
    def forward(self, tokens: torch.Tensor, active: torch.Tensor, step_of: torch.Tensor,
                valid: torch.Tensor | None = None, with_features: bool = False):
        """tokens (B, N, M) true indices; active (B,) sub-quantizers in use; step_of (B, N) the step at
        which each position is revealed; valid (B, N) the positions inside the image (default all):
        as in coding, the others are never attended. Returns logits (B, N, M, K), each position's
        from the content of earlier steps only; with_features: and the final features (B, N, C) a
        conditional head reads (nets/conditional.py)."""
        B, N, _ = tokens.shape
        in_use = torch.arange(self.M, device=tokens.device) < active[:, None]
        content = torch.where(in_use[:, None, :], tokens, self.ABSENT)
        pos = torch.arange(N, device=tokens.device)
        hc = torch.cat([self.start.expand(B, 1, -1), self._embed(content, pos)], 1)
        hq = self._embed(self._query_tokens(active, N), pos)
        step_c = torch.cat([torch.full((B, 1), -1, device=tokens.device), step_of], 1)
        visible_c = (step_c[:, None, :] <= step_c[:, :, None]).unsqueeze(1)
        visible_q = (step_c[:, None, :] < step_of[:, :, None]).unsqueeze(1)
        if valid is not None:  # keys outside the image: hidden from both streams (the start token stays)
            key_inside = torch.cat([valid.new_ones(B, 1), valid], 1)[:, None, None, :]       # (B, 1, 1, 1+N)
            visible_c, visible_q = visible_c & key_inside, visible_q & key_inside
        for blk in self.blocks:
            hc, hq = blk(hc, hq, visible_c, visible_q)
        f = self.ln_f(hq)
        logits = self.head(f).unflatten(-1, (self.M, self.K))
        return (logits, f) if with_features else logits

    def loss(self, tokens, active, step_of, valid=None):
        """Mean cross-entropy in bits per coded index (positions inside the image x sub-quantizers in
        use)."""
        logits = self(tokens, active, step_of, valid)
        target = tokens.clamp_max(self.K - 1)  # MASK outside the image: a placeholder, weighted 0 below
        ce = F.cross_entropy(logits.float().flatten(0, 2), target.flatten(), reduction="none").view_as(tokens)
        in_use = (torch.arange(self.M, device=tokens.device) < active[:, None]).float()      # (B, M)
        coded = in_use[:, None, :] if valid is None else in_use[:, None, :] * valid[..., None].float()
        coded = coded.expand_as(ce)                                                         # (B, N, M)
        return (ce * coded).sum() / coded.sum() / math.log(2)
