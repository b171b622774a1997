"""The perceptual decoder (issue 13): fine-tune only the decoder of a trained model with an adversarial
loss, so that the same .bin files decode into sharper, more natural images.

Frozen: encoder, quantizer, priors. The tokens of each crop come from the frozen encoder and the
codec's own float64 codeword search (`ProductQuantizer.encode`, autocast off), so the decoder learns
from exactly the tokens a file carries; each crop gets a random level of the model's ladder, so one
decoder serves every level.

Losses (per step, after `--adv-warmup` distortion-only steps):
  discriminator   hinge: mean relu(1 - D(x)) + mean relu(1 + D(x_hat)), summed over scales;
                  D is a conditional multi-scale PatchGAN (nets/discriminator.py) that sees the
                  quantized latent beside the image, as in HiFiC
  decoder         rec + adv_weight * lambda * (adv + fm_weight * fm), where
                  rec = mse_weight * MSE [+ msssim_weight * (1 - MS-SSIM)] [+ lpips_weight * LPIPS],
                  adv = -mean D(x_hat) (hinge generator), fm = L1 between D's features of x_hat
                  and of x (pix2pixHD's feature matching), and lambda = |grad rec| / |grad gan| on
                  the decoder's last layer (VQGAN's adaptive weight): the adversarial pull is
                  `adv_weight` times the distortion pull whatever their raw scales.
During the warm-up the discriminator trains against the MSE decoder's outputs while the decoder
sees the distortion term alone, so the adversarial term starts against a discriminator that
already tells blur from texture.

Writes OUT/perceptual.ckpt (resume: rerun the same command), OUT/log.jsonl, OUT/decoder.safetensors
(float16, pqcodec/decoders.py format) at every save, and OUT/samples/step*.png (original | MSE
decoder | perceptual decoder, one row per level) to look at.
"""
import contextlib
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..data import CropSampler
from ..decoders import save_decoder
from ..model import PQCodecModel
from ..nets.discriminator import MultiScaleDiscriminator
from ..files import sha256_of
from .common import Run, TimeBudget, lr_at, save_checkpoint


MSSSIM_MIN_CROP = (7 - 1) * 2 ** 4  # pytorch_msssim's five scales of a 7-px window need a side above this


def hinge_d_loss(real_out, fake_out) -> torch.Tensor:
    return sum(F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean()
               for (r, _), (f, _) in zip(real_out, fake_out))


def generator_losses(fake_out, real_out) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge generator loss -mean D(x_hat), feature matching: mean L1 between D's features of x_hat
    and of x (detached), averaged over layers and scales)."""
    adv = sum(-f.float().mean() for f, _ in fake_out)
    pairs = [(a, b) for (_, fa), (_, ra) in zip(fake_out, real_out) for a, b in zip(fa, ra)]
    fm = sum(F.l1_loss(a.float(), b.detach().float()) for a, b in pairs) / len(pairs)
    return adv, fm


def adaptive_weight(rec: torch.Tensor, gan: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's lambda = |d rec / d W| / |d gan / d W| on the decoder's last layer W (detached)."""
    g_rec = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0, 1e4).detach()


def load_lpips(alexnet_weights: str):
    """LPIPS-Alex (lpips package; its linear layers ship in its wheel) with the torchvision AlexNet
    backbone from a local file: never downloaded. A ValueError (one line) when it cannot load."""
    path = Path(alexnet_weights)
    if not path.is_file():
        raise ValueError(f"{path}: no such AlexNet weights file (--lpips-alexnet)")
    try:
        import lpips
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        alex = torch.load(path, map_location="cpu", weights_only=True)
        names = list(net.net.state_dict())  # slice{k}.{i}.* hold torchvision's features.{i}.*
        net.net.load_state_dict({n: alex["features." + n.split(".", 1)[1]] for n in names}, strict=True)
    except Exception as e:
        raise ValueError(f"cannot load LPIPS with AlexNet weights {path}: {' '.join(str(e).split())[:200]}") from None
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8"""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def write_samples(path: Path, model: PQCodecModel, mse_decoder, decoder, crops: torch.Tensor):
    """One row per level: original | MSE decoder | perceptual decoder, for each fixed crop."""
    with torch.autocast(crops.device.type, enabled=False):
        tokens = model.quantizer.encode(model.encoder(crops))
        rows = []
        for level in model.config.active_levels:
            y = model.quantizer.decode(tokens, level)
            mse, per = mse_decoder(y).clamp(0, 1), decoder(y).clamp(0, 1)
            rows.append(np.concatenate([np.concatenate([_to_uint8(a), _to_uint8(b), _to_uint8(c)], 1)
                                        for a, b, c in zip(crops, mse, per)], 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def train(args):
    """Runs the fine-tune; returns the model (its encoder, quantizer and priors untouched, its
    decoder the fine-tuned one) and the path of the decoder file written."""
    init = Path(args.init)
    if not init.is_file():
        raise FileNotFoundError(f"{init}: no such weights file (--init)")
    run = Run(args.out, "perceptual")
    device = run.device
    if run.world > 1:
        raise ValueError("the perceptual fine-tune runs in one process (no torchrun)")
    model = PQCodecModel.load(init, without_prior=not PQCodecModel.file_has_prior(init)).to(device).eval()
    base_sha = model.base_sha256 or sha256_of(init)  # the file holding the autoencoder (a head file's base)
    for p in model.parameters():
        p.requires_grad_(False)
    mse_decoder = model.decoder
    decoder = copy.deepcopy(mse_decoder).requires_grad_(True)  # the same architecture (padding too) and weights
    model.decoder = decoder  # the model object carries the fine-tuned decoder; mse_decoder stays frozen
    disc = MultiScaleDiscriminator(model.quantizer.dim, args.cond_channels, args.disc_width, args.scales).to(device)
    decoder.train()
    disc.train()
    opt_g = torch.optim.Adam(decoder.parameters(), lr=args.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.d_lr, betas=(0.5, 0.9))
    step = 0
    if run.checkpoint is not None:
        ck = run.checkpoint
        if ck.get("base_sha256") != base_sha:
            raise ValueError(f"{run.ckpt_path} fine-tunes another model than {init}")
        decoder.load_state_dict(ck["decoder"])
        disc.load_state_dict(ck["disc"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        step, run.wall_before = ck["step"], ck["wall_s"]
    lpips_net = load_lpips(args.lpips_alexnet).to(device) if args.lpips_alexnet else None
    if args.msssim_weight:
        if args.crop <= MSSSIM_MIN_CROP:
            raise ValueError(f"--msssim-weight needs --crop above {MSSSIM_MIN_CROP} (five scales of a 7-px window)")
        from pytorch_msssim import ms_ssim
    torch.manual_seed(4321 + step)
    data = CropSampler(args.data, args.crop, seed=7 + step, progress=run.is_main)
    sample_crops = CropSampler(args.data, args.crop, seed=99, progress=False).batch(4, device)  # fixed, for samples
    levels = torch.tensor(model.config.active_levels, device=device)
    last_layer = decoder.net[-1].weight
    budget = TimeBudget(args.minutes, run.started, step, args.steps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    out_path = run.out / "decoder.safetensors"

    def save():
        state = {"decoder": decoder.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "step": step, "wall_s": run.total_wall_s(), "base_sha256": base_sha}
        save_checkpoint(run.ckpt_path, state)
        tmp = out_path.with_suffix(".tmp")
        save_decoder(decoder, tmp, "perceptual", base_sha, model.config.to_json(),
                     notes={"steps": step, "adv_warmup": args.adv_warmup, "adv_weight": args.adv_weight,
                            "fm_weight": args.fm_weight, "mse_weight": args.mse_weight,
                            "msssim_weight": args.msssim_weight, "lpips_weight": args.lpips_weight if lpips_net else 0,
                            "crop": args.crop, "batch": args.batch, "init": init.name})
        tmp.replace(out_path)
        write_samples(run.out / "samples" / f"step{step:06d}.png", model, mse_decoder, decoder, sample_crops)
        run.saved_step = step

    bar = tqdm(total=args.steps, initial=step, disable=not run.is_main, desc="perceptual", dynamic_ncols=True)
    t_last = time.time()
    while step < budget.last_step(step) and not budget.expired():
        bar.total = budget.steps
        for opt, peak in ((opt_g, args.lr), (opt_d, args.d_lr)):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, budget.steps, peak, args.warmup, floor=0.1)
        x = data.batch(args.batch, device)                                    # (B, 3, c, c)
        active = levels[torch.randint(0, len(levels), (x.shape[0],), device=device)]
        with torch.no_grad(), torch.autocast(device.type, enabled=False):     # coding's tokens, float64 search
            tokens = model.quantizer.encode(model.encoder(x))                 # (B, M, c/8, c/8)
            y = model.quantizer.decode(tokens, active)                          # (B, D, c/8, c/8)
        with autocast:
            x_hat = decoder(y)
        x_hat = x_hat.float()

        # discriminator steps: real crops against the decoder's (detached) outputs; D costs ~10 % of
        # the decoder's step at these sizes, so a few D updates per decoder update are cheap
        for _ in range(args.d_steps):
            with autocast:
                real_out = disc(x, y)
                fake_out = disc(x_hat.detach(), y)
            d_loss = hinge_d_loss(real_out, fake_out)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

        # decoder step
        mse = F.mse_loss(x_hat, x)
        rec = args.mse_weight * mse
        log = {}
        if args.msssim_weight:
            ms = ms_ssim(x_hat.clamp(0, 1), x, data_range=1.0, win_size=7)
            rec = rec + args.msssim_weight * (1 - ms)
            log["ms_ssim"] = round(ms.item(), 4)
        if lpips_net is not None:
            lp = lpips_net(x_hat * 2 - 1, x * 2 - 1).mean()
            rec = rec + args.lpips_weight * lp
            log["lpips"] = round(lp.item(), 4)
        adversarial = step >= args.adv_warmup
        if adversarial:
            with autocast:
                fake_out = disc(x_hat, y)
            adv, fm = generator_losses(fake_out, [(r.detach(), [f.detach() for f in fs]) for r, fs in real_out])
            gan = adv + args.fm_weight * fm
            lam = adaptive_weight(rec, gan, last_layer)
            loss = rec + args.adv_weight * lam * gan
            log.update(adv=round(adv.item(), 4), fm=round(fm.item(), 4), lam=round(lam.item(), 4))
        else:
            loss = rec
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt_g.step()
        step += 1
        if run.is_main:
            bar.update(1)
            if step % args.log_every == 0 or step == budget.steps:
                psnr = float(-10 * torch.log10(mse.detach().clamp_min(1e-10)))
                bar.set_postfix(psnr=f"{psnr:.2f}", d=f"{d_loss.item():.3f}")
                run.log.log(step=step, psnr=round(psnr, 3), d_loss=round(d_loss.item(), 4),
                            d_real=round(sum(r.float().mean().item() for r, _ in real_out), 3),
                            d_fake=round(sum(f.float().mean().item() for f, _ in fake_out), 3),
                            adversarial=adversarial, lr=opt_g.param_groups[0]["lr"],
                            s_per_step=round((time.time() - t_last) / args.log_every, 3),
                            total_wall_s=round(run.total_wall_s(), 1), **log)
                t_last = time.time()
            if step % args.save_every == 0:
                save()
    if run.is_main and run.saved_step != step:  # the last step, wherever the run stopped
        save()
    bar.close()
    return model, out_path
