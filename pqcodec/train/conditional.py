"""Train the conditional head (nets/conditional.py) on a trained model's frozen prior, then calibrate
its integer counterpart (coding/integer_conditional.py; train/calibrate.py): minutes on a CPU, no GPU needed.

    pqcodec-train conditional --init pqcodec/models/pq-s8-m12k256-v4.safetensors --data ../shared/data/train \\
        --out runs/cond --windows 12288

The prior is frozen, so its final features are computed once for random training windows (half with
the codec's coding schedule, half with the random orders and step counts of training, random levels:
`quantize.calibration_windows`), and the head trains on them: cross-entropy of the indices of the
sub-quantizers in use under the prior's logits plus the head's. OUT/model.safetensors holds only what
--init lacks (the head, float and integer) and names --init as its base (PQCodecModel.save), which
must stay beside it; `--epochs 0` with an --init that has a head recalibrates it alone.
"""
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..coding.layout import PROB_BITS
from ..coding.schedule import Schedule
from ..codec import DEFAULT_STEPS
from ..files import replacing
from ..model import PQCodecModel
from ..zoo import models_dir
from .calibrate import calibrate_conditional
from .quantize import calibration_windows
from .windows import image_tokens


@torch.no_grad()
def prior_features(prior, tokens: torch.Tensor, active: torch.Tensor, step_of: torch.Tensor,
                   progress: bool = False) -> torch.Tensor:
    """The float prior's final features (after ln_f) (B, N, C), float16, for windows as
    `calibration_windows` gives them."""
    out = []
    for b in tqdm(range(0, len(tokens), 32), desc="prior features", disable=not progress, leave=False):
        out.append(prior(tokens[b:b + 32], active[b:b + 32], step_of[b:b + 32], with_features=True)[1].half())
    return torch.cat(out)


def head_nats(model: PQCodecModel, f: torch.Tensor, tokens: torch.Tensor, active: torch.Tensor,
              with_head: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (nats) per sub-quantizer (M,) and the indices counted (M,), of positions
    f (n, C), tokens (n, M), active (n,), under the float prior's logits (plus the head's)."""
    M, K = model.config.num_subvectors, model.config.codebook_size
    f = f.float()
    logits = model.prior.head(f).unflatten(-1, (M, K))
    if with_head:
        logits = logits + model.cond(f, tokens, M)
    target = tokens.clamp(0, K - 1)
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
    used = (torch.arange(M) < active[:, None]).float()
    return (ce * used).sum(0), used.sum(0)


def with_head(model: PQCodecModel, embed: int, hidden: int) -> PQCodecModel:
    """A copy of `model` with a fresh conditional head (its other weights shared by value)."""
    new = PQCodecModel(dataclasses.replace(model.config, cond_embed=embed, cond_hidden=hidden))
    state = new.state_dict()
    state.update(model.state_dict())
    new.load_state_dict(state)
    return new.eval()


def train(args):
    t0 = time.time()
    torch.manual_seed(args.seed)
    base = PQCodecModel.load(args.init, search=(models_dir(),))
    if not base.can_code():
        raise ValueError(f"{args.init} has no calibrated integer prior (pqcodec-train quantize first)")
    c = base.config
    model = base if c.conditional else with_head(base, args.embed, args.hidden)
    base_file = base.base_path if c.conditional else Path(args.init)   # a head's file names --init, or its base
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "a")
    grids = image_tokens(model, args.data, c.window, progress=True)
    print(f"tokenised {len(grids)} images, {time.time() - t0:.0f} s", flush=True)
    prior = model.prior.float().eval()
    for p in prior.parameters():
        p.requires_grad_(False)

    def positions(count: int, seed: int):
        tokens, active, step_of = calibration_windows(grids, model, count, seed)
        f = prior_features(prior, tokens, active, step_of, progress=True)
        return f.flatten(0, 1), tokens.flatten(0, 1), active.repeat_interleave(tokens.shape[1])

    held_f, held_t, held_a = positions(args.held_out, args.seed + 7)
    head = model.cond.train()
    steps = 0
    if args.epochs > 0:
        f_tr, t_tr, a_tr = positions(args.windows, args.seed)
        print(f"features of {args.windows} training windows, {time.time() - t0:.0f} s", flush=True)
        opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        steps = max(1, int(args.epochs * len(t_tr) / args.batch))
        bar = tqdm(range(steps), desc="conditional head", dynamic_ncols=True)
        g = torch.Generator().manual_seed(args.seed)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            idx = torch.randint(0, len(t_tr), (args.batch,), generator=g)
            s, n = head_nats(model, f_tr[idx], t_tr[idx], a_tr[idx])
            loss = s.sum() / n.sum() / math.log(2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == steps - 1:
                bar.set_postfix(bits_per_index=f"{loss.item():.4f}")
                log.write(json.dumps(dict(step=step + 1, bits_per_index=round(loss.item(), 4),
                                          wall_s=round(time.time() - t0, 1))) + "\n")
                log.flush()
        del f_tr, t_tr, a_tr
    head.eval()
    with torch.no_grad():
        alone, n = head_nats(model, held_f, held_t, held_a, with_head=False)
        cond, _ = head_nats(model, held_f, held_t, held_a)
    calibrate_head(model, grids, args.calibration_windows, args.seed + 13)  # on windows of its own
    int_bits = held_out_integer_bits(model, grids, args.seed + 7)
    bits_alone = float(alone.sum() / n.sum()) / math.log(2)
    bits_cond = float(cond.sum() / n.sum()) / math.log(2)
    notes = {"cond_windows": args.windows, "cond_epochs": args.epochs, "cond_steps": steps,
             "cond_held_out_bits": f"{bits_alone:.4f} -> {bits_cond:.4f}"}
    with replacing(out / "model.safetensors") as tmp:
        model.save(tmp, {k: str(v) for k, v in notes.items()}, base=base_file, float16=("cond.",))
    summary = dict(held_out_float_bits_prior=round(bits_alone, 4), held_out_float_bits_with_head=round(bits_cond, 4),
                   held_out_integer_bits=int_bits, steps=steps, wall_s=round(time.time() - t0, 1))
    log.write(json.dumps(summary) + "\n")
    log.close()
    print(f"wrote {out / 'model.safetensors'} (base {base_file.name if base_file else 'none'}): on {args.held_out} "
          f"held-out training windows, float bits per index {bits_alone:.4f} -> {bits_cond:.4f} "
          f"({100 * (bits_cond / bits_alone - 1):+.2f} %); integer prior {int_bits['prior']:.4f} -> "
          f"{int_bits['with_head']:.4f} with the coding schedule; {time.time() - t0:.0f} s")


def calibrate_head(model: PQCodecModel, grids: list[torch.Tensor], windows: int = 512, seed: int = 0) -> PQCodecModel:
    """Calibrates `model.int_cond` from `model.cond` (in place) on `windows` windows of `grids`."""
    tokens, active, step_of = calibration_windows(grids, model, windows, seed)
    f = prior_features(model.prior.float().eval(), tokens, active, step_of)
    N = tokens.shape[1]
    ih = calibrate_conditional(model.cond, model.prior, model.int_prior, f.flatten(0, 1), tokens.flatten(0, 1),
                               active.repeat_interleave(N))
    model.int_cond.load_state_dict(ih.state_dict())
    return model


def conditional_untrained(model: PQCodecModel, seed: int = 0) -> PQCodecModel:
    """A model with a conditional head (its config's) of random weights, the output layers too (a
    trained head's are not zero either), calibrated on random token grids (in place): for tests,
    which need a head that changes the tables, not a good one. The integer prior must be calibrated."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in model.cond.out:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.5)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.5)
    grids = [torch.randint(0, c.codebook_size, (c.num_subvectors, 2 * c.window, 2 * c.window), generator=g)
             for _ in range(4)]
    return calibrate_head(model, grids, windows=64, seed=seed)


@torch.no_grad()
def held_out_integer_bits(model: PQCodecModel, grids, seed: int, windows: int = 128) -> dict:
    """Bits per index of the integer prior alone and with the integer head (its frequency tables, as
    the range coder sees them) on fresh windows with the coding schedule, every level."""
    c = model.config
    tokens, active, _ = calibration_windows(grids, model, windows, seed)
    step_of = torch.from_numpy(Schedule(c.window, DEFAULT_STEPS, c.schedule_seed).step_of())
    out = {}
    for name, head in (("prior", None), ("with_head", model.int_cond)):
        bits = n = 0.0
        for a in c.active_levels:
            sel = active == a
            if not sel.any():
                continue
            x = tokens[sel]
            valid = torch.ones(x.shape[:2], dtype=torch.bool)
            freq = model.int_prior.frequencies(x, a, step_of, valid, head)
            p = (freq.gather(-1, x[..., :a, None]) + 1) / 2 ** PROB_BITS
            bits += float(-torch.log2(p).sum())
            n += x.shape[0] * x.shape[1] * a
        out[name] = round(bits / n, 4)
    return out
