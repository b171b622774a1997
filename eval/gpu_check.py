#!/usr/bin/env python3
"""Files written on a GPU decode on a CPU and the reverse: the check to run whenever a CUDA GPU is at
hand (about 2 minutes on one; `--dry-run` runs the same steps with the CPU in the GPU's place, as the
tests do).

For each image and each way of coding it (every level, a rate-controlled file with a level map,
`--max-bytes 15000`, and a 200-byte extreme-mode file), the file is written on the CPU and on the
device, and each is read on the other side:
- bytes: the device's file must be the CPU's, byte for byte (the prior and head are integer-exact;
  the analysis transform's float rounding could in principle move a token, so a difference here is
  reported with the tokens that differ, and the cross-reads below still have to pass);
- tokens: every file decodes to the same tokens on both sides, and re-encodes there to its bytes;
- pixels: the largest difference between the two sides' decoded images (float synthesis: a level
  or so is expected);
- the same under the device's reduced float settings (TF32 and bf16 matmuls:
  `set_float32_matmul_precision("medium")`, `allow_tf32`): the same bytes;
- every golden file of the shipped model (tests/data/golden) decodes on the device to its recorded
  token checksum and re-encodes to its bytes;
- times on the device: encode and decode of each image, after a warm-up.
Exit status 1 on any mismatch of bytes or tokens; a JSON report with --json.

    python -m eval.gpu_check [IMAGES ...] [--device cuda] [--json gpu-check.json]
    python -m eval.gpu_check --dry-run --quick     # the plumbing, on the CPU
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_IMAGES = [ROOT / "tests" / "data" / "kodim23.png"]
GOLDEN = ROOT / "tests" / "data" / "golden"


def _ways(codec, quick: bool) -> list[tuple[str, dict]]:
    """(label, pqcodec.encode keywords) for each way of coding an image."""
    if quick:
        return [("level 1", dict(quality=1)), ("max 200 B", dict(max_bytes=200))]
    return ([(f"level {q}", dict(quality=q)) for q in range(1, codec.num_levels() + 1)]
            + [("max 15000 B", dict(max_bytes=15000)), ("max 200 B", dict(max_bytes=200))])


def _tokens(codec, data: bytes) -> np.ndarray:
    header, tokens = codec.decode_tokens(data)
    assert codec.encode_tokens(tokens, header.height, header.width, header.greyscale, header.steps,
                               header.generated, header.flat) == data, "the tokens do not re-encode to the file"
    return tokens


def _timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def _synchronise(device: str):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_image(path: Path, cpu, dev, device: str, quick: bool) -> list[dict]:
    import pqcodec
    from PIL import Image
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if quick:
        rgb = rgb[:128, :192]
    rows = []
    for label, kw in _ways(cpu, quick):
        row = dict(image=path.name, size=f"{rgb.shape[1]}x{rgb.shape[0]}", way=label)
        a = pqcodec.encode(rgb, **kw, device="cpu")
        b, row["device_encode_s"] = _timed(lambda: pqcodec.encode(rgb, **kw, device=device))
        row["bytes_cpu"], row["bytes_device"], row["same_bytes"] = len(a), len(b), a == b
        for name, data in (("cpu_file", a), ("device_file", b)):
            t_cpu, t_dev = _tokens(cpu, data), _tokens(dev, data)  # raises where a side cannot read it
            row[f"{name}_same_tokens"] = bool(np.array_equal(t_cpu, t_dev))
        if not row["same_bytes"]:
            ta, tb = _tokens(cpu, a), _tokens(cpu, b)
            row["tokens_differing"] = int((ta != tb).sum()) if ta.shape == tb.shape else "another shape"
        px_cpu = np.asarray(cpu.decode(a), dtype=np.int16)
        px_dev, row["device_decode_s"] = _timed(lambda: np.asarray(dev.decode(a), dtype=np.int16))
        diff = np.abs(px_cpu - px_dev)
        row["pixel_max_diff"], row["pixel_values_differing"] = int(diff.max()), int((diff > 0).sum())
        rows.append(row)
        print(f"  {path.name} {label}: bytes {'same' if row['same_bytes'] else 'DIFFER'}, cross-reads ok, "
              f"pixels max {row['pixel_max_diff']}, device encode {row['device_encode_s']:.2f} s "
              f"decode {row['device_decode_s']:.2f} s", file=sys.stderr)
    return rows


def check_reduced_precision(path: Path, device: str, quick: bool) -> dict:
    """The device's float settings that round matmul inputs (TF32, bf16) do not change the bytes."""
    import torch
    from PIL import Image
    from pqcodec.zoo import load_codec
    rgb = np.asarray(Image.open(path).convert("RGB"))[:128, :192] if quick else \
        np.asarray(Image.open(path).convert("RGB"))[:256, :384]
    codec = load_codec(device=device)
    levels = [codec.num_levels()] if quick else range(1, codec.num_levels() + 1)
    plain = {q: codec.encode_tokens(*_args(codec, rgb, q)) for q in levels}
    result = {}
    for setting in ("high", "medium"):
        before = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
        torch.set_float32_matmul_precision(setting)
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            result[setting] = all(codec.encode_tokens(*_args(codec, rgb, q)) == plain[q] for q in levels)
        finally:
            torch.set_float32_matmul_precision(before[0])
            torch.backends.cuda.matmul.allow_tf32 = before[1]
    return result


def _args(codec, rgb, q):
    """encode_tokens' arguments for an image's plain tokens at level q (the analysis run once, in
    the default float settings: only the coding path is under test)."""
    key = (id(codec), q)
    if key not in _ANALYSED:
        _ANALYSED[key] = codec.image_to_tokens(rgb, codec.active_at(q))
    return _ANALYSED[key], rgb.shape[0], rgb.shape[1]


_ANALYSED: dict = {}


def check_golden(dev, quick: bool) -> dict:
    """Every golden file of the loaded model decodes on the device to its recorded tokens and bytes."""
    from pqcodec.coding import layout
    ok, failed = 0, []
    for meta in sorted(GOLDEN.glob("v*/golden.json")):
        entries = json.loads(meta.read_text())["files"]
        for e in entries[:1] if quick else entries:
            if e["model"] != dev.name.removeprefix("model "):
                continue
            data = (meta.parent / e["file"]).read_bytes()
            try:
                tokens = _tokens(dev, data)
                good = f"{layout.token_checksum(tokens):08x}" == e["token_crc32"]
            except Exception as err:  # reported, and makes the run fail
                good = False
                print(f"  golden {meta.parent.name}/{e['file']}: {err}", file=sys.stderr)
            ok += good
            if not good:
                failed.append(f"{meta.parent.name}/{e['file']}")
    return dict(checked=ok + len(failed), failed=failed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", type=Path, help="images (default: tests/data/kodim23.png)")
    ap.add_argument("--device", default="cuda", help="the device to cross with the CPU (default cuda)")
    ap.add_argument("--dry-run", action="store_true", help="the CPU in the device's place: the plumbing, anywhere")
    ap.add_argument("--quick", action="store_true", help="a 192x128 crop at level 1 and in 200 bytes, one golden "
                    "file per set (the tests' dry run)")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    import torch
    from pqcodec.devices import resolve_device
    from pqcodec.zoo import DEFAULT_MODEL, ZOO, load_codec, models_dir
    device = "cpu" if args.dry_run else resolve_device(args.device)
    about = (torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda")
             else "CPU (dry run: the CPU in the device's place)")
    print(f"pqcodec GPU check: CPU against {device} ({about}), torch {torch.__version__}", file=sys.stderr)
    cpu, dev = load_codec(device="cpu"), load_codec(device=device)
    t0 = time.perf_counter()
    dev.decode(dev.encode(np.zeros((64, 64, 3), np.uint8), 1))  # warm-up: a device's first call pays its start-up
    images = args.images or DEFAULT_IMAGES
    rows = [r for path in images for r in check_image(path, cpu, dev, device, args.quick)]
    precision = check_reduced_precision(images[0], device, args.quick)
    golden = check_golden(dev, args.quick)
    report = dict(device=device, device_name=about, torch=torch.__version__, dry_run=args.dry_run,
                  files=rows, reduced_precision_same_bytes=precision, golden=golden,
                  wall_s=round(time.perf_counter() - t0, 1),
                  weights_sha256=hashlib.sha256((models_dir() / ZOO[DEFAULT_MODEL].filename).read_bytes())
                  .hexdigest()[:16])
    failures = ([f"{r['image']} {r['way']}: bytes differ" for r in rows if not r["same_bytes"]]
                + [f"{r['image']} {r['way']}: tokens differ across sides" for r in rows
                   if not (r["cpu_file_same_tokens"] and r["device_file_same_tokens"])]
                + [f"matmul precision {k}: bytes differ" for k, v in precision.items() if not v]
                + [f"golden {f}" for f in golden["failed"]])
    report["failures"] = failures
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"{len(rows)} files crossed, {golden['checked']} golden files, precision settings "
          f"{precision}; {len(failures)} failures in {report['wall_s']} s")
    for f in failures:
        print(f"FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
