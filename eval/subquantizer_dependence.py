#!/usr/bin/env python3
"""How much would the prior save by predicting each sub-quantizer's index from the lower
sub-quantizers' indices at the same position, as well as from the context? (Issue 14: the MIM prior
predicts the M indices of a position independently.)

A probe, not a coder: the float prior stays frozen; a small head on its final query features adds to
sub-quantizer j's logits (j >= 1) a term computed from those features and the sum of learned
embeddings of indices 0..j-1 (per j: two linear maps, GELU, a linear map to K logits, the last
initialised to zero so training starts from the prior). It is trained on random windows of the
training images (random reveal orders and levels, as the prior trains) and evaluated on the test
folder's windows with the coding schedule, against the prior alone: bits per coded index, from
the float softmax (the integer prior the coder runs adds +0.12..0.17 %, docs/bitstream.md).

    python -m eval.subquantizer_dependence ../shared/data/kodak --train ../shared/data/train

About 15 minutes on 2 cores (most of it tokenising 1,439 training photos and training the head).
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import pqcodec_eval
from pqcodec import DEFAULT_STEPS
from pqcodec.coding.schedule import Schedule
from pqcodec.coding.layout import to_windows
from pqcodec.train.windows import WindowSampler, image_tokens


class ConditionalHead(nn.Module):
    """Extra logits for sub-quantizers 1..M-1 from the prior's features f and the indices below."""

    def __init__(self, M: int, K: int, dim: int, emb: int = 128, hidden: int = 256):
        super().__init__()
        self.M, self.K = M, K
        self.embed = nn.Embedding(M * K, emb)
        self.from_features = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(M - 1))
        self.from_lower = nn.ModuleList(nn.Linear(emb, hidden, bias=False) for _ in range(M - 1))
        self.out = nn.ModuleList(nn.Linear(hidden, K) for _ in range(M - 1))
        for lin in self.out:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.register_buffer("offsets", torch.arange(M) * K, persistent=False)

    def forward(self, f, tokens):
        """f (n, dim), tokens (n, M) -> (n, M, K); row j depends on tokens[:, :j] only (row 0 is 0)."""
        e = self.embed(tokens + self.offsets)                                    # (n, M, emb)
        lower = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1].cumsum(1)], 1)  # (n, M, emb): sum over i < j
        rows = [torch.zeros(len(f), self.K)]
        for j in range(1, self.M):
            hidden = F.gelu(self.from_features[j - 1](f) + self.from_lower[j - 1](lower[:, j]))
            rows.append(self.out[j - 1](hidden))
        return torch.stack(rows, 1)


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.subquantizer_dependence", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="test images (e.g. ../shared/data/kodak)")
    ap.add_argument("--train", required=True, help="training images the head learns from")
    ap.add_argument("--model", help="weights file (default: the shipped model)")
    ap.add_argument("--windows", type=int, default=4096, help="training windows (default 4096)")
    ap.add_argument("--epochs", type=float, default=4, help="passes over their positions (default 4)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="coding steps of the test windows")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    codec, _ = pqcodec_eval.load(args.model)
    model = pqcodec_eval.whole_model(args.model).eval()
    prior = model.prior.float().eval()
    c = model.config
    M, K, W, levels = c.num_subvectors, c.codebook_size, c.window, c.active_levels
    seen = {}
    prior.ln_f.register_forward_hook(lambda mod, inp, out: seen.__setitem__("f", out))

    @torch.no_grad()
    def features(tokens, active, step_of):  # the prior's normalised query features (B, N, dim)
        prior(tokens, active, step_of)
        return seen["f"].half()

    t0 = time.time()
    try:
        train_grids = image_tokens(model, args.train, W, progress=True)
        test_grids = image_tokens(model, args.folder, W, progress=True)
    except (FileNotFoundError, ValueError) as e:  # no images, or none a window in size
        raise SystemExit(f"subquantizer_dependence.py: error: {e}")
    print(f"tokenised {len(train_grids)} training and {len(test_grids)} test images, {time.time() - t0:.0f} s", flush=True)

    sampler = WindowSampler(train_grids, W, seed=args.seed + 1, mask_index=prior.MASK)
    f_train, t_train, a_train = [], [], []
    for _ in range(max(1, args.windows // 64)):
        tokens = sampler.batch(64)
        step_of, active = sampler.orders(64, tokens.shape[1], levels)
        f_train.append(features(tokens, active, step_of).flatten(0, 1))
        t_train.append(tokens.flatten(0, 1))
        a_train.append(active.repeat_interleave(tokens.shape[1]))
    f_train, t_train, a_train = torch.cat(f_train), torch.cat(t_train), torch.cat(a_train)

    # test windows: whole windows only (the probe leaves edge windows out), the coding schedule
    test = torch.cat([to_windows(g.long(), W) for g in test_grids if g.shape[1] % W == 0 and g.shape[2] % W == 0])
    step_of = torch.from_numpy(Schedule(W, args.steps, c.schedule_seed).step_of())
    batches = test.split(32)
    f_test = {a: torch.cat([features(b, torch.full((len(b),), a), step_of.expand(len(b), -1)).flatten(0, 1)
                            for b in batches]) for a in levels}
    t_test = test.flatten(0, 1)
    print(f"features: {len(t_train)} training positions, {len(t_test)} test positions, {time.time() - t0:.0f} s", flush=True)

    def nats(f, tokens, active, head):  # (M,) summed cross-entropy per sub-quantizer, (M,) counts
        logits = prior.head(f.float()).unflatten(-1, (M, K))
        if head is not None:
            logits = logits + head(f.float(), tokens)
        ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(tokens.shape)
        used = (torch.arange(M)[None] < active[:, None]).float()
        return (ce * used).sum(0), used.sum(0)

    @torch.no_grad()
    def test_bits(head):  # {level's count: (M,) bits per index per sub-quantizer}
        out = {}
        for a in levels:
            total = sum(nats(f, t, torch.full((len(t),), a), head)[0]
                        for f, t in zip(f_test[a].split(8192), t_test.split(8192)))
            out[a] = total / len(t_test) / math.log(2)
        return out

    head = ConditionalHead(M, K, f_train.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    batch = 2048
    steps = int(args.epochs * len(t_train) / batch)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(t_train), (batch,))
        s, n = nats(f_train[idx], t_train[idx], a_train[idx], head)
        loss = s.sum() / n.sum() / math.log(2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"head step {step + 1}/{steps}: {loss.item():.4f} bits per index (training windows), {time.time() - t0:.0f} s", flush=True)

    base, cond = test_bits(None), test_bits(head)
    print(f"\n{args.folder}: bits per coded index, float prior alone vs with the conditional head "
          f"({len(t_test)} positions, {args.steps} coding steps; head: {args.windows} windows, {args.epochs} epochs)")
    print("| level | sub-quantizers | prior alone | conditional | change |\n|---|---|---|---|---|")
    for level, a in enumerate(levels, 1):
        b, cb = base[a][:a].mean().item(), cond[a][:a].mean().item()
        print(f"| {level} | {a} | {b:.4f} | {cb:.4f} | {(cb / b - 1) * 100:+.2f} % |")
    a = levels[-1]
    print(f"\nper sub-quantizer at level {len(levels)} ({a} coded), bits per index:")
    print("| sub-quantizer | " + " | ".join(str(m) for m in range(a)) + " |")
    print("|---" * (a + 1) + "|")
    print("| prior alone | " + " | ".join(f"{x:.3f}" for x in base[a][:a].tolist()) + " |")
    print("| conditional | " + " | ".join(f"{x:.3f}" for x in cond[a][:a].tolist()) + " |")
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
