"""Files decode on every x86 CPU family: written under native, AVX2 and SSE kernels, read under each
(DESIGN.md, "Portability"), every file must decode to the same tokens and encode back to its exact
bytes; and the thread count must not change the bytes. Another family is emulated on this machine by
limiting, in a child process, the kernels that ATen, MKL and oneDNN pick at run time. The tiny random
model is enough: any float rounding that reaches the range coder shows in its files too.
eval/portability.py does the same on Kodak with the shipped model."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import random_image

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="emulates x86 families through x86 kernel dispatch")

DISPATCH_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
FAMILIES = {
    "native": {},
    "avx2": dict(ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2"),
    "sse": dict(ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2", ONEDNN_MAX_CPU_ISA="SSE41"),
}
SIZES = [(40, 56), (24, 24)]
LEVELS = [1, 2]
ROOT = Path(__file__).resolve().parent.parent

# One child process: a JSON job on stdin (weights, images to write, files to read), a JSON line out.
_WORKER = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
import torch
job = json.loads(sys.stdin.read())
if job.get("threads"):
    torch.set_num_threads(job["threads"])
from pqcodec.errors import PQCodecError
from pqcodec.zoo import load_custom_codec
codec = load_custom_codec(job["weights"])

out = dict(capability=torch.backends.cpu.get_cpu_capability(), written=[], read=[])
for image in job.get("images", []):
    for q in job["levels"]:
        data = codec.encode(np.load(image), q)
        path = Path(job["out"]) / f"{Path(image).stem}-q{q}.bin"
        path.write_bytes(data)
        out["written"].append(dict(key=f"{Path(image).stem} q{q}", path=str(path),
                                   sha256=hashlib.sha256(data).hexdigest()))
for p in job.get("files", []):
    data = Path(p).read_bytes()
    try:
        header, tokens = codec.decode_tokens(data)
    except PQCodecError as e:
        out["read"].append(dict(path=p, error=f"{type(e).__name__}: {e}"))
        continue
    t = np.ascontiguousarray(tokens, dtype=np.int64)
    out["read"].append(dict(path=p, error=None, tokens=hashlib.sha256(str(t.shape).encode() + t.tobytes()).hexdigest(),
                            same_bytes=codec.encode_tokens(tokens, header.height, header.width,
                                                           header.greyscale, header.steps) == data))
print(json.dumps(out))
"""


def _run(family: str, job: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DISPATCH_VARS}
    env.update(FAMILIES[family])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-c", _WORKER], input=json.dumps(job), capture_output=True, text=True,
                       cwd=Path(__file__).parent, env=env, timeout=180)
    assert r.returncode == 0, f"{family} worker failed:\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tiny_weights, tmp_path_factory):
    """Writers and readers of every family (the native writer on 1 thread), then native writers
    on 2 and 4 threads."""
    tmp = tmp_path_factory.mktemp("portability")
    images = []
    for i, (h, w) in enumerate(SIZES):
        images.append(str(tmp / f"img{h}x{w}.npy"))
        np.save(images[-1], random_image(h, w, seed=11 + i))
    job = dict(weights=str(tiny_weights), images=images, levels=LEVELS)
    writers = {fam: _run(fam, dict(job, out=str(_mkdir(tmp / fam)), threads=1 if fam == "native" else None))
               for fam in FAMILIES}
    files = [row["path"] for fam in FAMILIES for row in writers[fam]["written"]]
    readers = {fam: _run(fam, dict(weights=str(tiny_weights), files=files)) for fam in FAMILIES}
    threads = {n: _run("native", dict(job, threads=n, out=str(_mkdir(tmp / f"threads{n}")))) for n in (2, 4)}
    return writers, readers, threads


def _mkdir(p: Path) -> Path:
    p.mkdir(exist_ok=True)
    return p


def test_emulated_families_are_in_effect(runs):
    writers, readers, _ = runs
    for role in (writers, readers):
        assert role["sse"]["capability"] == "DEFAULT"
        assert role["avx2"]["capability"] == "AVX2" or role["native"]["capability"] == "DEFAULT"


def _cells(runs):
    """(writer, reader, image key, read row) for every file under every reader."""
    writers, readers, _ = runs
    for w in FAMILIES:
        for row in writers[w]["written"]:
            for rd in FAMILIES:
                yield w, rd, row["key"], next(r for r in readers[rd]["read"] if r["path"] == row["path"])


def _fail_unless_all(runs, passed, what: str):
    """Fails with a writer x reader matrix of `passed` counts and the distinct errors, if any cell falls short."""
    cells = list(_cells(runs))
    bad = [c for c in cells if not passed(c[3])]
    if not bad:
        return
    per_writer = len(cells) // len(FAMILIES) ** 2
    lines = [f"{len(bad)} of {len(cells)} {what} fail ({len(FAMILIES)} writers x {len(FAMILIES)} readers x "
             f"{per_writer} files); passed per writer (rows) and reader (columns):",
             "  writer \\ reader " + " ".join(f"{rd:>7s}" for rd in FAMILIES)]
    for w in FAMILIES:
        counts = [sum(passed(r) for w2, rd2, _, r in cells if (w2, rd2) == (w, rd)) for rd in FAMILIES]
        lines.append(f"  {w:16s} " + " ".join(f"{c:>5d}/{per_writer}" for c in counts))
    errors = sorted({r["error"] or "decoded, but re-encoding gives other bytes" for *_, r in bad})
    lines += ["errors:"] + [f"  {e}" for e in errors]
    pytest.fail("\n".join(lines), pytrace=False)


def test_every_family_decodes_every_familys_files(runs):
    _fail_unless_all(runs, lambda r: not r["error"], "decodes")
    tokens = {}
    for w, rd, key, r in _cells(runs):
        tokens.setdefault((w, key), set()).add(r["tokens"])
    differ = [f"written by {w}, {key}" for (w, key), t in tokens.items() if len(t) > 1]
    assert not differ, "files decode to different tokens under different families:\n" + "\n".join(differ)


def test_reencoding_the_tokens_reproduces_the_file(runs):
    _fail_unless_all(runs, lambda r: bool(r.get("same_bytes")), "re-encodes to the file's exact bytes")


def test_thread_count_does_not_change_bytes(runs):
    writers, _, threads = runs
    one = {r["key"]: r["sha256"] for r in writers["native"]["written"]}
    for n, run in threads.items():
        differ = [r["key"] for r in run["written"] if r["sha256"] != one[r["key"]]]
        assert not differ, f"{n} threads write other bytes than 1 thread for {differ}"
