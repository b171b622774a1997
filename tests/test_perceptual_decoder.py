"""The perceptual decoder (issue 13): the fine-tune changes the decoder alone, its file pairs with one
model only, and the same .bin decodes with both decoders through the Codec, the API and the CLI."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pqcodec
from pqcodec.codec import Codec
from pqcodec.decoders import load_decoder, save_decoder
from pqcodec.errors import PQCodecError, UnsupportedFileError
from pqcodec.model import PQCodecModel
from pqcodec.nets.discriminator import MultiScaleDiscriminator
from pqcodec.train.__main__ import build_parser
from pqcodec.train.perceptual import train
from pqcodec.zoo import DEFAULT_MODEL, ZOO, models_dir, model_hash_of, sha256_of
from conftest import DATA, random_image, run_cli


def _args(weights, data, out, steps, *extra):
    return build_parser().parse_args(
        ["perceptual", "--init", str(weights), "--data", str(data), "--out", str(out), "--steps", str(steps),
         "--adv-warmup", "2", "--warmup", "1", "--batch", "2", "--crop", "32", "--log-every", "1",
         "--save-every", "3", "--disc-width", "4", *extra])


def _fresh_codec(weights) -> Codec:
    """A Codec of its own (load_custom_codec's is cached and shared between tests)."""
    sha = sha256_of(Path(weights))
    return Codec(PQCodecModel.load(weights), model_hash_of(sha), weights_sha256=sha, name=str(weights))


def test_discriminator_shapes_and_conditioning():
    disc = MultiScaleDiscriminator(latent_dim=8, cond_channels=3, width=4, scales=2)
    out = disc(torch.rand(2, 3, 64, 64), torch.randn(2, 8, 8, 8))
    assert [o[0].shape for o in out] == [(2, 1, 8, 8), (2, 1, 4, 4)]
    assert len(out[0][1]) == 3
    other = disc(torch.rand(2, 3, 64, 64), torch.randn(2, 8, 8, 8))
    assert not torch.equal(out[0][0], other[0][0])


def test_finetune_changes_only_the_decoder_and_resumes(tiny_weights, image_folder, tmp_path):
    before = PQCodecModel.load(tiny_weights).state_dict()
    out = tmp_path / "run"
    model, path = train(_args(tiny_weights, image_folder, out, 5))
    after = model.state_dict()
    frozen = [k for k in before if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert [r["adversarial"] for r in log] == [False, False, True, True, True]
    assert all(np.isfinite(r["lam"]) and r["lam"] > 0 for r in log[2:])
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step000003.png", "step000005.png"]
    # the file holds the fine-tuned decoder (float16) and pairs with the weights it came from
    dec = load_decoder(path, sha256_of(Path(tiny_weights)), model.config.channels, model.quantizer.dim)
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(dec.state_dict()[k], v.half().float())
    # resumed: continues at step 6 with the checkpoint's decoder
    model2, _ = train(_args(tiny_weights, image_folder, out, 7))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log][-2:] == [6, 7]
    assert all(torch.equal(before[k], model2.state_dict()[k]) for k in frozen)


def test_bad_options_are_one_line_errors(tiny_weights, image_folder, tmp_path, capsys):
    from pqcodec.train.__main__ import main as train_main
    base = ["perceptual", "--init", str(tiny_weights), "--data", str(image_folder), "--out", str(tmp_path / "r"),
            "--steps", "2", "--crop", "32"]
    for extra, message in [(["--msssim-weight", "0.1"], "--msssim-weight needs --crop above 96"),
                           (["--lpips-alexnet", str(tmp_path / "none.pth")], "no such AlexNet weights file")]:
        with pytest.raises(SystemExit) as e:
            train_main(base + extra)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="no such weights file"):
        train_main(["perceptual", "--init", str(tmp_path / "x.safetensors"), "--data", str(image_folder),
                    "--out", str(tmp_path / "r"), "--steps", "2"])


def test_decoder_file_refuses_another_model_and_other_files(tiny_weights, tmp_path):
    model = PQCodecModel.load(tiny_weights)
    sha = sha256_of(Path(tiny_weights))
    path = tmp_path / "dec.safetensors"
    save_decoder(model.decoder, path, "perceptual", sha, model.config.to_json())
    load_decoder(path, sha, model.config.channels, model.quantizer.dim)
    with pytest.raises(UnsupportedFileError, match=r"dec\.safetensors: was fine-tuned from model .* does not pair"):
        load_decoder(path, "0" * 64, model.config.channels, model.quantizer.dim)
    with pytest.raises(UnsupportedFileError, match="not a pqcodec decoder file"):
        load_decoder(tiny_weights, sha, model.config.channels, model.quantizer.dim)
    with pytest.raises(UnsupportedFileError, match="not those of this model's decoder"):
        load_decoder(path, sha, model.config.channels * 2, model.quantizer.dim)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UnsupportedFileError, match="junk.safetensors: not a safetensors file"):
        load_decoder(tmp_path / "junk.safetensors", sha, model.config.channels, model.quantizer.dim)


def test_the_same_file_decodes_with_both_decoders(tiny_weights, tmp_path):
    codec = _fresh_codec(tiny_weights)
    assert codec.decoders() == ("mse",)
    data = codec.encode(random_image(40, 56, seed=5), quality=1)
    with pytest.raises(UnsupportedFileError, match="has no perceptual decoder"):
        codec.decode(data, decoder="perceptual")
    with pytest.raises(PQCodecError, match="unknown decoder 'sharp'"):
        codec.decode(data, decoder="sharp")
    other = PQCodecModel.load(tiny_weights).decoder
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "perceptual.safetensors"
    codec.add_decoder("perceptual", path)
    assert codec.decoders() == ("mse",)  # registered, but no file yet
    with pytest.raises(UnsupportedFileError, match="perceptual decoder weights of .* not found at"):
        codec.decode(data, decoder="perceptual")
    save_decoder(other, path, "perceptual", codec.weights_sha256, codec.config.to_json())
    assert codec.decoders() == ("mse", "perceptual")
    a, b = np.asarray(codec.decode(data)), np.asarray(codec.decode(data, decoder="perceptual"))
    assert a.shape == b.shape == (40, 56, 3)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, np.asarray(codec.decode(data, decoder="mse")))
    codec.add_decoder("perceptual", path, sha256="f" * 64)  # a recorded SHA-256 that differs
    with pytest.raises(UnsupportedFileError, match="does not match the SHA-256 recorded for the perceptual decoder"):
        codec.decode(data, decoder="perceptual")


def test_api_and_cli_errors_for_a_model_without_the_decoder(tiny_weights, tmp_path):
    data = pqcodec.encode(random_image(24, 32), quality=1, model=str(tiny_weights))
    with pytest.raises(UnsupportedFileError, match=r"^<bytes>: .*tiny\.safetensors has no perceptual decoder"):
        pqcodec.decode(data, model=str(tiny_weights), decoder="perceptual")
    src = tmp_path / "x.bin"
    src.write_bytes(data)
    r = run_cli("decode", src, "-o", tmp_path / "x.png", "--model", tiny_weights, "--decoder", "perceptual")
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "has no perceptual decoder" in err and "x.bin" in err
    assert not (tmp_path / "x.png").exists()
    r = run_cli("decode", src, "-o", tmp_path / "x.png", "--decoder", "sharp")
    assert r.returncode == 2 and "invalid choice: 'sharp'" in r.stderr.decode()


SHIPPED = ZOO[DEFAULT_MODEL]
shipped_decoder = pytest.mark.skipif(
    not SHIPPED.decoders or not (models_dir() / SHIPPED.decoders[0].filename).is_file(),
    reason="the shipped model has no perceptual decoder file here")


@shipped_decoder
def test_shipped_perceptual_decoder_keeps_colours_and_adds_detail(tmp_path):
    """kodim23 at level 1 (the rates where the decoders differ most): one file, two decoders, the
    perceptual one within a few levels of the MSE one in every 32x32 block's mean colour, and with
    more high-frequency energy (eval/perceptual_decoder.py measures it on all of Kodak)."""
    from eval.perceptual_decoder import block_colour_deviation, hf_ratios
    rgb = np.asarray(Image.open(DATA / "kodim23.png").convert("RGB"))[:256, 256:640]
    codec = pqcodec.load_codec()
    assert codec.decoders() == ("mse", "perceptual")
    data = pqcodec.encode(rgb, quality=1)
    mse = np.asarray(pqcodec.decode(data))
    perceptual = np.asarray(pqcodec.decode(data, decoder="perceptual"))
    assert mse.shape == perceptual.shape == rgb.shape
    # measured with the shipped files: 4.65 levels; top band 1.51 against the MSE decoder's 0.040
    assert block_colour_deviation(perceptual, mse).max() < 6
    assert hf_ratios(rgb, perceptual)["top"] > 10 * hf_ratios(rgb, mse)["top"]
    src = tmp_path / "k.bin"
    src.write_bytes(data)
    r = run_cli("decode", src, "-o", tmp_path / "k.png", "--decoder", "perceptual")
    assert r.returncode == 0, r.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "k.png")), perceptual)


def test_eval_measures_high_frequencies_and_block_colours():
    from PIL import ImageFilter
    from eval.perceptual_decoder import block_colour_deviation, hf_ratios
    rgb = random_image(128, 160, seed=2)
    assert hf_ratios(rgb, rgb) == {"top": 1.0, "upper-mid": 1.0}
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(2)))
    r = hf_ratios(rgb, blurred)
    assert r["top"] < 0.05 and r["top"] < r["upper-mid"] < 1
    noisy = np.clip(rgb + np.random.default_rng(0).normal(0, 30, rgb.shape), 0, 255).astype(np.uint8)
    assert hf_ratios(rgb, noisy)["top"] > 1.5
    shifted = np.clip(rgb.astype(int) + 3, 0, 255).astype(np.uint8)
    dev = block_colour_deviation(shifted, rgb)
    assert dev.shape == (4 * 5 * 3,) and 2.5 < dev.mean() <= 3 and dev.max() <= 3
