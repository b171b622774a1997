"""The same-budget hyperprior's GPU plan (eval/baselines_lease.py) dry-run on the CPU with tiny
crops: prepare the folder to copy, train two qualities side by side as the GPU machine would, join the
returned parts here, evaluate them with CompressAI's real entropy coder (eval/train_baselines.py
--no-train). Needs compressai: runs in CI's second environment (.ci/run)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("compressai")
ROOT = Path(__file__).resolve().parent.parent
from eval import baselines_lease, train_baselines  # noqa: E402
from pqcodec.train.common import load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    rng = np.random.default_rng(0)
    for sub, n, (h, w) in (("photos", 4, (80, 96)), ("test", 2, (48, 72))):
        (root / sub).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / sub / f"{i}.png")
    return root


def lease_run(root: Path, out: str, *args: str) -> dict:
    """`run` as the device would call it (later options win: --lease and --runs may be given again)."""
    r = subprocess.run([sys.executable, "-m", "eval.baselines_lease", "run", "--lease", str(root / "lease"),
                        "--out", str(root / out), "--runs", str(root / f"runs-{out}"), "--crop", "64",
                        "--threads", "1", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((root / out / "summary.json").read_text())


def test_prepare_run_join_evaluate(folders, tmp_path):
    size = baselines_lease.pack_photos(folders / "photos", folders / "lease")
    assert sorted(p.name for p in (folders / "lease").iterdir()) == ["train.zip"] and size > 0
    with pytest.raises(SystemExit, match="over the copy limit"):
        baselines_lease.pack_photos(folders / "photos", tmp_path / "small", limit=100)

    summary = lease_run(folders, "OUT", "--minutes", "5", "--qualities", "1", "2", "--crops", "12", "--batch", "8")
    for q in "12":  # 12 crops at batch 8: a full batch, then the 4 the budget has left
        assert summary["qualities"][q]["exit"] == 0
        assert summary["qualities"][q]["crops"] == 12 and summary["qualities"][q]["step"] == 2
    assert len(list((folders / "OUT").iterdir())) <= 8  # what a return takes
    assert all((folders / "OUT" / p).stat().st_size <= 16 * 2 ** 20 for p in summary["parts"])

    # a second call on the warm machine: no photos carried, every quality goes on from its checkpoint
    again = lease_run(folders, "OUT", "--minutes", "5", "--qualities", "1", "2", "--crops", "20", "--batch", "8",
                      "--lease", str(tmp_path / "not-carried"), "--runs", str(folders / "runs-OUT"))
    assert [again["qualities"][q]["crops"] for q in "12"] == [20, 20] and again["qualities"]["1"]["step"] == 3
    summary = lease_run(folders, "OUT", "--minutes", "5", "--qualities", "1", "2", "--crops", "12", "--batch", "8",
                        "--runs", str(folders / "runs-fresh"))  # the 12-crop weights again, for what follows
    r = subprocess.run([sys.executable, "-m", "eval.baselines_lease", "run", "--lease", str(tmp_path / "none"),
                        "--out", str(tmp_path / "o"), "--runs", str(tmp_path / "r"), "--minutes", "1",
                        "--qualities", "1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and "train.zip: not here, nor photos from an earlier call" in r.stderr
    r = subprocess.run([sys.executable, "-m", "eval.baselines_lease", "run", "--out", str(tmp_path / "o"),
                        "--minutes", "1", "--qualities", "9"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 9" in r.stderr  # CompressAI has qualities 1..8

    back = folders / "back"
    written = baselines_lease.join(folders / "OUT", back)
    assert [p.parent.name for p in written] == ["bmshj2018-hyperprior-q1", "bmshj2018-hyperprior-q2"]
    assert sorted(p.name for p in back.iterdir() if p.is_file()) == ["lease-summary-q1-2.json"]  # no bundle copy
    trained = load_checkpoint(folders / "runs-fresh" / "bmshj2018-hyperprior-q1" / "ckpt.pt")
    joined = load_checkpoint(written[0])
    assert joined["crops"] == 12 and "opt" not in joined
    assert all(torch.equal(trained["net"][k], v) for k, v in joined["net"].items())
    with pytest.raises(SystemExit, match="--replace"):
        baselines_lease.join(folders / "OUT", back)
    assert baselines_lease.join(folders / "OUT", back, replace=True) == written

    # evaluated here as they are: no training on the CPU, the curve named with the crops they saw
    evaluate = ["--no-train", "--out", str(back), "--test", str(folders / "test"), "--results", str(tmp_path / "results")]
    train_baselines.main(evaluate)
    curve = json.loads((tmp_path / "results" / "test-bmshj2018-hyperprior-trained.json").read_text())
    assert curve["results"]["quality"] == [1, 2] and curve["crops"] == {"1": 12, "2": 12}
    assert curve["name"] == "bmshj2018-hyperprior (trained here, 12 crops per quality)"
    for q, rows in curve["per_image"].items():
        assert len(rows) == 2 and all(r["bytes"] > 0 and r["bpp"] == 8 * r["bytes"] / (48 * 72) for r in rows)
    assert load_checkpoint(written[0])["crops"] == 12  # --no-train left the checkpoint alone
    results = sorted(back.glob("*/eval-test.json"))
    assert len(results) == 2
    baselines_lease.join(folders / "OUT", back, replace=True)  # new weights: their old results go with them
    assert not any(p.exists() for p in results)

    # a lost part is refused, not joined into broken weights
    (folders / "OUT" / summary["parts"][-1]).write_bytes(b"cut")
    with pytest.raises(SystemExit, match="SHA-256"):
        baselines_lease.join(folders / "OUT", tmp_path / "bad")


def test_one_deadline_stops_every_quality_and_keeps_its_weights(folders):
    if not (folders / "lease" / "train.zip").exists():
        baselines_lease.pack_photos(folders / "photos", folders / "lease")
    summary = lease_run(folders, "OUT-late", "--minutes", "0.3", "--qualities", "3", "4", "--crops", "10000000",
                        "--batch", "2")
    for q in ("3", "4"):
        info = summary["qualities"][q]
        assert info["exit"] == 0 and 0 < info["crops"] < 10_000_000 and info["crops"] == 2 * info["step"]
        # not a speed limit: the children's clocks start after their start-up, the deadline is the
        # parent's 18 s counted from before they started; a child that trained past it would exceed it
        assert info["wall_s"] < 18
    # the whole run ends soon after the deadline: 18 s, then saving and bundling (seconds) -- a bound
    # that a slow or busy machine meets; training on to the 10 M crops would take hours (and fail the
    # subprocess's 300 s)
    assert summary["wall_s"] < 150 and summary["parts"]


def test_a_stopped_run_brings_back_what_its_qualities_saved(folders, tmp_path):
    """SIGTERM to `run` (a command's time limit, Ctrl-C): its children save and stop, the weights
    come back; a quality that fails makes the run fail, with its output in the summary."""
    import signal
    import time
    if not (folders / "lease" / "train.zip").exists():
        baselines_lease.pack_photos(folders / "photos", folders / "lease")
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "eval.baselines_lease", "run", "--lease", str(folders / "lease"),
                             "--out", str(tmp_path / "OUT"), "--runs", str(runs), "--crop", "64", "--threads", "1",
                             "--minutes", "10", "--qualities", "1", "--crops", "10000000", "--batch", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    log = runs / "bmshj2018-hyperprior-q1" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.stat().st_size) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # the first line: 50 steps done
    assert log.exists() and log.stat().st_size, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    summary = json.loads((tmp_path / "OUT" / "summary.json").read_text())
    assert summary["qualities"]["1"]["crops"] >= 100 and summary["parts"]  # 50 steps logged before the stop
    assert load_checkpoint(runs / "bmshj2018-hyperprior-q1" / "ckpt.pt")["crops"] == summary["qualities"]["1"]["crops"]

    r = subprocess.run([sys.executable, "-m", "eval.baselines_lease", "run", "--lease", str(folders / "lease"),
                        "--out", str(tmp_path / "OUT2"), "--runs", str(tmp_path / "runs2"), "--crop", "512",
                        "--minutes", "1", "--qualities", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "at least 512 px" in r.stdout
    summary = json.loads((tmp_path / "OUT2" / "summary.json").read_text())
    assert summary["qualities"]["2"]["exit"] == 1 and "parts" not in summary


def test_the_learning_rate_follows_the_cosine_over_the_budget(folders, tmp_path):
    from pqcodec.train.common import lr_at
    r = subprocess.run([sys.executable, "-m", "eval.train_baselines", "--train-only", "--data",
                        str(folders / "photos"), "--out", str(tmp_path), "--qualities", "1", "--crops", "40",
                        "--batch", "8", "--crop", "64", "--lr", "2e-4", "--warmup", "1", "--threads", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    last = json.loads((tmp_path / "bmshj2018-hyperprior-q1" / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 5 and last["lr"] == lr_at(4, 5, 2e-4, 1) < 2e-4 / 4  # the 5th step's, near the end


def test_the_curve_says_when_its_qualities_saw_different_crops():
    assert train_baselines.curve_name("a", [928_000] * 5) == "a (trained here, 928,000 crops per quality)"
    assert train_baselines.curve_name("a", [900, 928_000]) == "a (trained here, 900 to 928,000 crops per quality)"
