#!/usr/bin/env python3
"""Rate-distortion on a folder of images: every pqcodec quality level, Pillow's JPEG, WebP, AVIF and
JPEG 2000 (quality swept), and any learned-baseline curves given with --extra, on the same images.
Rate from file bytes; RGB PSNR and MS-SSIM, and LPIPS when given its weights (--alexnet-weights).
Writes to --out (default ./results; the committed results only with --out docs/results), TAG being
the folder's name unless --tag says otherwise (eval/result_paths.py):
  TAG-<codec>.json    CompressAI's results layout, one file per codec (pqcodec's with per-image rows)
  TAG-rd.png          bpp vs PSNR and bpp vs MS-SSIM (dB), published anchors drawn dashed
  TAG-bdrate.md       BD-rate of every codec against every anchor, PSNR and MS-SSIM, and each pqcodec
                      level against the classic codecs at its own rate
With --max-bytes N ... or --bpp B ..., also rate control's curve (one point per size asked for,
the means over the images of real files), drawn beside the levels' and in the BD-rate tables as
"pqcodec --max-bytes", plus TAG-pqcodec-ratecontrol.json.
Per-image results are cached in eval/.cache (keyed by codec, settings, code and pixels): a rerun on
the same inputs only redraws.

    python -m eval.rd ../shared/data/kodak --out docs/results    # the committed Kodak results
    python -m eval.rd my_photos/                                 # results/my_photos-*
    python -m eval.rd ../shared/data/kodak --out docs/results --classic-from docs/results \
        --max-bytes 500 1000 2000 5000 10000 20000 40000          # the λ-continuous curve too
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from .baselines import SWEEPS, psnr_at_rate, sweep
from .bdrate import bd_rate_of
from .common import CACHE, ResultCache, enable_lpips, mean_curve
from .published import PUBLISHED_KODAK
from .result_paths import add_output_args
from . import pqcodec_eval
from pqcodec import DEFAULT_STEPS
from pqcodec.metrics import ms_ssim_db
from pqcodec.ratecontrol import RD_DISTORTION


def pqcodec_curve(codec, identity, images, levels, steps, cache) -> dict:
    points = [(q, pqcodec_eval.run_level(codec, identity, images, q, steps, cache)) for q in levels]
    curve = mean_curve("pqcodec", points)
    curve["per_image"] = {str(q): rows for q, rows in points}
    curve["steps"] = steps
    return curve


def size_curve(codec, identity, images, sizes: list[tuple[str, float]], steps, cache, distortion) -> dict:
    points = [(f"{kind} {value:g}", pqcodec_eval.run_size(codec, identity, images, (kind, value), steps, cache,
                                                          distortion)) for kind, value in sizes]
    curve = mean_curve(f"pqcodec --{sizes[0][0].replace('_', '-')}", points)
    curve["per_image"] = {label: rows for label, rows in points}
    return curve


def size_table(curve: dict, levels: dict) -> str:
    """Each size asked for: the largest file, the mean rate and quality, how it was made; and the
    curve's BD-rate against the levels' over the rates both span."""
    lines = ["| asked | largest file (bytes) | mean bpp | PSNR (dB) | MS-SSIM (dB) | extreme mode | encodes (mean) | encode s (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    res = curve["results"]
    for i, (label, rows) in enumerate(curve["per_image"].items()):
        over = [r for r in rows if r["bytes"] > r["max_bytes"]]
        lines.append(f"| {label} | {max(r['bytes'] for r in rows)}" + (f" ({len(over)} OVER)" if over else "")
                     + f" | {res['bpp'][i]:.4f} | {res['psnr-rgb'][i]:.2f} | {ms_ssim_db(res['ms-ssim'][i]):.2f} | "
                     f"{sum(r['generated'] for r in rows)}/{len(rows)} | {np.mean([r['encodes'] for r in rows]):.1f} | "
                     f"{np.mean([r['encode_s'] for r in rows]):.1f} |")
    bd = {m: bd_rate_of(levels, curve, m) for m in ("psnr-rgb", "ms-ssim")}
    lines += ["", f"BD-rate of {curve['name']} against the five levels' curve (over the rates both span; negative: "
              f"fewer bits): RGB PSNR {bd['psnr-rgb']:+.1f} %, MS-SSIM {bd['ms-ssim']:+.1f} %."
              if None not in bd.values() else "", ""]
    return "\n".join(lines)


def bd_tables(tests: list[dict], anchors: list[dict]) -> str:
    lines = []
    for metric, label in (("psnr-rgb", "RGB PSNR"), ("ms-ssim", "MS-SSIM")):
        lines += [f"BD-rate (%) on {label}, row against column (negative: the row needs fewer bits):", "",
                  "| codec | " + " | ".join(a["name"] for a in anchors) + " |",
                  "|---|" + "---|" * len(anchors)]
        for t in tests:
            cells = []
            for a in anchors:
                v = None if a is t else bd_rate_of(a, t, metric)
                cells.append("—" if v is None else f"{v:+.1f}")
            lines.append(f"| {t['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def level_table(ours: dict, classic: list[dict]) -> str:
    head = "| level | bpp | PSNR (dB) | MS-SSIM (dB) | exact | " + " | ".join(
        f"{c['name']} PSNR at same bpp | Δ" for c in classic) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    res = ours["results"]
    for i, q in enumerate(res["quality"]):
        rows = ours["per_image"][str(q)]
        ms = res.get("ms-ssim")
        cells = [str(q), f"{res['bpp'][i]:.4f}", f"{res['psnr-rgb'][i]:.2f}",
                 f"{ms_ssim_db(ms[i]):.2f}" if ms else "—", f"{sum(r['exact'] for r in rows)}/{len(rows)}"]
        for c in classic:
            ref = psnr_at_rate(c, res["bpp"][i])
            cells += ["outside its range", "—"] if ref is None else [f"{ref:.2f}", f"{res['psnr-rgb'][i] - ref:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lpips_lines(curves: list[dict]) -> list[str]:
    """Mean LPIPS (AlexNet) per setting of each curve that has it (rd.py --alexnet-weights)."""
    return [f"LPIPS (alex), {c['name']}: " + ", ".join(f"{b:.3f} bpp {v:.4f}" for b, v in
                                                     zip(c["results"]["bpp"], c["results"]["lpips"]))
            for c in curves if "lpips" in c["results"]]


def plot(curves: list[dict], published: list[dict], path: Path, max_bpp: float, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, metric, label in ((axes[0], "psnr-rgb", "RGB PSNR (dB)"), (axes[1], "ms-ssim", "MS-SSIM (dB)")):
        for c in curves + published:
            r = c["results"]
            if metric not in r:
                continue
            x = np.array(r["bpp"])
            y = np.array(r[metric]) if metric == "psnr-rgb" else np.array([ms_ssim_db(v) for v in r[metric]])
            keep = x <= max_bpp
            style = dict(linestyle="--", marker="x") if c in published else dict(marker="o", markersize=4)
            if c["name"] == "pqcodec":
                style.update(linewidth=2.5, color="black")
            elif c["name"].startswith("pqcodec --"):  # rate control's sizes: a dotted line through its points
                style.update(linewidth=1.5, color="black", linestyle=":", marker="s", markersize=4)
            ax.plot(x[keep], y[keep], label=c["name"], **style)
        ax.set_xlabel("bpp (from file bytes)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max_bpp)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.rd", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--model", help="weights file (default: the shipped default model)")
    ap.add_argument("--levels", type=int, nargs="*", help="quality levels (default: all)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--classic", nargs="*", default=list(SWEEPS), choices=sorted(SWEEPS))
    ap.add_argument("--classic-from", metavar="DIR", help="take the classic codecs' curves from an earlier "
                    "run's TAG-<codec>.json in DIR (same images, same Pillow) instead of sweeping them again "
                    "(~1 h on 2 busy cores without the cache), e.g. docs/results")
    ap.add_argument("--extra", nargs="*", default=[], help="more curves (CompressAI-layout JSON), e.g. "
                    "the learned baselines eval/train_baselines.py evaluated")
    ap.add_argument("--published", action=argparse.BooleanOptionalAction, default=None,
                    help="draw the published Kodak figures (default: when the folder is named kodak)")
    add_output_args(ap, "the folder")
    ap.add_argument("--no-cache", action="store_true", help="recompute every coded image")
    sizes = ap.add_mutually_exclusive_group()
    sizes.add_argument("--max-bytes", type=int, nargs="+", metavar="N", help="also rate control's curve: "
                       "pqcodec encode --max-bytes N for each N")
    sizes.add_argument("--bpp", type=float, nargs="+", metavar="B", help="the same with --bpp B")
    ap.add_argument("--rd-distortion", choices=["latent", "pixel"], default=RD_DISTORTION,
                    help=f"RDOQ's distortion in rate control's search (docs/ratecontrol.md; default {RD_DISTORTION}, "
                    "rate control's own)")
    ap.add_argument("--alexnet-weights", help="torchvision AlexNet weights file: adds LPIPS per image "
                    "(eval/perceptual.py, docs/perceptual.md)")
    ap.add_argument("--lpips-linear", help="LPIPS linear layers (default: the installed lpips package's)")
    args = ap.parse_args()

    t0 = time.time()
    if args.alexnet_weights:
        from .perceptual import PerceptualError
        try:
            enable_lpips(args.alexnet_weights, args.lpips_linear)
        except PerceptualError as e:
            raise SystemExit(f"rd.py: error: {e}")
    cache = ResultCache(None if args.no_cache else CACHE)
    images, codec, identity, levels, out = pqcodec_eval.level_run(args, "rd.py")
    if args.classic_from:
        classic = [json.loads((Path(args.classic_from) / f"{args.tag}-{name.lower()}.json").read_text())
                   for name in args.classic]
    else:
        classic = [sweep(images, name, cache) for name in args.classic]
    extra = [json.loads(Path(p).read_text()) for p in args.extra]
    ours = pqcodec_curve(codec, identity, images, levels, args.steps, cache)
    sized = None
    if args.max_bytes or args.bpp:
        asked = [("max_bytes", n) for n in args.max_bytes or []] + [("bpp", b) for b in args.bpp or []]
        sized = size_curve(codec, identity, images, asked, args.steps, cache, args.rd_distortion)

    out.mkdir(parents=True, exist_ok=True)
    for c in classic:
        (out / f"{args.tag}-{c['name'].split()[0].lower()}.json").write_text(json.dumps(c, indent=1))
    (out / f"{args.tag}-pqcodec.json").write_text(json.dumps(ours, indent=1))
    if sized:
        (out / f"{args.tag}-pqcodec-ratecontrol.json").write_text(json.dumps(sized, indent=1))

    show_published = Path(args.folder).name.lower() == "kodak" if args.published is None else args.published
    published = PUBLISHED_KODAK if show_published else []
    max_bpp = min(1.5, 1.25 * max(ours["results"]["bpp"]))
    plot([ours] + ([sized] if sized else []) + extra + classic, published, out / f"{args.tag}-rd.png", max_bpp,
         f"{len(images)} images of {Path(args.folder).name}; pqcodec {args.steps} steps")
    report = "\n\n".join([
        f"{len(images)} images of {args.folder}; bpp from file bytes; pqcodec {args.steps} coding steps.",
        level_table(ours, classic),
        *([size_table(sized, ours)] if sized else []),
        *lpips_lines([ours] + classic),
        bd_tables([ours] + ([sized] if sized else []) + extra + classic, classic + extra + published)])
    (out / f"{args.tag}-bdrate.md").write_text(report + "\n")
    print(report)
    print(f"\nwall time {time.time() - t0:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
