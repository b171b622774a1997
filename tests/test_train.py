"""Both training stages run, log, save loadable weights and resume, on a tiny config."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from pqcodec.model import PQCodecModel
from pqcodec.train.__main__ import main as train_main
from conftest import random_image

TINY_AE = ["--channels", "8", "--subvectors", "2", "--codebook-size", "16", "--subvector-dim", "4",
           "--window", "4", "--prior-dim", "16", "--prior-layers", "1", "--prior-heads", "2"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(random_image(80 + 8 * i, 96, seed=i)).save(d / f"{i}.png")
    return d


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_ae_then_prior_and_resume(image_folder, tmp_path):
    run = tmp_path / "ae"
    common = ["--data", str(image_folder), "--out", str(run), "--log-every", "1", "--save-every", "2"]
    train_main(["ae", *common, "--steps", "2", "--batch", "2", "--crop", "32", "--warmup", "1", *TINY_AE])
    train_main(["ae", *common, "--steps", "4", "--batch", "2", "--crop", "32", "--warmup", "1"])  # resumes
    steps = [r["step"] for r in _log(run)]
    assert steps == [1, 2, 3, 4]
    assert all(r["psnr"] > 0 and r["usage_min"] >= 1 for r in _log(run))
    model = PQCodecModel.load(run / "model.safetensors")
    assert model.config.num_subvectors == 2 and model.config.codebook_size == 16

    prior_run = tmp_path / "prior"
    train_main(["prior", "--data", str(image_folder), "--out", str(prior_run), "--init", str(run / "model.safetensors"),
                "--steps", "3", "--batch", "4", "--log-every", "1", "--save-every", "3", "--warmup", "1"])
    bits = [r["bits_per_index"] for r in _log(prior_run)]
    assert len(bits) == 3 and all(0 < b < 8 for b in bits)  # log2(16) = 4 bits uniform, plus noise
    PQCodecModel.load(prior_run / "model.safetensors")

    # the rate ladder: grow to 3 sub-quantizers with levels 1 and 3, then a warm-started prior
    grown = tmp_path / "grown"
    train_main(["ae", "--data", str(image_folder), "--out", str(grown), "--init", str(prior_run / "model.safetensors"),
                "--subvectors", "3", "--levels", "1,3", "--steps", "2", "--batch", "2", "--crop", "32",
                "--warmup", "1", "--log-every", "1"])
    per_level = {k for r in _log(grown) for k in r if k.startswith("psnr_m")}
    assert per_level and per_level <= {"psnr_m1", "psnr_m3"}  # trained at the levels only
    train_main(["prior", "--data", str(image_folder), "--out", str(grown / "prior"), "--warm", "--init",
                str(grown / "model.safetensors"), "--steps", "1", "--batch", "4", "--warmup", "1"])
    model = PQCodecModel.load(grown / "prior" / "model.safetensors")
    assert model.config.num_subvectors == 3 and model.config.active_levels == (1, 3)


def test_bad_data_folder_is_a_clean_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pqcodec.train", "ae", "--data", str(tmp_path), "--out",
                        str(tmp_path / "o"), "--steps", "1"], capture_output=True, timeout=120)
    assert r.returncode != 0 and b"no images" in r.stderr and b"Traceback" not in r.stderr


def test_torchrun_two_cpu_processes(image_folder, tmp_path):
    """Data-parallel training (gloo) on 2 CPU processes: both stages run and save one model."""
    run = tmp_path / "ddp"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pqcodec.train"]
    r = subprocess.run([*base, "ae", "--data", str(image_folder), "--out", str(run), "--steps", "3", "--batch", "2",
                        "--crop", "32", "--warmup", "1", "--log-every", "1", "--save-every", "3", *TINY_AE],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    r = subprocess.run([*base, "prior", "--data", str(image_folder), "--out", str(run), "--steps", "2", "--batch", "2",
                        "--init", str(run / "model.safetensors"), "--warmup", "1", "--log-every", "1", "--save-every", "2"],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 1, 2]  # rank 0 logs once per step
    PQCodecModel.load(run / "model.safetensors")
