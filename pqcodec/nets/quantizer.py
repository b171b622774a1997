"""Product quantizer: the latent's D channels split into M sub-vectors, each snapped to one of K
codewords of its own codebook.

Codebooks learn by exponential moving averages (VQ-VAE v2 style) with dead-code restarts from recent
encoder outputs: DESIGN.md's prototype saw EMA codebooks collapse to ~10/256 codes without restarts
and stay at 100 % usage with them.

Nested sub-quantizer dropout lets one set of weights serve several rates: with `active` sub-quantizers
in use, sub-vectors active..M-1 are replaced by a learned filler, so the first sub-vectors learn the
coarse content and each further one refines it.
"""
import torch
from torch import nn
import torch.distributed as dist


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


class ProductQuantizer(nn.Module):
    def __init__(self, num_subvectors: int, codebook_size: int, subvector_dim: int, decay: float = 0.99):
        super().__init__()
        self.M, self.K, self.d = num_subvectors, codebook_size, subvector_dim
        self.decay = decay
        self.register_buffer("codebooks", torch.randn(self.M, self.K, self.d))
        self.register_buffer("ema_count", torch.ones(self.M, self.K))
        self.register_buffer("ema_sum", self.codebooks.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.filler = nn.Parameter(torch.zeros(self.M, self.d))

    @property
    def dim(self) -> int:
        return self.M * self.d

    def _split(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (M, B*h*w, d)"""
        return z.permute(0, 2, 3, 1).reshape(-1, self.M, self.d).transpose(0, 1)

    def _merge(self, v: torch.Tensor, B: int, h: int, w: int) -> torch.Tensor:
        """(M, B*h*w, d) -> (B, D, h, w)"""
        return v.transpose(0, 1).reshape(B, h, w, self.dim).permute(0, 3, 1, 2)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(M, N, d) -> (M, N) index of the nearest codeword in each sub-codebook, for training.
        Float32 with autocast off, as `encode`'s |c|^2 - 2 x.c: under bfloat16 autocast 6.5 % of
        kodim23's choices differed from coding's, so the decoder learned from choices it never gets."""
        with torch.autocast(flat.device.type, enabled=False):
            cb = self.codebooks.float()
            cb_sq = cb.square().sum(-1).unsqueeze(1)                                  # (M, 1, K)
            return torch.baddbmm(cb_sq, flat.float(), cb.transpose(1, 2), alpha=-2).argmin(-1)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, active: int | None = None, candidates: int = 0):
        """Latent (B, D, h, w) -> indices (B, active, h, w) of the first `active` (default all M)
        sub-quantizers, int64. The search runs in float64, which a caller's float32 matmul precision
        setting (TF32, bfloat16) does not touch.
        candidates > 0 (RDOQ, rdoq.py): also each sub-vector's `candidates` nearest codewords and
        their squared errors, each (B, active, h, w, L), nearest first, from the same distances."""
        B, _, h, w = z.shape
        active = self.M if active is None else active
        flat = self._split(z.double())[:active]                                  # (active, N, d)
        cb = self.codebooks[:active].double()                                     # (active, K, d)
        cb_t, cb_sq = cb.transpose(1, 2), cb.square().sum(-1).unsqueeze(1)        # (active, d, K), (active, 1, K)
        N, L = flat.shape[1], min(candidates, self.K)
        idx = torch.empty(active, N, dtype=torch.long, device=z.device)
        if L:
            cand = torch.empty(active, N, L, dtype=torch.long, device=z.device)
            dist = torch.empty(active, N, L, dtype=torch.float64, device=z.device)
        for n in range(0, N, 2048):  # |x - c|^2 - |x|^2 = |c|^2 - 2 x.c, in bounded slices
            x = flat[:, n:n + 2048]
            part = torch.baddbmm(cb_sq, x, cb_t, alpha=-2)                        # (active, n, K)
            idx[:, n:n + 2048] = part.argmin(-1)
            if L:
                d, cand[:, n:n + 2048] = part.topk(L, dim=-1, largest=False, sorted=True)
                dist[:, n:n + 2048] = d + x.square().sum(-1, keepdim=True)
        idx = idx.view(active, B, h, w).transpose(0, 1)
        if not L:
            return idx
        grid = lambda t: t.view(active, B, h, w, L).transpose(0, 1)  # noqa: E731
        return idx, grid(cand), grid(dist.clamp_min_(0))

    def decode(self, indices: torch.Tensor, active: int | torch.Tensor | None = None) -> torch.Tensor:
        """Indices (B, M', h, w) -> quantized latent (B, D, h, w): the codewords of the first `active`
        sub-quantizers (default: all M; M' >= active), the learned filler beyond, whatever the
        indices say there (they may be negative). `active` may be a count for all, a (B,) tensor of
        counts per sample (training at mixed levels), or (B, h, w) counts per position (a file whose
        windows have levels of their own, bitstream.py)."""
        B, Mi, h, w = indices.shape
        counts = torch.as_tensor(self.M if active is None else active, device=indices.device)
        counts = counts.view(-1, 1, 1, 1) if counts.dim() <= 1 else counts[:, None]        # (B|1, 1, h|1, w|1)
        top = min(Mi, int(counts.max()))                                                  # codebooks looked up
        words = torch.stack([self.codebooks[m][indices[:, m].clamp(min=0)] for m in range(top)], 1)  # (B, top, h, w, d)
        keep = torch.arange(top, device=indices.device)[None, :, None, None] < counts     # (B|1, top, h|1, w|1)
        words = torch.where(keep[..., None], words, self.filler[None, :top, None, None, :])
        rest = self.filler[None, top:, None, None, :].expand(B, -1, h, w, -1)              # (B, M - top, h, w, d)
        return torch.cat([words, rest], 1).permute(0, 1, 4, 2, 3).reshape(B, self.dim, h, w)

    def forward(self, z: torch.Tensor, active: torch.Tensor | None = None):
        """Training/analysis pass. z: (B, D, h, w); active: (B,) number of sub-quantizers in use per
        sample (default all). Returns (straight-through quantized latent, indices (B, M, h, w),
        commitment loss)."""
        B, _, h, w = z.shape
        flat = self._split(z.float())
        if self.training and not bool(self.initialised):
            self._init_from(flat)
        idx = self.nearest(flat.detach())
        q = torch.gather(self.codebooks, 1, idx.unsqueeze(-1).expand(-1, -1, self.d))
        if self.training:
            self._ema_update(flat.detach(), idx)
        commit = (flat - q.detach()).square().mean()
        q = flat + (q - flat).detach()  # straight-through estimator
        if active is not None:
            keep = torch.arange(self.M, device=z.device)[:, None] < active.repeat_interleave(h * w)[None, :]
            q = torch.where(keep.unsqueeze(-1), q, self.filler[:, None, :].to(q.dtype))
        return self._merge(q, B, h, w), idx.view(self.M, B, h, w).transpose(0, 1), commit

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor):
        """Codebooks start as random encoder outputs (the same on every rank)."""
        N = flat.shape[1]
        pick = torch.randint(0, N, (self.M, self.K), device=flat.device)
        cb = torch.gather(flat, 1, pick.unsqueeze(-1).expand(-1, -1, self.d)).contiguous()
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(cb, 0)
        self.codebooks.copy_(cb)
        self.ema_sum.copy_(cb)
        self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, idx: torch.Tensor):
        counts = torch.zeros(self.M, self.K, device=flat.device).scatter_add_(
            1, idx, torch.ones_like(idx, dtype=torch.float))
        sums = torch.zeros(self.M, self.K, self.d, device=flat.device).index_put_(
            (torch.arange(self.M, device=flat.device)[:, None].expand_as(idx), idx), flat, accumulate=True)
        _all_reduce(counts)
        _all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum(1, keepdim=True)
        smoothed = (self.ema_count + 1e-5) / (n + self.K * 1e-5) * n  # Laplace smoothing
        self.codebooks.copy_(self.ema_sum / smoothed.unsqueeze(-1))

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, threshold: float = 0.03) -> int:
        """Codewords whose EMA usage fell under `threshold` (expected count per batch) are moved onto
        random encoder outputs of z (B, D, h, w). Rank 0 decides; returns how many moved."""
        flat = self._split(z.float())
        dead = self.ema_count < threshold
        pick = torch.randint(0, flat.shape[1], (self.M, self.K), device=flat.device)
        fresh = torch.gather(flat, 1, pick.unsqueeze(-1).expand(-1, -1, self.d))
        cb = torch.where(dead.unsqueeze(-1), fresh, self.codebooks)
        count = torch.where(dead, torch.ones_like(self.ema_count), self.ema_count)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(cb, 0)
            dist.broadcast(count, 0)
            dist.broadcast(dead, 0)
        self.codebooks.copy_(cb)
        self.ema_count.copy_(count)
        self.ema_sum.copy_(cb * count.unsqueeze(-1))
        return int(dead.sum())

    @torch.no_grad()
    def usage(self) -> torch.Tensor:
        """Perplexity of each sub-codebook's EMA usage (K means every code equally used)."""
        p = self.ema_count / self.ema_count.sum(1, keepdim=True)
        return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(1))
