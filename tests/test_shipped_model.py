"""End-to-end with the shipped default model: what a user gets from `pqcodec encode/decode`."""
import numpy as np
import pytest
from PIL import Image

import pqcodec
from pqcodec.metrics import psnr
from pqcodec.zoo import DEFAULT_MODEL, ZOO, load_codec
from conftest import DATA, run_cli


@pytest.fixture(scope="module")
def kodim23():
    return Image.open(DATA / "kodim23.png").convert("RGB")


def test_every_level_round_trips_exactly_and_rate_grows(kodim23):
    crop = np.asarray(kodim23)[96:96 + 160, 200:200 + 256]
    codec = load_codec(DEFAULT_MODEL)
    sizes, quality = [], []
    for q in range(1, codec.levels() + 1):
        data = codec.encode(crop, q)
        header, tokens = codec.decode_tokens(data)
        assert np.array_equal(tokens, codec.image_to_tokens(crop, codec.active_at(q)))
        sizes.append(len(data))
        quality.append(psnr(crop, codec.tokens_to_image(tokens, header.height, header.width)))
    assert sizes == sorted(sizes) and quality == sorted(quality)


def test_cli_round_trip_full_image(tmp_path, kodim23):
    r = run_cli("encode", DATA / "kodim23.png", "-o", tmp_path / "k.bin")
    assert r.returncode == 0, r.stderr.decode()
    r = run_cli("decode", tmp_path / "k.bin", "-o", tmp_path / "k.png")
    assert r.returncode == 0, r.stderr.decode()
    out = np.asarray(Image.open(tmp_path / "k.png"))
    assert out.shape == (512, 768, 3)
    bpp = 8 * (tmp_path / "k.bin").stat().st_size / (512 * 768)
    assert bpp < 0.5 and psnr(np.asarray(kodim23), out) > 24  # recognisable, and compressed
    info = run_cli("info", tmp_path / "k.bin").stdout.decode()
    assert ZOO[DEFAULT_MODEL].name in info


def test_python_api(kodim23):
    data = pqcodec.encode(kodim23)
    img = pqcodec.decode(data)
    assert img.size == kodim23.size and img.mode == "RGB"
