#!/usr/bin/env python3
"""A folder batch as a user runs it: N crops of the test images plus 3 broken files, encoded with
`pqcodec encode DIR -o OUT --workers W`; checks N outputs, the 3 failures named, a non-zero exit,
the inputs untouched, no temporary files left, and that a rerun skips every existing output.

    python eval/folder_check.py ../shared/data/kodak --images 97 --workers 2
"""
import argparse
import hashlib
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import ROOT, load_rgb_images

BROKEN = {"truncated.png": None, "text-not-image.jpg": b"this is not a JPEG\n", "empty.png": b""}


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def encode(src: Path, out: Path, workers: int) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pqcodec", "encode", str(src), "-o", str(out), "--workers", str(workers),
                        "--quiet"], capture_output=True, text=True, cwd=ROOT)
    return r, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="images to crop from")
    ap.add_argument("--images", type=int, default=97, help="good images in the batch")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(0)
    sources = load_rgb_images(args.folder)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        for i in range(args.images):
            name, rgb = sources[i % len(sources)]
            y, x = rng.randrange(rgb.shape[0] - args.crop), rng.randrange(rgb.shape[1] - args.crop)
            Image.fromarray(rgb[y:y + args.crop, x:x + args.crop]).save(src / f"{i:03d}-{Path(name).stem}.png")
        BROKEN["truncated.png"] = next(src.iterdir()).read_bytes()[:300]  # a real PNG, cut short
        for name, data in BROKEN.items():
            (src / name).write_bytes(data)
        before = snapshot(src)

        r, wall = encode(src, out, args.workers)
        outputs = sorted(p.name for p in out.rglob("*") if p.is_file())
        failed = [line for line in r.stderr.splitlines() if line.startswith("pqcodec: error:")]
        checks = {
            f"{args.images} .bin files out": len(outputs) == args.images and all(o.endswith(".bin") for o in outputs),
            "3 failures, each named": len(failed) == 3 and all(any(b in f for f in failed) for b in BROKEN),
            "exit status non-zero": r.returncode != 0,
            "inputs untouched": snapshot(src) == before,
            "no temporary files left": not any(p.name.endswith(".part") for p in Path(tmp).rglob("*")),
        }
        stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
        r2, wall2 = encode(src, out, args.workers)
        checks["rerun skips every existing output"] = (
            f"0 written, {args.images} skipped" in r2.stderr
            and all(p.stat().st_mtime_ns == t for p, t in stamps.items()))
    print(f"pqcodec encode of {args.images} images ({args.crop}x{args.crop} crops of {args.folder}) + 3 broken "
          f"files, {args.workers} workers: {wall:.1f} s; rerun {wall2:.1f} s; exit status {r.returncode}\n")
    print("stderr of the first run:\n" + "\n".join("    " + line for line in r.stderr.splitlines()) + "\n")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
