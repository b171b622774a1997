#!/usr/bin/env python3
"""Files written under a caller's reduced float32 matmul precision are the default files: levels
1..5, a rate-controlled file (--max-bytes 15000: a level map) and a 200-byte file of an image, each
written under `torch.set_float32_matmul_precision` "highest" (the default), "high" and "medium", must
be the same bytes, and each decodes under "highest".

The setting only does something on a CPU with bf16 or TF32 matrix units (Intel AMX, AVX512-BF16) or
a GPU (eval/gpu_check.py): the script says whether this CPU has such units, and where it has none,
that the run cannot fail for the reason it names (tests/test_anywhere.py emulates the rounding on
any CPU instead).

    python -m eval.matmul_precision [IMAGE] [--levels 1 2 3 4 5]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def cpu_units() -> list[str]:
    """The bf16/fp16 matrix units this CPU reports (Linux /proc/cpuinfo)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [f for f in ("amx_bf16", "amx_fp16", "avx512_bf16", "avx512_fp16") if f in flags]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.matmul_precision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", type=Path, default=ROOT / "tests" / "data" / "kodim23.png")
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    args = ap.parse_args()
    import torch
    import pqcodec
    from PIL import Image
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    ways = [(f"level {q}", dict(quality=q)) for q in args.levels] + [
        ("max 15000 B", dict(max_bytes=15000)), ("max 200 B", dict(max_bytes=200))]
    units = cpu_units()
    print(f"{args.image.name}: CPU matrix units {units or 'none (the settings change nothing here)'}, "
          f"torch {torch.__version__}")
    failures = 0
    for label, kw in ways:
        files = {}
        for setting in ("highest", "high", "medium"):
            torch.set_float32_matmul_precision(setting)
            try:
                files[setting] = pqcodec.encode(rgb, **kw)
            finally:
                torch.set_float32_matmul_precision("highest")
        same = all(data == files["highest"] for data in files.values())
        decodes = True
        for data in files.values():
            try:
                pqcodec.decode(data)
            except pqcodec.PQCodecError:
                decodes = False
        failures += not (same and decodes)
        print(f"  {label}: {len(files['highest'])} B; high {'same' if files['high'] == files['highest'] else 'DIFFERS'}, "
              f"medium {'same' if files['medium'] == files['highest'] else 'DIFFERS'}; "
              f"{'all decode' if decodes else 'a file DOES NOT DECODE'}")
    print(f"RESULT: {'PASS' if not failures else 'FAIL'} ({len(ways) - failures} of {len(ways)} ways the same)"
          + ("" if units else "; vacuous on this CPU"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
