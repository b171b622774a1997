#!/usr/bin/env python3
"""The perceptual decoder against the MSE decoder, from the very same .bin files (issue 13).

    python -m eval.perceptual_decoder ../shared/data/kodak [--decoder-file F] [--model W] \\
        [--levels 1 2 3] [--images N] [--grid kodim23.png@400,60 ...] [--save-recon DIR] \\
        [--inception-weights weights-inception-2015-12-05-6726825d.pth]

Per level, over the images: rate from the file bytes; RGB PSNR and MS-SSIM of each decoder; the
high-frequency energy each restores (radially averaged power spectrum of the reconstruction's luma
over the original's, summed over a band of radial frequencies, mean over images: 1.0 = as much
energy as the original, below = smoother); and how far the perceptual decoder's colours stray from
the MSE decoder's (mean colour of every 32x32 block, per channel, in 8-bit levels). Writes the table
to docs/results/perceptual-decoder.md (and --json), and one comparison grid PNG per --grid image to
docs/results/perceptual/: crops of the original, the MSE decoder, the perceptual decoder, and JPEG
and AVIF (Pillow) at the largest quality whose whole-image file is at most the .bin's bytes.

FID/KID (HiFiC's 256x256 patches, eval/perceptual.py) per level and decoder only with
--inception-weights (a local file; needs torch-fidelity, i.e. the eval environment of
docs/perceptual.md); without it the script says so and reports none. --save-recon DIR writes every
reconstruction as DIR/level{q}/{mse,perceptual}/NAME.png for eval/perceptual.py.

Each image is encoded once per level (cached in eval/.cache/perceptual_decoder: the .bin bytes and
their decoded tokens, keyed by the model's SHA-256, the image and the level); both decoders then run
on the tokens `Codec.decode_tokens` read from those bytes, which is what `Codec.decode` does.
"""
import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, features

from .common import CACHE, RESULTS, bpp, image_key, load_rgb_images
from pqcodec.metrics import ms_ssim, psnr

BLOCK = 32
# radial frequency bands, in cycles per pixel (0.5 = Nyquist)
BANDS = {"top": (0.25, 0.5), "upper-mid": (0.125, 0.25)}
CROP = 192


# -- measurements -----------------------------------------------------------------------------------
def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def radial_spectrum(rgb: np.ndarray, bins: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres in cycles/pixel, mean power per bin) of the luma's 2-D power spectrum, mean
    removed and Hann-windowed (so the image's borders add no spurious high frequencies)."""
    y = luma(rgb)
    y = (y - y.mean()) * np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
    power = np.abs(np.fft.fft2(y)) ** 2
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij"))
    edges = np.linspace(0, 0.5, bins + 1)
    which = np.digitize(r.ravel(), edges) - 1
    inside = (which >= 0) & (which < bins)
    total = np.bincount(which[inside], power.ravel()[inside], bins)
    count = np.bincount(which[inside], minlength=bins)
    return (edges[:-1] + edges[1:]) / 2, total / np.maximum(count, 1)


def hf_ratios(original: np.ndarray, rec: np.ndarray) -> dict:
    """Per band: the reconstruction's radially averaged power over the original's, summed in the band."""
    f, p_orig = radial_spectrum(original)
    _, p_rec = radial_spectrum(rec)
    return {band: float(p_rec[(f >= lo) & (f < hi)].sum() / p_orig[(f >= lo) & (f < hi)].sum())
            for band, (lo, hi) in BANDS.items()}


def block_means(rgb: np.ndarray) -> np.ndarray:
    """Mean colour of every whole 32x32 block: (H//32, W//32, 3)."""
    H, W = (s // BLOCK * BLOCK for s in rgb.shape[:2])
    return rgb[:H, :W].astype(np.float64).reshape(H // BLOCK, BLOCK, W // BLOCK, BLOCK, 3).mean((1, 3))


def block_colour_deviation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|mean colour of a's block - of b's block|, every block and channel, flattened (8-bit levels)."""
    return np.abs(block_means(a) - block_means(b)).ravel()


# -- coding -----------------------------------------------------------------------------------------
def coded(codec, model_sha: str, rgb: np.ndarray, level: int) -> tuple[bytes, np.ndarray]:
    """The .bin bytes of `rgb` at `level`, and the tokens `Codec.decode_tokens` reads back from them."""
    path = CACHE / "perceptual_decoder" / f"{model_sha[:16]}-{image_key(rgb)[:24]}-q{level}.npz"
    if path.is_file():
        z = np.load(path)
        return z["data"].tobytes(), z["tokens"]
    data = codec.encode(rgb, quality=level)
    _, tokens = codec.decode_tokens(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), data=np.frombuffer(data, np.uint8), tokens=tokens)
    path.with_suffix(".tmp.npz").replace(path)
    return data, tokens


def pillow_at_most(rgb: np.ndarray, fmt: str, max_bytes: int) -> tuple[np.ndarray, int, str, bool]:
    """(decoded image, its bytes, setting, fits) of the highest Pillow quality whose file is at most
    max_bytes (`pqcodec compare`'s bisection and settings); when none fits, the lowest quality's
    (fits False), to show what the format's smallest file looks like."""
    from pqcodec.compare import PILLOW_CODECS, coded_within
    pc = next(c for c in PILLOW_CODECS if c.fmt == fmt)
    row = coded_within(pc, Image.fromarray(rgb), rgb, max_bytes)
    if row.shown:
        return np.asarray(row.decoded.convert("RGB")), row.num_bytes, row.setting, True
    data = pc.encode(Image.fromarray(rgb), pc.lowest)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), len(data), f"quality {pc.lowest}", False


# -- grids ------------------------------------------------------------------------------------------
def _label(draw, xy, text, fill=(255, 255, 255)):
    draw.text(xy, text, fill=fill)


def grid_image(name: str, rgb: np.ndarray, rows: list[dict], box: tuple[int, int]) -> Image.Image:
    """Rows (one per level) of CROP x CROP crops at `box` (left, top): original | MSE | perceptual |
    JPEG | AVIF, each labelled with its file size and PSNR over the whole image."""
    x0, y0 = box
    cols = ["original", "MSE decoder", "perceptual decoder", "JPEG <= same bytes", "AVIF <= same bytes"]
    pad, label_h, title_h = 4, 26, 30
    W = len(cols) * (CROP + pad) + pad
    H = title_h + len(rows) * (CROP + label_h + pad) + pad
    canvas = Image.new("RGB", (W, H), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    _label(draw, (pad, 4), f"{name}  crop {CROP}x{CROP} at ({x0}, {y0}), 1:1 pixels")
    for c, title in enumerate(cols):
        _label(draw, (pad + c * (CROP + pad), 17), title, (200, 200, 200))
    for r, row in enumerate(rows):
        top = title_h + r * (CROP + label_h + pad)
        for c, (img, text) in enumerate(row["cells"]):
            left = pad + c * (CROP + pad)
            canvas.paste(Image.fromarray(img[y0:y0 + CROP, x0:x0 + CROP]), (left, top))
            for k, line in enumerate(text.split("\n")):
                _label(draw, (left, top + CROP + 1 + 12 * k), line,
                       (255, 120, 120) if "over" in line else (230, 230, 230))
    return canvas


def parse_grid(spec: str) -> tuple[str, tuple[int, int] | None]:
    """NAME or NAME@LEFT,TOP"""
    name, _, at = spec.partition("@")
    return name, (tuple(int(v) for v in at.split(",")) if at else None)


# -- main -------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.perceptual_decoder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", help="folder of test images (Kodak)")
    p.add_argument("--model", help="main weights file (default: the shipped default model)")
    p.add_argument("--decoder-file", help="perceptual decoder file (default: the shipped model's)")
    p.add_argument("--levels", type=int, nargs="+", help="quality levels (default: all)")
    p.add_argument("--images-limit", "--images", dest="limit", type=int, help="only the first N images (sorted)")
    p.add_argument("--grid", nargs="*", default=["kodim23.png@420,110", "kodim15.png@360,80", "kodim13.png@300,230",
                                               "kodim19.png@60,560", "kodim08.png@420,160"],
                   help="images to draw a comparison grid of, NAME or NAME@LEFT,TOP (crop's corner; default centre)")
    p.add_argument("--grid-dir", default=str(RESULTS / "perceptual"))
    p.add_argument("--md", default=str(RESULTS / "perceptual-decoder.md"))
    p.add_argument("--json")
    p.add_argument("--save-recon", metavar="DIR", help="write every reconstruction as DIR/level{q}/{mse,perceptual}/NAME.png")
    p.add_argument("--inception-weights", help="FID/KID per level and decoder (local file; eval environment)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from pqcodec.zoo import load_codec, load_custom_codec, sha256_of, ZOO, DEFAULT_MODEL, models_dir
    from pqcodec.errors import PQCodecError
    try:
        codec = load_custom_codec(args.model) if args.model else load_codec()
        model_sha = sha256_of(Path(args.model)) if args.model else ZOO[DEFAULT_MODEL].sha256
        if args.decoder_file:
            codec.add_decoder("perceptual", args.decoder_file)
        codec.decoder_net("perceptual")  # loads and pairs it now: a one-line error before any work
    except PQCodecError as e:
        sys.exit(f"perceptual_decoder.py: error: {e}")
    decoder_file = Path(args.decoder_file) if args.decoder_file else models_dir() / ZOO[DEFAULT_MODEL].decoders[0].filename
    if args.inception_weights:  # before any work: torch-fidelity importable, the weights file there
        from . import perceptual
        try:
            perceptual.require_module("torch_fidelity")
            perceptual.require_file(args.inception_weights, "Inception")
        except perceptual.PerceptualError as e:
            sys.exit(f"perceptual_decoder.py: error: {e}")
    levels = args.levels or list(range(1, codec.num_levels() + 1))
    images = load_rgb_images(Path(args.images))
    total_images = len(images)
    if args.limit:
        images = images[:args.limit]
    grids = dict(parse_grid(s) for s in args.grid or [])
    if missing := sorted(set(grids) - {n for n, _ in images}):
        sys.exit(f"perceptual_decoder.py: error: --grid images not among the images evaluated: {', '.join(missing)}")
    avif = features.check("avif")
    rows = {q: [] for q in levels}
    grid_rows = {n: [] for n in grids}
    recon = {q: {"mse": [], "perceptual": []} for q in levels}
    for name, rgb in images:
        H, W = rgb.shape[:2]
        for q in levels:
            data, tokens = coded(codec, model_sha, rgb, q)
            out = {d: codec.tokens_to_image(tokens, H, W, d) for d in ("mse", "perceptual")}
            row = dict(image=name, level=q, bytes=len(data), bpp=bpp(len(data), rgb))
            for d, rec in out.items():
                row[f"psnr_{d}"] = psnr(rgb, rec)
                row[f"ms_ssim_{d}"] = ms_ssim(rgb, rec)
                for band, v in hf_ratios(rgb, rec).items():
                    row[f"hf_{band}_{d}"] = v
            dev = block_colour_deviation(out["perceptual"], out["mse"])
            row.update(block_dev_mean=float(dev.mean()), block_dev_p99=float(np.percentile(dev, 99)),
                       block_dev_max=float(dev.max()))
            rows[q].append(row)
            print(f"{name} level {q}: {row['bpp']:.4f} bpp, PSNR {row['psnr_mse']:.2f} / {row['psnr_perceptual']:.2f} dB, "
                  f"HF top {row['hf_top_mse']:.3f} / {row['hf_top_perceptual']:.3f}, block colour max {row['block_dev_max']:.2f}",
                  flush=True)
            for d in out:
                recon[q][d].append((name, rgb, out[d]))
                if args.save_recon:
                    path = Path(args.save_recon) / f"level{q}" / d / (Path(name).stem + ".png")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(out[d]).save(path)
            if name in grids:
                cells = [(rgb, f"level {q}: original"),
                         (out["mse"], f"{len(data)} B {row['bpp']:.3f} bpp\n{row['psnr_mse']:.2f} dB"),
                         (out["perceptual"], f"same file\n{row['psnr_perceptual']:.2f} dB")]
                for fmt in ("JPEG", "AVIF"):
                    if fmt == "AVIF" and not avif:
                        cells.append((np.zeros_like(rgb), "no AVIF in this Pillow"))
                        continue
                    img, n, setting, fits = pillow_at_most(rgb, fmt, len(data))
                    cells.append((img, f"{setting} {n} B {psnr(rgb, img):.2f} dB\n" + ("" if fits else "over: smallest file")))
                grid_rows[name].append(dict(level=q, cells=cells))
    for name, box in grids.items():
        rgb = dict(images)[name]
        box = box or ((rgb.shape[1] - CROP) // 2, (rgb.shape[0] - CROP) // 2)
        path = Path(args.grid_dir) / f"{Path(name).stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid_image(name, rgb, grid_rows[name], box).save(path, optimize=True)
        print(f"wrote {path}")

    fidkid, fid_note = {}, None
    if args.inception_weights:
        try:
            for q in levels:
                for d in ("mse", "perceptual"):
                    fidkid[(q, d)] = perceptual.fid_kid(recon[q][d], args.inception_weights)
        except perceptual.PerceptualError as e:
            sys.exit(f"perceptual_decoder.py: error: {e}")
    else:
        fid_note = ("FID/KID: not computed (no --inception-weights given; they need torch-fidelity's Inception "
                    "weights as a local file, docs/perceptual.md). No figure from stand-in weights.")
        print(fid_note)

    def mean(q, key):
        return float(np.mean([r[key] for r in rows[q]]))

    subset = "" if len(images) == total_images else f" (first {len(images)} of {total_images} images)"
    lines = [f"# Perceptual decoder vs MSE decoder, the same .bin files{subset}", "",
             f"`python -m eval.perceptual_decoder {args.images}"
             + (f" --decoder-file {args.decoder_file}" if args.decoder_file else "")
             + (f" --model {args.model}" if args.model else "") + (f" --images {args.limit}" if args.limit else "")
             + "`", "",
             f"Model `{model_sha[:16]}…`, perceptual decoder `{decoder_file.name}` (SHA-256 `{sha256_of(decoder_file)[:16]}…`); "
             f"{len(images)} images, means over images. bpp from file bytes (one file per image and level, decoded by both). "
             f"HF = radially averaged luma power spectrum of the reconstruction over the original's, summed over "
             + ", ".join(f"{b} band {lo}–{hi} cycles/px" for b, (lo, hi) in BANDS.items())
             + " (1.00 = the original's energy). Block colour: |mean colour of a 32x32 block, perceptual − MSE decoder|, "
             "per channel, in 8-bit levels (mean over blocks; 99th percentile and max over all blocks of all images).", "",
             "| level | bpp | PSNR MSE / perc. (dB) | MS-SSIM MSE / perc. | HF top MSE / perc. | HF upper-mid MSE / perc. "
             "| block colour mean / p99 / max |" + (" FID MSE / perc. | KID MSE / perc. |" if fidkid else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if fidkid else "")]
    for q in levels:
        devs = np.array([[r["block_dev_p99"], r["block_dev_max"]] for r in rows[q]])
        line = (f"| {q} | {mean(q, 'bpp'):.4f} | {mean(q, 'psnr_mse'):.2f} / {mean(q, 'psnr_perceptual'):.2f} "
                f"| {mean(q, 'ms_ssim_mse'):.4f} / {mean(q, 'ms_ssim_perceptual'):.4f} "
                f"| {mean(q, 'hf_top_mse'):.3f} / {mean(q, 'hf_top_perceptual'):.3f} "
                f"| {mean(q, 'hf_upper-mid_mse'):.3f} / {mean(q, 'hf_upper-mid_perceptual'):.3f} "
                f"| {mean(q, 'block_dev_mean'):.2f} / {devs[:, 0].max():.2f} / {devs[:, 1].max():.2f} |")
        if fidkid:
            m, pe = fidkid[(q, "mse")], fidkid[(q, "perceptual")]
            line += f" {m['fid']:.2f} / {pe['fid']:.2f} | {m['kid_mean']:.4f} / {pe['kid_mean']:.4f} |"
        lines.append(line)
    if fid_note:
        lines += ["", fid_note]
    lines += ["", "Grids (original | MSE | perceptual | JPEG | AVIF at ≤ the .bin's bytes): "
              + ", ".join(f"`{Path(args.grid_dir).name}/{Path(n).stem}.png`" for n in grids)
              + ("" if avif else " (this Pillow has no AVIF)")]
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows=[r for q in levels for r in rows[q]],
                                                   fid_kid={f"{q}-{d}": v for (q, d), v in fidkid.items()}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
