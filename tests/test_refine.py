"""Encoder-side latent refinement (`--effort N`, pqcodec/refine.py): the decoder and the format do not
change, effort 0 is the plain encoder byte for byte, the refined file decodes closer to the image
with the shipped model, and bad values or a size with it are refused in one line."""
import numpy as np
import pytest
from PIL import Image

from conftest import DATA, random_image, run_cli
from pqcodec.errors import PQCodecError
from pqcodec.metrics import psnr

RGB = random_image(40, 72, seed=9)


def test_effort_zero_is_the_plain_encoder(tiny_codec):
    assert tiny_codec.encode(RGB, 2, effort=0) == tiny_codec.encode(RGB, 2)


def test_refined_file_is_a_plain_file_of_its_tokens(tiny_codec):
    data, stats = tiny_codec.encode_with_stats(RGB, 2, effort=3)
    header, tokens = tiny_codec.decode_tokens(data)
    assert header.version == 3 and np.array_equal(tokens, stats.tokens)
    assert tiny_codec.encode_tokens(tokens, 40, 72) == data
    assert not np.array_equal(tokens, tiny_codec.image_to_tokens(RGB, 2)), "3 steps changed no token"


def test_refinement_decodes_closer_with_the_shipped_model():
    """kodim23 crop at level 3: measured 1367 bytes 30.97 dB plain, 1523 bytes 31.25 dB refined."""
    from pqcodec.zoo import load_codec
    codec = load_codec()
    crop = np.asarray(Image.open(DATA / "kodim23.png").convert("RGB"))[96:256, 200:456]
    plain, refined = codec.encode(crop, 3), codec.encode(crop, 3, effort=5)
    gain = psnr(crop, np.asarray(codec.decode(refined))) - psnr(crop, np.asarray(codec.decode(plain)))
    assert gain > 0.15, gain
    assert len(refined) < 1.2 * len(plain)


def test_more_effort_never_decodes_farther(tiny_codec):
    """The kept latent is the one among the encoder's and every step's whose codes decode closest."""
    plain = psnr(RGB, np.asarray(tiny_codec.decode(tiny_codec.encode(RGB, 2))))
    for effort in (1, 3, 10):
        assert psnr(RGB, np.asarray(tiny_codec.decode(tiny_codec.encode(RGB, 2, effort=effort)))) >= plain


def test_a_step_that_only_hurts_leaves_the_encoders_codes():
    """One step far too long (lr 10) throws the shipped model's codes around and decodes worse: the
    encoder's codes stay, where keeping the last step would code the wandered ones."""
    import torch
    from pqcodec import refine
    from pqcodec.zoo import load_codec
    model = load_codec().model
    q = model.quantizer
    crop = np.asarray(Image.open(DATA / "kodim23.png").convert("RGB"))[96:160, 200:264]
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 255

    def error(z):
        with torch.no_grad():
            return float((model.decoder(q.decode(q.encode(z, 3), 3)) - x).square().mean())
    with torch.no_grad():
        z0 = model.encoder(x)
    with torch.inference_mode(False), torch.enable_grad():  # Adam's first step: lr times the gradient's sign
        z = z0.clone().requires_grad_(True)
        snapped = q.decode(q.encode(z.detach(), 3), 3)
        keep = (torch.arange(q.dim) < 3 * q.d).view(1, -1, 1, 1)
        loss = (model.decoder(torch.where(keep, z + (snapped - z).detach(), snapped)) - x).square().mean()
        step = 10.0 * torch.autograd.grad(loss, z)[0].sign()
    wandered = z0 - step
    assert not torch.equal(q.encode(wandered, 3), q.encode(z0, 3)) and error(wandered) > error(z0)
    assert torch.equal(q.encode(refine.refine_latent(model, x, 3, 1, lr=10.0), 3), q.encode(z0, 3))


@pytest.mark.parametrize("bad, kind", [(-1, "0..10"), (11, "0..10"), (2.5, "whole number"), (True, "whole number")])
def test_bad_effort(tiny_codec, bad, kind):
    with pytest.raises(PQCodecError, match=kind):
        tiny_codec.encode(RGB, 2, effort=bad)


def test_effort_needs_a_quality_not_a_size(tiny_weights, tmp_path):
    import pqcodec
    with pytest.raises(PQCodecError, match="effort works with quality, not with a size"):
        pqcodec.encode(RGB, model=str(tiny_weights), max_bytes=500, effort=3)
    src = tmp_path / "in.png"
    Image.fromarray(RGB).save(src)
    r = run_cli("encode", src, "-o", tmp_path / "a.bin", "--model", tiny_weights, "--max-bytes", "500", "--effort", "3")
    assert r.returncode == 2  # a bad command line
    assert b"--effort works with --quality" in r.stderr and r.stderr.count(b"\n") == 1
    assert not (tmp_path / "a.bin").exists()
    r = run_cli("encode", src, "-o", tmp_path / "b.bin", "--model", tiny_weights, "-q", "2", "--effort", "2")
    assert r.returncode == 0, r.stderr.decode()
    assert pqcodec.decode((tmp_path / "b.bin").read_bytes(), model=str(tiny_weights)).size == (72, 40)
