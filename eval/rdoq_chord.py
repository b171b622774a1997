"""How efficient RDOQ is between two levels: per image, the file of level q at each λ against the
chord the levels q-1 and q draw in (log bytes, PSNR), at that file's bytes (docs/ratecontrol.md).

A point above the chord (positive dB) beats what the levels give at its rate; the --max-bytes curve
can only be better than the levels' curve (issue 12's bar) where RDOQ's points are. "gap position"
says where in the gap a point lies: 0 at level q-1's bytes, 1 at level q's (log scale). Every
point's bytes are a real file's and its PSNR that of the file decoded. Variants, for experiments:
--candidates (rdoq.CANDIDATES, the nearest codewords considered per index).

    python eval/rdoq_chord.py ../shared/data/kodak --images kodim01 kodim04 kodim07 kodim13 kodim19 kodim22
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_rgb_images, psnr  # noqa: E402


def points(codec, rgb, lambdas, distortion: str) -> list[tuple]:
    """(level, λ, bytes, PSNR, dB against the chord, gap position) for levels 2.. at each λ."""
    decoded = lambda data: codec.render(*codec.decode_tokens(data))  # noqa: E731
    plain = {}
    for q in range(1, codec.levels() + 1):
        data = codec.encode(rgb, q)
        plain[q] = (len(data), psnr(rgb, decoded(data)))
    rows = []
    for q in range(2, codec.levels() + 1):
        (b0, p0), (b1, p1) = plain[q - 1], plain[q]
        for lam in lambdas:
            data, _ = codec.encode_with_stats(rgb, q, rd_lambda=lam, distortion=distortion)
            b, p = len(data), psnr(rgb, decoded(data))
            position = np.log(b / b0) / np.log(b1 / b0)
            rows.append((q, lam, b, p, p - (p0 + (p1 - p0) * position), position))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--images", nargs="*", help="image names (stems) in the folder (default: all)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    ap.add_argument("--distortion", default="pixel", choices=("latent", "pixel"))
    ap.add_argument("--candidates", type=int, help="rdoq.CANDIDATES for this run (default: the module's)")
    ap.add_argument("--model")
    args = ap.parse_args()
    import pqcodec_eval
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
