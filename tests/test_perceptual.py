"""eval/perceptual.py: the HiFiC patch grid, and the FID/KID/LPIPS plumbing run with RANDOMLY
INITIALISED backbones (no pretrained weights can be fetched here). Those runs check the wiring
(identical inputs give 0, different inputs give more), never a figure; every result they get is
labelled "random (plumbing test only)". Needs the perceptual extra (torchvision); skipped without."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch_fidelity")
pytest.importorskip("lpips")

from conftest import random_image  # noqa: E402

from eval import perceptual  # noqa: E402
from eval.perceptual import PerceptualError, hific_patch_positions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_hific_patches_kodak_size_gives_8():
    pos = hific_patch_positions(512, 768)  # height, width
    assert len(pos) == 3 * 2 + 2 * 1
    assert set(pos) == {(0, 0), (0, 256), (0, 512), (256, 0), (256, 256), (256, 512), (128, 128), (128, 384)}


@pytest.mark.parametrize("h, w, n", [(256, 256, 1), (255, 1000, 0), (384, 384, 2), (640, 640, 4 + 4), (300, 900, 3)])
def test_hific_patches_are_whole_and_inside(h, w, n):
    pos = hific_patch_positions(h, w)
    assert len(pos) == n
    assert all(0 <= y <= h - 256 and 0 <= x <= w - 256 for y, x in pos)
    assert all(y % 256 in (0, 128) and x % 256 == y % 256 for y, x in pos)


def test_random_backbone_plumbing_identical_zero_different_positive(tmp_path):
    imgs = [random_image(256, 256, seed=i) for i in range(3)]
    noisy = [np.clip(a + np.random.default_rng(9).normal(0, 25, a.shape), 0, 255).astype(np.uint8) for a in imgs]
    res = perceptual.random_backbone_metrics({
        "same": [(f"{i}.png", a, a) for i, a in enumerate(imgs)],
        "different": [(f"{i}.png", a, b) for i, (a, b) in enumerate(zip(imgs, noisy))]}, tmp_path)
    same, diff = res["same"], res["different"]
    assert same["backbone"] == diff["backbone"] == "random (plumbing test only)"
    assert same["patches"] == same["kid_subset_size"] == 3 and same["lpips_images"] == 3
    assert abs(same["fid"]) < 1e-6 and diff["fid"] > 1e-3
    assert diff["kid_mean"] > same["kid_mean"] and abs(same["kid_mean"]) < 0.1 * diff["kid_mean"]
    assert same["lpips"] == 0 and diff["lpips"] > 0


def test_lpips_rejects_an_alexnet_file_with_missing_or_misshapen_layers(tmp_path):
    import torch
    import torchvision
    sd = torchvision.models.alexnet(weights=None).state_dict()  # random: only the key check matters
    torch.save({k: v for k, v in sd.items() if k != "features.8.weight"}, tmp_path / "partial.pth")
    with pytest.raises(PerceptualError, match="missing features.8.weight"):
        perceptual.load_lpips(tmp_path / "partial.pth")
    torch.save({**sd, "features.10.bias": torch.zeros(3)}, tmp_path / "misshapen.pth")
    with pytest.raises(PerceptualError, match="cannot load AlexNet weights"):
        perceptual.load_lpips(tmp_path / "misshapen.pth")
    torch.save(sd, tmp_path / "alex.pth")
    with pytest.raises(PerceptualError, match="cannot load LPIPS linear layers"):
        perceptual.load_lpips(tmp_path / "alex.pth", lpips_linear=tmp_path / "alex.pth")


def _folders(tmp_path, rec_size=(256, 256), rec_name="a.png"):
    (tmp_path / "orig").mkdir()
    (tmp_path / "rec").mkdir()
    Image.fromarray(random_image(256, 256)).save(tmp_path / "orig" / "a.png")
    Image.fromarray(random_image(*rec_size)).save(tmp_path / "rec" / rec_name)
    return str(tmp_path / "orig"), str(tmp_path / "rec")


def _one_line_error(stderr: str, *needles):
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "Traceback" not in stderr
    assert all(n in stderr for n in needles), stderr


@pytest.mark.parametrize("weights_args, needles", [
    ([], ["weights-inception-2015-12-05-6726825d.pth", "alexnet-owt-7be5be79.pth", "lpips"]),
    (["--inception-weights", "nowhere/inception.pth"], ["Inception weights not found: nowhere/inception.pth"]),
    (["--alexnet-weights", "nowhere/alexnet.pth"], ["AlexNet weights not found: nowhere/alexnet.pth"]),
])
def test_cli_missing_weights_is_one_line_exit_1(tmp_path, weights_args, needles):
    orig, rec = _folders(tmp_path)
    r = subprocess.run([sys.executable, "-m", "eval.perceptual", orig, rec, *weights_args], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    _one_line_error(r.stderr, *needles)


@pytest.mark.parametrize("case, needle", [
    ("garbage-weights", "cannot load Inception weights"),
    ("size", "a.png: original is 256x256, reconstruction 320x256"),
    ("unmatched", "no reconstruction for 1 original(s)"),
])
def test_cli_bad_inputs_are_one_line_exit_1(tmp_path, capsys, case, needle):
    # in-process main(): the same code path as the script, without paying a torch import per case
    orig, rec = _folders(tmp_path, rec_size=(256, 320) if case == "size" else (256, 256),
                         rec_name="b.png" if case == "unmatched" else "a.png")
    (tmp_path / "garbage.pth").write_bytes(b"not a state dict")
    assert perceptual.main([orig, rec, "--inception-weights", str(tmp_path / "garbage.pth")]) == 1
    _one_line_error(capsys.readouterr().err, needle)


def test_cli_cannot_reach_random_backbones():
    import inspect
    assert "random" not in inspect.getsource(perceptual.main)


def test_rd_rows_gain_lpips_with_random_alexnet_plumbing_only(tmp_path):
    """`python -m eval.rd --alexnet-weights`: quality_row adds LPIPS and cache keys name its weights. A RANDOM
    AlexNet here (plumbing only: 0 for identical images, > 0 otherwise), never a reported figure."""
    import torch
    import torchvision
    from eval import common
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "random-alexnet.pth")
    a = random_image(64, 64, seed=1)
    b = random_image(64, 64, seed=2)
    cache = common.ResultCache(tmp_path / "cache")
    plain_key = cache._path({"image": "x"})
    try:
        identity = common.enable_lpips(tmp_path / "random-alexnet.pth")
        assert cache._path({"image": "x"}) != plain_key  # rows cached without LPIPS are not reused
        assert common.quality_row(10, a, a)["lpips"] == pytest.approx(0, abs=1e-6)
        assert common.quality_row(10, a, b)["lpips"] > 0
        curve = common.mean_curve("t", [(1, [common.quality_row(10, a, b)])])
        assert curve["results"]["lpips"][0] > 0 and len(identity["lpips"]) == 2
    finally:
        common._lpips = None
    assert "lpips" not in common.quality_row(10, a, b)
