#!/usr/bin/env python3
"""Learned baselines trained here, so that the comparison with pqcodec is fair: CompressAI's
bmshj2018_hyperprior (and mbt2018_mean) from scratch on the same training photos, the same 128 px
random crops with flips (pqcodec.data.CropSampler), by default as many crops per quality as
pqcodec's v2/v3 autoencoder saw (928,000; the budget issue 14 names). v4's lease then added 446,592
crops of 256 px (1.79 M crops of 128 px in pixels), so this default gives each hyperprior about a
third of the pixels the shipped model's autoencoder saw: a baseline that favours pqcodec, never the
reverse. Then each trained quality codes the test folder with CompressAI's real entropy coder (rate
from the bytes of its strings) and the curve is written in CompressAI's results layout for
`python -m eval.rd --extra`, named with the crops each quality saw.

CompressAI's recipe: loss = lambda * 255^2 * MSE + bpp (RateDistortionLoss), Adam, a separate Adam
(lr 1e-3) on the entropy bottleneck's quantiles (aux loss), lambda per quality from CompressAI; the
main Adam's learning rate follows pqcodec's own schedule by default (warm-up, cosine decay to 2 % of
the peak at the end of the budget), as pqcodec's autoencoder trained: a short budget at CompressAI's
constant rate (`--schedule constant`) would leave the baseline handicapped.
Runs need compressai (README: the eval environment), and use the GPU when there is one. Each quality
resumes from OUT/<arch>-q<Q>/ckpt.pt and, once trained, leaves its test results beside it
(eval-<tag>.json); the curve is drawn from every quality of OUT, so qualities may be trained by
separate processes at once (one --qualities each: what eval/baselines_lease.py does on a rented GPU machine,
whose checkpoints `--no-train` then evaluates here).

    python -m eval.train_baselines --data ../shared/data/train --test ../shared/data/kodak \
        --out runs/baselines --arch bmshj2018-hyperprior --qualities 1 2 3 4 5
"""
import argparse
import json
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .common import load_rgb_images, mean_curve, quality_row
from .result_paths import add_output_args, output_location
from pqcodec.train.common import load_checkpoint, lr_at, save_checkpoint

LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.18}
# the shipped pqcodec autoencoder's crops (docs/experiments.md): runs ae1 (6,500 steps) + ae2
# (3,500 steps) at batch 16, then ae3 (24,000 steps) at batch 32
PQCODEC_CROPS = (6500 + 3500) * 16 + 24000 * 32


def build(arch: str, quality: int):
    from compressai.zoo import bmshj2018_hyperprior, mbt2018_mean
    return {"bmshj2018-hyperprior": bmshj2018_hyperprior, "mbt2018-mean": mbt2018_mean}[arch](
        quality=quality, pretrained=False)


STOP = []  # set by SIGTERM while training: finish the step, save, stop (a lease's end, its parent's death)


def _stopping(deadline: float | None) -> bool:
    return bool(STOP) or (deadline is not None and time.time() >= deadline)


def load_weights(net, run: Path) -> dict | None:
    """run/ckpt.pt's weights into `net`; its state (None when there is none)."""
    state = load_checkpoint(run / "ckpt.pt")  # weights_only: tensors and plain values, never arbitrary objects
    if state:
        net.load_state_dict(state["net"])
    return state


def crops_of(state: dict | None, batch: int) -> int:
    """The crops a checkpoint's weights have seen (older checkpoints counted steps only)."""
    return state.get("crops", state["step"] * batch) if state else 0


def train_one(net, run: Path, args, quality: int, device: torch.device, deadline: float | None = None) -> int:
    """Trains `net` until it has seen args.crops crops (resuming from run/ckpt.pt) or until `deadline`
    (time.time()) or a SIGTERM, checked before every step; saves the checkpoint every 500 steps and at
    the end. Returns the crops seen.
    A checkpoint holding only weights (eval/baselines_lease.py join) resumes with fresh optimisers."""
    from compressai.losses import RateDistortionLoss
    from pqcodec.data import CropSampler
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main_params, lr=args.lr), torch.optim.Adam(aux_params, lr=1e-3)
    ckpt = run / "ckpt.pt"
    state = load_weights(net, run)
    step, wall, crops = (state["step"], state["wall"], crops_of(state, args.batch)) if state else (0, 0.0, 0)
    if crops >= args.crops:
        return crops
    if state and "opt" in state:
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
    elif state:
        print(f"{ckpt}: weights only; training goes on with fresh optimisers")
    criterion = RateDistortionLoss(lmbda=LAMBDAS[quality])
    data = CropSampler(args.data, args.crop, seed=quality * 1000 + step)
    net.train()
    log = open(run / "log.jsonl", "a")
    bar = tqdm(total=args.crops, initial=crops, desc=f"{run.name} crops", unit_scale=True)
    t0 = time.time() - wall

    def save():
        save_checkpoint(ckpt, dict(net=net.state_dict(), opt=opt.state_dict(), aux_opt=aux_opt.state_dict(),
                                   step=step, crops=crops, wall=time.time() - t0))
    saved = step
    total = -(-args.crops // args.batch)  # steps of the whole budget: the cosine's length
    while crops < args.crops and not _stopping(deadline):
        if args.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, args.lr, args.warmup)
        x = data.batch(min(args.batch, args.crops - crops), device)
        out = net(x)
        loss = criterion(out, x)
        opt.zero_grad()
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux_opt.zero_grad()
        net.aux_loss().backward()
        aux_opt.step()
        step, crops = step + 1, crops + len(x)
        bar.update(len(x))
        if step % 50 == 0 or crops >= args.crops or _stopping(deadline):
            log.write(json.dumps(dict(step=step, crops=crops, lr=opt.param_groups[0]["lr"], loss=loss["loss"].item(),
                                      bpp=loss["bpp_loss"].item(),
                                      mse=loss["mse_loss"].item(), wall_s=round(time.time() - t0, 1))) + "\n")
            log.flush()
        if step % 500 == 0:
            save()
            saved = step
    if step > saved:
        save()
    if crops < args.crops:
        print(f"{run.name}: stopped ({'SIGTERM' if STOP else 'the deadline'}) at {crops} of {args.crops} crops")
    bar.close()
    log.close()
    return crops


@torch.inference_mode()
def evaluate(net, images, device: torch.device) -> list[dict]:
    """Real bitstreams: compress, decompress, rate from the bytes of every string."""
    net.eval()
    net.update(force=True)
    rows = []
    for name, rgb in tqdm(images, desc="evaluate", leave=False):
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
        H, W = x.shape[2:]
        xp = F.pad(x, (0, -W % 64, 0, -H % 64), mode="replicate")
        enc = net.compress(xp)
        n = sum(len(s) for strings in enc["strings"] for s in strings)
        rec = net.decompress(enc["strings"], enc["shape"])["x_hat"][0, :, :H, :W].clamp(0, 1)
        rec = rec.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        rows.append(dict(quality_row(n, rgb, rec), image=name))
    return rows


def curve_name(arch: str, crops: list[int]) -> str:
    """The curve's label says what its qualities were trained on."""
    seen = f"{crops[0]:,}" if min(crops) == max(crops) else f"{min(crops):,} to {max(crops):,}"
    return f"{arch} (trained here, {seen} crops per quality)"


def main(argv=None):
    started = time.time()
    ap = argparse.ArgumentParser(prog="python -m eval.train_baselines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="training photos (needed unless --no-train)")
    ap.add_argument("--test", help="test images (e.g. Kodak; needed unless --train-only)")
    ap.add_argument("--out", required=True, help="run folder: one subfolder per trained quality")
    ap.add_argument("--arch", default="bmshj2018-hyperprior", choices=["bmshj2018-hyperprior", "mbt2018-mean"])
    ap.add_argument("--qualities", type=int, nargs="+", choices=sorted(LAMBDAS),
                    help="default: 1 to 5; with --no-train, every quality OUT has a checkpoint of")
    ap.add_argument("--crops", type=int, default=PQCODEC_CROPS, help="training crops per quality")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                    help="cosine: pqcodec's own (linear warm-up, cosine to 2 %% of the peak over the budget's "
                         "steps); constant: CompressAI's example")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up steps of the cosine schedule")
    ap.add_argument("--minutes", type=float, help="stop training (and save) this many minutes after the start")
    ap.add_argument("--until", type=float, help="stop training (and save) at this time (seconds since the epoch; "
                    "eval/baselines_lease.py gives every quality's process the same)")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--train-only", action="store_true", help="train, evaluate nothing (a GPU lease)")
    mode.add_argument("--no-train", action="store_true",
                      help="evaluate the checkpoints as they are, whatever crops they have seen")
    add_output_args(ap, "--test", out_flag="--results")
    args = ap.parse_args(argv)
    if not args.no_train and not args.data:
        ap.error("--data is needed to train (or give --no-train)")
    if not args.train_only and not args.test:
        ap.error("--test is needed to evaluate (or give --train-only)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.qualities is None:
        found = sorted(int(p.parent.name.rsplit("-q", 1)[1]) for p in Path(args.out).glob(f"{args.arch}-q*/ckpt.pt"))
        args.qualities = found if args.no_train else [1, 2, 3, 4, 5]
        if not found and args.no_train:
            ap.error(f"{args.out}: no {args.arch}-q<Q>/ckpt.pt to evaluate")
    deadline = min([t for t in (args.until, None if args.minutes is None else started + 60 * args.minutes)
                    if t is not None], default=None)
    if not args.no_train:
        signal.signal(signal.SIGTERM, lambda *_: STOP.append(True))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    if not args.train_only:
        results, args.tag = output_location(args.results, args.tag, args.test)
        images = load_rgb_images(args.test)
    for q in args.qualities:
        run = Path(args.out) / f"{args.arch}-q{q}"
        run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(q)
        net = build(args.arch, q).to(device)
        if args.no_train:
            crops = crops_of(load_weights(net, run), args.batch)
        else:
            crops = train_one(net, run, args, q, device, deadline)
        if args.train_only:
            continue
        if crops == 0:
            raise SystemExit(f"{run}: no checkpoint to evaluate")
        result = run / f"eval-{args.tag}.json"
        if result.is_file() and json.loads(result.read_text())["crops"] == crops:
            continue
        rows = evaluate(net, images, device)
        result.write_text(json.dumps(dict(crops=crops, quality=q, device=str(device), rows=rows), indent=1))
    if args.train_only:
        return
    done = sorted((json.loads(p.read_text()) for p in Path(args.out).glob(f"{args.arch}-q*/eval-{args.tag}.json")),
                  key=lambda r: r["quality"])
    points = [(r["quality"], r["rows"]) for r in done]
    curve = mean_curve(curve_name(args.arch, [r["crops"] for r in done]), points)
    curve["crops"] = {str(r["quality"]): r["crops"] for r in done}
    curve["per_image"] = {str(q): rows for q, rows in points}
    path = results / f"{args.tag}-{args.arch}-trained.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(curve, indent=1))
    print(json.dumps(curve["results"], indent=1))
    print(f"written {path} ({len(points)} qualities); add it to the RD plot with: "
          f"python -m eval.rd {args.test} --extra {path}")


if __name__ == "__main__":
    main()
