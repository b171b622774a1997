#!/usr/bin/env python3
"""Learned baselines trained here, so that the comparison with pqcodec is fair: CompressAI's
bmshj2018_hyperprior (and mbt2018_mean) from scratch on the same training photos, the same 128 px
random crops with flips (pqcodec.data.CropSampler), and by default the same number of crops seen as
the shipped pqcodec model's autoencoder. Then each trained quality codes the test folder with
CompressAI's real entropy coder (rate from the bytes of its strings) and the curve is written in
CompressAI's results layout for `eval/rd.py --extra`.

CompressAI's recipe: loss = lambda * 255^2 * MSE + bpp (RateDistortionLoss), Adam lr 1e-4, a separate
Adam (lr 1e-3) on the entropy bottleneck's quantiles (aux loss), lambda per quality from CompressAI.
Runs need compressai (README: the eval environment), and use the GPU when there is one. Each quality
resumes from OUT/<arch>-q<Q>/ckpt.pt and, once trained, leaves its test results beside it
(eval-<tag>.json); the curve is drawn from every quality of OUT trained on the same number of crops,
so qualities may be trained by separate processes at once (one --qualities each).

    python eval/train_baselines.py --data ../shared/data/train --test ../shared/data/kodak \
        --out runs/baselines --arch bmshj2018-hyperprior --qualities 1 2 3 4 5
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import load_rgb_images, mean_curve, quality_row
from result_paths import add_output_args, output_location
from pqcodec.train.common import load_checkpoint, save_checkpoint

LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.18}
# the shipped pqcodec autoencoder's crops (docs/experiments.md): runs ae1 (6,500 steps) + ae2
# (3,500 steps) at batch 16, then ae3 (24,000 steps) at batch 32
PQCODEC_CROPS = (6500 + 3500) * 16 + 24000 * 32


def build(arch: str, quality: int):
    from compressai.zoo import bmshj2018_hyperprior, mbt2018_mean
    return {"bmshj2018-hyperprior": bmshj2018_hyperprior, "mbt2018-mean": mbt2018_mean}[arch](
        quality=quality, pretrained=False)


def train_one(net, run: Path, args, quality: int, device: torch.device):
    from compressai.losses import RateDistortionLoss
    from pqcodec.data import CropSampler
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main_params, lr=args.lr), torch.optim.Adam(aux_params, lr=1e-3)
    ckpt = run / "ckpt.pt"
    step, wall = 0, 0.0
    state = load_checkpoint(ckpt)  # weights_only: tensors and plain values, never arbitrary objects
    if state:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, wall = state["step"], state["wall"]
    steps = args.crops // args.batch
    if step >= steps:
        return
    criterion = RateDistortionLoss(lmbda=LAMBDAS[quality])
    data = CropSampler(args.data, args.crop, seed=quality * 1000 + step)
    net.train()
    log = open(run / "log.jsonl", "a")
    bar = tqdm(total=steps, initial=step, desc=f"{run.name}")
    t0 = time.time() - wall
    while step < steps:
        x = data.batch(args.batch, device)
        out = net(x)
        loss = criterion(out, x)
        opt.zero_grad()
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux_opt.zero_grad()
        net.aux_loss().backward()
        aux_opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0 or step == steps:
            log.write(json.dumps(dict(step=step, loss=loss["loss"].item(), bpp=loss["bpp_loss"].item(),
                                      mse=loss["mse_loss"].item(), wall_s=round(time.time() - t0, 1))) + "\n")
            log.flush()
        if step % 500 == 0 or step == steps:
            save_checkpoint(ckpt, dict(net=net.state_dict(), opt=opt.state_dict(), aux_opt=aux_opt.state_dict(),
                                       step=step, wall=time.time() - t0))
    bar.close()


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training photos")
    ap.add_argument("--test", required=True, help="test images (e.g. Kodak)")
    ap.add_argument("--out", required=True, help="run folder: one subfolder per trained quality")
    ap.add_argument("--arch", default="bmshj2018-hyperprior", choices=["bmshj2018-hyperprior", "mbt2018-mean"])
    ap.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--crops", type=int, default=PQCODEC_CROPS, help="training crops per quality")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    add_output_args(ap, "--test", out_flag="--results")
    args = ap.parse_args()
    results, args.tag = output_location(args.results, args.tag, args.test)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    images = load_rgb_images(args.test)
    for q in args.qualities:
        run = Path(args.out) / f"{args.arch}-q{q}"
        run.mkdir(parents=True, exist_ok=True)
        result = run / f"eval-{args.tag}.json"
        if result.is_file() and json.loads(result.read_text())["crops"] == args.crops:
            continue
        torch.manual_seed(q)
        net = build(args.arch, q).to(device)
        train_one(net, run, args, q, device)
        rows = evaluate(net, images, device)
        result.write_text(json.dumps(dict(crops=args.crops, quality=q, device=str(device), rows=rows), indent=1))
    done = sorted((json.loads(p.read_text()) for p in Path(args.out).glob(f"{args.arch}-q*/eval-{args.tag}.json")),
                  key=lambda r: r["quality"])
    points = [(r["quality"], r["rows"]) for r in done if r["crops"] == args.crops]
    curve = mean_curve(f"{args.arch} (trained here, {args.crops} crops)", points)
    curve["per_image"] = {str(q): rows for q, rows in points}
    path = results / f"{args.tag}-{args.arch}-trained.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(curve, indent=1))
    print(json.dumps(curve["results"], indent=1))
    print(f"written {path} ({len(points)} qualities); add it to the RD plot with: "
          f"python eval/rd.py {args.test} --extra {path}")


if __name__ == "__main__":
    main()
