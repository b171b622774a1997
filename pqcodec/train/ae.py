"""Train the autoencoder and product quantizer (stage 1): MSE + commitment, EMA codebooks with
dead-code restarts, nested sub-quantizer dropout so one model serves rates 1..M."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import CropSampler
from ..model import ModelConfig, PQCodecModel
from .common import Run, TimeBudget, lr_at


class AutoencoderStage(nn.Module):
    """The stage-1 forward pass, as one module so DistributedDataParallel can wrap it."""

    def __init__(self, model: PQCodecModel):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = model.encoder, model.quantizer, model.decoder

    def forward(self, x, active):
        z = self.encoder(x)
        zq, idx, commit = self.quantizer(z, active)
        return self.decoder(zq), z, commit


def psnr(mse: torch.Tensor) -> float:
    return float(-10 * torch.log10(mse.detach().clamp_min(1e-10)))


def train(args):
    run = Run(args.out, "ae")
    device = run.device
    model = run.resumed_model()
    levels = tuple(int(v) for v in args.levels.split(",")) if args.levels else ()
    if model is None and args.init:
        model = PQCodecModel.load(args.init, without_prior=not PQCodecModel.file_has_prior(args.init))
        M = model.config.num_subvectors
        if (args.subvectors and args.subvectors != M) or levels:
            if args.subvectors and args.subvectors < M:
                raise ValueError(f"--init has {M} sub-quantizers: it can grow, not shrink")
            model = model.grown(args.subvectors or M, levels)
        if args.padding and args.padding != model.config.padding:
            model = model.with_padding(args.padding)
    elif model is None:
        model = PQCodecModel(ModelConfig(
            channels=args.channels, num_subvectors=args.subvectors or 4, codebook_size=args.codebook_size,
            subvector_dim=args.subvector_dim, window=args.window, prior_dim=args.prior_dim,
            prior_layers=args.prior_layers, prior_heads=args.prior_heads, levels=levels,
            padding=args.padding or "zeros"))
    model.to(device).train()
    stage = AutoencoderStage(model)
    params = list(stage.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    step = run.resume_optimizer(opt)
    torch.manual_seed(1234 + run.rank + step)
    if run.world > 1:
        stage = nn.parallel.DistributedDataParallel(stage, broadcast_buffers=False)
    data = CropSampler(args.data, args.crop, seed=run.rank * 100003 + step, progress=run.is_main,
                       synthetic=args.synthetic)
    level_actives = torch.tensor(model.config.active_levels, device=device)
    first_step = step
    budget = TimeBudget(args.minutes, run.started, step, args.steps)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext())
    bar = tqdm(total=args.steps, initial=step, disable=not run.is_main, desc="autoencoder", dynamic_ncols=True)
    while step < budget.last_step(step) and not budget.expired():
        bar.total = budget.steps
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.steps, args.lr, args.warmup)
        x = data.batch(args.batch, device)
        active = level_actives[torch.randint(0, len(level_actives), (x.shape[0],), device=device)]
        with autocast:
            x_hat, z, commit = stage(x, active)
        mse = F.mse_loss(x_hat.float(), x)
        loss = mse + args.commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        # also on a run's first step: a grown model's new codebooks start dead
        if step % args.restart_every == 0 or step == first_step + 1:
            model.quantizer.restart_dead_codes(z.detach(), args.dead_threshold)
        if run.is_main:
            bar.update(1)
            if step % args.log_every == 0 or step == budget.steps:
                use = model.quantizer.usage()
                per_level = {f"psnr_m{m}": round(psnr(((x_hat.float() - x) ** 2)[active == m].mean()), 2)
                             for m in level_actives.tolist() if (active == m).any()}
                bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr(mse):.2f}", usage=f"{use.min():.0f}")
                run.log.log(step=step, loss=loss.item(), psnr=round(psnr(mse), 3), commit=commit.item(),
                            lr=opt.param_groups[0]["lr"], usage_min=round(float(use.min()), 1),
                            total_wall_s=round(run.total_wall_s(), 1), **per_level)
            if step % args.save_every == 0:
                run.save(model, opt, step, "ae")
    if run.is_main and run.saved_step != step:  # the last step, wherever the run stopped
        run.save(model, opt, step, "ae")
    bar.close()
