#!/usr/bin/env python3
"""The same-budget hyperprior on a rented GPU machine (issue 14): one prepared command per lease, as
tools/gpu_lease.py is for pqcodec's own weights (docs/training.md, "The learned baseline on a rented
GPU machine"). For a machine reached by copying a folder to it and a folder of results back, where
your way of copying limits the bytes copied there (prepare --limit), the files that come back
(run --return-files, parts of tools.gpu_lease.PART_BYTES) and the wall-clock time of one command
(run --minutes). Three steps, two machines:

    # here, before any GPU (seconds): the folder to copy (the training photos as one stored zip); the
    # wheels a GPU machine without network access lacks (compressai, pytorch-msssim, constriction) in .whl/; the tree trimmed
    python -m eval.baselines_lease prepare --data ../shared/data/train
    python -m tools.gpu_lease trim --copy lease-baselines .whl
    # there, one command within the machine's time limit (10 minutes so far) with lease-baselines/ and
    # .whl/ copied beside the tree,
    # and at once a second on the same machine (only .whl/ copied, --minutes 2.8) that goes on from the
    # first's checkpoints; each installs the wheels first (docs/training.md); --out: the folder whose
    # files you copy back
    python3 -m eval.baselines_lease run --out RETURNED --minutes 8.5 --qualities 1 2 3
    # here again: the tree back, the returned weights into runs/baselines/<arch>-q<Q>/ckpt.pt, then
    # Kodak with CompressAI's entropy coder on this CPU (rate from the bytes of its strings)
    python -m tools.gpu_lease untrim
    python -m eval.baselines_lease join RETURNED_FOLDER --out runs/baselines    # --replace: a quality trained again
    .venv-eval/bin/python -m eval.train_baselines --no-train --out runs/baselines --test ../shared/data/kodak \
        --results docs/results      # compressai: the eval environment (README, "Training and evaluation")

`run` trains each quality in its own process, all at once on the one GPU (a step at these sizes is
partly launch-bound: on the H100 batch 128 took 1.5x batch 64's time, run "probe" in
docs/experiments.md; side by side, one process's kernels can run while another's Python prepares its
next launches; by how much is the first lease's measurement), each until it has
seen its crops or until the deadline, whichever comes first; then it bundles every quality's float32
weights into one file, split into parts a return can take, with a summary (crops, steps, seconds and
the log of every quality). A quality the deadline stopped comes back labelled with the crops it saw;
the curve's name says so. A second command on the same machine, still running (only .whl copied), continues
every quality from its checkpoint (weights and Adam state, kept in --runs); a later lease cannot (the
Adam state, 2× the weights, does not fit beside the photos in the copy's default limit), so a quality
unfinished when its lease ends is trained again from the start with fewer beside it.
"""
import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pqcodec.train.common import load_checkpoint, save_checkpoint
from tools.gpu_lease import PART_BYTES, PHOTOS, add_lease_commands, joined, pack_photos, split, unpack_photos

from . import train_baselines

BUNDLE = "baselines.safetensors"
RETURN_FILES = 8  # default files a command's returned folder may hold (run --return-files; bmshj2018 qualities 1-5: 20.3 MB each, so 4 a call)


def _bundle_files(arch: str, qualities: list[int]) -> int:
    """Files a call returns: the bundle's parts (float32 state of each quality), its SHA-256, the summary."""
    size = sum(sum(t.nbytes for t in train_baselines.build(arch, q).state_dict().values()) for q in qualities)
    return -(-size // PART_BYTES) + 2


def _die_with_parent():
    """In a child (Linux): SIGTERM when the parent dies, whatever killed it, so that it saves and stops."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(a) -> dict:
    started = time.time()
    lease, out, runs = Path(a.lease), Path(a.out), Path(a.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    photos = runs / "photos"
    if (lease / PHOTOS).exists():
        unpack_photos(lease, photos)
    elif not photos.is_dir():  # a second call on the warm machine finds the first's photos and runs
        raise SystemExit(f"{lease / PHOTOS}: not here, nor photos from an earlier call in {photos}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    summary = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "arch": a.arch, "crops_budget": a.crops,
               "batch": a.batch, "crop": a.crop, "qualities": {}}
    until = started + 60 * a.minutes  # one moment for every process, whatever its start-up takes
    children = {}

    def terminated(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminated)
    try:
        for q in a.qualities:
            cmd = [sys.executable, "-m", "eval.train_baselines", "--train-only", "--data", str(photos),
                   "--out", str(runs), "--arch", a.arch, "--qualities", str(q), "--crops", str(a.crops),
                   "--batch", str(a.batch), "--crop", str(a.crop), "--lr", str(a.lr), "--warmup", str(a.warmup),
                   "--until", f"{until:.3f}",
                   "--threads", str(a.threads)]
            with open(runs / f"q{q}.out", "w") as log:
                children[q] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                               preexec_fn=_die_with_parent)
        for child in children.values():
            child.wait()
    finally:  # Ctrl-C, SIGTERM: the children save and stop too, then what they saved comes back
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        tensors, meta = {}, {}
        for q, child in children.items():
            run_dir = runs / f"{a.arch}-q{q}"
            info = {"exit": child.returncode}
            state = load_checkpoint(run_dir / "ckpt.pt")
            if state:
                info.update(step=state["step"], crops=state["crops"], wall_s=round(state["wall"], 1))
                for name, t in state["net"].items():
                    tensors[f"q{q}/{name}"] = t.contiguous().clone()  # safetensors: no shared storage
                meta[str(q)] = json.dumps(dict(step=state["step"], crops=state["crops"], wall=state["wall"]))
            if (run_dir / "log.jsonl").exists():
                info["log"] = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
            if child.returncode:
                info["output_tail"] = (runs / f"q{q}.out").read_text(errors="replace")[-2000:]
            summary["qualities"][str(q)] = info
        if tensors:
            save_file(tensors, str(runs / BUNDLE), metadata={"arch": a.arch, **meta})
            summary["parts"] = split(runs / BUNDLE, out)
        summary["wall_s"] = round(time.time() - started, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def join(folder: Path, out: Path, replace: bool = False) -> list[Path]:
    """The returned parts (checked against their SHA-256) into out/<arch>-q<Q>/ckpt.pt, weights only,
    which `python -m eval.train_baselines --no-train` evaluates. Refuses to overwrite a checkpoint unless `replace`
    (checked for every quality before any is written); a replaced quality's old results go with it."""
    data = joined(folder, BUNDLE)
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / f".{BUNDLE}.tmp"  # safe_open reads a file; gone once the checkpoints are written
    bundle.write_bytes(data)
    try:
        with safe_open(str(bundle), "pt") as f:
            meta = f.metadata()
            arch = meta.pop("arch")
            runs = {q: out / f"{arch}-q{q}" for q in sorted(meta)}
            there = [r / "ckpt.pt" for r in runs.values() if (r / "ckpt.pt").exists()]
            if there and not replace:
                raise SystemExit(f"{there[0]}: exists; give --replace to put the lease's weights in its place")
            written = []
            for q, run_dir in runs.items():
                info = json.loads(meta[q])
                prefix = f"q{q}/"
                net = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
                run_dir.mkdir(parents=True, exist_ok=True)
                for old in run_dir.glob("eval-*.json"):  # results of the weights being replaced
                    old.unlink()
                save_checkpoint(run_dir / "ckpt.pt", dict(net=net, step=info["step"], crops=info["crops"],
                                                          wall=info["wall"]))
                written.append(run_dir / "ckpt.pt")
    finally:
        bundle.unlink()
    if (folder / "summary.json").exists():  # one per lease: lease B's does not replace lease A's
        (out / f"lease-summary-q{'-'.join(runs)}.json").write_text((folder / "summary.json").read_text())
    return written


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eval.baselines_lease", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    _, rn = add_lease_commands(sub, "lease-baselines", "runs/lease-baselines",
                               "here: the folder to copy (the training photos as one stored zip)",
                               "on the GPU: every quality in its own process, then the weights into --out")
    rn.add_argument("--minutes", type=float, required=True,
                    help="every quality stops (and saves) by then: within the time your GPU machine allows one command")
    rn.add_argument("--return-files", type=int, default=RETURN_FILES,
                    help="files the returned folder may hold: what your way of copying it back allows "
                         f"(default {RETURN_FILES})")
    rn.add_argument("--qualities", type=int, nargs="+", required=True, choices=sorted(train_baselines.LAMBDAS))
    rn.add_argument("--arch", default="bmshj2018-hyperprior", choices=["bmshj2018-hyperprior", "mbt2018-mean"])
    rn.add_argument("--crops", type=int, default=train_baselines.PQCODEC_CROPS, help="training crops per quality")
    # as pqcodec's own lease trains its autoencoder (batch 64, lr 2e-4), so both sides train alike;
    # CompressAI's batch 16 would take 4x the steps for the same crops, each as slow (launch-bound)
    rn.add_argument("--batch", type=int, default=64)
    rn.add_argument("--crop", type=int, default=128)
    rn.add_argument("--lr", type=float, default=2e-4, help="peak of the cosine schedule (train_baselines.py)")
    rn.add_argument("--warmup", type=int, default=200)
    rn.add_argument("--threads", type=int, default=2, help="CPU threads per quality's process")
    jn = sub.add_parser("join", help="here: the returned parts into OUT/<arch>-q<Q>/ckpt.pt")
    jn.add_argument("folder", help="where the files that came back lie")
    jn.add_argument("--out", default="runs/baselines", help="train_baselines.py's run folder")
    jn.add_argument("--replace", action="store_true", help="overwrite checkpoints already there")
    a = p.parse_args(argv)
    if a.cmd == "run":
        a.qualities = sorted(set(a.qualities))
        files = _bundle_files(a.arch, a.qualities)
        if files > a.return_files:
            p.error(f"qualities {a.qualities} of {a.arch} come back as {files} files (weights in parts of "
                    f"15 MiB, their SHA-256, the summary); --return-files is {a.return_files}: give fewer")
    if a.cmd == "prepare":
        size = pack_photos(Path(a.data), Path(a.lease), a.limit)
        print(f"{a.lease}: {size / 1e6:.1f} MB to copy")
    elif a.cmd == "run":
        summary = run(a)
        print(json.dumps({k: v for k, v in summary.items() if k != "qualities"}, indent=1))
        for q, info in summary["qualities"].items():
            print(f"quality {q}: exit {info['exit']}, {info.get('crops', 0):,} of {a.crops:,} crops, "
                  f"{info.get('step', 0):,} steps, {info.get('wall_s', 0)} s")
            if info["exit"]:
                print(info.get("output_tail", ""))
        if any(info["exit"] for info in summary["qualities"].values()):
            sys.exit(1)
    else:
        for ckpt in join(Path(a.folder), Path(a.out), a.replace):
            print(ckpt)


if __name__ == "__main__":
    main()
