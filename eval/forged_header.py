#!/usr/bin/env python3
"""How long a forged file takes to be refused: a header claiming the largest allowed image (32768
pixels wide, 1024 high: 2^25) over a payload of random bytes, 64 bytes in all, decoded with the shipped model,
in-process (after loading) and through the CLI (a fresh process: import and model loading included).

    python -m eval.forged_header
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from pqcodec import bitstream
from pqcodec import limits
from pqcodec.errors import PQCodecError
from pqcodec.zoo import load_codec


def forged(codec, seed: int) -> bytes:
    header = bitstream.Header(codec.model_hash, codec.active_at(codec.default_level), 12,
                              1024, limits.MAX_PIXELS // 1024, False, 0,
                              conditional=codec.config.conditional)  # the version the model writes (6 for v5)
    head = bitstream.pack(header, b"")
    rng = np.random.default_rng(seed)
    return head + rng.integers(0, 256, (64 - len(head)) // 4 * 4, dtype=np.uint8).tobytes()


def main():
    codec = load_codec()
    codec.decode(codec.encode(np.zeros((64, 64, 3), np.uint8)))  # warm-up
    times = []
    for seed in range(5):
        data = forged(codec, seed)
        t0 = time.perf_counter()
        try:
            codec.decode(data)
            outcome = "DECODED"
        except PQCodecError as e:
            outcome = str(e)
        times.append(time.perf_counter() - t0)
        print(f"{len(data)} bytes claiming {bitstream.unpack(data)[0].width}x{bitstream.unpack(data)[0].height}: "
              f"{times[-1]:.3f} s in-process: {outcome}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "forged.bin")
        open(path, "wb").write(forged(codec, 0))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pqcodec", "decode", path, "-o", os.path.join(d, "out.png")],
                           capture_output=True, text=True)
        cli = time.perf_counter() - t0
    print(f"CLI: exit {r.returncode} in {cli:.2f} s (fresh process): {r.stderr.strip()}")
    print(f"in-process: max {max(times):.3f} s over {len(times)} forged files")
    sys.exit(0 if max(times) < 2 and r.returncode == 1 else 1)


if __name__ == "__main__":
    main()
