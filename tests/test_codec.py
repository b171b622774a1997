"""Exactness of the staged coding loop with a tiny random model: every token survives, bytes are
reproducible, thread count does not matter, and damage is detected, never decoded silently."""
import subprocess
import sys

import numpy as np
import pytest

from pqcodec import bitstream
from pqcodec.errors import CorruptFileError, PQCodecError
from pqcodec.model import PQCodecModel
from conftest import calibrated, patched, random_image

MODE_AT = 3 + bitstream.MODEL_HASH_BYTES  # header: magic 2, version, model hash, mode, steps


@pytest.mark.parametrize("h, w", [(1, 1), (17, 31), (3, 100), (40, 70), (64, 64)])
@pytest.mark.parametrize("quality", [1, 2])
def test_tokens_round_trip(tiny_codec, h, w, quality):
    rgb = random_image(h, w, seed=h * w)
    data = tiny_codec.encode(rgb, quality, steps=5)
    header, tokens = tiny_codec.decode_tokens(data)
    assert np.array_equal(tokens, tiny_codec.image_to_tokens(rgb, quality))
    assert (header.height, header.width, header.active) == (h, w, quality)
    assert tiny_codec.decode(data).size == (w, h)


@pytest.mark.parametrize("steps", [1, 2, 16])
def test_any_step_count(tiny_codec, steps):
    rgb = random_image(20, 36, seed=steps)
    data = tiny_codec.encode(rgb, 2, steps=steps)
    assert np.array_equal(tiny_codec.decode_tokens(data)[1], tiny_codec.image_to_tokens(rgb, 2))


def test_same_bytes_twice(tiny_codec):
    rgb = random_image(33, 47)
    assert tiny_codec.encode(rgb, 2) == tiny_codec.encode(rgb, 2)


def test_rate_tracks_prior_estimate(tiny_codec):
    rgb = random_image(64, 96, seed=5)
    data, stats = tiny_codec.encode_with_stats(rgb, 2)
    payload_bits = 8 * (stats.file_bytes - stats.header_bytes)
    assert stats.bits_model <= payload_bits <= stats.bits_model * 1.01 + 64


_THREADED = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
from pqcodec.zoo import load_custom_codec
from conftest import random_image
codec = load_custom_codec(sys.argv[2])
mode = sys.argv[3]
if mode == "encode":
    sys.stdout.buffer.write(codec.encode(random_image(45, 77, seed=9), 2))
else:
    import numpy as np
    img = codec.decode(sys.stdin.buffer.read())
    sys.stdout.buffer.write(np.asarray(img).tobytes())
"""


def _run(threads, weights, mode, stdin=None):
    from pathlib import Path
    r = subprocess.run([sys.executable, "-c", _THREADED, str(threads), str(weights), mode], input=stdin,
                       capture_output=True, cwd=Path(__file__).parent, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_thread_count_does_not_change_bytes_or_image(tiny_weights):
    enc1, enc2 = _run(1, tiny_weights, "encode"), _run(2, tiny_weights, "encode")
    assert enc1 == enc2
    assert _run(2, tiny_weights, "decode", enc1) == _run(1, tiny_weights, "decode", enc1)


@pytest.mark.parametrize("chunk", [1, 4, 5])
def test_window_chunking_round_trips(tiny_codec, monkeypatch, chunk):
    """Windows are coded in chunks of WINDOW_CHUNK (the last one partial), with a check after each
    but the last; the chunk size is part of the format, and every chunk layout codes exactly."""
    import pqcodec.coding.token_coder as token_coder
    monkeypatch.setattr(token_coder, "WINDOW_CHUNK", chunk)
    rgb = random_image(40, 72, seed=2)  # 2 x 3 windows of 4 x 4 tokens
    data = tiny_codec.encode(rgb, 2)
    assert np.array_equal(tiny_codec.decode_tokens(data)[1], tiny_codec.image_to_tokens(rgb, 2))


def test_damage_is_detected(tiny_codec):
    rgb = random_image(40, 64, seed=4)
    data = tiny_codec.encode(rgb, 2)
    header_len = len(data) - len(bitstream.unpack(data)[1])
    rng = np.random.default_rng(0)
    for i in range(60):
        bad = bytearray(data)
        pos = int(rng.integers(header_len - 4, len(bad)))  # the checksum and the payload
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(CorruptFileError):
            tiny_codec.decode(bytes(bad))
    for cut in (1, 4, len(data) - header_len - 4):
        with pytest.raises(PQCodecError):
            tiny_codec.decode(data[:-cut])


def test_overlong_payload_is_refused_before_decoding(tiny_codec):
    data = tiny_codec.encode(random_image(8, 8), 1)  # one index: a payload of at most 3 + 16 bytes
    with pytest.raises(CorruptFileError, match="longer than"):
        tiny_codec.decode(data + bytes(4 * 8))


def test_bad_parameters_are_clean_errors(tiny_codec):
    rgb = random_image(8, 8)
    with pytest.raises(PQCodecError, match="quality"):
        tiny_codec.encode(rgb, 3)
    with pytest.raises(PQCodecError, match="steps"):
        tiny_codec.encode(rgb, 1, steps=17)  # windows of 4 x 4 positions: at most 16 steps
    data = patched(tiny_codec.encode(rgb, 1, steps=4), MODE_AT + 1, 200)  # the steps byte
    with pytest.raises(CorruptFileError, match="steps"):
        tiny_codec.decode(data)


def test_levels_map_quality_to_sub_quantizers(tiny_weights, tmp_path):
    """A model whose levels skip counts: quality q codes levels[q-1] sub-quantizers, the header
    records that count, and a file claiming a count that is no level is refused."""
    from pqcodec.codec import Codec
    from pqcodec.bitstream import unpack
    model = calibrated(PQCodecModel.load(tiny_weights).grown(4, (1, 2, 4)))
    codec = Codec(model, b"test")
    assert codec.num_levels() == 3 and codec.default_level == 2
    rgb = random_image(24, 20)
    sizes = []
    for q, active in ((1, 1), (2, 2), (3, 4)):
        data, stats = codec.encode_with_stats(rgb, q)
        assert unpack(data)[0].active == active and stats.tokens.shape[0] == active
        assert np.array_equal(codec.decode_tokens(data)[1], stats.tokens)
        sizes.append(len(data))
    assert sizes == sorted(sizes)
    data = codec.encode(rgb, 3)
    data = patched(data, MODE_AT, (data[MODE_AT] & 0xF0) | 3)  # 3 sub-quantizers in use: not a level
    with pytest.raises(CorruptFileError, match="levels"):
        codec.decode(data)


def test_tiles_meet_without_seams(tiny_codec, monkeypatch):
    """Tiled transforms give the whole-image tokens and pixels (the halo covers the receptive fields)."""
    import pqcodec.codec as codec_module
    rgb = random_image(150, 230, seed=5)
    assert len(list(tiny_codec._tiles(19, 29))) == 1  # within WHOLE: one piece
    whole = tiny_codec.image_to_tokens(rgb, 2)
    whole_img = tiny_codec.tokens_to_image(whole, 150, 230)
    monkeypatch.setattr(codec_module, "WHOLE", 0)
    monkeypatch.setattr(codec_module, "TILE", 5)  # 40 px tiles: many, with partial ones at the edges
    assert len(list(tiny_codec._tiles(19, 29))) == 4 * 6
    assert np.array_equal(tiny_codec.image_to_tokens(rgb, 2), whole)
    assert np.array_equal(tiny_codec.tokens_to_image(whole, 150, 230), whole_img)


def test_a_codec_loads_only_what_codes(tiny_weights, tiny_codec, tmp_path):
    """The Codec's model is coding-only: no float prior or head (they train and calibrate), the same
    files as the whole model writes, and it refuses to be saved as weights."""
    import torch
    from pqcodec.bitstream import model_hash_of
    from pqcodec.codec import Codec
    from pqcodec.train.quantize import prior_bits
    whole = PQCodecModel.load(tiny_weights)
    lean = tiny_codec.model
    assert lean.coding_only and lean.prior is None and whole.prior is not None
    assert sum(p.numel() for p in lean.parameters()) < sum(p.numel() for p in whole.parameters())
    rgb = random_image(70, 90, seed=3)
    assert Codec(whole, model_hash_of("0" * 64)).encode(rgb, 2) == Codec(lean, model_hash_of("0" * 64)).encode(rgb, 2)
    with pytest.raises(ValueError, match="coding-only"):
        lean.save(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="coding-only"):
        prior_bits(lean, torch.zeros(1, 16, lean.config.num_subvectors, dtype=torch.long), 1, torch.zeros(16, dtype=torch.long))
