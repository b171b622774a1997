"""RDOQ (pqcodec/rdoq.py) and rate control (pqcodec/ratecontrol.py, --max-bytes/--bpp): the decoder
and the format do not change, λ = 0 is the plain encoder byte for byte, and a size asked for is
never exceeded."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_image, run_cli
from pqcodec import extreme, levelmap, rdoq
from pqcodec.coding import layout
from pqcodec.cli import main
from pqcodec.errors import PQCodecError
from pqcodec.ratecontrol import RateError, encode_to_size

# 7 x 7 windows of the tiny model's 4 x 4 tokens: more than WINDOW_CHUNK, so the file has a chunk check
BIG = random_image(200, 200, seed=1)


@pytest.fixture(scope="module")
def big(tiny_codec):
    """BIG's analysis at the top level, its plain file at each level, and files at several λ."""
    assert math.ceil(200 / 32) ** 2 > layout.WINDOW_CHUNK
    analysis = tiny_codec.image_to_tokens(BIG, 2, candidates=rdoq.CANDIDATES)
    plain = {q: tiny_codec.encode(BIG, q) for q in (1, 2)}
    coded = {lam: tiny_codec.encode_with_stats(BIG, 2, rd_lambda=lam) for lam in (0.5, 2.0, 8.0)}
    return analysis, plain, coded


def test_lambda_zero_is_the_plain_encoder(tiny_codec, big):
    analysis, plain, _ = big
    assert np.array_equal(analysis.tokens, tiny_codec.image_to_tokens(BIG, 2))
    assert tiny_codec.encode(BIG, 2, rd_lambda=0) == plain[2]
    # through the hook too: choosing with λ = 0 picks the nearest codeword, the plain file
    data, stats = tiny_codec.encode_analysed(analysis.tokens, BIG.shape[:2], False, 12,
                                             rdoq.Chooser(analysis, 0.0))
    assert data == plain[2] and np.array_equal(stats.tokens, analysis.tokens)


def test_rdoq_files_are_no_larger_and_decode_unchanged(tiny_codec, big):
    analysis, plain, coded = big
    sizes = [len(plain[2])] + [len(coded[lam][0]) for lam in sorted(coded)]
    assert sizes == sorted(sizes, reverse=True), sizes
    assert sizes[-1] < sizes[0]
    for lam, (data, stats) in coded.items():
        # the decoder reads the tokens chosen (its chunk check and checksum are over them)
        header, tokens = tiny_codec.decode_tokens(data)
        assert np.array_equal(tokens, stats.tokens)
        assert not np.array_equal(tokens, analysis.tokens), f"λ {lam} changed nothing"
        assert tiny_codec.decode(data).size == (200, 200)
        # the file is the plain encoding of the tokens it holds: nothing of RDOQ is in the format
        assert tiny_codec.encode_tokens(tokens, 200, 200) == data


def test_distances_are_held_as_bfloat16(big):
    """The analysis holds each distance's bfloat16 (half of float32's memory): what torch rounds it
    to, within 2^-8 of it (eight significant bits), read back exactly."""
    analysis = big[0]
    assert analysis.dist.dtype == np.uint16
    d = (10 ** (torch.rand(1000, dtype=torch.float64) * 13 - 12)).float()  # 1e-12 .. 20, as latents give
    held = rdoq.from_bfloat16(rdoq.to_bfloat16(d))
    assert held.dtype == np.float32 and np.array_equal(held, d.to(torch.bfloat16).float().numpy())
    assert np.all(np.abs(held - d.numpy()) <= d.numpy() * 2.0 ** -8)
    dist = rdoq.from_bfloat16(analysis.dist)
    assert (dist >= 0).all() and (np.diff(dist, axis=-1) >= 0).all()      # nearest first, still in order


def test_chosen_codewords_are_among_the_nearest(tiny_codec, big):
    analysis, _, coded = big
    tokens = coded[8.0][1].tokens
    assert (analysis.cand == tokens[..., None]).any(-1).all()


def test_pixel_distortion(tiny_codec, big):
    _, plain, _ = big
    data, stats = tiny_codec.encode_with_stats(BIG, 2, rd_lambda=8.0, distortion="pixel")
    assert len(data) < len(plain[2])
    assert np.array_equal(tiny_codec.decode_tokens(data)[1], stats.tokens)
    with pytest.raises(PQCodecError, match="distortion"):
        tiny_codec.encode_with_stats(BIG, 2, rd_lambda=1.0, distortion="ssim")


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "1", True])
def test_bad_lambda(tiny_codec, bad):
    with pytest.raises(PQCodecError, match="rd_lambda"):
        tiny_codec.encode(BIG[:8, :8], 2, rd_lambda=bad)


@pytest.mark.parametrize("shape", [(1, 1), (33, 200), (47, 9)])
def test_max_bytes_is_never_exceeded(tiny_codec, shape):
    rgb = random_image(*shape, seed=2)
    lowest, top = (len(tiny_codec.encode(rgb, q)) for q in (1, 2))
    for N in sorted({lowest - 3, lowest, (lowest + top) // 2, top - 1, top, top + 50}):
        try:
            r = encode_to_size(tiny_codec, rgb, max_bytes=N)
        except RateError as e:  # only below what a generated file of one token takes
            assert N < 30 and f"{N} bytes" in str(e)
            continue
        assert len(r.data) <= N
        assert tiny_codec.decode(r.data).size == (shape[1], shape[0])
        if N >= top:  # the top level fits: it is the answer, plain
            assert r.data == tiny_codec.encode(rgb, 2) and r.rd_lambda == 0
        # two levels, λ's bounded search, the level map's files, and below level 1 the extreme mode's
        # per level tried
        full = max(tiny_codec.grid_size(*shape))
        assert r.encodes <= 2 + 1 + 6 + levelmap.ATTEMPTS + 2 * (extreme.PREDICTED + math.ceil(math.log2(full + 1)) + 1)


def test_max_bytes_between_levels_uses_rdoq_or_a_level_map(tiny_codec, big):
    _, plain, coded = big
    N = len(coded[8.0][0]) + 10
    assert len(plain[1]) < N < len(plain[2])
    r = encode_to_size(tiny_codec, BIG, max_bytes=N)
    assert len(r.data) <= N and r.encodes <= 9 + levelmap.ATTEMPTS
    assert len(r.data) > len(plain[1]) or r.level == 1


def test_too_small_is_a_clear_error(tiny_codec):
    with pytest.raises(RateError, match=r"^<array>: cannot fit in 10 bytes: the smallest file this model reaches is \d+ bytes"):
        encode_to_size(tiny_codec, random_image(20, 20), max_bytes=10)


def test_bpp_is_bytes_of_the_pixel_count(tiny_codec):
    rgb = random_image(33, 200, seed=3)
    r = encode_to_size(tiny_codec, rgb, bpp=0.5)
    assert r.max_bytes == math.floor(0.5 * 33 * 200 / 8) and len(r.data) <= r.max_bytes


def test_api_refuses_a_size_with_a_quality(tiny_weights):
    import pqcodec
    model = str(tiny_weights)
    with pytest.raises(PQCodecError, match="not both"):
        pqcodec.encode(BIG[:8, :8], 2, model=model, max_bytes=100)
    with pytest.raises(PQCodecError, match="one size"):
        pqcodec.encode(BIG[:8, :8], model=model, max_bytes=100, bpp=1.0)
    with pytest.raises(PQCodecError, match="max_bytes must be at least 1"):
        pqcodec.encode(BIG[:8, :8], model=model, max_bytes=0)
    assert len(pqcodec.encode(BIG, model=model, max_bytes=60)) <= 60


def test_cli_max_bytes_and_bpp(tiny_weights, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(random_image(33, 200, seed=4)).save(src)
    assert main(["encode", str(src), "-o", str(tmp_path / "a.bin"), "--model", str(tiny_weights), "--max-bytes", "150"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "a.bin").stat().st_size <= 150
    assert err.startswith(f"pqcodec: note: {src}: ") and "encodes in" in err and err.count("\n") == 1
    assert main(["encode", str(src), "-o", str(tmp_path / "b.bin"), "--model", str(tiny_weights), "--bpp", "0.1"]) == 0
    assert (tmp_path / "b.bin").stat().st_size <= math.floor(0.1 * 33 * 200 / 8)
    capsys.readouterr()
    assert main(["encode", str(src), "-o", str(tmp_path / "c.bin"), "--model", str(tiny_weights), "--max-bytes", "12"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pqcodec: error: {src}: cannot fit in 12 bytes: the smallest file") and err.count("\n") == 1
    assert not (tmp_path / "c.bin").exists()


@pytest.mark.parametrize("flags", [["-q", "1", "--max-bytes", "100"], ["--bpp", "1", "--max-bytes", "100"],
                                   ["--quality", "2", "--bpp", "0.5"]])
def test_cli_size_flags_conflict(tiny_weights, tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as e:
        main(["encode", "x.png", "-o", str(tmp_path / "a.bin"), "--model", str(tiny_weights), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not allowed with argument" in err and err.count("\n") == 1


@pytest.mark.parametrize("flags", [["--bpp", "0"], ["--bpp", "nan"], ["--max-bytes", "0"]])
def test_cli_bad_sizes(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as e:
        main(["encode", "x.png", "-o", str(tmp_path / "a.bin"), *flags])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_cli_folder_run_with_max_bytes(tiny_codec, tiny_weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    images = [random_image(1, 1, seed=0), random_image(33, 200, seed=1)]
    for i, rgb in enumerate(images):
        Image.fromarray(rgb).save(src / f"{i}.png")
    N = len(tiny_codec.encode(images[0], 2, flat=False))  # the 1x1 image fits (without its one flat block,
    # which rate control leaves out where it does not fit), the other cannot: even a generated
    assert N < len(encode_to_size(tiny_codec, images[1], max_bytes=40).data) and N < 25  # file takes 25 bytes
    r = run_cli("encode", src, "-o", tmp_path / "out", "--model", tiny_weights, "--max-bytes", N, "-j", "1", "--quiet")
    assert r.returncode == 1, r.stderr.decode()
    err = r.stderr.decode()
    assert f"1.png: cannot fit in {N} bytes" in err and "1 written" in err and "1 failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.bin"]
    assert (tmp_path / "out" / "0.bin").stat().st_size <= N


def test_candidates_only_for_the_level_the_lambda_search_codes(tiny_codec, big, monkeypatch):
    """RDOQ's nearest codewords, the search's largest arrays, are analysed once the bisection is
    done, for the sub-quantizers of the level the λ search codes only (here level 1's one of two):
    each of its files is the one a full analysis's Chooser makes at the same λ."""
    full, plain, _ = big
    Codec = type(tiny_codec)
    calls, passes, analyse, code = [], [], Codec.image_to_tokens, Codec.encode_analysed

    def recording_analysis(self, rgb, active, candidates=0, effort=0):
        calls.append((active, candidates))
        return analyse(self, rgb, active, candidates, effort)

    def recording_pass(self, tokens, size, greyscale, steps, choose=None, flat=None):
        data, stats = code(self, tokens, size, greyscale, steps, choose, flat)
        if choose is not None:
            passes.append((len(tokens), choose.rd_lambda, steps, data))
        return data, stats

    monkeypatch.setattr(Codec, "image_to_tokens", recording_analysis)
    monkeypatch.setattr(Codec, "encode_analysed", recording_pass)
    encode_to_size(tiny_codec, BIG, max_bytes=int(0.9 * len(plain[1])))
    # the indices, then level 1's candidates (then the extreme mode's shrunk grids: no candidates)
    assert calls[:2] == [(2, 0), (1, rdoq.CANDIDATES)] and all(c == 0 for _, c in calls[2:])
    assert len(passes) >= 2 and {active for active, *_ in passes} == {1}
    monkeypatch.undo()
    for active, lam, steps, data in passes:
        choose = rdoq.chooser(tiny_codec, full, active, lam, "pixel")
        assert tiny_codec.encode_analysed(full.tokens[:active], BIG.shape[:2], False, steps, choose)[0] == data
