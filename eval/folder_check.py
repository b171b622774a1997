#!/usr/bin/env python3
"""A folder batch as a user runs it, and stopped as a user stops it.

1. N crops of the test images plus 3 broken files, encoded with `pqcodec encode DIR -o OUT --workers W`:
   N outputs, the 3 failures named, a non-zero exit, the inputs untouched, no temporary files left,
   and a rerun skips every existing output.
2. A 50-image folder run (--stop-images), stopped once it has written a few files: by Ctrl-C (SIGINT
   to the process group, as a terminal sends it), by two Ctrl-C 0.1 s apart, and by SIGTERM to the
   main process alone. Each must stop within 2 s (--stop-limit) with no process of the run left
   (workers, multiprocessing's resource tracker), no file written after the exit, no temporary
   file, no output that differs from an uninterrupted run's, a summary line, and exit status 130 or
   143; a rerun must then write exactly the rest and exit 0.

    python -m eval.folder_check                         # crops of ../shared/data/kodak, shipped model
    python -m eval.folder_check ../shared/data/kodak --images 97 --workers 2
    python -m eval.folder_check --synthetic --model W   # generated images, weights W (tests do this)
"""
import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
BROKEN = {"truncated.png": None, "text-not-image.jpg": b"this is not a JPEG\n", "empty.png": b""}
STOPS = {"Ctrl-C": (signal.SIGINT, 1), "Ctrl-C twice": (signal.SIGINT, 2), "SIGTERM": (signal.SIGTERM, 1)}


# -- the images ------------------------------------------------------------------------------------
def synthetic_image(size: int, seed: int) -> np.ndarray:
    """A noisy gradient, size x size RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, ((x + y) % 64) * 4], -1)
    return np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def write_crops(folder: Path | None, count: int, crop: int, dest: Path, seed: int = 0) -> list[Path]:
    """`count` PNG crops of the images in `folder` (random, seeded), or generated images if None."""
    from pqcodec.data import list_images
    rng = random.Random(seed)
    sources = list_images(folder) if folder else []
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        if sources:
            rgb = np.asarray(Image.open(sources[i % len(sources)]).convert("RGB"))
            y, x = rng.randrange(rgb.shape[0] - crop + 1), rng.randrange(rgb.shape[1] - crop + 1)
            rgb, stem = rgb[y:y + crop, x:x + crop], sources[i % len(sources)].stem
        else:
            rgb, stem = synthetic_image(crop, seed * 1000 + i), "synthetic"
        paths.append(dest / f"{i:03d}-{stem}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def snapshot(folder: Path) -> dict:
    """{relative path: SHA-256} of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def encode_command(src: Path, out: Path, workers: int, model: str | None) -> list[str]:
    return [sys.executable, "-m", "pqcodec", "encode", str(src), "-o", str(out), "--workers", str(workers),
            "--quiet"] + (["--model", str(model)] if model else [])


def encode(src: Path, out: Path, workers: int, model: str | None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run(encode_command(src, out, workers, model), capture_output=True, text=True, cwd=ROOT,
                       timeout=1800)
    return r, time.perf_counter() - t0


# -- processes (Linux /proc) -----------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every living process below `pid`."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) and st[0] != "Z":
            parents[int(entry)] = st[1]
    found, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier and p not in found}
        for p in frontier:
            try:
                found[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass
    return found


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


# -- stopping a run --------------------------------------------------------------------------------
def as_from_a_terminal():
    """In a child before exec: SIGINT handled by default, as in a program started from a terminal
    (a background job of a script, as this one may be, starts with SIGINT ignored, and keeps it so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class StopResult:
    how: str
    written_before: int = 0       # outputs when the signal was sent
    total: int = 0
    stop_s: float = float("nan")  # signal to exit of the main process
    status: int | None = None
    workers_seen: int = 0
    orphans: list = field(default_factory=list)
    partial: list = field(default_factory=list)   # temporary files, outputs unlike the reference
    late_writes: bool = False     # outputs changed after the exit
    rerun_status: int | None = None
    rerun_written: int = 0
    stderr: str = ""
    checks: dict = field(default_factory=dict)


def stop_run(src: Path, out: Path, reference: dict, how: str, workers: int, model: str | None,
             limit_s: float = 2.0, after: int = 2, timeout: float = 300, rerun: bool = True) -> StopResult:
    """Starts a folder run of `src` into `out` in a session of its own, waits until it has written
    `after` outputs, stops it as `how` says (STOPS), and checks what the module docstring lists
    against `reference` (the snapshot of an uninterrupted run); the rerun only if `rerun`."""
    sig, times = STOPS[how]
    res = StopResult(how, total=len(reference))
    p = subprocess.Popen(encode_command(src, out, workers, model), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=as_from_a_terminal)
    try:
        deadline = time.monotonic() + timeout
        procs = {}
        while time.monotonic() < deadline and p.poll() is None:
            procs.update(descendants(p.pid))
            if out.is_dir() and len(list(out.glob("*.bin"))) >= after:
                break
            time.sleep(0.02)
        procs.update(descendants(p.pid))
        res.written_before = len(list(out.glob("*.bin"))) if out.is_dir() else 0
        res.workers_seen = sum("resource_tracker" not in c for c in procs.values())
        t0 = time.perf_counter()
        for i in range(times):
            if i:
                time.sleep(0.1)
            if sig == signal.SIGINT:
                os.killpg(p.pid, sig)  # a terminal's Ctrl-C: every process of the foreground group
            else:
                os.kill(p.pid, sig)
        try:
            p.wait(timeout=30)
        finally:
            res.stop_s = time.perf_counter() - t0
        left = [q for q in procs if alive(q)]
        until = time.monotonic() + 1.0  # multiprocessing's resource tracker ends when it sees its pipe close
        while time.monotonic() < until and any(alive(q) and "resource_tracker" in procs[q] for q in left):
            time.sleep(0.02)
        res.orphans = [f"{q} {procs[q][:80]}" for q in left
                       if "resource_tracker" not in procs[q] or alive(q)]
        res.status, res.stderr = p.returncode, p.stderr.read()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        p.stderr.close()
    at_exit = snapshot(out) if out.is_dir() else {}
    time.sleep(0.3)
    res.late_writes = (snapshot(out) if out.is_dir() else {}) != at_exit
    res.partial = [name for name, digest in at_exit.items() if reference.get(name) != digest]
    done = len(at_exit)
    res.checks = {
        "stopped while files were still to do": res.written_before < res.total and done < res.total,
        f"stopped within {limit_s:g} s": res.stop_s <= limit_s,
        # its own status, or death by the signal (a second Ctrl-C during Python's exit: as a shell reports it)
        f"exit status {128 + sig}": res.status in (128 + sig, -sig),
        "no process of the run left": not res.orphans,
        "nothing written after the exit": not res.late_writes,
        "no partial or temporary file": not res.partial,
        "a summary of what was written": f"{done} written" in res.stderr and "not done" in res.stderr,
    }
    if rerun:
        r, _ = encode(src, out, workers, model)
        res.rerun_status, res.rerun_written = r.returncode, _count(r.stderr, "written")
        res.checks["rerun writes exactly the rest, exit 0"] = (
            r.returncode == 0 and res.rerun_written == res.total - done and snapshot(out) == reference)
    return res


def _count(stderr: str, word: str) -> int:
    """N from the summary line's 'N written'."""
    for line in stderr.splitlines():
        if f" {word}," in line and line.startswith("pqcodec: "):
            return int(line.split(f" {word},")[0].split()[-1])
    return -1


def print_stop(res: StopResult):
    print(f"{res.how}: stopped {res.stop_s:.2f} s after the signal (status {res.status}); "
          f"{res.written_before} of {res.total} written when sent, {res.workers_seen} worker processes, "
          f"{len(res.orphans)} left after the exit, {len(res.partial)} partial files; "
          f"rerun wrote {res.rerun_written} (status {res.rerun_status})")
    for line in res.stderr.strip().splitlines():
        print("    " + line)
    for name, ok in res.checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    for orphan in res.orphans:
        print(f"        left: {orphan}")


# -- the whole check -------------------------------------------------------------------------------
def batch_check(src_images: Path | None, tmp: Path, args) -> dict:
    """Part 1 (see the module docstring); prints its figures, returns its checks."""
    src, out = tmp / "in", tmp / "out"
    write_crops(src_images, args.images, args.crop, src)
    BROKEN["truncated.png"] = next(src.iterdir()).read_bytes()[:300]  # a real PNG, cut short
    for name, data in BROKEN.items():
        (src / name).write_bytes(data)
    before = snapshot(src)
    r, wall = encode(src, out, args.workers, args.model)
    outputs = sorted(p.name for p in out.rglob("*") if p.is_file())
    failed = [line for line in r.stderr.splitlines() if line.startswith("pqcodec: error:")]
    checks = {
        f"{args.images} .bin files out": len(outputs) == args.images and all(o.endswith(".bin") for o in outputs),
        "3 failures, each named": len(failed) == 3 and all(any(b in f for f in failed) for b in BROKEN),
        "exit status non-zero": r.returncode != 0,
        "inputs untouched": snapshot(src) == before,
        "no temporary files left": not any(p.name.endswith(".part") for p in tmp.rglob("*")),
    }
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    r2, wall2 = encode(src, out, args.workers, args.model)
    checks["rerun skips every existing output"] = (
        f"0 written, {args.images} skipped" in r2.stderr and all(p.stat().st_mtime_ns == t for p, t in stamps.items()))
    crops_of = src_images or "generated images"
    print(f"pqcodec encode of {args.images} images ({args.crop}x{args.crop} crops of {crops_of}) "
          f"+ 3 broken files, {args.workers} workers: {wall:.1f} s; rerun {wall2:.1f} s; exit status {r.returncode}\n")
    print("stderr of the first run:\n" + "\n".join("    " + line for line in r.stderr.splitlines()) + "\n")
    for name, ok in checks.items():
        print(f"PASS  {name}" if ok else f"FAIL  {name}")
    return checks


def stop_checks(src_images: Path | None, tmp: Path, args, hows=tuple(STOPS)) -> dict:
    """Part 2; prints its figures, returns its checks."""
    src, ref = tmp / "stop-in", tmp / "stop-ref"
    write_crops(src_images, args.stop_images, args.crop, src, seed=1)
    r, wall = encode(src, ref, args.workers, args.model)
    reference = snapshot(ref)
    print(f"\n{args.stop_images}-image run, uninterrupted: {wall:.1f} s, exit status {r.returncode}")
    checks = {"uninterrupted run writes every file": r.returncode == 0 and len(reference) == args.stop_images}
    for how in hows:
        res = stop_run(src, tmp / f"stop-{how.replace(' ', '-')}", reference, how, args.workers, args.model,
                       args.stop_limit)
        print()
        print_stop(res)
        checks.update({f"{how}: {k}": v for k, v in res.checks.items()})
    return checks


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m eval.folder_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help=f"images to crop from (default: {KODAK} if present)")
    ap.add_argument("--synthetic", action="store_true", help="generated images instead of crops")
    ap.add_argument("--images", type=int, default=97, help="good images in the batch")
    ap.add_argument("--stop-images", type=int, default=50, help="images in the runs that are stopped")
    ap.add_argument("--stop-limit", type=float, default=2.0, help="seconds a stop may take")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", help="weights file (default: the shipped model)")
    ap.add_argument("--only", choices=["batch", "stop"], help="run one part")
    args = ap.parse_args(argv)
    images = None if args.synthetic else Path(args.folder) if args.folder else (KODAK if KODAK.is_dir() else None)
    checks = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "stop":
            checks.update(batch_check(images, Path(tmp), args))
        if args.only != "batch":
            checks.update(stop_checks(images, Path(tmp), args))
    print(f"\nRESULT: {'PASS' if all(checks.values()) else 'FAIL'} ({sum(checks.values())} of {len(checks)} checks)")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
