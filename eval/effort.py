#!/usr/bin/env python3
"""What `pqcodec encode --effort N` (encoder-side latent refinement, pqcodec/refine.py) earns: every
level coded plain and with each effort, on a folder of images; per level the mean bpp, PSNR, MS-SSIM
and encode time, and the BD-rate of each effort's curve against the plain levels' (negative: fewer
bits for the same quality). Bytes are real files', quality that of the files decoded.

    python -m eval.effort ../shared/data/kodak --effort 5 [--levels 1 2 3 4 5] [--out docs/results]

Per-image results are cached in eval/.cache like eval/rd.py's (the plain levels are the same
entries). Writes TAG-effort.md and TAG-effort.json to --out (default ./results).
"""
import argparse
import json
import time

import numpy as np

import torch

from . import pqcodec_eval
from .bdrate import bd_rate_of
from .common import CACHE, ResultCache, mean_curve
from .result_paths import add_output_args
from pqcodec import DEFAULT_STEPS
from pqcodec.metrics import ms_ssim_db


def dominated(plain: dict, row: dict) -> bool:
    """A file larger and worse at once than the plain encoder's (what --effort must never give)."""
    return row["bytes"] > plain["bytes"] and row["psnr"] < plain["psnr"]


def per_image_table(curves: dict, level: int) -> list[str]:
    """Bytes and PSNR per image at one level, for every effort; which efforts give a file larger and
    worse at once than effort 0."""
    rows = {e: c["per_image"][str(level)] for e, c in curves.items()}
    efforts = list(rows)
    lines = [f"Level {level}, per image: file bytes / PSNR (dB).", "",
             "| image | " + " | ".join(f"effort {e}" for e in efforts) + " |", "|---" * (len(efforts) + 1) + "|"]
    worse = []
    for i, plain in enumerate(rows[0]):
        cells = []
        for e in efforts:
            r = rows[e][i]
            cells.append(f"{r['bytes']} / {r['psnr']:.2f}")
            if e and dominated(plain, r):
                worse.append(f"{plain['image']} at effort {e}")
        lines.append(f"| {plain['image']} | " + " | ".join(cells) + " |")
    lines += ["", "Larger and worse at once than effort 0: " + (", ".join(worse) if worse else "none") + "."]
    return lines


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.effort", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--effort", type=int, nargs="+", default=[5], help="refinement steps to measure (default 5)")
    ap.add_argument("--levels", type=int, nargs="*", help="quality levels (default: all)")
    ap.add_argument("--model", help="weights file (default: the shipped default model)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    add_output_args(ap, "the folder")
    args = ap.parse_args()
    t0 = time.time()
    cache = ResultCache(CACHE)
    images, codec, identity, levels, out = pqcodec_eval.level_run(args, "effort.py")
    curves = {}
    args.effort = sorted(set(args.effort) - {0})
    for effort in [0] + args.effort:
        points = [(q, pqcodec_eval.run_level(codec, identity, images, q, args.steps, cache, effort)) for q in levels]
        curve = mean_curve("pqcodec" + (f" effort {effort}" if effort else ""), points)
        curve["encode_s"] = [float(np.mean([r["encode_s"] for r in rows])) for _, rows in points]
        curve["per_image"] = {str(q): rows for q, rows in points}
        curves[effort] = curve
    plain = curves[0]
    lines = [f"{len(images)} images of {args.folder}; levels {', '.join(map(str, levels))}; bpp from file bytes; "
             f"encode time with {torch.get_num_threads()} torch threads.", "",
             "| effort | level | bpp | PSNR (dB) | MS-SSIM (dB) | encode s |", "|---|---|---|---|---|---|"]
    for effort, c in curves.items():
        r = c["results"]
        for i, q in enumerate(levels):
            ms = f"{ms_ssim_db(r['ms-ssim'][i]):.2f}" if "ms-ssim" in r else "—"
            lines.append(f"| {effort} | {q} | {r['bpp'][i]:.4f} | {r['psnr-rgb'][i]:.2f} | {ms} | {c['encode_s'][i]:.2f} |")
    lines.append("")
    if len(levels) >= 2:
        for effort in args.effort:
            bd = {m: bd_rate_of(plain, curves[effort], m) for m in ("psnr-rgb", "ms-ssim")}
            shown = ", ".join(f"{m}: {'—' if v is None else f'{v:+.1f} %'}" for m, v in bd.items())
            lines.append(f"BD-rate of effort {effort} against the plain levels: {shown}")
    for q in levels:
        lines += ["", *per_image_table(curves, q)]
    report = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.tag}-effort.md").write_text(report + "\n")
    (out / f"{args.tag}-effort.json").write_text(json.dumps({str(e): c for e, c in curves.items()}, indent=1))
    print(report)
    print(f"\nwall time {time.time() - t0:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
