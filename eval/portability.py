#!/usr/bin/env python3
"""Where a .bin file decodes: files written under each x86 CPU family, read under each family.

Each library in the coding path picks its kernels at run time, so another x86 family can be emulated
on this machine by limiting all three in a child process (DESIGN.md, "Portability"):

    native  no variables (this CPU's best kernels)
    avx2    ATEN_CPU_CAPABILITY=avx2    MKL_ENABLE_INSTRUCTIONS=AVX2    ONEDNN_MAX_CPU_ISA=AVX2
    sse     ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2  ONEDNN_MAX_CPU_ISA=SSE41

One child per family writes the first N images at each level (and with --max-bytes, at each size:
below the lowest level these are generated files, whose decoder draws indices with the seeded
integer sampler); one child per family then reads every
file of every writer: the tokens must decode (checksum verified), be the same under every reader, and
encode back to the file's exact bytes. Then, natively, one child per thread count encodes the same
images (bytes must not change) and decodes the native files (tokens and pixels must not change).
Reported but allowed to differ: the same image's file under different writer families (the conv
analysis transform is float, so its tokens may differ) and decoded pixels under different readers
(the conv synthesis transform is float too). Exit status 1 if any decode or re-encode fails, or if the
thread count changes bytes, tokens or pixels, or if ATen reports that the variables had no effect
(which would make the check vacuous); 0 otherwise. Also crossed (VARIANTS, natively): pqcodec's own
range coder against constriction's, and float32 products with inputs rounded to bf16 and TF32 (what
a CPU with bf16 units or a GPU does under a reduced matmul precision). ARM64 CPUs and GPUs themselves
are not covered (eval/gpu_check.py is the GPU's check).

    python -m eval.portability ../shared/data/kodak --images 4 --levels 1 3 5 [--max-bytes 200 ...]
                               [--model WEIGHTS] [--threads 1 2 4]
"""
import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .common import load_rgb_images

DISPATCH_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
FAMILIES = {
    "native": {},
    "avx2": dict(ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2"),
    "sse": dict(ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2", ONEDNN_MAX_CPU_ISA="SSE41"),
}
# Machines that differ in other ways, emulated in the native family (--no-variants leaves them out):
# pqcodec's own range coder in place of constriction's (rangecoder.py: what ARM64 and musl run), and
# float32 products whose inputs are rounded to bf16 / TF32 (numerics.RoundedProducts: a CPU with bf16
# units or a GPU under set_float32_matmul_precision "medium" / "high"), with the int8 kernels off so
# that the float32 products are the ones taken.
VARIANTS = {
    "ourcoder": dict(PQCODEC_RANGE_CODER="python"),
    "bf16": dict(PORTABILITY_ROUNDING="bf16", PQCODEC_INT8="0"),
    "tf32": dict(PORTABILITY_ROUNDING="tf32", PQCODEC_INT8="0"),
}
VARIANT_VARS = ("PQCODEC_RANGE_CODER", "PORTABILITY_ROUNDING", "PQCODEC_INT8")
WORKER_TIMEOUT_S = 3600


# -- the child: one JSON job on stdin, one JSON line of results on stdout, progress on stderr --------
def array_hash(a) -> str:
    import numpy as np
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def _write(codec, job, tag) -> list[dict]:
    from pqcodec.ratecontrol import encode_to_size
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rgb in load_rgb_images([Path(p) for p in job["images"]]):
        for q in [*job["levels"], *(f"{n}B" for n in job.get("sizes", []))]:
            t0 = time.perf_counter()
            data = codec.encode(rgb, q) if isinstance(q, int) else encode_to_size(codec, rgb, max_bytes=int(q[:-1])).data
            path = out / f"{Path(name).stem}-{'q' if isinstance(q, int) else ''}{q}.bin"
            path.write_bytes(data)
            rows.append(dict(image=name, level=q, path=str(path), bytes=len(data),
                             sha256=hashlib.sha256(data).hexdigest(), seconds=time.perf_counter() - t0))
            print(f"  [{tag}] wrote {path.parent.name}/{path.name} ({len(data)} B, "
                  f"{rows[-1]['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return rows


def _read(codec, job, tag) -> list[dict]:
    from pqcodec.errors import PQCodecError
    rows = []
    for p in job["files"]:
        data = Path(p).read_bytes()
        row = dict(path=p, ok=False, error=None, tokens=None, pixels=None, reencode_identical=None,
                   reencode_error=None)
        t0 = time.perf_counter()
        try:
            header, tokens = codec.decode_tokens(data)
        except PQCodecError as e:
            row["error"] = f"{type(e).__name__}: {e}"
        except Exception as e:  # not the codec's own error: a bug worth seeing in the summary
            row["error"] = f"unexpected {type(e).__name__}: {e}"
        else:
            pixels = codec.render(header, tokens)
            row.update(ok=True, tokens=array_hash(tokens), pixels=array_hash(pixels))
            try:
                row["reencode_identical"] = codec.encode_tokens(
                    tokens, header.height, header.width, header.greyscale, header.steps, header.generated) == data
            except Exception as e:
                row.update(reencode_identical=False, reencode_error=f"{type(e).__name__}: {e}")
        row["seconds"] = time.perf_counter() - t0
        verdict = ("ok, re-encode " + ("identical" if row["reencode_identical"] else "DIFFERS")
                   if row["ok"] else row["error"][:90])
        print(f"  [{tag}] read {Path(p).parent.name}/{Path(p).name}: {verdict} ({row['seconds']:.1f} s)",
              file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def worker():
    job = json.loads(sys.stdin.read())
    import torch
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    from pqcodec.zoo import load_codec, load_custom_codec
    codec = load_custom_codec(job["model"]) if job.get("model") else load_codec()
    tag = job["tag"]
    from pqcodec.coding import entropy
    from pqcodec.coding.kernels import int8_products
    from pqcodec.numerics import BF16_BITS, TF32_BITS, RoundedProducts
    rounding = os.environ.get("PORTABILITY_ROUNDING")
    result = dict(capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                  products=(int8_products() or "float32") + (f", inputs rounded to {rounding}" if rounding else ""),
                  coder=entropy.backend(), env={k: os.environ.get(k) for k in DISPATCH_VARS + VARIANT_VARS})
    with RoundedProducts({"bf16": BF16_BITS, "tf32": TF32_BITS}[rounding]) if rounding else contextlib.nullcontext():
        if "write" in job:
            result["written"] = _write(codec, job["write"], tag)
        if "read" in job:
            result["read"] = _read(codec, job["read"], tag)
    print(json.dumps(result))


# -- the parent --------------------------------------------------------------------------------------
def run_worker(family: str, job: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DISPATCH_VARS + VARIANT_VARS}
    env.update({**FAMILIES, **VARIANTS}[family])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "eval.portability", "--worker"], input=json.dumps(job), env=env,
                       stdout=subprocess.PIPE, text=True, timeout=WORKER_TIMEOUT_S)  # stderr: progress
    if r.returncode != 0:
        sys.exit(f"portability: worker {job['tag']} failed (exit status {r.returncode}); see its traceback above")
    print(f"[{job['tag']}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_description() -> str:
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    isa = [f for f in ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model} ({', '.join(isa) or 'flags unknown'})"


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [title, "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(prog="python -m eval.portability", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", help="images (Kodak)")
    ap.add_argument("--images", type=int, default=4, help="the first N images of the folder (default 4)")
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 3, 5], help="quality levels (default 1 3 5)")
    ap.add_argument("--max-bytes", type=int, nargs="*", default=[], metavar="N",
                    help="also files of at most N bytes (rate control; 200: the extreme mode's generated files)")
    ap.add_argument("--model", help="weights file (default: the shipped model)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4], help="thread counts (default 1 2 4)")
    ap.add_argument("--no-variants", action="store_true", help="only the kernel families: leave out our range "
                    "coder and the bf16/TF32 product emulation")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()
    if not args.folder:
        ap.error("the image folder is required")

    t_start = time.perf_counter()
    from pqcodec.data import list_images
    images = [str(p) for p in list_images(args.folder)[:args.images]]
    if not images:
        sys.exit(f"portability: no images in {args.folder}")
    model = str(Path(args.model).resolve()) if args.model else None
    families = list(FAMILIES) + ([] if args.no_variants else list(VARIANTS))

    with tempfile.TemporaryDirectory(prefix="pqcodec-portability-") as tmp:
        tmp = Path(tmp)
        # a. writers
        written, info = {}, {}
        for fam in families:
            print(f"[write {fam}] encoding {len(images)} images x levels {args.levels} and sizes {args.max_bytes}",
                  file=sys.stderr, flush=True)
            r = run_worker(fam, dict(tag=f"write {fam}", model=model,
                                     write=dict(images=images, levels=args.levels, sizes=args.max_bytes,
                                                out=str(tmp / f"by-{fam}"))))
            written[fam], info[fam] = r["written"], r
        all_files = [row["path"] for fam in families for row in written[fam]]
        # b. readers
        read = {}
        for fam in families:
            print(f"[read {fam}] decoding {len(all_files)} files", file=sys.stderr, flush=True)
            r = run_worker(fam, dict(tag=f"read {fam}", model=model, read=dict(files=all_files)))
            read[fam] = {row["path"]: row for row in r["read"]}
            info[fam]["read_capability"] = r["capability"]
            info[fam]["read_products"] = r["products"]
        # c. thread counts, natively
        threads = {}
        native_files = [row["path"] for row in written["native"]]
        for n in args.threads:
            print(f"[threads {n}] encoding and decoding natively on {n} threads", file=sys.stderr, flush=True)
            threads[n] = run_worker("native", dict(
                tag=f"threads {n}", model=model, threads=n,
                write=dict(images=images, levels=args.levels, sizes=args.max_bytes, out=str(tmp / f"threads-{n}")),
                read=dict(files=native_files)))

    # -- summary -------------------------------------------------------------------------------------
    failures = []
    out = []
    per_writer = len(images) * (len(args.levels) + len(args.max_bytes))
    out.append(f"pqcodec portability: {len(images)} images from {args.folder} x levels {args.levels} and sizes "
               f"{args.max_bytes} bytes = {per_writer} files per writer; model {args.model or 'shipped default'}")
    out.append(f"Architectures checked: x86-64 kernel families emulated via dispatch variables"
               + ("" if args.no_variants else "; pqcodec's own range coder; bf16/TF32 product inputs emulated by "
                  "rounding") + f"; real CPU: {cpu_description()}")
    for fam in families:
        setting = " ".join(f"{k}={v}" for k, v in {**FAMILIES, **VARIANTS}[fam].items()) or "no variables"
        out.append(f"  {fam:8s} {setting}; ATen kernels in use: {info[fam]['capability']}, "
                   f"{info[fam]['threads']} threads; the prior's products: {info[fam]['products']} "
                   f"(writing), {info[fam]['read_products']} (reading); range coder: {info[fam]['coder']}")
    caps = {fam: {info[fam]["capability"], info[fam]["read_capability"]} for fam in families}
    if caps["sse"] != {"DEFAULT"} or (caps["avx2"] != {"AVX2"} and caps["native"] != {"DEFAULT"}):
        failures.append(f"the dispatch variables did not take effect (ATen kernels in use: {caps}): "
                        "the check would prove nothing")
    out.append("")

    decode_rows, reenc_rows = [], []
    errors = Counter()
    for w in families:
        drow, rrow = [w], [w]
        for rd in families:
            rows = [read[rd][f["path"]] for f in written[w]]
            ok = sum(r["ok"] for r in rows)
            same = sum(bool(r["reencode_identical"]) for r in rows)
            drow.append(f"ok {ok}/{len(rows)}" + ("" if ok == len(rows) else " FAIL"))
            rrow.append(f"same {same}/{len(rows)}" + ("" if same == len(rows) else " FAIL"))
            if ok < len(rows) or same < len(rows):
                failures.append(f"written by {w}, read by {rd}: {len(rows) - ok} of {len(rows)} files do not decode, "
                                f"{len(rows) - same} do not re-encode to their bytes")
            for r in rows:
                if r["error"]:
                    errors[r["error"].split(" (")[0][:110]] += 1
                if r["reencode_error"]:
                    errors["re-encode: " + r["reencode_error"][:100]] += 1
        decode_rows.append(drow)
        reenc_rows.append(rrow)
    out.append(table("Decode (tokens checksum-verified), writer rows x reader columns:",
                     ["writer \\ reader", *families], decode_rows))
    out.append("")
    out.append(table("Re-encode of the decoded tokens gives the file's exact bytes, writer x reader:",
                     ["writer \\ reader", *families], reenc_rows))
    if errors:
        out.append("")
        out.append("Errors:")
        out += [f"  {n:3d} x {msg}" for msg, n in errors.most_common()]
    out.append("")

    # tokens and pixels of one file under several readers
    tok_same = pix_same = multi = 0
    for f in all_files:
        oks = [read[rd][f] for rd in families if read[rd][f]["ok"]]
        if len(oks) > 1:
            multi += 1
            tok_same += len({r["tokens"] for r in oks}) == 1
            pix_same += len({r["pixels"] for r in oks}) == 1
    out.append(f"Files decoded by more than one reader: {multi}/{len(all_files)}; tokens identical across those "
               f"readers: {tok_same}/{multi}; decoded pixels identical: {pix_same}/{multi} (the synthesis "
               "transform is float: pixels may differ by 1 across families, tokens may not)")
    if tok_same < multi:
        failures.append(f"{multi - tok_same} files decode to different tokens under different readers")

    # d. the same image under different writers
    by_key = {}
    for w in families:
        for row in written[w]:
            tokens = next((read[rd][row["path"]]["tokens"] for rd in families if read[rd][row["path"]]["ok"]), None)
            by_key.setdefault((row["image"], row["level"]), []).append((row["sha256"], tokens))
    same_files = sum(len({s for s, _ in v}) == 1 for v in by_key.values())
    known = [v for v in by_key.values() if None not in {t for _, t in v}]
    same_tokens = sum(len({t for _, t in v}) == 1 for v in known)
    out.append(f"Same image and level, different writer families: identical files {same_files}/{len(by_key)}; "
               f"identical tokens {same_tokens}/{len(known)} (of those whose files all decoded somewhere). "
               "Allowed: the conv analysis transform is float and may pick other tokens under other kernels; "
               "such a file still has to decode everywhere.")
    out.append("")

    # c. threads
    base = args.threads[0]
    native_bytes = {(r["image"], r["level"]): r["sha256"] for r in written["native"]}
    ref_w = {(r["image"], r["level"]): r["sha256"] for r in threads[base]["written"]}
    ref_r = {r["path"]: r for r in threads[base]["read"]}
    trows = []
    for n in args.threads:
        w = {(r["image"], r["level"]): r["sha256"] for r in threads[n]["written"]}
        rd = {r["path"]: r for r in threads[n]["read"]}
        b = sum(w[k] == ref_w[k] for k in w)
        bn = sum(w[k] == native_bytes[k] for k in w)
        ok = sum(r["ok"] for r in rd.values())
        t = sum(r["ok"] and r["tokens"] == ref_r[p]["tokens"] for p, r in rd.items())
        px = sum(r["ok"] and r["pixels"] == ref_r[p]["pixels"] for p, r in rd.items())
        re = sum(bool(r["reencode_identical"]) for r in rd.values())
        trows.append([n, f"{b}/{len(w)}", f"{bn}/{len(w)}", f"{ok}/{len(rd)}", f"{t}/{len(rd)}", f"{px}/{len(rd)}",
                      f"{re}/{len(rd)}"])
        for what, k, total in (("encoded bytes", b, len(w)), ("decodes", ok, len(rd)), ("tokens", t, len(rd)),
                               ("decoded pixels", px, len(rd)), ("re-encodes", re, len(rd))):
            if k < total:
                failures.append(f"{n} threads: {what} match in only {k}/{total}")
    out.append(table(f"Threads (native family): against {base} thread(s) and the native writer "
                     f"({info['native']['threads']} threads):",
                     ["threads", f"bytes = {base} thr", "bytes = native writer", "decode ok", f"tokens = {base} thr",
                      f"pixels = {base} thr", "re-encode same"], trows))
    out.append("")

    out.append(f"Total time: {time.perf_counter() - t_start:.0f} s")
    if failures:
        out.append("RESULT: FAIL")
        out += [f"  - {f}" for f in failures]
    else:
        out.append("RESULT: PASS: every file decodes to the same tokens and re-encodes to its bytes under every "
                   "family and thread count")
    print("\n".join(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
