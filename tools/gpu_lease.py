"""The GPU plan: one prepared command that turns a rented GPU machine's minutes into trained
weights (docs/training.md, "On a rented GPU machine"). For a machine reached by copying a folder to
it and copying a folder of results back, where your way of copying limits the bytes copied there
(prepare's and trim's --limit), the size of each file that comes back (run's --part-bytes) and the
wall-clock time of one command (run's --ae-minutes and --prior-minutes). A user's tool, not part of
the installed package: run it from the repository root. Three steps, two machines:

    # here, before any GPU: the folder to copy (training photos + the float weights to continue), then
    # the working tree trimmed to what a lease runs (it is copied too, and pqcodec/models/ alone is 83 MB)
    python -m tools.gpu_lease prepare --model pqcodec/models/pq-s8-m12k256-v4.safetensors --data ../shared/data/train
    python -m tools.gpu_lease trim --copy lease .whl
    # there, one command with lease/ and .whl/ copied beside the tree (docs/training.md has the
    # wheels' install); --out: the folder whose files you copy back
    python3 -m tools.gpu_lease run --out RETURNED --ae-minutes 4.3 --prior-minutes 3.3
    # here again: the tree back from git, then join the returned parts, check them, and have a
    # weights file that codes
    python -m tools.gpu_lease untrim
    python -m tools.gpu_lease join RETURNED_FOLDER --out runs/lease-DATE/model.safetensors
    # once Kodak says it is better (python -m eval.rd --model ...): the file for pqcodec/models/ and its SHA-256
    python -m tools.gpu_lease ship runs/lease-DATE/model.safetensors --out pqcodec/models/NAME.safetensors

`run` continues the autoencoder (`pqcodec-train ae --minutes`), then the prior warm on its new
tokens (`pqcodec-train prior --warm --minutes`, which ends with the integer prior's calibration), and
leaves in --out the weights split into parts of at most --part-bytes, their SHA-256, both logs and a
summary. Every figure of a lease (steps, minutes) is in that summary; the Kodak figures come from
the eval scripts here, afterwards.

Why float16 for the copied weights: the whole copy's default limit (trim --limit) is 66 MB, the
photos take 46 MB, and the float weights 31 MB in float32 (the integer prior is not copied:
calibration remakes it).
Rounding the weights a training run continues from to float16 moves them by 2^-11 relatively, far
less than the run's first steps do.
"""
import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from pqcodec.config import PADDINGS

# The defaults of the limits (options): what the way of copying used so far allowed
COPY_LIMIT = 63_000_000    # default bytes of the folder to copy (prepare --limit)
CALL_LIMIT = 66_000_000    # default bytes of a whole copy: the working tree (after trim) and every copied folder (trim --limit)
PART_BYTES = 15 * 2 ** 20  # default bytes of each returned part (run --part-bytes): a returned file of at most 16 MiB
KEEP = ("pqcodec/", "eval/", "tools/", "setup.cfg", "pyproject.toml")  # what a lease runs; trim drops the rest
# ... but not the shipped models inside the package (83 MB): a lease trains from the copied weights
MODELS = "pqcodec/models/"
TRIMMED = "lease-trimmed"  # under .git: the paths trim removed, for untrim
INIT, PHOTOS = "init.safetensors", "train.zip"


def _folder_bytes(folder: Path) -> int:
    """Bytes as a file system holds them (4 KiB blocks): 1,439 loose photos take 1.7 MB more than
    their sizes (perhaps why a copy of 66.4 MB by size was refused); one stored zip of them, 0.2 MB
    (a tar, 2.4 MB: 512-byte headers and padding)."""
    return sum(_blocks(p) for p in folder.rglob("*") if p.is_file())


def _blocks(path: Path) -> int:
    return -(-path.stat().st_size // 4096) * 4096


def _git(root: Path, *args: str) -> list[str]:
    out = subprocess.run(["git", "--literal-pathspecs", "-C", str(root), args[0], "-z", *args[1:]],
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def _rev_parse(root: Path, what: str) -> str:
    return subprocess.run(["git", "-C", str(root), "rev-parse", what], capture_output=True, text=True,
                          check=True).stdout.strip()


def _git_dir(root: Path) -> Path:
    return Path(_rev_parse(root, "--absolute-git-dir"))


def _dropped(path: str) -> bool:
    """Whether trim removes a tracked path: outside KEEP or in the shipped models' folder (MODELS),
    and not git's own files (.gitignore: without it the ignored virtual environments and run folders
    would travel)."""
    return (not path.startswith(KEEP) or path.startswith(MODELS)) and not Path(path).name.startswith(".git")


def _call_bytes(root: Path, copy: list[Path], kept: list[str]) -> int:
    """What the copy to the GPU machine takes: the tracked files kept, untracked ones git does not ignore, and
    the folders copied beside them, in 4 KiB blocks."""
    files = kept + _git(root, "ls-files", "--others", "--exclude-standard")
    return sum(_blocks(root / p) for p in files if (root / p).is_file()) + sum(_folder_bytes(Path(c)) for c in copy)


def trim(copy: list[Path], root: Path = Path("."), limit: int = CALL_LIMIT, dry_run: bool = False) -> int:
    """Before the copy to the GPU machine, which takes the working tree (tracked files, untracked
    ones git does not ignore) beside the folders `copy`, at most `limit` bytes in all, and the tree is now 95 MB
    (pqcodec/models/ 83 MB, docs/ images 7 MB). Removes every tracked file a lease does not run
    (outside KEEP, or the shipped models; git's own files stay) from the working tree, only files HEAD holds unchanged, so `untrim` gives
    each back from that commit as it was; records the commit and the paths in .git/lease-trimmed.
    Returns the bytes the call will copy; refuses to remove anything when a changed file would go,
    when git is told to overlook changes (assume-unchanged, skip-worktree) or when the call would
    still be over `limit`; `dry_run` only measures."""
    missing = [str(c) for c in copy if not Path(c).is_dir()]
    if missing:
        raise SystemExit(f"{missing[0]}: no such folder to copy (prepare it first)")
    record = _git_dir(root) / TRIMMED
    if record.exists() and not dry_run:
        raise SystemExit(f"{record}: the tree is trimmed already; untrim first")
    tracked = _git(root, "ls-files")
    drop = [p for p in tracked if _dropped(p) and (root / p).is_file()]
    size = _call_bytes(root, copy, [p for p in tracked if not _dropped(p)])
    if size > limit:
        raise SystemExit(f"the call would copy {size / 1e6:.1f} MB, over {limit / 1e6:.1f} MB even trimmed")
    if dry_run:
        return size
    overlooked = [line[2:] for line in _git(root, "ls-files", "-v") if line[0].islower() or line[0] == "S"]
    if overlooked:
        raise SystemExit(f"{overlooked[0]}: git overlooks its changes (assume-unchanged or skip-worktree); "
                         "clear that first: trim removes only files git can give back")
    changed = set(_git(root, "diff", "--name-only", "HEAD", "--", *drop)) if drop else set()
    if changed:
        raise SystemExit(f"{sorted(changed)[0]}: changed since the last commit ({len(changed)} such files); "
                         "commit or stash them first: trim removes only files git can give back")
    head = _rev_parse(root, "HEAD")
    record.write_bytes(f"{head}\0".encode() + b"".join(p.encode() + b"\0" for p in drop))
    for p in drop:
        (root / p).unlink()
    return size


def untrim(root: Path = Path(".")) -> list[str]:
    """After the call: every file trim removed and still missing, back from the commit it was taken
    from (whatever was committed since), as it was there."""
    record = _git_dir(root) / TRIMMED
    if not record.exists():
        return []
    head, *paths = [p for p in record.read_bytes().decode().split("\0") if p]
    missing = [p for p in paths if not (root / p).exists()]
    if missing:
        subprocess.run(["git", "--literal-pathspecs", "-C", str(root), "restore", f"--source={head}", "--worktree",
                        "--pathspec-from-file=-", "--pathspec-file-nul"],
                       input=b"".join(p.encode() + b"\0" for p in missing), check=True)
    record.unlink()
    return missing


def _rewrite(src: Path, dest: Path, halve, drop=lambda name: False):
    """src's tensors and metadata into dest, float tensors named so that halve(name) in float16,
    those that drop(name) left out."""
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    state = {k: (v.half() if v.is_floating_point() and halve(k) else v)
             for k, v in load_file(str(src)).items() if not drop(k)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest), metadata=meta)


def prepare(model: Path, data: Path, out: Path, limit: int = COPY_LIMIT) -> int:
    """Writes out/init.safetensors (the float weights, float16, no integer prior) and the training
    photos (pack_photos). Returns the folder's bytes; refuses a folder over `limit`."""
    if not model.is_file():
        raise SystemExit(f"{model}: no such weights file")
    with safe_open(str(model), "pt") as f:
        base = (f.metadata() or {}).get("base_file")
    if base:  # a conditional head's file (model.py): the networks a lease trains are in its base
        raise SystemExit(f"{model}: holds only a conditional head; give its base ({base}) to train on a GPU, "
                         "then train a new head on the result on the CPU (pqcodec-train conditional)")
    _photos(data)  # all checked before anything in out is replaced
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _rewrite(model, out / INIT, halve=lambda name: True, drop=lambda name: name.startswith("int_prior."))
    return pack_photos(data, out, limit)


def _photos(data: Path) -> list[Path]:
    from pqcodec.data import list_images
    try:
        return list_images(data)
    except FileNotFoundError as e:  # no such folder, or no photo in it: one line, nothing written
        raise SystemExit(str(e))


def pack_photos(data: Path, out: Path, limit: int = COPY_LIMIT) -> int:
    """The training photos as one zip, stored uncompressed (JPEGs: nothing to gain), out/train.zip.
    Returns out's bytes (4 KiB blocks); refuses a folder over `limit`."""
    photos = _photos(data)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / PHOTOS, "w", zipfile.ZIP_STORED) as z:
        for p in photos:
            z.write(p, arcname=str(p.relative_to(data)))
    size = _folder_bytes(out)
    if size > limit:
        raise SystemExit(f"{out}: {size / 1e6:.1f} MB, over the copy limit of {limit / 1e6:.1f} MB (--limit)")
    return size


def unpack_photos(lease: Path, dest: Path) -> Path:
    """There: the copied zip into dest (emptied first)."""
    if dest.exists():
        shutil.rmtree(dest)
    with zipfile.ZipFile(lease / PHOTOS) as z:
        z.extractall(dest)
    return dest


def _stage(args: list[str], log: Path) -> float:
    """Runs one `pqcodec-train` stage as its own process (as the documented commands do); its
    output goes to `log` (not returned: what comes back is kept to a few files). Returns its wall seconds; raises,
    with the output's end, when it fails."""
    t0 = time.time()
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "pqcodec.train", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"stage {args[0]} failed (exit {done.returncode}):\n{tail}")
    return time.time() - t0


def _last_log(run: Path) -> dict:
    lines = (run / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def split(path: Path, out: Path, part_bytes: int = PART_BYTES) -> list[str]:
    """path -> out/<name>.partNN files of at most part_bytes, and out/<name>.sha256."""
    data = path.read_bytes()
    names = []
    for i in range(0, len(data), part_bytes):
        name = f"{path.name}.part{i // part_bytes:02d}"
        (out / name).write_bytes(data[i:i + part_bytes])
        names.append(name)
    (out / f"{path.name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    return names


def run(a) -> dict:
    lease, out, runs = Path(a.lease), Path(a.out), Path(a.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    photos = unpack_photos(lease, runs / "photos")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    summary = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    ae_run, prior_run = runs / "ae", runs / "prior"
    common = ["--log-every", str(a.log_every), "--save-every", str(a.save_every)] + (["--bf16"] if a.bf16 else [])
    try:
        summary["ae_wall_s"] = _stage(
            ["ae", "--data", str(photos), "--init", str(lease / INIT), "--out", str(ae_run), "--steps", str(a.ae_steps),
             "--minutes", str(a.ae_minutes), "--batch", str(a.ae_batch), "--crop", str(a.crop), "--lr", str(a.ae_lr),
             "--warmup", str(a.ae_warmup), "--synthetic", str(a.synthetic),
             *(["--padding", a.padding] if a.padding else []), *common], runs / "ae.out")
        summary["prior_wall_s"] = _stage(
            ["prior", "--data", str(photos), "--init", str(ae_run / "model.safetensors"), "--warm", "--out",
             str(prior_run), "--steps", str(a.prior_steps), "--minutes", str(a.prior_minutes), "--batch",
             str(a.prior_batch), "--lr", str(a.prior_lr), "--warmup", str(a.prior_warmup), *common], runs / "prior.out")
    except SystemExit as e:  # bring back what was saved: minutes of a lease are not to be lost
        summary["error"] = str(e)
    finally:
        for name, r in (("ae", ae_run), ("prior", prior_run)):
            if (r / "log.jsonl").exists():
                shutil.copyfile(r / "log.jsonl", out / f"{name}-log.jsonl")
                summary[f"{name}_last"] = _last_log(r)
        newest = [r / "model.safetensors" for r in (prior_run, ae_run) if (r / "model.safetensors").exists()]
        if newest:
            summary["weights_from"] = str(newest[0])
            summary["parts"] = split(newest[0], out, a.part_bytes)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def joined(folder: Path, name: str) -> bytes:
    """folder/<name>.partNN (split's output) concatenated, checked against folder/<name>.sha256."""
    parts = sorted(folder.glob(f"{name}.part*"))
    if not parts:
        raise SystemExit(f"{folder}: no {name}.partNN files")
    if not (folder / f"{name}.sha256").is_file():
        raise SystemExit(f"{folder}: no {name}.sha256 beside its parts (not all files came back?)")
    data = b"".join(p.read_bytes() for p in parts)
    expected = (folder / f"{name}.sha256").read_text().split()[0]
    if hashlib.sha256(data).hexdigest() != expected:
        raise SystemExit(f"{folder}: the parts of {name} do not match their SHA-256 (a part missing or cut?)")
    return data


def join(folder: Path, dest: Path, name: str = "model.safetensors") -> Path:
    """Concatenates folder/<name>.partNN into dest after checking the SHA-256 `run` wrote; the
    result must load as a model whose integer prior is calibrated."""
    from pqcodec.model import PQCodecModel
    data = joined(folder, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    if not PQCodecModel.load(dest).can_code():
        print(f"{dest}: its integer prior is not calibrated (the run stopped before): "
              f"pqcodec-train quantize --init {dest} --data ../shared/data/train --out CODING.safetensors")
    for extra in ("summary.json", "ae-log.jsonl", "prior-log.jsonl"):
        if (folder / extra).exists():
            shutil.copyfile(folder / extra, dest.parent / extra)
    return dest


def ship(weights: Path, dest: Path) -> str:
    """The weights file to ship: as `weights`, but the float prior (used to train and to measure the
    integer prior's cost, never to code) stored in float16, 9.5 MB less. Returns its SHA-256 for
    pqcodec/zoo.py. The coder's networks, codebooks and integer prior are unchanged, so its files
    are byte for byte those of `weights`."""
    from pqcodec.files import sha256_of
    _rewrite(weights, dest, halve=lambda name: name.startswith("prior."))
    return sha256_of(dest)


def add_lease_commands(sub, lease: str, runs: str, prepare_help: str, run_help: str):
    """The `prepare` and `run` subcommands every lease plan has (this one, eval/baselines_lease.py),
    with their shared options: (prepare's parser, run's parser), for each plan's own to be added."""
    pr = sub.add_parser("prepare", help=prepare_help)
    pr.add_argument("--data", required=True, help="training photos")
    pr.add_argument("--lease", default=lease, help=f"the folder to copy to the GPU machine (gitignored; default {lease})")
    pr.add_argument("--limit", type=int, default=COPY_LIMIT,
                    help=f"bytes the folder may take: what your way of copying the folder allows (default {COPY_LIMIT:_})")
    rn = sub.add_parser("run", help=run_help)
    rn.add_argument("--lease", default=lease, help=f"the copied folder (default {lease})")
    rn.add_argument("--out", required=True, help="the folder whose files you copy back from the GPU machine")
    rn.add_argument("--runs", default=runs, help="the run folders (kept on a warm machine)")
    return pr, rn


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.gpu_lease", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr, rn = add_lease_commands(sub, "lease", "runs/lease", "here: build the folder to copy",
                                "on the GPU: autoencoder, then prior, then split the weights into --out")
    pr.add_argument("--model", required=True, help="weights to continue (their integer prior is dropped)")
    rn.add_argument("--ae-minutes", type=float, required=True,
                    help="the autoencoder's wall-clock minutes: with --prior-minutes and the start-up, within the "
                         "time your GPU machine allows one command")
    rn.add_argument("--prior-minutes", type=float, required=True, help="the prior's wall-clock minutes")
    rn.add_argument("--ae-steps", type=int, default=1_000_000, help="cap; --ae-minutes plans the last step")
    rn.add_argument("--prior-steps", type=int, default=1_000_000)
    rn.add_argument("--ae-batch", type=int, default=64)
    rn.add_argument("--crop", type=int, default=256)
    rn.add_argument("--ae-lr", type=float, default=2e-4)
    rn.add_argument("--ae-warmup", type=int, default=200)
    rn.add_argument("--synthetic", type=float, default=0.0,
                    help="fraction of synthetic crops for the autoencoder (pqcodec-train ae --synthetic)")
    rn.add_argument("--padding", choices=PADDINGS, help="switch the model's padding (ae --padding)")
    rn.add_argument("--prior-batch", type=int, default=128)
    rn.add_argument("--prior-lr", type=float, default=3e-4)
    rn.add_argument("--prior-warmup", type=int, default=200)
    rn.add_argument("--no-bf16", dest="bf16", action="store_false")
    rn.add_argument("--log-every", type=int, default=100)
    rn.add_argument("--save-every", type=int, default=1000)
    rn.add_argument("--part-bytes", type=int, default=PART_BYTES,
                    help="bytes of each returned part of the weights: what your way of copying a file back allows "
                         f"(default {PART_BYTES:_})")
    tr = sub.add_parser("trim", help="here, just before the copy: drop the tracked files a lease "
                        "does not run from the working tree (git gives them back: untrim)")
    tr.add_argument("--copy", nargs="+", default=["lease", ".whl"],
                    help="the folders copied beside the tree (default lease .whl)")
    tr.add_argument("--limit", type=int, default=CALL_LIMIT,
                    help=f"bytes the whole copy may take: what your way of copying the folder allows (default {CALL_LIMIT:_})")
    tr.add_argument("--dry-run", action="store_true", help="measure the copy, remove nothing")
    sub.add_parser("untrim", help="here, after the GPU run: the files trim dropped, back from git")
    jn = sub.add_parser("join", help="here: join the returned parts into a weights file")
    jn.add_argument("folder", help="where the files that came back lie")
    jn.add_argument("--out", required=True, help="weights file to write")
    sh = sub.add_parser("ship", help="here: the weights file for pqcodec/models/ (float prior in float16)")
    sh.add_argument("weights")
    sh.add_argument("--out", required=True, help="e.g. pqcodec/models/pq-s8-m12k256-v4.safetensors")
    a = p.parse_args(argv)
    if a.cmd == "prepare":
        size = prepare(Path(a.model), Path(a.data), Path(a.lease), a.limit)
        print(f"{a.lease}: {size / 1e6:.1f} MB to copy")
    elif a.cmd == "run":
        print(json.dumps(run(a), indent=1))
    elif a.cmd == "trim":
        size = trim([Path(c) for c in a.copy], limit=a.limit, dry_run=a.dry_run)
        print(f"the copy takes {size / 1e6:.1f} MB (limit {a.limit / 1e6:.1f})"
              + ("" if a.dry_run else "; after it: python -m tools.gpu_lease untrim"))
    elif a.cmd == "untrim":
        print(f"{len(untrim())} files back from git")
    elif a.cmd == "join":
        print(join(Path(a.folder), Path(a.out)))
    else:
        print(f"{a.out}: SHA-256 {ship(Path(a.weights), Path(a.out))}")


if __name__ == "__main__":
    main()
