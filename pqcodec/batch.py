"""Folders: `pqcodec encode DIR -o OUTDIR` / `pqcodec decode DIR -o OUTDIR`.

Every input under DIR (images to encode: by extension; files to decode: *.bin) maps to the same
relative path under OUTDIR with the new extension. Worker processes code the files; one that fails is
listed and skipped, the batch goes on. Outputs are written atomically; existing ones are skipped
unless --force, so rerunning a batch finishes what is missing.
"""
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .data import IMAGE_SUFFIXES
from .errors import PQCodecError
from .files import read_coded_file, write_atomic
from .image import image_bytes


@dataclass
class BatchReport:
    written: int = 0
    skipped: list = field(default_factory=list)   # outputs that existed
    failed: list = field(default_factory=list)    # (input, one-line reason)


def plan(src: Path, dst: Path, decode: bool) -> list[tuple[Path, Path]]:
    """(input, output) pairs, sorted; inputs by extension."""
    if decode:
        inputs = [p for p in src.rglob("*.bin") if p.is_file()]
    else:
        inputs = [p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    suffix = ".png" if decode else ".bin"
    return [(p, dst / p.relative_to(src).with_suffix(suffix)) for p in sorted(inputs)]


def _init_worker(threads: int):
    import torch
    torch.set_num_threads(threads)


def _code_one(src: Path, dst: Path, decode: bool, options: dict) -> str | None:
    """Runs in a worker: codes one file; returns None, or the one-line reason it failed."""
    import pqcodec
    try:
        if decode:
            data = image_bytes(pqcodec.decode(read_coded_file(src), model=options["model"]), "PNG")
        else:
            data = pqcodec.encode(src.read_bytes(), quality=options["quality"], steps=options["steps"],
                                  model=options["model"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dst, data)
        return None
    except PQCodecError as e:
        return str(e)
    except OSError as e:
        return e.strerror or str(e)
    except Exception as e:  # a bug, not bad input: still one line, and the batch goes on
        return f"internal error {type(e).__name__}: {e}"


def run(src: Path, dst: Path, decode: bool, options: dict, workers: int, force: bool, progress: bool) -> BatchReport:
    report = BatchReport()
    todo = []
    for i, o in plan(src, dst, decode):
        if o.exists() and not force:
            report.skipped.append(o)
        else:
            todo.append((i, o))
    if not todo:
        return report
    workers = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(todo), desc="decode" if decode else "encode", unit="file", disable=not progress)
    ctx = multiprocessing.get_context("spawn")  # a forked torch can deadlock in its thread pools
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_code_one, i, o, decode, options): i for i, o in todo}
            for f in as_completed(futures):
                try:
                    reason = f.result()
                except BrokenProcessPool:
                    reason = "worker process died (out of memory?)"
                if reason is None:
                    report.written += 1
                else:
                    report.failed.append((futures[f], reason))
                bar.update(1)
    finally:
        bar.close()
    report.failed.sort()
    return report


def print_report(report: BatchReport, file=sys.stderr):
    """A summary line, then one line per failed input."""
    print(f"pqcodec: {report.written} written, {len(report.skipped)} skipped (output exists; --force "
          f"replaces), {len(report.failed)} failed", file=file)
    for path, reason in report.failed:
        print(f"pqcodec: error: {path}: {reason}", file=file)
