#!/usr/bin/env python3
"""Encode/decode time and peak memory per image: pqcodec (every level), CompressAI's
bmshj2018_hyperprior (quality 3, untrained weights: timing only) and Pillow's AVIF, in one run on the
same images and the same machine, with ratios to the hyperprior.

Each codec runs in a child process of its own, so that its peak resident memory (RSS) is its own.
Times are means over the images after one warm-up image. Needs compressai importable (README: the
eval environment). With --threads, every codec runs once per thread count (torch.set_num_threads),
and ratios compare runs with the same thread count.

With --load 0 1, every codec runs once on a quiet machine and once beside one busy process (a
Python loop that holds a core), and so on for each count given: a codec runs beside other work, and
its figure there is the one a user meets (the table's "/ quiet" columns: the time under load over
the same codec's quiet time in the same run).

With --rounds N, the whole sequence (every codec at every load) runs N times, one round after
another: each time is the median of its N runs, each peak memory the largest; on a shared machine
whose speed drifts over minutes, one round's ratios are good to about +-20 %, and rounds interleave
the codecs in time.

With --range-coders constriction python, pqcodec runs once with each range coder (entropy.py:
constriction's, and pqcodec's own, which runs where constriction has no wheel); --pqcodec-only leaves
the hyperprior and AVIF out (no compressai needed).

    python -m eval.bench ../shared/data/kodak [--levels 1 3 5] [--threads 1 2 4] [--load 0 1] [--rounds 3]
    python -m eval.bench ../shared/data/kodak --levels 3 --range-coders constriction python --pqcodec-only
"""
import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np

from .common import load_rgb_images


def bench_pqcodec(images, level: int, model: str | None):
    from . import pqcodec_eval
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
    ap = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--levels", type=int, nargs="*", default=None, help="pqcodec levels (default: every level)")
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, nargs="*", default=[0],
                    help="torch thread counts to run each codec with (default: torch's own)")
    ap.add_argument("--range-coders", nargs="+", default=["auto"], choices=["auto", "constriction", "python"],
                    help="run pqcodec with each of these range coders (default: the one in use)")
    ap.add_argument("--load", type=int, nargs="+", default=[0],
                    help="busy processes beside each run, one run per count (default 0: a quiet machine)")
    ap.add_argument("--rounds", type=_at_least_one, default=1,
                    help="run everything this many times: median times, largest peak memory (default 1)")
    ap.add_argument("--pqcodec-only", action="store_true", help="leave out the hyperprior and AVIF")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.folder, args.level, args.model, args.threads[0])

    from . import pqcodec_eval
    levels = args.levels or range(1, pqcodec_eval.load(args.model)[0].num_levels() + 1)
    import torch
    rounds, refs, quiet = {}, {}, {}
    for _ in range(args.rounds):
        for threads in args.threads:
            n_threads = threads or torch.get_num_threads()
            runs = [] if args.pqcodec_only else [("hyperprior", f"CompressAI bmshj2018_hyperprior q3, {n_threads} threads", 0, "auto")]
            runs += [("pqcodec", f"pqcodec level {q}{'' if coder == 'auto' else f' ({coder} range coder)'}, {n_threads} threads",
                      q, coder) for q in levels for coder in args.range_coders]
            runs += [] if args.pqcodec_only else [("avif", f"Pillow AVIF q50 speed 4, {n_threads} threads", 0, "auto")]
            for load in args.load:
                for name, label, level, coder in runs:
                    key = (label, load)
                    with busy(load):
                        rounds.setdefault(key, []).append(_run(args, name, label, level, threads, coder))
                    refs[key], quiet[key] = (runs[0][1], load), (label, 0)
    rows = {key: {"encode_s": float(np.median([r["encode_s"] for r in runs])),
                  "decode_s": float(np.median([r["decode_s"] for r in runs])),
                  "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "images": runs[0]["images"]}
            for key, runs in rounds.items()}
    n = next(iter(rows.values()))["images"]
    print(f"{n} images from {args.folder}; torch {torch.__version__}; {os.cpu_count()} CPUs"
          + (f"; medians of {args.rounds} rounds" if args.rounds > 1 else "") + "\n")
    ref_name = "first row" if args.pqcodec_only else "hyperprior"
    print(f"| codec | busy processes | encode s/image | decode s/image | peak RSS MB | encode / {ref_name} "
          f"| decode / {ref_name} | encode / quiet | decode / quiet |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (label, load), r in rows.items():
        ref, calm = rows[refs[label, load]], rows.get(quiet[label, load])
        versus_quiet = (f"{r['encode_s'] / calm['encode_s']:.2f} | {r['decode_s'] / calm['decode_s']:.2f}"
                        if calm else "— | —")
        print(f"| {label} | {load} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | {r['peak_rss_mb']:.0f} "
              f"| {r['encode_s'] / ref['encode_s']:.2f} | {r['decode_s'] / ref['decode_s']:.2f} | {versus_quiet} |")


def _at_least_one(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


@contextmanager
def busy(count: int):
    """`count` processes that each hold a core (a Python loop) for as long as the block runs."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5 if loops else 0)  # started and running before the measurement
        yield
    finally:
        for p in loops:
            p.kill()
        for p in loops:
            p.wait()


def _run(args, name, label, level, threads, coder="auto") -> dict:
    cmd = [sys.executable, "-m", "eval.bench", args.folder, "--worker", name, "--level", str(level), "--threads", str(threads)]
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ)
    if coder != "auto":
        env["PQCODEC_RANGE_CODER"] = coder
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        sys.exit(f"bench: {label}: {last}" + (" (install compressai: README, eval environment)"
                                               if "compressai" in last else ""))
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
