"""What the command line may write, and over what (files.py, docs/cli.md): never over a file that
appeared while it worked, with --force only over a regular file that is not the input, with the
umask's permissions, flushed to disk before it is put in place, its folder checked before the work;
training writes its weights file the same way."""
import importlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import random_image
from pqcodec import files
from pqcodec.files import OutputError


@pytest.fixture
def png(tmp_path):
    p = tmp_path / "in.png"
    Image.fromarray(random_image(30, 50)).save(p)
    return p


def _one_line_error(r, *messages, status=1):
    err = r.stderr.decode()
    assert r.returncode == status and err.count("\n") == 1 and err.startswith("pqcodec: error:"), err
    assert all(m in err for m in messages), err
    return err


def test_a_file_that_appears_meanwhile_is_kept(tiny_weights, png, tmp_path):
    """Two writers of one output: the existence check passes before the work, and another process
    creates the output during it. The final step must refuse to replace that file. The image comes
    through stdin, padded past any pipe buffer, so the CLI is provably past its checks (reading)
    before the other file appears."""
    out = tmp_path / "same.bin"
    p = subprocess.Popen([sys.executable, "-m", "pqcodec", "encode", "-", "-o", str(out), "--model", str(tiny_weights)],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    data = png.read_bytes() + bytes(4 << 20)  # Pillow reads a PNG up to its end chunk and ignores the rest
    try:
        p.stdin.write(data[:2 << 20])  # returns once the CLI has read more than a pipe holds
        p.stdin.flush()
        out.write_bytes(b"the other process's output")
        p.stdin.write(data[2 << 20:])
        p.stdin.close()
        p.wait(timeout=120)
        err = p.stderr.read()
    finally:
        p.kill()
    assert p.returncode == 1 and b"kept, not replaced" in err and str(out).encode() in err, err
    assert out.read_bytes() == b"the other process's output"
    assert not list(tmp_path.glob(".*.part"))


def test_force_never_replaces_the_input(cli, tiny_codec, tiny_weights, png, tmp_path):
    coded = tmp_path / "coded.png"  # a .bin file under an image's name
    coded.write_bytes(tiny_codec.encode(png))
    before = coded.read_bytes()
    r = cli("decode", coded, "-o", coded, "--force", "--model", tiny_weights)
    _one_line_error(r, "is the input")
    assert coded.read_bytes() == before
    link = tmp_path / "link.bin"  # a second name of the same input file
    os.link(png, link)
    r = cli("encode", link, "-o", png.with_suffix(""), "--force", "--model", tiny_weights)
    assert r.returncode == 0, r.stderr  # an unrelated output is fine ...
    image = png.read_bytes()
    r = cli("encode", png, "-o", link, "--force", "--model", tiny_weights)
    _one_line_error(r, "is the input")  # ... the input under another name is not
    assert png.read_bytes() == image


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_force_replaces_only_regular_files(cli, tiny_weights, png, tmp_path, kind):
    if kind == "fifo":
        target = tmp_path / "pipe.bin"
        os.mkfifo(target)
    elif kind == "folder":
        target = tmp_path / "folder.bin"
        target.mkdir()
    else:
        target = "/dev/null"
    r = cli("encode", png, "-o", target, "--force", "--model", tiny_weights)
    _one_line_error(r, str(target))
    mode = os.lstat(target).st_mode
    assert {"fifo": stat.S_ISFIFO, "folder": stat.S_ISDIR, "device": stat.S_ISCHR}[kind](mode)


def test_permissions_follow_the_umask(tiny_weights, png, tmp_path):
    """A new output gets 0666 less the umask; one replaced with --force keeps its permissions."""
    def encode(out, *extra):
        return subprocess.run([sys.executable, "-m", "pqcodec", "encode", str(png), "-o", str(out), "--model",
                               str(tiny_weights), *extra], capture_output=True, timeout=300,
                              preexec_fn=lambda: os.umask(0o027))
    assert encode(tmp_path / "new.bin").returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o640
    old = tmp_path / "old.bin"
    old.write_bytes(b"x")
    old.chmod(0o644)
    assert encode(old, "--force").returncode == 0
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o644 and old.read_bytes()[:2] == b"PQ"


@pytest.mark.parametrize("force", [False, True])
def test_data_reach_the_disk_before_the_file_is_put_in_place(tmp_path, monkeypatch, force):
    events = []
    for name in ("fsync", "link", "replace"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, _name=name: (events.append(_name), _real(*a))[1])
    target = tmp_path / "a.bin"
    files.write_atomic(target, b"data", force=force)
    assert target.read_bytes() == b"data"
    assert events.index("fsync") < events.index("replace" if force else "link"), events


def test_output_folder_errors_name_the_target_before_the_work(cli, tiny_weights, png, tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    r = cli("encode", png, "-o", tmp_path / "file.png" / "x.bin", "--model", tiny_weights)
    _one_line_error(r, "x.bin", "file.png is not a folder")
    r = cli("encode", png, "-o", tmp_path / "nope" / "x.bin", "--model", tiny_weights)
    _one_line_error(r, "x.bin", "does not exist")


CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SETPCAP, PR_CAPBSET_DROP = 1, 2, 8, 24


def _as_root_without_the_override():
    """In the child before exec: drop the capabilities that let root ignore a folder's permissions from
    the bounding set, so the program it runs has none of them (root's capabilities at exec are
    those of the bounding set) and a 0o555 folder refuses it as it refuses anyone. Still uid 0, so
    the files owned by root that it reads (the weights, pytest's 0o700 tmp folders) stay readable."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_folder_fails_before_reading_the_input(tiny_weights, tmp_path):
    """stdin is left open and empty: a CLI that read its input before checking the output would
    hang here instead of failing at once. As root (CI runs as root), the CLI runs without the
    capabilities that override permissions, so that the folder refuses it too."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    preexec = None
    if os.geteuid() == 0:
        status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else "CapEff: 0"
        effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
        if not effective >> CAP_SETPCAP & 1:  # no CAP_SETPCAP: root that cannot give up its override
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail("running as root without CAP_SETPCAP: the read-only folder cannot be made to refuse")
            pytest.skip("root without CAP_SETPCAP cannot drop the permission override (in CI=true this fails)")
        preexec = _as_root_without_the_override
    p = subprocess.Popen([sys.executable, "-m", "pqcodec", "encode", "-", "-o", str(ro / "a.bin"), "--model",
                          str(tiny_weights)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 1 and b"a.bin: cannot write in folder" in err and b".part" not in err, err


def test_unwritable_folder_is_named_as_the_target(tmp_path, monkeypatch):
    """The same, for a root that cannot be refused: the check consults the folder's permissions, and
    a failure to create the temporary file names the target, not the temporary file."""
    target = tmp_path / "a.bin"
    monkeypatch.setattr(files.os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match=f"^{target}: cannot write in folder"):
        files.check_output(target, force=False)
    monkeypatch.undo()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".a.bin.1-x.part"))
    monkeypatch.setattr(files, "_create_temp", refuse)
    with pytest.raises(OutputError) as e:
        files.write_atomic(target, b"x")
    assert str(e.value).startswith(f"{target}: ") and ".part" not in str(e.value)


def test_encode_output_must_not_be_named_as_an_image(cli, tiny_weights, png, tmp_path):
    r = cli("encode", png, "-o", tmp_path / "foo.png", "--model", tiny_weights)
    _one_line_error(r, "foo.png", ".bin", status=2)  # a bad command line
    assert not (tmp_path / "foo.png").exists()


def test_training_writes_its_weights_atomically(tmp_path, monkeypatch):
    """A save killed mid-write (here: the writer fails after half the bytes) leaves the previous
    weights file whole and no temporary file."""
    from pqcodec.model import PQCodecModel
    from pqcodec.train.common import save_model
    from conftest import TINY
    model = PQCodecModel(TINY)
    path = tmp_path / "model.safetensors"
    save_model(model, path, {"ae_steps": "1"})
    before = path.read_bytes()

    def dies_midway(self, p, meta=None):
        with open(p, "wb") as f:
            f.write(before[:len(before) // 2])
        raise KeyboardInterrupt
    monkeypatch.setattr(PQCodecModel, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path, {"ae_steps": "2"})
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_checkpoints_cannot_run_code(tmp_path):
    """Checkpoints (training, and eval/train_baselines.py, which uses the same loader) are loaded
    with weights_only: a pickle that would run code is refused, and the code does not run."""
    import pickle
    import torch
    from pqcodec.train.common import load_checkpoint
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"step": 1, "evil": Evil()}, ckpt)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(ckpt)
    assert not marker.exists()
    from eval import train_baselines
    assert train_baselines.load_checkpoint is load_checkpoint


def _needs_the_eval_extra(*modules):
    """Skipped without the eval extra (README's plain test command), except in CI (CI=true), whose
    first environment installs it (.ci/run): there a missing module fails the test."""
    for name in modules:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            importlib.import_module(name)
        else:
            pytest.importorskip(name)


def test_rd_results_are_named_after_the_folder_and_kept_out_of_docs(tiny_weights, tmp_path):
    """`python -m eval.rd my_photos/` writes results/my_photos-* where it runs; the committed Kodak
    results in docs/results are written only when asked for with --out docs/results."""
    _needs_the_eval_extra("scipy", "matplotlib")
    root = Path(__file__).resolve().parent.parent
    docs = root / "docs" / "results"
    before = {p.name: p.stat().st_mtime_ns for p in docs.iterdir()}
    photos = tmp_path / "my_photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(random_image(64, 96, seed=i)).save(photos / f"{i}.png")
    # run where the photos are, not in the checkout: PYTHONPATH finds the eval package there
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "eval.rd", "my_photos", "--model", str(tiny_weights),
                        "--levels", "1", "--classic", "--no-cache"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in docs.iterdir()} == before, "docs/results was written"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "my_photos-bdrate.md", "my_photos-pqcodec.json", "my_photos-rd.png"]
    from eval.result_paths import output_location
    assert output_location("docs/results", None, "../shared/data/kodak") == (Path("docs/results"), "kodak")
