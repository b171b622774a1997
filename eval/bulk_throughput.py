"""Throughput of a whole collection: folder mode (`pqcodec encode SRC -o DST --workers N`) against Ray
(`... --ray`), each run as a user runs it, from a cold start, on the same images and options.

    python -m eval.bulk_throughput ../shared/data/kodak --copies 4 --workers 2

The collection: `--copies` copies of the images in sub-folders (Kodak x4: 96 images). For each mode,
the whole command's wall time (cold: Python, torch, the model, and for Ray its local instance and its
actors, started from nothing), and the images per second once running: from the output written when
every worker had finished one image to the last output (the outputs' modification times), so that
start-up is left out. Start-up cost: the wall time less what the images take at the running rate.
Both modes must write the same bytes; the table says whether they did. Prints a Markdown table.
"""
import argparse
import filecmp
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_collection(images: Path, copies: int, folder: Path) -> int:
    """`copies` copies of the images in `images`, in sub-folders copy1 .. copyN of `folder`; how many."""
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() == ".png")
    for i in range(1, copies + 1):
        (folder / f"copy{i}").mkdir(parents=True, exist_ok=True)
        for p in sources:
            shutil.copyfile(p, folder / f"copy{i}" / p.name)
    return copies * len(sources)


def command(src: Path, out: Path, mode: str, workers: int, extra: list) -> list:
    cmd = [sys.executable, "-m", "pqcodec", "encode", str(src), "-o", str(out), "--workers", str(workers), "--quiet",
           *extra]
    return cmd + ["--ray"] if mode == "ray" else cmd


def timed_run(src: Path, out: Path, mode: str, workers: int, extra: list) -> dict:
    """Runs one mode from a cold start; its wall time, running rate and start-up cost."""
    cmd = command(src, out, mode, workers, extra)
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit status {r.returncode}\n{r.stderr}")
    stamps = sorted(p.stat().st_mtime for p in out.rglob("*.bin"))
    n = len(stamps)
    warm = min(workers, n - 1)  # the output by which every worker had coded an image
    rate = (n - warm) / (stamps[-1] - stamps[warm - 1]) if n > warm and stamps[-1] > stamps[warm - 1] else 0.0
    return dict(mode=mode, images=n, wall=wall, rate=rate, first=stamps[0] - start,
                startup=wall - n / rate if rate else float("nan"), command=" ".join(cmd))


def median(results: list, mode: str) -> dict:
    """Each figure's median over the runs of `mode`."""
    runs = [r for r in results if r["mode"] == mode]
    return {k: statistics.median(r[k] for r in runs) for k in ("images", "wall", "rate", "first", "startup")}


def same_outputs(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*.bin"))
    return names == sorted(p.relative_to(b) for p in b.rglob("*.bin")) and \
        all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", type=Path, help="a folder of PNG images (e.g. ../shared/data/kodak)")
    ap.add_argument("--copies", type=int, default=4, help="copies of the images, each in a sub-folder (default 4)")
    ap.add_argument("--workers", type=int, default=2, help="folder mode's --workers, and Ray's actors (default 2)")
    ap.add_argument("--modes", default="folder,ray", help="which to run, in this order (default folder,ray)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each mode, in the order A B B A ... "
                    "(default 1); the table adds each mode's medians")
    ap.add_argument("--work", type=Path, help="where the collection and outputs go (default: a temporary folder)")
    ap.add_argument("--options", default="", help="more encode options for both modes, e.g. '--quality 3' "
                    "(default: none, the default level)")
    args = ap.parse_args(argv)
    extra = shlex.split(args.options)
    work = args.work or Path(tempfile.mkdtemp(prefix="bulk-throughput-"))
    src = work / "collection"
    shutil.rmtree(src, ignore_errors=True)
    n = make_collection(args.images, args.copies, src)
    print(f"{n} images ({args.copies} x {args.images}), {args.workers} workers, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.2f} before", flush=True)
    modes = args.modes.split(",")
    results = []
    for r in range(args.repeats):
        for mode in (modes if r % 2 == 0 else modes[::-1]):  # ABBA: a load that drifts weighs on both alike
            out = work / f"out-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            results.append(timed_run(src, out, mode, args.workers, extra))
            print(f"{mode}: {results[-1]['command']}: {results[-1]['wall']:.1f} s, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    print()
    print("| mode | images | cold start: whole command | first output after | images/s once running | "
          f"vs {modes[0]} | start-up cost |")
    print("|---|---|---|---|---|---|---|")
    rows = results + ([dict(median(results, mode), mode=f"{mode}, median of {args.repeats}") for mode in modes]
                      if args.repeats > 1 else [])
    base = median(results, modes[0])
    for r in rows:
        print(f"| {r['mode']} | {int(r['images'])} | {r['wall']:.1f} s ({r['images'] / r['wall']:.2f} images/s) | "
              f"{r['first']:.1f} s | {r['rate']:.2f} | {r['rate'] / base['rate']:.2f}x | {r['startup']:.1f} s |")
    if len(modes) > 1:
        same = all(same_outputs(work / f"out-{modes[0]}", work / f"out-{mode}") for mode in modes[1:])
        print(f"\noutputs byte-identical across modes: {'yes' if same else 'NO'}")
        if not same:
            return 1
    print(f"load average {os.getloadavg()[0]:.2f} after")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
