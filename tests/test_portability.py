"""Files decode on every x86 CPU family: eval/portability.py, run here on two small images with the
tiny random model (any float rounding that reaches the range coder shows in its files too). Files
written under native, AVX2 and SSE kernels (emulated by limiting, in child processes, the kernels
that ATen, MKL and oneDNN pick at run time) must decode under each family to the same tokens and
encode back to their exact bytes; 1, 2 and 4 threads must give the same bytes, tokens and pixels;
and ATen must report that the emulation took effect. The script exits 1 if any of these fails."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import random_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="emulates x86 families through x86 kernel dispatch")
def test_files_decode_under_every_family_and_thread_count(tiny_weights, tmp_path):
    for i, (h, w) in enumerate([(40, 56), (24, 24)]):
        Image.fromarray(random_image(h, w, seed=11 + i)).save(tmp_path / f"img{h}x{w}.png")
    r = subprocess.run([sys.executable, "-m", "eval.portability", str(tmp_path), "--images", "2", "--levels", "1", "2",
                        "--model", str(tiny_weights), "--threads", "1", "2", "4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "RESULT: PASS" in r.stdout, r.stdout + r.stderr[-3000:]
    assert "ok 4/4" in r.stdout and "same 4/4" in r.stdout  # 2 images x 2 levels per writer
