"""Train the MIM prior (stage 2) on the tokens of a trained autoencoder.

The tokens of every training image are computed once (float32, as the codec computes them), then
each step draws random windows, a random reveal order split into steps by the coding schedule's
cosine curve, and a random number of sub-quantizers in use (the rate levels), and minimises the
cross-entropy of every index given the earlier steps, reported in bits per index.
"""
import contextlib
import math

import torch
from torch import nn
from tqdm import tqdm

from ..model import PQCodecModel
from .common import Run, TimeBudget, lr_at
from .quantize import quantize
from .windows import WindowSampler, image_tokens


def prior_of(path, model: PQCodecModel) -> nn.Module:
    """The prior of the weights file `path`, checked to fit `model`'s tokens and prior shape."""
    other = PQCodecModel.load(path)
    fields = ("num_subvectors", "codebook_size", "window", "prior_dim", "prior_layers", "prior_heads")
    differ = [f for f in fields if getattr(other.config, f) != getattr(model.config, f)]
    if differ:
        raise ValueError(f"--warm {path}: its prior does not fit --init's model ({', '.join(differ)} differ)")
    return other.prior


class PriorStage(nn.Module):
    """The stage-2 loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior

    def forward(self, tokens, active, step_of, valid):
        return self.prior.loss(tokens, active, step_of, valid)


def train(args):
    run = Run(args.out, "prior")
    device = run.device
    model = run.resumed_model()
    if model is None:
        model = PQCodecModel.load(args.init, without_prior=args.warm is not True)
        if isinstance(args.warm, str):
            model.prior.load_state_dict(prior_of(args.warm, model).state_dict())
    model.eval()
    c = model.config
    grids = image_tokens(model, args.data, c.window, progress=run.is_main, device=device)
    prior = model.prior.to(device).train()
    opt = torch.optim.AdamW(prior.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step = run.resume_optimizer(opt)
    budget = TimeBudget(args.minutes, run.started, step, args.steps)
    stage = PriorStage(prior)
    if run.world > 1:
        stage = nn.parallel.DistributedDataParallel(stage)
    sampler = WindowSampler(grids, c.window, seed=run.rank * 100003 + step, mask_index=prior.MASK)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext())
    bar = tqdm(total=args.steps, initial=step, disable=not run.is_main, desc="prior", dynamic_ncols=True)
    ema_bits = None
    while step < budget.last_step(step) and not budget.expired():
        bar.total = budget.steps
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.steps, args.lr, args.warmup)
        tokens, valid = sampler.edge_batch(args.batch, args.edge_windows)
        step_of, active = sampler.orders(args.batch, tokens.shape[1], c.active_levels)
        with autocast:
            bits = stage(tokens.to(device), active.to(device), step_of.to(device), valid.to(device))
        opt.zero_grad(set_to_none=True)
        bits.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        step += 1
        ema_bits = bits.item() if ema_bits is None else 0.98 * ema_bits + 0.02 * bits.item()
        if run.is_main:
            bar.update(1)
            if step % args.log_every == 0 or step == budget.steps:
                bar.set_postfix(bits_per_index=f"{ema_bits:.3f}", uniform=f"{math.log2(c.codebook_size):.0f}")
                run.log.log(step=step, bits_per_index=round(bits.item(), 4), bits_ema=round(ema_bits, 4),
                            lr=opt.param_groups[0]["lr"], total_wall_s=round(run.total_wall_s(), 1))
            if step % args.save_every == 0:
                run.save(model, opt, step, "prior")
    bar.close()
    if run.is_main:  # the last step, wherever the run stopped, with the integer prior that codes
        try:
            quantize(model.cpu(), grids)
        finally:  # should calibration refuse the weights, the trained float prior is still saved
            run.save(model, opt, step, "prior")
