"""The GPU plan (tools/gpu_lease.py) dry-run on the CPU with a tiny config: prepare the folder to
copy, run both stages as the GPU machine would, join the returned parts into weights that code."""
import dataclasses
import json

import pytest
import torch
from PIL import Image

from pqcodec import bitstream
from pqcodec.model import PQCodecModel
from pqcodec.train.__main__ import main as train_main
from tools import gpu_lease as lease
from conftest import random_image
from test_train import TINY_AE


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    for i in range(4):
        Image.fromarray(random_image(72 + 8 * i, 80, seed=i)).save(d / "sub" / f"{i}.jpg", quality=95)
    return d


def test_prepare_run_join(photos, tmp_path, monkeypatch):
    base = tmp_path / "base"
    train_main(["ae", "--data", str(photos), "--out", str(base), "--steps", "1", "--batch", "2", "--crop", "32",
                "--warmup", "1", *TINY_AE])
    train_main(["prior", "--data", str(photos), "--out", str(base / "prior"), "--init", str(base / "model.safetensors"),
                "--steps", "1", "--batch", "2", "--warmup", "1"])
    start = PQCodecModel.load(base / "prior" / "model.safetensors")

    copied = tmp_path / "lease"
    size = lease.prepare(base / "prior" / "model.safetensors", photos, copied)
    assert size == lease._folder_bytes(copied) and sorted(p.name for p in copied.iterdir()) == ["init.safetensors", "train.zip"]
    loaded = PQCodecModel.load(copied / "init.safetensors")  # float16 on disk, float32 once loaded
    assert not loaded.can_code()
    for (k, a), b in zip(start.state_dict().items(), loaded.state_dict().values()):
        if a.is_floating_point() and not k.startswith("int_prior."):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), k
    with pytest.raises(SystemExit, match="over the copy limit"):
        lease.prepare(base / "prior" / "model.safetensors", photos, tmp_path / "small", limit=1000)

    out = tmp_path / "OUT"
    monkeypatch.chdir(tmp_path)
    lease.main(["run", "--lease", str(copied), "--out", str(out), "--runs", str(tmp_path / "runs"),
                "--ae-minutes", "5", "--prior-minutes", "5", "--ae-steps", "3", "--prior-steps", "2",
                "--ae-batch", "2", "--crop", "32", "--prior-batch", "4", "--ae-warmup", "1", "--prior-warmup", "1",
                "--log-every", "1", "--no-bf16", "--synthetic", "0.5", "--padding", "replicate"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ae_last"]["step"] == 3 and summary["prior_last"]["step"] == 2
    assert summary["parts"] and all((out / p).exists() for p in summary["parts"])

    joined = lease.join(out, tmp_path / "back" / "model.safetensors")
    model = PQCodecModel.load(joined)
    assert model.can_code() and model.config == dataclasses.replace(start.config, padding="replicate")
    assert (tmp_path / "back" / "summary.json").exists()

    # the file for pqcodec/models/: 9.5 MB less at full size, and its files are byte for byte the run's
    from pqcodec.zoo import load_custom_codec, sha256_of
    shipped = tmp_path / "models" / "m.safetensors"
    assert lease.ship(joined, shipped) == sha256_of(shipped) and shipped.stat().st_size < joined.stat().st_size
    image = random_image(40, 56, seed=9)
    a, b = load_custom_codec(str(joined)), load_custom_codec(str(shipped))
    (ha, pa), (hb, pb) = (bitstream.unpack(c.encode(image, 2)) for c in (a, b))
    assert pa == pb and ha.model_hash != hb.model_hash  # the same payload; each file names its weights

    # a part lost on the way is refused, not joined into a broken file; so are parts without their hash
    (out / "model.safetensors.sha256").rename(out / "hash")
    with pytest.raises(SystemExit, match="no model.safetensors.sha256"):
        lease.join(out, tmp_path / "bad" / "model.safetensors")
    (out / "hash").rename(out / "model.safetensors.sha256")
    (out / summary["parts"][-1]).write_bytes(b"cut")
    with pytest.raises(SystemExit, match="SHA-256"):
        lease.join(out, tmp_path / "bad" / "model.safetensors")


def test_split_makes_parts_a_return_can_take(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(bytes(range(256)) * 100)
    names = lease.split(f, tmp_path, part_bytes=10_000)
    assert len(names) == 3 and b"".join((tmp_path / n).read_bytes() for n in names) == f.read_bytes()


def test_trim_drops_only_what_git_gives_back(tmp_path):
    """The copy to the GPU machine takes the working tree beside the copied folders (trim --limit bytes in all): trim removes the
    tracked files a lease does not run, untrim brings them back; a changed file stops it first."""
    import subprocess
    repo = tmp_path / "repo"
    for path, size in (("pqcodec/a.py", 10), ("eval/b.py", 10), ("setup.cfg", 10), ("pqcodec/models/w.bin", 300_000),
                       ("docs/img.png", 200_000), ("docs/a b [1].txt", 10), ("README.md", 10),
                       (".gitignore", 0)):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(bytes([len(path)]) * size)
    (repo / ".gitignore").write_text(".venv/\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    (repo / "notes.txt").write_text("untracked, not ignored: it travels and stays")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "big").write_bytes(b"v" * 1_000_000)  # ignored: it must not travel, so .gitignore stays
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "train.zip").write_bytes(b"z" * 5000)
    tree = lambda: {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}  # noqa: E731
    before = tree()

    with pytest.raises(SystemExit, match="over"):  # trimmed, the call is 5 files of 4 KiB + the copied folder's 8 KiB
        lease.trim([copied], repo, limit=20_000)
    with pytest.raises(SystemExit, match="no such folder"):
        lease.trim([tmp_path / "absent"], repo)
    (repo / "docs" / "img.png").write_bytes(b"changed")
    with pytest.raises(SystemExit, match="docs/img.png: changed"):
        lease.trim([copied], repo)
    subprocess.run([*git, "update-index", "--assume-unchanged", "docs/img.png"], check=True)
    with pytest.raises(SystemExit, match="docs/img.png: git overlooks"):
        lease.trim([copied], repo)
    subprocess.run([*git, "update-index", "--no-assume-unchanged", "docs/img.png"], check=True)
    assert tree().keys() == before.keys()  # nothing was removed by a refused trim
    (repo / "docs" / "img.png").write_bytes(before[repo / "docs" / "img.png"])

    expected = 5 * 4096 + 8192
    assert lease.trim([copied], repo, limit=30_000, dry_run=True) == expected
    assert tree() == before  # a dry run only measures
    assert lease.trim([copied], repo, limit=30_000) == expected
    left = sorted(str(p.relative_to(repo)) for p in tree())
    assert left == [".gitignore", ".venv/big", "eval/b.py", "notes.txt", "pqcodec/a.py", "setup.cfg"]
    with pytest.raises(SystemExit, match="trimmed already"):
        lease.trim([copied], repo, limit=30_000)
    # the deletions committed by mistake while trimmed: untrim still gives every file back
    subprocess.run([*git, "commit", "-qam", "oops"], check=True)
    assert sorted(lease.untrim(repo)) == ["README.md", "docs/a b [1].txt", "docs/img.png", "pqcodec/models/w.bin"]
    assert tree() == before
    assert lease.untrim(repo) == []


def test_prepare_without_photos_or_weights_says_so_and_keeps_the_old_folder(tmp_path, tiny_weights):
    copied = tmp_path / "lease"
    copied.mkdir()
    (copied / "train.zip").write_bytes(b"an earlier folder")
    with pytest.raises(SystemExit, match="no images .* under .*absent"):
        lease.pack_photos(tmp_path / "absent", copied)
    with pytest.raises(SystemExit, match="no images .* under .*absent"):
        lease.prepare(tiny_weights, tmp_path / "absent", copied)
    with pytest.raises(SystemExit, match="w.safetensors: no such weights file"):
        lease.prepare(tmp_path / "w.safetensors", tmp_path / "absent", copied)
    assert (copied / "train.zip").read_bytes() == b"an earlier folder"  # nothing replaced by a refusal
