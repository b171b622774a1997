#!/usr/bin/env python3
"""Encode/decode time and peak memory per image: pqcodec (every level), CompressAI's
bmshj2018_hyperprior (quality 3, untrained weights: timing only) and Pillow's AVIF, in one run on the
same images and the same machine, with ratios to the hyperprior.

Each codec runs in a child process of its own, so that its peak resident memory (RSS) is its own.
Times are means over the images after one warm-up image. Needs compressai importable (README: the
eval environment). With --threads, every codec runs once per thread count (torch.set_num_threads),
and ratios compare runs with the same thread count.

    python eval/bench.py ../shared/data/kodak [--levels 1 3 5] [--threads 1 2 4]
"""
import argparse
import io
import json
import resource
import subprocess
import sys
import time

import numpy as np

from common import load_rgb_images


def bench_pqcodec(images, level: int, model: str | None):
    import pqcodec_eval
    codec, _ = pqcodec_eval.load(model)

    def run(rgb):
        t0 = time.perf_counter()
        data = codec.encode(rgb, level)
        t1 = time.perf_counter()
        codec.decode(data)
        return t1 - t0, time.perf_counter() - t1, len(data)
    return run


def bench_hyperprior(images, *_):
    import torch
    import torch.nn.functional as F
    from compressai.zoo import bmshj2018_hyperprior
    net = bmshj2018_hyperprior(quality=3, pretrained=False).eval()
    net.update(force=True)

    @torch.inference_mode()
    def run(rgb):
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
        H, W = x.shape[2:]
        x = F.pad(x, (0, -W % 64, 0, -H % 64))
        t0 = time.perf_counter()
        out = net.compress(x)
        t1 = time.perf_counter()
        net.decompress(out["strings"], out["shape"])
        return t1 - t0, time.perf_counter() - t1, sum(len(s[0]) for s in out["strings"])
    return run


def bench_avif(images, *_):
    from PIL import Image

    def run(rgb):
        t0 = time.perf_counter()
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "AVIF", quality=50, speed=4)
        t1 = time.perf_counter()
        buf.seek(0)
        Image.open(buf).load()
        return t1 - t0, time.perf_counter() - t1, buf.getbuffer().nbytes
    return run


SUBJECTS = {"pqcodec": bench_pqcodec, "hyperprior": bench_hyperprior, "avif": bench_avif}


def worker(name, folder, level, model, threads):
    import torch
    if threads:
        torch.set_num_threads(threads)
    images = load_rgb_images(folder)
    run = SUBJECTS[name](images, level, model)
    run(images[0][1])  # warm-up: first-call allocations and kernel selection
    times = np.array([run(rgb)[:2] for _, rgb in images])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"encode_s": float(times[:, 0].mean()), "decode_s": float(times[:, 1].mean()),
                      "peak_rss_mb": peak_mb, "images": len(images)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--levels", type=int, nargs="*", default=None, help="pqcodec levels (default: every level)")
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, nargs="*", default=[0],
                    help="torch thread counts to run each codec with (default: torch's own)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.folder, args.level, args.model, args.threads[0])

    import pqcodec_eval
    levels = args.levels or range(1, pqcodec_eval.load(args.model)[0].levels() + 1)
    import torch
    rows, refs = {}, {}
    for threads in args.threads:
        n_threads = threads or torch.get_num_threads()
        runs = [("hyperprior", f"CompressAI bmshj2018_hyperprior q3, {n_threads} threads", 0)]
        runs += [("pqcodec", f"pqcodec level {q}, {n_threads} threads", q) for q in levels]
        runs += [("avif", f"Pillow AVIF q50 speed 4, {n_threads} threads", 0)]
        for name, label, level in runs:
            rows[label] = _run(args, name, label, level, threads)
            refs[label] = runs[0][1]
    n = next(iter(rows.values()))["images"]
    print(f"{n} images from {args.folder}; torch {torch.__version__}\n")
    print("| codec | encode s/image | decode s/image | peak RSS MB | encode / hyperprior | decode / hyperprior |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        ref = rows[refs[label]]
        print(f"| {label} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | {r['peak_rss_mb']:.0f} "
              f"| {r['encode_s'] / ref['encode_s']:.2f} | {r['decode_s'] / ref['decode_s']:.2f} |")


def _run(args, name, label, level, threads) -> dict:
    cmd = [sys.executable, __file__, args.folder, "--worker", name, "--level", str(level), "--threads", str(threads)]
    if args.model:
        cmd += ["--model", args.model]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        sys.exit(f"bench: {label}: {last}" + (" (install compressai: README, eval environment)"
                                               if "compressai" in last else ""))
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
