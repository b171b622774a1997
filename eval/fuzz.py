#!/usr/bin/env python3
"""The long fuzz run: N mutated files (tests/fuzzing.py: truncated, bit-flipped, spliced, re-headed,
random, extended) through `decode` with a tiny random model, in worker processes. Every file must end
in a one-line PQCodecError or an image of its header's size within --time-bound seconds; anything
else is reported with its seed (rerun one: `python -m eval.fuzz --first SEED --files 1`).

    python -m eval.fuzz --files 100000 --workers 2
"""
import argparse
import collections
import signal
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tests.fuzzing import make_corpus, make_weights, mutate, outcome  # tests/, in the checkout this runs from

_state = {}


class Hang(Exception):
    pass


def _on_alarm(*_):
    raise Hang()


def _init(weights: str, bound: float):
    import torch
    from pqcodec.zoo import load_custom_codec
    torch.set_num_threads(1)
    codec = load_custom_codec(weights)
    _state.update(codec=codec, corpus=make_corpus(codec), bound=bound)
    signal.signal(signal.SIGALRM, _on_alarm)


def _run(seeds: range) -> tuple[collections.Counter, list, float]:
    counts, problems, slowest = collections.Counter(), [], 0.0
    for seed in seeds:
        kind, data = mutate(_state["corpus"], seed)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, _state["bound"])
        try:
            result = outcome(_state["codec"], data)
        except Hang:
            result = "hang"
            problems.append((seed, kind, "hang", f"over {_state['bound']} s"))
        except Exception as e:
            result = "traceback"
            problems.append((seed, kind, type(e).__name__, traceback.format_exc(limit=3)))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - t0)
        counts[(kind, result)] += 1
    return counts, problems, slowest


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-bound", type=float, default=10.0, help="seconds per file before it counts as a hang")
    ap.add_argument("--chunk", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.time()
    counts, problems, slowest, crashed = collections.Counter(), [], 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(make_weights(Path(tmp) / "tiny.safetensors"))
        chunks = [range(s, min(s + args.chunk, args.first + args.files))
                  for s in range(args.first, args.first + args.files, args.chunk)]
        from tqdm import tqdm
        with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(weights, args.time_bound)) as pool:
            futures = [(c, pool.submit(_run, c)) for c in chunks]
            for c, f in tqdm(futures, desc="fuzz", unit="chunk"):
                try:
                    n, p, s = f.result()
                except BrokenProcessPool:
                    crashed.append(c)  # a worker died: a crash in native code, the worst outcome
                    continue
                counts.update(n)
                problems += p
                slowest = max(slowest, s)
    total = sum(counts.values())
    print(f"{total} fuzzed files through decode in {time.time() - t0:.0f} s, {args.workers} workers, "
          f"seeds {args.first}..{args.first + args.files - 1}; slowest file {slowest:.3f} s (bound {args.time_bound} s)\n")
    print("| mutation | files | clean error | decoded (right size) | traceback | hang |")
    print("|---|---|---|---|---|---|")
    for kind in sorted({k for k, _ in counts}):
        row = [counts[(kind, r)] for r in ("error", "decoded", "traceback", "hang")]
        print(f"| {kind} | {sum(row)} | " + " | ".join(map(str, row)) + " |")
    bad = sum(counts[k] for k in counts if k[1] in ("traceback", "hang"))
    print(f"\ntracebacks + hangs: {bad}; crashed chunks: {len(crashed)}")
    for seed, kind, what, detail in problems[:20]:
        print(f"seed {seed} ({kind}): {what}\n{detail}")
    for c in crashed:
        print(f"worker died in seeds {c.start}..{c.stop - 1}")
    sys.exit(1 if bad or crashed else 0)


if __name__ == "__main__":
    main()
