#!/usr/bin/env python3
"""Large images: wall time and peak memory (RSS) of `pqcodec encode` (the default level, and with
--max-bytes) and `pqcodec decode` at several sizes, each a fresh process, on a Kodak photo resized
(Lanczos) to the target megapixels, 3:2. Checks that the decoded image has the source's size and
that the file decodes exactly (the CLI verifies the token checksum). --max-bytes asks for
--size-share (default 0.75) of the default level's file: rate control's whole search (levels, RDOQ,
the level map) runs. Peak RSS is in MiB (kB / 1024), as the docs' tables give it.

    python -m eval.large_images ../shared/data/kodak/kodim23.png --megapixels 1 4 12 24 33.5
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .common import ROOT, bpp
from pqcodec.metrics import psnr


# Runs the CLI, then reports the process's own peak RSS (kB) as the last stderr line.
_CHILD = ("import resource, sys; from pqcodec.cli import main; rc = main(sys.argv[1:]); "
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def timed_cli(*args) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one pqcodec command in a child process of its own."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    lines = r.stderr.strip().splitlines()
    if r.returncode != 0:
        sys.exit(f"large_images: pqcodec {' '.join(map(str, args))}: {lines[:-1] or lines}")
    return wall, int(lines[-1]) / 1024


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.large_images", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1, 4, 12, 24])
    ap.add_argument("--quality", type=int, help="default: the model's default")
    ap.add_argument("--size-share", type=float, default=0.75,
                    help="--max-bytes as this share of the default level's file (0: leave --max-bytes out)")
    args = ap.parse_args()
    src = Image.open(args.image).convert("RGB")
    print("| megapixels | size | encode s | encode peak RSS MB | decode s | decode peak RSS MB | bpp | PSNR dB "
          "| --max-bytes | its encode s | its peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mp in sorted(args.megapixels):
            w = int(round((mp * 1e6 * 1.5) ** 0.5))
            h = int(round(w / 1.5))
            img = src.resize((w, h), Image.LANCZOS)
            img.save(tmp / "in.png")
            q = ["-q", str(args.quality)] if args.quality else []
            enc_s, enc_mb = timed_cli("encode", tmp / "in.png", "-o", tmp / "a.bin", "--force", *q)
            dec_s, dec_mb = timed_cli("decode", tmp / "a.bin", "-o", tmp / "out.png", "--force")
            out = np.asarray(Image.open(tmp / "out.png"))
            rgb = np.asarray(img)
            assert out.shape == rgb.shape, (out.shape, rgb.shape)
            size = (tmp / "a.bin").stat().st_size
            sized = "— | — | —"
            if args.size_share:
                n = int(args.size_share * size)
                mb_s, mb_mb = timed_cli("encode", tmp / "in.png", "-o", tmp / "b.bin", "--force", "--max-bytes", n)
                assert (tmp / "b.bin").stat().st_size <= n
                sized = f"{n} | {mb_s:.1f} | {mb_mb:.0f}"
            print(f"| {w * h / 1e6:.1f} | {w}x{h} | {enc_s:.1f} | {enc_mb:.0f} | {dec_s:.1f} | {dec_mb:.0f} "
                  f"| {bpp(size, rgb):.4f} | {psnr(rgb, out):.2f} | {sized} |", flush=True)


if __name__ == "__main__":
    main()
