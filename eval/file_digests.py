"""The SHA-256 of every file pqcodec writes for a folder of images, at levels and at sizes: run it on
two commits and compare, to show that a change leaves the files byte for byte as they were (a
restructuring, a speed-up), on more images than the golden files hold.

    python -m eval.file_digests ../shared/data/kodak --max-bytes 500 1000 2000 5000 10000 20000 40000 \\
        --out /tmp/digests-new.json [--against /tmp/digests-old.json]

Each file is what `pqcodec.encode` returns (the shipped default model, 1 thread). --against: the
output of an earlier run; lists every file whose bytes differ and exits 1 if any does. --results: a
docs/results JSON of eval/rd.py's pqcodec --max-bytes curve (per_image bytes), checked for the same
byte counts.
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

import pqcodec
from pqcodec.data import list_images


def digests(paths: list[Path], levels: list[int], sizes: list[int]) -> dict:
    """{"IMAGE level N" | "IMAGE max_bytes N": [bytes, sha256]} for every image and setting."""
    out = {}
    start = time.perf_counter()
    for i, path in enumerate(paths, 1):
        for level in levels:
            out[f"{path.name} level {level}"] = _digest(pqcodec.encode(str(path), level))
        for size in sizes:
            out[f"{path.name} max_bytes {size}"] = _digest(pqcodec.encode(str(path), max_bytes=size))
        print(f"{i}/{len(paths)} {path.name} {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return out


def _digest(data: bytes) -> list:
    return [len(data), hashlib.sha256(data).hexdigest()]


def differences(new: dict, old: dict) -> list[str]:
    """Lines naming every file of either run whose bytes are not the other's."""
    lines = [f"{k}: only in the earlier run" for k in sorted(set(old) - set(new))]
    lines += [f"{k}: only in this run" for k in sorted(set(new) - set(old))]
    lines += [f"{k}: {old[k][0]} B -> {new[k][0]} B, {old[k][1][:12]} -> {new[k][1][:12]}"
              for k in sorted(set(new) & set(old)) if new[k] != old[k]]
    return lines


def results_differences(new: dict, results: dict) -> list[str]:
    """Lines naming every image and size whose byte count differs from a docs/results curve's."""
    lines = []
    for setting, rows in results["per_image"].items():
        for row in rows:
            key = f"{row['image']} {setting}"
            if key in new and new[key][0] != row["bytes"]:
                lines.append(f"{key}: {row['bytes']} B in the results, {new[key][0]} B now")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval.file_digests", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a folder of images (sorted by name)")
    p.add_argument("--images", type=int, help="only the first N images")
    p.add_argument("--levels", type=int, nargs="*", default=[], help="levels to code each image at")
    p.add_argument("--max-bytes", type=int, nargs="*", default=[], help="sizes to code each image to (rate control)")
    p.add_argument("--out", type=Path, required=True, help="the JSON written")
    p.add_argument("--against", type=Path, help="an earlier run's JSON: every file must be the same")
    p.add_argument("--results", type=Path, help="a docs/results JSON of pqcodec --max-bytes: the same byte counts")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    paths = list_images(args.folder)[:args.images]
    start = time.perf_counter()
    files = digests(paths, args.levels, args.max_bytes)
    args.out.write_text(json.dumps({"pqcodec": pqcodec.__version__, "command": "python -m eval.file_digests "
                                    + " ".join(sys.argv[1:]), "seconds": round(time.perf_counter() - start),
                                    "files": files}, indent=1))
    print(f"{len(files)} files, {args.out}")
    failed = []
    if args.against:
        failed += differences(files, json.loads(args.against.read_text())["files"])
    if args.results:
        failed += results_differences(files, json.loads(args.results.read_text()))
    for line in failed:
        print(line)
    if args.against or args.results:
        print(f"{len(failed)} differences")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
