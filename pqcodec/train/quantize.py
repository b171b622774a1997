"""Make the integer prior the coder runs from a trained float prior: static scales calibrated on
the activations the float prior shows on training windows (train/calibrate.py, `calibrate`).
Run at the end of `pqcodec-train prior`, or alone:

    pqcodec-train quantize --init weights.safetensors --data ../shared/data/train --out coding.safetensors
"""
import math
from pathlib import Path

import torch

from ..coding.layout import PROB_BITS
from ..coding.schedule import Schedule
from ..codec import DEFAULT_STEPS
from ..model import PQCodecModel
from .calibrate import calibrate
from .common import save_model
from .windows import WindowSampler, image_tokens

def calibration_windows(grids: list[torch.Tensor], model: PQCodecModel, count: int, seed: int = 0):
    """`count` random windows of the token grids (B, N, M), ABSENT beyond each window's sub-quantizers
    in use (B,), and the step revealing each position (B, N): half with the codec's default
    schedule, half with the random orders and step counts of training."""
    c = model.config
    N = c.window ** 2
    sampler = WindowSampler(grids, c.window, seed)
    coding = torch.from_numpy(Schedule(c.window, DEFAULT_STEPS, c.schedule_seed).step_of())
    tokens, active, step_of = [], [], []
    for b in range(0, count, 32):
        n = min(32, count - b)
        t = sampler.batch(n)
        s, a = sampler.orders(n, N, c.active_levels)
        tokens.append(t)
        active.append(a)
        step_of.append(coding.expand(n, -1) if (b // 32) % 2 == 0 else s)
    tokens, active = torch.cat(tokens), torch.cat(active)
    in_use = torch.arange(c.num_subvectors) < active[:, None]
    return torch.where(in_use[:, None, :], tokens, model.prior.ABSENT), active, torch.cat(step_of)


def quantize(model: PQCodecModel, grids: list[torch.Tensor], windows: int = 1024, seed: int = 0) -> PQCodecModel:
    """Calibrates `model.int_prior` from `model.prior` on `windows` windows of `grids` (in place)."""
    tokens, active, step_of = calibration_windows(grids, model, windows, seed)
    model.int_prior.load_state_dict(calibrate(model.prior.cpu(), tokens, active, step_of).state_dict())
    return model


@torch.no_grad()
def prior_bits(model: PQCodecModel, windows: torch.Tensor, active: int, step_of: torch.Tensor,
               valid: torch.Tensor | None = None, integer: bool = False) -> tuple[float, int]:
    """(bits, indices): the ideal code length of windows (B, N, >= active) of true indices at the
    positions `valid` (B, N) (default all), their first `active` sub-quantizers revealed in the order
    `step_of` (N,), under the float prior (log-softmax in float64) or, `integer`, under the integer
    prior the coder runs (its frequency tables, as the range coder sees them)."""
    if not integer and model.prior is None:
        raise ValueError("the float prior's bits need the whole model (PQCodecModel.load, zoo.load_model); "
                         "a Codec's is coding-only")
    B, N = windows.shape[:2]
    valid = torch.ones(B, N, dtype=torch.bool) if valid is None else valid
    x = torch.full((B, N, model.config.num_subvectors), model.int_prior.ABSENT)
    x[..., :active] = windows[..., :active]
    truth = x[..., :active, None]
    conditional = model.config.conditional  # with the model's conditional head, as it codes
    if integer:
        freq = model.int_prior.frequencies(x, active, step_of, valid, model.int_cond if conditional else None)
        bits = -torch.log2((freq.gather(-1, truth) + 1) / 2 ** PROB_BITS)[..., 0]
    else:  # positions outside the image: never attended, as in coding
        logits, f = model.prior(x, torch.full((B,), active), step_of.expand(B, -1), valid, with_features=True)
        logits = logits[..., :active, :]
        if conditional:
            logits = logits + model.cond(f, x, active)
        logits = logits.double()
        bits = -logits.log_softmax(-1).gather(-1, truth)[..., 0] / math.log(2)
    return float(bits[valid].sum()), int(valid.sum()) * active


def rate_cost(model: PQCodecModel, grids: list[torch.Tensor], windows: int = 256, seed: int = 1) -> tuple[float, float]:
    """Bits per index of the float prior and of the integer prior on `windows` fresh windows of
    `grids` with the codec's default schedule, every level: what integer arithmetic costs."""
    tokens, active, _ = calibration_windows(grids, model, windows, seed)
    c = model.config
    step_of = torch.from_numpy(Schedule(c.window, DEFAULT_STEPS, c.schedule_seed).step_of())
    totals = [[0.0, 0], [0.0, 0]]  # float, integer: bits, indices
    for a in c.active_levels:
        if (active == a).any():
            for total, integer in zip(totals, (False, True)):
                bits, n = prior_bits(model, tokens[active == a], a, step_of, integer=integer)
                total[0] += bits
                total[1] += n
    return totals[0][0] / totals[0][1], totals[1][0] / totals[1][1]


def train(args):
    model = PQCodecModel.load(args.init)
    if not PQCodecModel.file_has_prior(args.init):
        raise ValueError(f"{args.init} has no prior to quantize")
    grids = image_tokens(model, args.data, model.config.window, progress=True)
    quantize(model, grids, args.windows, args.seed)
    save_model(model, Path(args.out), {"int_prior_windows": str(args.windows)})
    float_bits, int_bits = rate_cost(model, grids)
    print(f"wrote {args.out}: integer prior calibrated on {args.windows} windows of {args.data}; on 256 other "
          f"windows {int_bits:.4f} bits per index against the float prior's {float_bits:.4f} "
          f"({100 * (int_bits / float_bits - 1):+.3f} %)")


def quantize_untrained(model: PQCodecModel, seed: int = 0) -> PQCodecModel:
    """Calibrates `model.int_prior` on random token grids (in place): for the randomly initialised
    models of tests and fuzzing, which then code exactly, though not compactly."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    grids = [torch.randint(0, c.codebook_size, (c.num_subvectors, 2 * c.window, 2 * c.window), generator=g)
             for _ in range(4)]
    return quantize(model, grids, windows=64, seed=seed)
