#!/usr/bin/env python3
"""Decoded pixels of the golden files across machines: the stored references, the bounds
tests/test_golden.py holds them to, and the measurement that sets those bounds.

A golden file's tokens and bytes are exact on every machine (the prior is integer arithmetic); its
decoded pixels are not: the synthesis transform is float convolutions, and another CPU's kernels
(another SIMD width, another accumulation order) flip the rounding of a value now and then, by one
level. So tests/test_golden.py compares the pixels with a reference stored beside each golden file
(`NAME.pixels.png` beside `NAME.bin`, made by eval/make_golden.py or by `--write` below) and asserts

    max |decoded - reference| <= MAX_ABS_DIFF   and
    values that differ <= MAX_DIFF_FRACTION x values compared + DIFF_SLACK

over the values the reference holds. A reference holds every value of an image of up to
WHOLE_UP_TO pixels (a plain RGB or L PNG). Of a larger image it holds PATCH x PATCH squares centred
on the corners of the prior's 128 px windows (the image's corners and edges included; about 6 % of
the values): every window, every window seam and the image's borders are sampled, and the whole set
stays under 3 MB. Such a reference is an RGBA (LA for greyscale) PNG whose alpha is 255 where it holds
the decoded value and 0 elsewhere, so the test reads the sample from the file.

The measurement: one child process decodes every golden file natively (this CPU's best kernels, 2
threads; its tokens are kept), then one child per emulated kernel family (eval/portability.py's
FAMILIES: `ATEN_CPU_CAPABILITY`, `MKL_ENABLE_INSTRUCTIONS` and `ONEDNN_MAX_CPU_ISA` all limited,
DESIGN.md "Portability") and one native child on 1 thread render the same tokens (`Codec.render`, the
pixels' whole path; the tokens are exact and checksum-verified everywhere, and take ~95 % of a
decode's time: `--full` decodes them in every child too). Printed per file: the largest absolute
difference and the count of differing values against the native decode, per family and for 1 against
2 threads; then every child's decode against the stored references, with the bounds. Exit status 1
if a child's pixels exceed the bounds against a reference, if a reference is missing, or if the
variables did not take effect.

    python -m eval.golden_pixels                       # measure (about 4 decodes of the 65 files)
    python -m eval.golden_pixels --versions 5 6        # only these golden sets
    python -m eval.golden_pixels --write               # first (re)write the references from the native decode
    python -m eval.golden_pixels --full                # every child decodes the tokens too

Figures and the bounds' margin: docs/bitstream.md, "Decoded pixels across machines".
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden"

# The bounds (docs/bitstream.md, "Decoded pixels across machines"). Measured on an AMD EPYC (AVX2) with
# torch 2.13.0 over all 65 golden files (44.4 M values), against the native decode on 2 threads: the
# emulated SSE family moves at most 1 level, in at most 50 values of a file (2.3e-5 of a 1408x512
# one; the largest fraction, 2.4e-4, is 1 value of the 4096 of a 64x64 greyscale file); AVX2 (native
# here) and 1 thread change nothing; the AVX-512 machine that first recorded the pixels (their
# SHA-256) had the same pixels in 62 of the 65 files. An Intel Xeon (AVX-512 + AMX) differed in 5.
# The bounds leave a wide margin for CPUs we have not seen (4x the level, ~40x the count) and still
# fail a decoder that changes: one that moves a value by more than MAX_ABS_DIFF anywhere in the
# sample, or by one level in more than 1 value in 1000 (plus DIFF_SLACK values, for small images, where
# one value is a large fraction): a change of rounding, of a filter, of a colour conversion.
MAX_ABS_DIFF = 4
MAX_DIFF_FRACTION = 1e-3
DIFF_SLACK = 32          # values that may differ on top of MAX_DIFF_FRACTION of those compared
WHOLE_UP_TO = 100_000   # pixels: images up to this size are stored whole
WINDOW_PX = 128         # the prior's window (16 tokens of 8 px): patches sit on its corners
PATCH = 32              # px, the side of a sampled square
KERNEL_FAMILIES = ("avx2", "sse")  # of eval/portability.py's FAMILIES, besides native: the emulated x86 families


# -- the references (what tests/test_golden.py and eval/make_golden.py use) -------------------------
def reference_name(golden_file: str) -> str:
    """The reference of `x/NAME.bin`: `x/NAME.pixels.png`."""
    return golden_file[:-len(".bin")] + ".pixels.png" if golden_file.endswith(".bin") else golden_file + ".pixels.png"


def sample_mask(height: int, width: int) -> np.ndarray | None:
    """The values a reference holds: None for all of them (small images), else a bool (height, width)
    mask of PATCH x PATCH squares centred on every corner of the WINDOW_PX grid."""
    if height * width <= WHOLE_UP_TO:
        return None
    mask = np.zeros((height, width), dtype=bool)
    half = PATCH // 2
    for y in [*range(0, height, WINDOW_PX), height]:   # the bottom and right borders too, wherever they end
        for x in [*range(0, width, WINDOW_PX), width]:
            mask[max(0, y - half):y + half, max(0, x - half):x + half] = True
    return mask


def write_reference(path: Path, pixels: np.ndarray) -> int:
    """Writes the reference of decoded `pixels` (uint8 (H, W, 3) or (H, W)); returns its size in bytes."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    mask = sample_mask(*pixels.shape[:2])
    if mask is None:
        img = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    else:
        alpha = np.where(mask, 255, 0).astype(np.uint8)
        colour = np.where(mask[..., None] if pixels.ndim == 3 else mask, pixels, 0).astype(np.uint8)
        planes = [colour] if pixels.ndim == 2 else [colour[..., c] for c in range(3)]
        img = Image.fromarray(np.stack([*planes, alpha], axis=-1), "RGBA" if pixels.ndim == 3 else "LA")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, "PNG", optimize=True)
    tmp.replace(path)
    return path.stat().st_size


def read_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(values, mask): values uint8 (H, W, 3) or (H, W) as decoded, mask bool (H, W): where they hold."""
    with Image.open(path) as img:
        img.load()
        mode, arr = img.mode, np.asarray(img)
    if mode in ("RGB", "L"):
        return arr, np.ones(arr.shape[:2], dtype=bool)
    if mode == "RGBA":
        return arr[..., :3], arr[..., 3] == 255
    if mode == "LA":
        return arr[..., 0], arr[..., 1] == 255
    raise ValueError(f"{path}: a reference is an RGB, L, RGBA or LA PNG, not {mode}")


def compare(pixels: np.ndarray, values: np.ndarray, mask: np.ndarray) -> dict:
    """Decoded `pixels` against a reference: the largest absolute difference, the count of values that
    differ and the count compared (where the mask holds), and the first place of the largest."""
    if pixels.shape != values.shape:
        raise ValueError(f"decoded shape {pixels.shape}, reference {values.shape}")
    diff = np.abs(pixels.astype(np.int16) - values.astype(np.int16))
    diff[~mask] = 0
    compared = int(mask.sum()) * (pixels.shape[2] if pixels.ndim == 3 else 1)
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    return dict(max_abs=int(diff.max()), differing=int(np.count_nonzero(diff)), compared=compared,
                worst_at=[int(i) for i in worst])


def allowed_differing(compared: int) -> int:
    """How many of `compared` values may differ from the reference."""
    return int(MAX_DIFF_FRACTION * compared) + DIFF_SLACK


def within_bounds(c: dict) -> bool:
    return c["max_abs"] <= MAX_ABS_DIFF and c["differing"] <= allowed_differing(c["compared"])


def golden_entries(versions=None) -> list[dict]:
    """Every golden file's entry (its golden.json's), with `version` and `path` (the .bin) added."""
    entries = []
    for meta_path in sorted(GOLDEN.glob("v*/golden.json"), key=lambda p: int(p.parent.name[1:])):
        version = int(meta_path.parent.name[1:])
        if versions and version not in versions:
            continue
        for e in json.loads(meta_path.read_text())["files"]:
            entries.append(dict(e, version=version, path=str(meta_path.parent / e["file"])))
    return entries


def machine() -> str:
    """This machine in words: the ATen kernels torch picks and the CPU's model."""
    import torch
    from .portability import cpu_description
    return f"{torch.backends.cpu.get_cpu_capability()} ATen kernels, torch {torch.__version__}; {cpu_description()}"


# -- the child: one JSON job on stdin, one JSON line on stdout ---------------------------------------
def worker():
    job = json.loads(sys.stdin.read())
    import torch
    torch.set_num_threads(job["threads"])
    from pqcodec import bitstream
    from pqcodec.image import to_pil
    from pqcodec.zoo import load_codec
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, f in enumerate(job["files"]):
        t0 = time.perf_counter()
        codec = load_codec(f["model"])
        data = Path(f["path"]).read_bytes()
        tokens_file = Path(job["tokens"]) / f"{i}.tokens.npy" if job.get("tokens") else None
        if tokens_file is None:
            header, tokens = codec.decode_tokens(data)
            if job.get("keep_tokens"):
                np.save(out / f"{i}.tokens.npy", tokens)
        else:
            header, tokens = bitstream.unpack(data)[0], np.load(tokens_file)
        # what Codec.decode returns, as an array
        pixels = np.asarray(to_pil(codec.render(header, tokens), header.greyscale))
        np.save(out / f"{i}.npy", pixels)
        rows.append(dict(seconds=time.perf_counter() - t0))
        print(f"  [{job['tag']}] {f['path'].split('golden/')[-1]} ({rows[-1]['seconds']:.1f} s)", file=sys.stderr,
              flush=True)
    print(json.dumps(dict(capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                          rows=rows)))


def run_child(tag: str, family: str, threads: int, files: list[dict], out: Path, tokens: Path | None,
              keep_tokens: bool = False) -> dict:
    from .portability import DISPATCH_VARS, FAMILIES, WORKER_TIMEOUT_S
    env = {k: v for k, v in os.environ.items() if k not in DISPATCH_VARS}
    env.update(FAMILIES[family])
    t0 = time.perf_counter()
    job = dict(tag=tag, threads=threads, files=files, out=str(out), tokens=str(tokens) if tokens else None,
               keep_tokens=keep_tokens)
    r = subprocess.run([sys.executable, "-m", "eval.golden_pixels", "--worker"], input=json.dumps(job), env=env,
                       stdout=subprocess.PIPE, text=True, timeout=WORKER_TIMEOUT_S)
    if r.returncode != 0:
        sys.exit(f"golden_pixels: child {tag} failed (exit status {r.returncode}); see its traceback above")
    print(f"[{tag}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def diff_of(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), int(np.count_nonzero(d))


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.golden_pixels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", type=int, nargs="*", help="golden sets (default: all)")
    ap.add_argument("--threads", type=int, nargs=2, default=[2, 1], metavar=("N", "M"),
                    help="the native decode's threads (every family's too) and the other count (default 2 1)")
    ap.add_argument("--full", action="store_true", help="decode the tokens in every child too (slow)")
    ap.add_argument("--write", action="store_true",
                    help="(re)write every reference from the native decode first, and golden.json's fields for them")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()
    from .portability import FAMILIES, cpu_description, table

    t_start = time.perf_counter()
    entries = golden_entries(args.versions)
    files = [dict(path=e["path"], model=e["model"]) for e in entries]
    n, m = args.threads
    runs = [("native", "native", n), *((f, f, n) for f in KERNEL_FAMILIES), (f"native {m} thr", "native", m)]
    failures, out = [], []
    with tempfile.TemporaryDirectory(prefix="pqcodec-golden-pixels-") as tmp:
        tmp = Path(tmp)
        info, pixels = {}, {}
        for tag, family, threads in runs:
            first = tag == "native"
            print(f"[{tag}] {'decoding' if first or args.full else 'rendering the tokens of'} {len(files)} golden "
                  f"files on {threads} thread(s)", file=sys.stderr, flush=True)
            info[tag] = run_child(tag, family, threads, files, tmp / tag.replace(" ", "-"),
                                  None if first or args.full else tmp / "native", keep_tokens=first)
            pixels[tag] = [np.load(tmp / tag.replace(" ", "-") / f"{i}.npy") for i in range(len(files))]
        caps = {tag: info[tag]["capability"] for tag, _, _ in runs}
        if caps.get("sse") != "DEFAULT" or (caps.get("avx2") != "AVX2" and caps["native"] != "DEFAULT"):
            failures.append(f"the dispatch variables did not take effect (ATen kernels in use: {caps})")

    if args.write:
        written = 0
        for e, px in zip(entries, pixels["native"]):
            written += write_reference(Path(e["path"]).parent / Path(reference_name(e["file"])).name, px)
        here = machine()
        for meta_path in sorted(GOLDEN.glob("v*/golden.json")):
            version = int(meta_path.parent.name[1:])
            if args.versions and version not in args.versions:
                continue
            meta = json.loads(meta_path.read_text())
            for e in meta["files"]:
                e.pop("pixels_sha256", None)
                e["pixels_reference"] = reference_name(e["file"])
            meta.pop("pixels_cpu_capability", None)
            meta["pixels_reference_machine"] = here
            meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {len(entries)} references ({written / 1e6:.2f} MB) and their golden.json fields",
              file=sys.stderr)

    out.append(f"Golden pixels across kernel families: {len(entries)} files, "
               f"{sum(p.size for p in pixels['native']) / 1e6:.1f} M values; real CPU: {cpu_description()}")
    for tag, family, threads in runs:
        setting = " ".join(f"{k}={v}" for k, v in FAMILIES[family].items()) or "no variables"
        out.append(f"  {tag:12s} {setting}; ATen kernels: {info[tag]['capability']}, {info[tag]['threads']} threads")
    out.append("")
    others = [tag for tag, _, _ in runs if tag != "native"]
    rows, worst = [], {tag: (0, 0, 0.0) for tag in others}
    for i, e in enumerate(entries):
        row = [f"v{e['version']}/{e['file']}"]
        for tag in others:
            mx, cnt = diff_of(pixels["native"][i], pixels[tag][i])
            row.append(f"{mx} / {cnt}")
            w = worst[tag]
            worst[tag] = (max(w[0], mx), max(w[1], cnt), max(w[2], cnt / pixels["native"][i].size))
        rows.append(row)
    out.append(table(f"Against the native decode ({n} threads), per file: max |diff| / values differing",
                     ["file", *(f"native vs {t}" if t != f"native {m} thr" else f"{m} vs {n} threads" for t in others)],
                     rows))
    out.append("Largest over the files (max |diff|, values differing, fraction differing): " + "; ".join(
        f"{t}: {w[0]}, {w[1]}, {w[2]:.1e}" for t, w in worst.items()))
    out.append("")

    # every child's decode against the stored references, as the test compares
    ref_rows = []
    for tag, _, _ in runs:
        mx = cnt = compared = missing = over = 0
        worst_frac = 0.0
        for i, e in enumerate(entries):
            ref = Path(e["path"]).parent / Path(reference_name(e["file"])).name
            if not ref.exists():
                missing += 1
                continue
            c = compare(pixels[tag][i], *read_reference(ref))
            mx, cnt, compared = max(mx, c["max_abs"]), cnt + c["differing"], compared + c["compared"]
            worst_frac = max(worst_frac, c["differing"] / c["compared"])
            if not within_bounds(c):
                over += 1
                failures.append(f"{tag}: {e['file']} (v{e['version']}) exceeds the bounds: {c}")
        if missing:
            failures.append(f"{tag}: {missing} references missing (write them: --write)")
        ref_rows.append([tag, mx, f"{cnt} of {compared / 1e6:.1f} M", f"{worst_frac:.1e}", over, missing])
    out.append(table(f"Against the stored references (the sampled values), bounds max |diff| <= {MAX_ABS_DIFF}, "
                     f"values differing <= {MAX_DIFF_FRACTION:g} x those compared + {DIFF_SLACK}:",
                     ["decode", "max |diff|", "values differing", "worst file's fraction", "files over", "missing"],
                     ref_rows))
    sizes = [(Path(e["path"]).parent / Path(reference_name(e["file"])).name) for e in entries]
    size = sum(p.stat().st_size for p in sizes if p.exists())
    out.append(f"References: {size / 1e6:.2f} MB for {len(entries)} files")
    out.append(f"Total time: {time.perf_counter() - t_start:.0f} s")
    out.append("RESULT: " + ("FAIL" if failures else "PASS"))
    out += [f"  - {f}" for f in failures]
    print("\n".join(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
