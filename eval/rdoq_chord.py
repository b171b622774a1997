"""How efficient RDOQ is between two levels: per image, the file of level q at each λ against the
chord the levels q-1 and q draw in (log bytes, PSNR), at that file's bytes (docs/ratecontrol.md).

A point above the chord (positive dB) beats what the levels give at its rate; the --max-bytes curve
can only be better than the levels' curve (issue 12's bar) where RDOQ's points are. "gap position"
says where in the gap a point lies: 0 at level q-1's bytes, 1 at level q's (log scale). Every
point's bytes are a real file's and its PSNR that of the file decoded. Variants, for experiments:
--candidates (rdoq.CANDIDATES, the nearest codewords considered per index).

    python -m eval.rdoq_chord ../shared/data/kodak --images kodim01 kodim04 kodim07 kodim13 kodim19 kodim22

--results DIR (no coding, from eval/rd.py's committed per-image results, e.g. docs/results): how far
each --max-bytes file lies from its image's chord, and the BD-rate against the levels of the curve
that files exactly on their chords at each N would draw (what a perfect in-between coder reaches).

    python -m eval.rdoq_chord --results docs/results
"""
import argparse
import time
from pathlib import Path

import numpy as np

from .common import load_rgb_images, psnr


def points(codec, rgb, lambdas, distortion: str) -> list[tuple]:
    """(level, λ, bytes, PSNR, dB against the chord, gap position) for levels 2.. at each λ."""
    decoded = lambda data: codec.render(*codec.decode_tokens(data))  # noqa: E731
    plain = {}
    for q in range(1, codec.num_levels() + 1):
        data = codec.encode(rgb, q)
        plain[q] = (len(data), psnr(rgb, decoded(data)))
    rows = []
    for q in range(2, codec.num_levels() + 1):
        (b0, p0), (b1, p1) = plain[q - 1], plain[q]
        for lam in lambdas:
            data, _ = codec.encode_with_stats(rgb, q, rd_lambda=lam, distortion=distortion)
            b, p = len(data), psnr(rgb, decoded(data))
            position = np.log(b / b0) / np.log(b1 / b0)
            rows.append((q, lam, b, p, p - (p0 + (p1 - p0) * position), position))
    return rows


def from_results(folder: Path, tag: str = "kodak"):
    """The chord analysis of committed results (TAG-pqcodec.json, TAG-pqcodec-ratecontrol.json)."""
    import json
    from .bdrate import bd_rate
    levels = json.loads((folder / f"{tag}-pqcodec.json").read_text())
    sizes = json.loads((folder / f"{tag}-pqcodec-ratecontrol.json").read_text())
    chords = {}   # image -> (log bytes, PSNR) of its levels
    for rows in levels["per_image"].values():
        for r in rows:
            chords.setdefault(r["image"], []).append((np.log(r["bytes"]), r["psnr"], r["bpp"] / r["bytes"]))
    chords = {k: sorted(v) for k, v in chords.items()}

    def on_chord(image, nbytes):
        lb, ps, _ = zip(*chords[image])
        x = np.log(nbytes)
        return np.interp(x, lb, ps) if lb[0] <= x <= lb[-1] else None
    print("| N | files within the levels' range | dB against their chord (mean) | min | max |")
    print("|---|---|---|---|---|")
    for key, rows in sizes["per_image"].items():
        d = [r["psnr"] - c for r in rows if (c := on_chord(r["image"], r["bytes"])) is not None]
        if d:
            print(f"| {key.split()[-1]} | {len(d)}/{len(rows)} | {np.mean(d):+.3f} | {min(d):+.2f} | {max(d):+.2f} |")
    lo = max(v[0][0] for v in chords.values())
    hi = min(v[-1][0] for v in chords.values())
    ns = np.exp(np.linspace(lo, hi, 8))
    curve = [np.mean([on_chord(i, n) for i in chords]) for n in ns]
    rate = [np.mean([n * v[0][2] for v in chords.values()]) for n in ns]   # bpp of N bytes, per image
    r = levels["results"]
    print(f"\nfiles on their chords at N = {ns[0]:.0f}..{ns[-1]:.0f} bytes: BD-rate against the levels "
          f"{bd_rate(r['bpp'], r['psnr-rgb'], rate, curve):+.1f} %; the --max-bytes curve: "
          f"{bd_rate(r['bpp'], r['psnr-rgb'], sizes['results']['bpp'], sizes['results']['psnr-rgb']):+.1f} %")


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.rdoq_chord", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--results", type=Path, help="analyse committed results in this folder instead of coding")
    ap.add_argument("--images", nargs="*", help="image names (stems) in the folder (default: all)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    ap.add_argument("--distortion", default="pixel", choices=("latent", "pixel"))
    ap.add_argument("--candidates", type=int, help="rdoq.CANDIDATES for this run (default: the module's)")
    ap.add_argument("--model")
    args = ap.parse_args()
    if args.results:
        return from_results(args.results)
    if not args.folder:
        ap.error("a folder of images, or --results DIR")
    from . import pqcodec_eval
    from pqcodec import rdoq
    if args.candidates:
        rdoq.CANDIDATES = args.candidates
    codec, _ = pqcodec_eval.load(args.model)
    images = load_rgb_images(args.folder)
    if args.images:
        images = [(n, rgb) for n, rgb in images if Path(n).stem in args.images]
    t0 = time.perf_counter()
    rows = np.array([r for _, rgb in images for r in points(codec, rgb, args.lambdas, args.distortion)])
    print(f"{len(images)} images, {rdoq.CANDIDATES} candidates, {args.distortion} distortion, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| level | λ | gap position (mean) | dB against the chord (mean) | min | max |")
    print("|---|---|---|---|---|---|")
    for q in np.unique(rows[:, 0]):
        for lam in args.lambdas:
            m = rows[(rows[:, 0] == q) & (rows[:, 1] == lam)]
            print(f"| {int(q)} | {lam:g} | {m[:, 5].mean():.2f} | {m[:, 4].mean():+.3f} | {m[:, 4].min():+.2f} "
                  f"| {m[:, 4].max():+.2f} |")
    print(f"\nall points: {rows[:, 4].mean():+.3f} dB against the chord")


if __name__ == "__main__":
    main()
