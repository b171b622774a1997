#!/usr/bin/env python3
"""An image in 200 bytes (issue 12): pqcodec's extreme mode against JPEG, WebP and AVIF made to fit
the same budget, and the checks that the files are what they claim.

1. Every Kodak image (and three odd sizes: 1x1, 33x2000 and 4000x3000, made from Kodak images by
   cropping and resizing) through `pqcodec encode --max-bytes N` (the command line, one process per
   image): the file is at most N bytes and decodes to an image of the original size; the same file
   decoded twice in-process, and in child processes with 1 thread, 2 threads and AVX2 kernels
   (ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2), gives the same
   pixels.
2. The classic codecs (Pillow) at the same budget, each given every chance: for each of a few low
   quality settings (the lowest included), the largest downscale (bisection over the long side) whose
   file fits in N bytes, decoded and upscaled back with the filter pqcodec's decoder uses
   (bitstream.RESIZE_FILTER, Pillow's LANCZOS); the setting with the best PSNR is kept. A codec
   whose smallest file (8 px on the long side, lowest setting) is over N does not fit.
3. PSNR (RGB) and MS-SSIM against the original, means over the images each codec fits; a grid PNG
   of a few images: original | pqcodec | JPEG | WebP | AVIF.

    python -m eval.extreme ../shared/data/kodak --max-bytes 200 --out docs/results
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .baselines import SWEEPS
from .common import ROOT, load_rgb_images, quality_row
from pqcodec import bitstream
from pqcodec.codec import resize

# the quality settings tried per codec (the lowest first), with eval/baselines.py's formats and options
CLASSIC = {name: dict(SWEEPS[name], qualities=qualities)
           for name, qualities in (("JPEG", [1, 5, 10, 20]), ("WebP", [0, 5, 10, 20]), ("AVIF", [0, 5, 10, 20]))}
FAMILIES = {"1 thread": {"OMP_NUM_THREADS": "1"}, "2 threads": {"OMP_NUM_THREADS": "2"},
            "AVX2": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                     "ONEDNN_MAX_CPU_ISA": "AVX2"}}
GRID_IMAGES = ("kodim01.png", "kodim05.png", "kodim15.png", "kodim23.png")
TILE_WIDTH = 256


def odd_sizes(images: dict) -> dict:
    """name -> image of an odd size, cut and resized from Kodak images (test images, not tuned on)."""
    a, b = images["kodim03.png"], images["kodim21.png"]
    wide = np.asarray(Image.fromarray(a).resize((2000, 1333), Image.Resampling.LANCZOS))[650:683]
    return {"1x1": a[256:257, 384:385], "2000x33": wide,
            "4000x3000": np.asarray(Image.fromarray(b).resize((4000, 3000), Image.Resampling.LANCZOS))}


def pixels_hash(img) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(img)).tobytes()).hexdigest()


# -- pqcodec through the command line --------------------------------------------------------------
def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pqcodec", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=ROOT, timeout=3600)


def decode_hashes(files: list[Path], env: dict) -> list[str]:
    """The decoded pixels' SHA-256 of each file, in a child process with `env`."""
    code = ("import sys, hashlib, numpy as np, pqcodec\n"
            "for p in sys.argv[1:]:\n"
            "    print(hashlib.sha256(np.ascontiguousarray(np.asarray(pqcodec.decode(p))).tobytes()).hexdigest())")
    r = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=3600)
    if r.returncode:
        sys.exit(f"extreme: decoding in a child process failed: {r.stderr.strip().splitlines()[-1]}")
    return r.stdout.split()


# -- the classic codecs ------------------------------------------------------------------------------
def classic_file(rgb: np.ndarray, spec: dict, quality: int, long_side: int) -> tuple[bytes, tuple[int, int]]:
    H, W = rgb.shape[:2]
    scale = long_side / max(H, W)
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    buf = io.BytesIO()
    Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS).save(buf, spec["fmt"], quality=quality, **spec["options"])
    return buf.getvalue(), size


def classic_at_budget(rgb: np.ndarray, name: str, N: int) -> dict | None:
    """The best PSNR the codec reaches in at most N bytes over its settings and downscales; None when
    nothing fits."""
    spec, H, W = CLASSIC[name], *rgb.shape[:2]
    best = None
    for q in spec["qualities"]:
        lo, hi, found = 7, max(H, W) + 1, None   # long side lo fits (7: none known), hi does not
        while hi - lo > 1:
            k = (lo + hi) // 2
            data, size = classic_file(rgb, spec, q, k)
            if len(data) <= N:
                lo, found = k, (data, size)
            else:
                hi = k
        if found is None:
            continue
        data, size = found
        rec = resize(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), H, W)
        row = dict(quality_row(len(data), rgb, rec), setting=q, coded_size=list(size))
        if best is None or row["psnr"] > best["psnr"]:
            best, best_rec = row, rec
    return (best, best_rec) if best else (None, None)


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.extreme", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--max-bytes", type=int, default=200)
    ap.add_argument("--images", type=int, default=None, help="the first N images only")
    ap.add_argument("--out", default=None, help="write kodak-<N>bytes.md/.json/.png here")
    a = ap.parse_args()
    N = a.max_bytes
    images = dict(load_rgb_images(a.folder)[:a.images])
    odd = odd_sizes(images) if {"kodim03.png", "kodim21.png"} <= images.keys() else {}
    rows, recs = {}, {}
    with tempfile.TemporaryDirectory(prefix="pqcodec-extreme-") as tmp:
        tmp = Path(tmp)
        files = []
        for name, rgb in tqdm([*images.items(), *odd.items()], desc="pqcodec --max-bytes", leave=False):
            src, out = tmp / f"{Path(name).stem}.png", tmp / f"{Path(name).stem}.bin"
            Image.fromarray(rgb).save(src)
            t0 = time.perf_counter()
            r = cli("encode", src, "-o", out, "--max-bytes", N, env={"OMP_NUM_THREADS": "1"})
            seconds = time.perf_counter() - t0
            if r.returncode:
                rows[name] = dict(error=r.stderr.strip())
                continue
            import pqcodec
            data = out.read_bytes()
            first, second = (np.asarray(pqcodec.decode(data)) for _ in range(2))
            header = bitstream.unpack(data)[0]
            rows[name] = dict(quality_row(len(data), rgb, first), encode_s=seconds, note=r.stderr.strip().split(": ", 2)[-1],
                              size_ok=first.shape == rgb.shape, twice_same=bool(np.array_equal(first, second)),
                              hash=pixels_hash(first), version=header.version,
                              generated=None if header.generated is None else vars(header.generated))
            recs[name] = first
            files.append((name, out))
        for family, env in FAMILIES.items():
            for (name, _), h in zip(files, decode_hashes([p for _, p in files], env)):
                rows[name][f"same pixels, {family}"] = h == rows[name]["hash"]
    classic = {c: {} for c in CLASSIC}
    classic_recs = {c: {} for c in CLASSIC}
    for name, rgb in tqdm(images.items(), desc="JPEG/WebP/AVIF at the budget", leave=False):
        for c in CLASSIC:
            classic[c][name], classic_recs[c][name] = classic_at_budget(rgb, c, N)

    lines = report(N, images, odd, rows, classic)
    print("\n".join(lines))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"kodak-{N}bytes.md").write_text("\n".join(lines) + "\n")
        (out / f"kodak-{N}bytes.json").write_text(json.dumps(dict(max_bytes=N, pqcodec=rows, classic=classic), indent=1) + "\n")
        grid(images, recs, classic_recs, N).save(out / f"kodak-{N}bytes.png", optimize=True)
        print(f"wrote {out}/kodak-{N}bytes.md, .json, .png")
    bad = [n for n, r in rows.items() if "error" in r or r["bytes"] > N or not r["size_ok"] or not r["twice_same"]
           or not all(r[f"same pixels, {f}"] for f in FAMILIES)]
    return 1 if bad else 0


def report(N, images, odd, rows, classic) -> list[str]:
    lines = [f"# {N} bytes per image: pqcodec's extreme mode against JPEG, WebP and AVIF", "",
             f"`python -m eval.extreme ../shared/data/kodak --max-bytes {N} --out docs/results` "
             f"({len(images)} Kodak images). PSNR is RGB, MS-SSIM on RGB; means over the images each codec fits.", "",
             "| codec | fits | mean bytes | PSNR (dB) | MS-SSIM | how |", "|---|---|---|---|---|---|"]
    ok = [rows[n] for n in images if "error" not in rows[n]]
    if ok:
        grids = sorted({f"{r['generated']['grid_width']}x{r['generated']['grid_height']}" for r in ok if r["generated"]},
                       key=lambda s: int(s.split("x")[0]))
        lines.append(f"| pqcodec (`--max-bytes {N}`) | {len(ok)}/{len(images)} | {np.mean([r['bytes'] for r in ok]):.1f} | "
                     f"{np.mean([r['psnr'] for r in ok]):.2f} | {np.mean([r['ms_ssim'] for r in ok]):.4f} | "
                     f"token grids {grids[0]} .. {grids[-1]} (of 96x64), decoded and resized |" if grids else "|")
    for c, per in classic.items():
        fit = [r for r in per.values() if r]
        if not fit:
            lines.append(f"| {c} (Pillow) | 0/{len(per)} | — | — | — | its smallest file is over {N} bytes |")
            continue
        sizes = sorted({max(r["coded_size"]) for r in fit})
        lines.append(f"| {c} (Pillow) | {len(fit)}/{len(per)} | {np.mean([r['bytes'] for r in fit]):.1f} | "
                     f"{np.mean([r['psnr'] for r in fit]):.2f} | {np.mean([r['ms_ssim'] for r in fit]):.4f} | "
                     f"downscaled to {sizes[0]}..{sizes[-1]} px on the long side, quality "
                     f"{'/'.join(str(q) for q in sorted({r['setting'] for r in fit}))}, upscaled (LANCZOS) |")
    lines += ["", "Per image (bytes / PSNR):", "",
              "| image | pqcodec | " + " | ".join(classic) + " |", "|---|---|" + "---|" * len(classic)]
    for n in images:
        r = rows[n]
        cells = ["error" if "error" in r else f"{r['bytes']} / {r['psnr']:.2f}"]
        cells += [f"{classic[c][n]['bytes']} / {classic[c][n]['psnr']:.2f}" if classic[c][n] else "does not fit"
                  for c in classic]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "The files: at most N bytes, decoded at the original size, the same pixels decoded twice and in "
              "child processes (" + ", ".join(FAMILIES) + "):", "",
              "| image | size | bytes | version | encode s | size ok | twice | " + " | ".join(FAMILIES) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(FAMILIES)]
    for n, r in rows.items():
        src = images.get(n, odd.get(n))
        if "error" in r:
            lines.append(f"| {n} | {src.shape[1]}x{src.shape[0]} | {r['error']} |")
            continue
        lines.append(f"| {n} | {src.shape[1]}x{src.shape[0]} | {r['bytes']} | {r['version']} | {r['encode_s']:.1f} | "
                     f"{'yes' if r['size_ok'] else 'NO'} | {'same' if r['twice_same'] else 'DIFFER'} | "
                     + " | ".join("same" if r[f"same pixels, {f}"] else "DIFFER" for f in FAMILIES) + " |")
    return lines


def grid(images, recs, classic_recs, N) -> Image.Image:
    """Rows of GRID_IMAGES: original | pqcodec | JPEG | WebP | AVIF (a grey tile where nothing fits)."""
    names = [n for n in GRID_IMAGES if n in recs] or list(recs)[:4]
    columns = ["original", f"pqcodec {N} B", *(f"{c} {N} B" for c in CLASSIC)]
    tiles = []
    for n in names:
        row = [images[n], recs[n], *(classic_recs[c][n] for c in CLASSIC)]
        h = round(images[n].shape[0] * TILE_WIDTH / images[n].shape[1])
        tiles.append([np.asarray(Image.fromarray(t).resize((TILE_WIDTH, h), Image.Resampling.LANCZOS))
                      if t is not None else np.full((h, TILE_WIDTH, 3), 128, np.uint8) for t in row])
    label = 18
    height = sum(r[0].shape[0] for r in tiles) + label
    canvas = Image.new("RGB", (TILE_WIDTH * len(columns), height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, c in enumerate(columns):
        draw.text((j * TILE_WIDTH + 4, 3), c, fill="black")
    y = label
    for n, row in zip(names, tiles):
        for j, t in enumerate(row):
            canvas.paste(Image.fromarray(t), (j * TILE_WIDTH, y))
        for j, c in enumerate(CLASSIC):
            if classic_recs[c][n] is None:
                draw.text(((j + 2) * TILE_WIDTH + 8, y + 8), "does not fit", fill="white")
        y += row[0].shape[0]
    return canvas


if __name__ == "__main__":
    sys.exit(main())
