#!/usr/bin/env python3
"""Rate-distortion on a folder of images: every pqcodec quality level and Pillow's JPEG (and
optionally WebP/AVIF), rate from file bytes, RGB PSNR. Writes CompressAI-layout JSON to
docs/results/ and prints a Markdown table comparing each level with the classic codecs at equal rate.

    python eval/rd.py ../shared/data/kodak
"""
import argparse
import json
import time

from baselines import SWEEPS, psnr_at_rate, sweep
from common import RESULTS, load_rgb_images
import pqcodec_eval
from pqcodec import DEFAULT_STEPS


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--model", help="weights file (default: the shipped default model)")
    ap.add_argument("--levels", type=int, nargs="*", help="quality levels (default: all)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--classic", nargs="*", default=["JPEG"], choices=sorted(SWEEPS))
    ap.add_argument("--out", default=str(RESULTS), help="folder for the JSON results")
    ap.add_argument("--tag", default="kodak", help="prefix of the result files")
    args = ap.parse_args()

    t0 = time.time()
    images = load_rgb_images(args.folder)
    codec = pqcodec_eval.load(args.model)
    levels = args.levels or list(range(1, codec.levels() + 1))
    curves = {name: sweep(images, name) for name in args.classic}
    ours = {"name": "pqcodec", "results": {"bpp": [], "psnr-rgb": [], "quality": []}, "levels": {}}
    for q in levels:
        r = pqcodec_eval.run_level(codec, images, q, args.steps)
        ours["levels"][q] = r
        ours["results"]["bpp"].append(r["bpp"])
        ours["results"]["psnr-rgb"].append(r["psnr-rgb"])
        ours["results"]["quality"].append(q)

    from pathlib import Path
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, curve in curves.items():
        (out / f"{args.tag}-{name.lower()}.json").write_text(json.dumps(curve, indent=1))
    (out / f"{args.tag}-pqcodec.json").write_text(json.dumps(ours, indent=1))

    head = "| level | bpp | PSNR (dB) | exact | " + " | ".join(f"{n} PSNR at same bpp | delta" for n in curves) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for q in levels:
        r = ours["levels"][q]
        exact = sum(x["exact"] for x in r["per_image"])
        cells = [f"{q}", f"{r['bpp']:.4f}", f"{r['psnr-rgb']:.2f}", f"{exact}/{len(images)}"]
        for curve in curves.values():
            ref = psnr_at_rate(curve, r["bpp"])
            cells += ["outside its range", "-"] if ref is None else [f"{ref:.2f}", f"{r['psnr-rgb'] - ref:+.2f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\n{len(images)} images from {args.folder}; wall time {time.time() - t0:.0f} s; JSON in {out}")


if __name__ == "__main__":
    main()
