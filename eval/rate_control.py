"""Rate control and RDOQ on a folder of images (docs/ratecontrol.md): per image,

- the five levels (λ = 0) and the continuous RDOQ curve at each level (--lambdas, for each
  --distortions), from one analysis of the image; every point's bytes are a real file's, its PSNR
  that of the tokens coded (which decode exactly, tests/test_ratecontrol.py);
- `--max-bytes N` for each N of --sizes, through ratecontrol.encode_to_size as the CLI runs it:
  bytes (never over N), bpp, PSNR of the file decoded by the unchanged decoder, encode time and
  coder passes; or the error when N is out of reach.

Means over images; BD-rate (eval/bdrate.py) of each λ curve's upper envelope and of the --max-bytes
curve (the N every image reaches) against the levels' curve. Writes TAG-ratecontrol.json and .md to
--out (default ./results; the committed ones: --out docs/results), after every image.

    OMP_NUM_THREADS=1 nice -n 19 python -m eval.rate_control ../shared/data/kodak --out docs/results
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .bdrate import bd_rate
from .common import bpp, load_rgb_images, psnr
from .result_paths import add_output_args, output_location

SIZES = [500, 1000, 2000, 5000, 10000, 20000, 40000]
LAMBDAS = [0.03, 0.1, 0.3, 1.0]


def image_rows(codec, rgb, lambdas, distortions, sizes, steps):
    from pqcodec import rdoq
    from pqcodec.ratecontrol import RateError, encode_to_size
    H, W = rgb.shape[:2]
    t = time.perf_counter()
    analysis = codec.image_to_tokens(rgb, codec.active_at(codec.num_levels()), candidates=rdoq.CANDIDATES)
    row = {"analysis_s": time.perf_counter() - t, "curve": [], "max_bytes": []}
    for q in range(1, codec.num_levels() + 1):
        active = codec.active_at(q)
        for dist in distortions:
            for lam in [0.0, *lambdas]:
                if lam == 0 and dist != distortions[0]:
                    continue
                t = time.perf_counter()
                choose = rdoq.chooser(codec, analysis, active, lam, dist) if lam else None
                data, stats = codec.encode_analysed(analysis.tokens[:active], (H, W), False, steps, choose)
                seconds = time.perf_counter() - t
                rec = codec.tokens_to_image(stats.tokens, H, W)
                row["curve"].append(dict(quality=q, rd_lambda=lam, distortion=dist if lam else "none",
                                         bytes=len(data), bpp=bpp(len(data), rgb), psnr=psnr(rgb, rec),
                                         coder_s=seconds))
    for N in sizes:
        try:
            r = encode_to_size(codec, rgb, max_bytes=N, steps=steps)
        except RateError as e:
            row["max_bytes"].append(dict(N=N, fits=False, error=str(e)))
            continue
        decoded = np.asarray(codec.decode(r.data).convert("RGB"))
        assert decoded.shape == rgb.shape and len(r.data) <= N
        row["max_bytes"].append(dict(N=N, fits=True, bytes=len(r.data), bpp=bpp(len(r.data), rgb),
                                     psnr=psnr(rgb, decoded), quality=r.level, rd_lambda=r.rd_lambda,
                                     encodes=r.encodes, encode_s=r.seconds))
    return row


def _front(points):
    """The upper envelope of (bpp, psnr) points: each point no other beats on both."""
    pts = sorted(points, key=lambda p: (p["bpp"], -p["psnr"]))
    front, best = [], -math.inf
    for p in pts:
        if p["psnr"] > best:
            front.append(p)
            best = p["psnr"]
    return front


def summarize(rows, levels, lambdas, distortions, sizes):
    n = len(rows)
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    curve = {}
    for r in rows.values():
        for p in r["curve"]:
            curve.setdefault((p["quality"], p["rd_lambda"], p["distortion"]), []).append(p)
    points = {k: dict(quality=k[0], rd_lambda=k[1], distortion=k[2], bpp=mean([p["bpp"] for p in v]),
                      psnr=mean([p["psnr"] for p in v]), coder_s=mean([p["coder_s"] for p in v]))
              for k, v in curve.items() if len(v) == n}
    plain = sorted((p for p in points.values() if p["rd_lambda"] == 0), key=lambda p: p["quality"])
    out = dict(images=n, levels=plain, lambda_curves={}, max_bytes=[],
               analysis_s=mean([r["analysis_s"] for r in rows.values()]))
    for dist in distortions:
        pts = [p for p in points.values() if p["distortion"] in (dist, "none")]
        front = _front(pts)
        out["lambda_curves"][dist] = dict(
            points=sorted(pts, key=lambda p: (p["quality"], p["rd_lambda"])), envelope=front,
            bd_rate_vs_levels=bd_rate([p["bpp"] for p in plain], [p["psnr"] for p in plain],
                                      [p["bpp"] for p in front], [p["psnr"] for p in front]))
    for N in sizes:
        ms = [m for r in rows.values() for m in r["max_bytes"] if m["N"] == N]
        ok = [m for m in ms if m["fits"]]
        # what levels alone would give at this budget: the best level whose plain file fits, same images
        staircase = []
        for r in rows.values():
            got = next((m for m in r["max_bytes"] if m["N"] == N), None)
            fitting = [p for p in r["curve"] if p["rd_lambda"] == 0 and p["bytes"] <= N]
            if got and got["fits"] and fitting:
                staircase.append((got["psnr"], max(fitting, key=lambda p: p["quality"])["psnr"]))
        levels_used = {}
        for m in ok:
            levels_used[m["quality"]] = levels_used.get(m["quality"], 0) + 1
        out["max_bytes"].append(dict(
            N=N, images=len(ms), fit=len(ok), max_bytes=max([m["bytes"] for m in ok], default=None),
            mean_bytes=mean([m["bytes"] for m in ok]), bpp=mean([m["bpp"] for m in ok]),
            psnr=mean([m["psnr"] for m in ok]), encode_s=mean([m["encode_s"] for m in ok]),
            encodes=mean([m["encodes"] for m in ok]), max_encodes=max([m["encodes"] for m in ok], default=None),
            levels_chosen=dict(sorted(levels_used.items())),
            levels_only=dict(images=len(staircase), psnr=mean([b for _, b in staircase]),
                             gain_db=mean([a - b for a, b in staircase])),
            smallest_reachable=[int(m["error"].split("reaches is ")[1].split()[0]) for m in ms if not m["fits"]]))
    full = [m for m in out["max_bytes"] if m["images"] == n and m["fit"] == n]
    out["max_bytes_bd_rate_vs_levels"] = bd_rate(
        [p["bpp"] for p in plain], [p["psnr"] for p in plain], [m["bpp"] for m in full], [m["psnr"] for m in full]
    ) if len(full) >= 2 else None
    return out


def _gain(lo):
    return "—" if lo["gain_db"] is None else f"{lo['gain_db']:+.2f} dB ({lo['images']})"


def markdown(s, command):
    f = lambda x, d=2: "—" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [f"# Rate control and RDOQ: {s['images']} images", "", f"`{command}`", "",
             f"Analysis transform (once per image): {f(s['analysis_s'])} s mean.", "",
             "## The five levels (λ = 0)", "", "| level | bpp | PSNR (dB) | coder pass s |", "|---|---|---|---|"]
    lines += [f"| {p['quality']} | {f(p['bpp'], 4)} | {f(p['psnr'])} | {f(p['coder_s'])} |" for p in s["levels"]]
    for dist, c in s["lambda_curves"].items():
        lines += ["", f"## RDOQ, {dist} distortion: BD-rate of the λ curves' upper envelope vs the levels: "
                  f"{f(c['bd_rate_vs_levels'], 1)} %", "", "| level | λ | bpp | PSNR (dB) | on the envelope |", "|---|---|---|---|---|"]
        env = {(p["quality"], p["rd_lambda"]) for p in c["envelope"]}
        lines += [f"| {p['quality']} | {p['rd_lambda']:g} | {f(p['bpp'], 4)} | {f(p['psnr'])} | "
                  f"{'yes' if (p['quality'], p['rd_lambda']) in env else ''} |" for p in c["points"]]
    lines += ["", f"## --max-bytes N: BD-rate vs the levels (the N every image reaches): "
              f"{f(s['max_bytes_bd_rate_vs_levels'], 1)} %", "",
              "| N | fit | largest file | mean bytes | bpp | PSNR (dB) | vs best level that fits (images) | encode s | encodes (max) | levels chosen | smallest reachable (misses) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in s["max_bytes"]:
        miss = m["smallest_reachable"]
        lines.append(f"| {m['N']} | {m['fit']}/{m['images']} | {m['max_bytes'] or '—'} | {f(m['mean_bytes'], 0)} | "
                     f"{f(m['bpp'], 4)} | {f(m['psnr'])} | {_gain(m['levels_only'])} | {f(m['encode_s'])} | {f(m['encodes'], 1)} ({m['max_encodes'] or '—'}) | "
                     f"{', '.join(f'{k}: {v}' for k, v in m['levels_chosen'].items()) or '—'} | "
                     f"{f'{min(miss)}–{max(miss)}' if miss else '—'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m eval.rate_control", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--images", type=int, default=None, help="the first K images only")
    ap.add_argument("--sizes", type=int, nargs="*", default=SIZES, help="N for --max-bytes")
    ap.add_argument("--lambdas", type=float, nargs="*", default=LAMBDAS, help="λ of the RDOQ curves")
    ap.add_argument("--distortions", nargs="+", default=["latent"], choices=["latent", "pixel"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="weights file (default: the shipped model)")
    ap.add_argument("--summarize", action="store_true", help="no coding: redo the summary of the JSON in --out")
    add_output_args(ap, "folder")
    args = ap.parse_args(argv)
    if args.summarize:
        out, tag = output_location(args.out, args.tag, args.folder)
        saved = json.loads((out / f"{tag}-ratecontrol.json").read_text())
        rows, meta = saved["images"], saved["meta"]
        levels = max(p["quality"] for r in rows.values() for p in r["curve"])
        s = summarize(rows, levels, args.lambdas, args.distortions, args.sizes)
        (out / f"{tag}-ratecontrol.json").write_text(json.dumps(dict(meta=meta, summary=s, images=rows), indent=1))
        (out / f"{tag}-ratecontrol.md").write_text(markdown(s, meta["command"]))
        print(markdown(s, meta["command"]))
        return
    import torch
    torch.set_num_threads(args.threads)
    from pqcodec.data import list_images
    from pqcodec.zoo import load_codec, load_custom_codec
    codec = load_custom_codec(args.model) if args.model else load_codec()
    paths = list_images(args.folder)[:args.images]
    out, tag = output_location(args.out, args.tag, args.folder)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m eval.rate_control " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = {}
    for path in paths:
        (name, rgb), = load_rgb_images([path])
        t = time.perf_counter()
        rows[name] = image_rows(codec, rgb, args.lambdas, args.distortions, args.sizes, args.steps)
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
        s = summarize(rows, codec.num_levels(), args.lambdas, args.distortions, args.sizes)
        meta = dict(command=command, threads=args.threads, cpu_count=os.cpu_count(), model=args.model or "shipped")
        (out / f"{tag}-ratecontrol.json").write_text(json.dumps(dict(meta=meta, summary=s, images=rows), indent=1))
        (out / f"{tag}-ratecontrol.md").write_text(markdown(s, command))
    print(markdown(s, command))


if __name__ == "__main__":
    main()
