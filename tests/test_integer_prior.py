"""The integer-exact prior: its one-pass frequencies are the step-by-step ones the coder uses, for
any batch split, its tables are valid for the range coder, its float32 sums stay in
the exact range for any operands, and it costs little rate against the float prior it was made from."""

import math

import numpy as np
import pytest
import torch

from pqcodec.coding.layout import PROB_BITS, to_windows
from pqcodec.coding.schedule import Schedule
from pqcodec.model import PQCodecModel
from pqcodec.coding import integer_prior, kernels
from pqcodec.coding.integer_prior import ACC_LIMIT, IntLinear


def _staged(prior, tokens, active, schedule, valid, fused=False):
    """Step by step with the cache; frequencies (B, N, active, K). fused: the coder's way, each
    step's content revealed in one pass with the next step's queries (`reveal_and_predict`)."""
    B, N, M = tokens.shape
    out = torch.zeros(B, N, active, prior.K, dtype=torch.float64)
    cache = prior.start_cache(B)
    f = None
    for t in range(schedule.steps):
        pos = torch.from_numpy(schedule.positions(t))
        if f is None:
            out[:, pos] = prior.predict(cache, active, pos).to(torch.float64)
        else:
            out[:, pos] = prior.to_frequencies(prior.logits(f, slice(0, active))).to(torch.float64)
        if fused and t + 1 < schedule.steps:
            nxt = torch.from_numpy(schedule.positions(t + 1))
            f = prior.reveal_and_predict(cache, tokens[:, pos], pos, valid[:, pos], active, nxt)
        else:
            prior.reveal(cache, tokens[:, pos], pos, valid[:, pos])
    return out


@pytest.fixture(scope="module")
def two_layer_prior():
    """A tiny model with two prior layers: the cached content stream's update between layers runs."""
    import dataclasses
    from conftest import TINY, calibrated
    torch.manual_seed(1)
    return calibrated(PQCodecModel(dataclasses.replace(TINY, prior_layers=2))).int_prior


@pytest.mark.parametrize("active", [1, 2])
def test_one_pass_equals_step_by_step_for_any_batch(two_layer_prior, active):
    prior = two_layer_prior
    g = torch.Generator().manual_seed(active)
    B, N, M = 11, prior.window ** 2, prior.M  # more than one batch of the one pass (BATCH)
    tokens = torch.randint(0, prior.K, (B, N, M), generator=g)
    tokens[..., active:] = prior.ABSENT
    valid = torch.rand(B, N, generator=g) < 0.8  # partial windows: some positions outside the image
    schedule = Schedule(prior.window, 5, 3)
    with torch.inference_mode():
        one_pass = prior.frequencies(tokens, active, torch.from_numpy(schedule.step_of()), valid)
        staged = _staged(prior, tokens, active, schedule, valid)
        fused = _staged(prior, tokens, active, schedule, valid, fused=True)
        singles = torch.cat([prior.frequencies(tokens[b:b + 1], active, torch.from_numpy(schedule.step_of()), valid[b:b + 1])
                             for b in range(B)])
    keep = valid[..., None, None].expand_as(one_pass)
    assert torch.equal(one_pass.double()[keep], staged[keep])
    assert torch.equal(fused, staged)
    assert torch.equal(one_pass, singles)


def test_tables_suit_the_range_coder(tiny_codec):
    prior = tiny_codec.model.int_prior
    tokens = torch.randint(0, prior.K, (3, prior.window ** 2, prior.M))
    with torch.inference_mode():
        c = prior.frequencies(tokens, prior.M, torch.from_numpy(Schedule(prior.window, 4, 0).step_of()),
                              torch.ones(3, prior.window ** 2, dtype=torch.bool)).double()
    assert (c >= 0).all() and torch.equal(c, c.floor())
    assert (c.sum(-1) == (1 << PROB_BITS) - prior.K).all()


def _linears(prior):
    return [m for m in prior.modules() if isinstance(m, IntLinear)]


def test_float32_sums_are_exact_for_any_operands(tiny_codec):
    """Every partial sum of |operand| <= act times the weights stays below 2^24; and the operands
    are bf16-exact (what a caller's matmul precision may round them to)."""
    act = int(tiny_codec.model.int_prior.operand_max)
    assert act == integer_prior.ACT and torch.tensor(float(act), dtype=torch.bfloat16).item() == act
    for lin in _linears(tiny_codec.model.int_prior):
        assert float(lin.weight.abs().double().sum(1).max()) * act < ACC_LIMIT
        assert int(lin.weight.abs().max()) <= integer_prior.WEIGHT_MAX
    # and the bound is what makes a worst case exact: operands at +-act with the largest row
    lin = _linears(tiny_codec.model.int_prior)[0]
    x = torch.full((1, lin.weight.shape[1]), float(act)) * lin.weight[:1].float().sign()
    exact = lin.weight[0].abs().double().sum() * act + lin.bias[0].double()
    assert float(lin.accumulate(x)[0, 0]) == float(exact)


def _frequencies_of(prior, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, prior.K, (5, prior.window ** 2, prior.M), generator=g)
    with torch.inference_mode():
        return prior.frequencies(tokens, prior.M, torch.from_numpy(Schedule(prior.window, 4, 0).step_of()),
                                 torch.rand(5, prior.window ** 2, generator=g) < 0.9)


def _set_int8(monkeypatch, prior, on: bool):
    monkeypatch.setenv("PQCODEC_INT8", "1" if on else "0")
    kernels.int8_products.cache_clear()
    prior.forget_derived()


@pytest.mark.parametrize("kernel", kernels.INT8_KERNELS)
def test_int8_and_float32_products_are_the_same_integers(two_layer_prior, monkeypatch, kernel):
    """Each int8 kernel that passes its exactness check here is taken (also where it is slow: the
    speed probe is bypassed) and gives the float32 products' integers, with operands made as int8;
    PQCODEC_INT8=0 turns the int8 products off."""
    prior = two_layer_prior
    monkeypatch.setattr(kernels, "_int8_is_faster", lambda *args: 1.0)
    monkeypatch.setattr(kernels, "INT8_KERNELS", (kernel,))
    try:
        _set_int8(monkeypatch, prior, True)
        with_int8 = _frequencies_of(prior)
        p = prior.head._rows(slice(None))["int8"]
        used = p is not None
        assert used == (kernels.int8_products() == kernel) and (not used or p["kernel"] == kernel)
        assert prior.ln_f.operand_dtype == (torch.int8 if used else torch.float32)
        _set_int8(monkeypatch, prior, False)
        assert prior.head._rows(slice(None))["int8"] is None and prior.ln_f.operand_dtype == torch.float32
        assert torch.equal(_frequencies_of(prior), with_int8)
    finally:
        monkeypatch.undo()
        kernels.int8_products.cache_clear()
        prior.forget_derived()
    if not used:
        pytest.skip(f"no exact {kernel} int8 products on this machine: only the float32 path was checked")


@pytest.mark.parametrize("flaw", ["bf16 output", "accumulator saturating at 2^20"])
def test_int8_check_refuses_an_inexact_kernel(monkeypatch, flaw):
    """The check before int8 products are taken fails for a kernel whose sums are not exact, so
    such a kernel never codes."""
    def inexact(x, pack, bias, dtype=torch.float32):
        y = x.double() @ pack["w"].double().t()
        y = y.float().bfloat16().float() if flaw == "bf16 output" else y.clamp(-2 ** 20, 2 ** 20).float()
        return (y if bias is None else y + bias).to(dtype)
    monkeypatch.setattr(kernels, "int8_pack", lambda w, kernel: {"w": w})
    monkeypatch.setattr(kernels, "_int8_is_faster", lambda *args: 1.0)  # exactness alone decides
    kernels.int8_products.cache_clear()
    try:
        monkeypatch.setattr(kernels, "int8_linear", _exact_kernel)
        assert kernels.int8_products()  # the check passes an exact kernel...
        kernels.int8_products.cache_clear()
        monkeypatch.setattr(kernels, "int8_linear", inexact)
        assert not kernels.int8_products()  # ...and refuses this one
    finally:
        kernels.int8_products.cache_clear()


def _exact_kernel(x, pack, bias, dtype=torch.float32):
    y = (x.double() @ pack["w"].double().t()).float()
    return (y if bias is None else y + bias).to(dtype)


def test_int8_products_are_not_taken_where_they_are_slower(monkeypatch):
    """An exact int8 kernel that is slower than float32 is not taken: on an AMD EPYC oneDNN's int8
    linear ran 700 times slower than float32 (a reference path)."""
    import time

    def slow(x, pack, bias, dtype=torch.float32):
        time.sleep(0.002)
        return _exact_kernel(x, pack, bias, dtype)
    monkeypatch.setattr(kernels, "int8_pack", lambda w, kernel: {"w": w})
    monkeypatch.setattr(kernels, "int8_linear", slow)
    monkeypatch.setenv("PQCODEC_INT8", "1")
    kernels.int8_products.cache_clear()
    try:
        assert not kernels.int8_products()
        monkeypatch.setattr(kernels, "_int8_is_faster", lambda *args: 1.0)
        kernels.int8_products.cache_clear()
        assert kernels.int8_products()  # the same kernel, were it fast: exact, so taken
    finally:
        kernels.int8_products.cache_clear()


def test_priors_of_pqcodec_0_4_load_with_their_ranges_and_code(tmp_path):
    """0.4.0's integer prior had operands up to 255 and 8-bit weights, and its files do not store
    the operand range: such a file loads with 255 and codes (with float32 products), exactly."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from conftest import TINY, random_image
    from pqcodec.codec import Codec
    from pqcodec.train.calibrate import calibrate
    from pqcodec.train.quantize import calibration_windows
    torch.manual_seed(0)
    model = PQCodecModel(TINY)
    g = torch.Generator().manual_seed(0)
    grids = [torch.randint(0, TINY.codebook_size, (TINY.num_subvectors, 8, 8), generator=g) for _ in range(4)]
    tokens, active, step_of = calibration_windows(grids, model, 64)
    legacy = calibrate(model.prior, tokens, active, step_of, operand_max=255, weight_max=127)
    assert int(max(lin.weight.abs().max() for lin in _linears(legacy))) > integer_prior.WEIGHT_MAX
    model.int_prior.load_state_dict(legacy.state_dict())
    model.save(tmp_path / "full.safetensors")
    with safe_open(str(tmp_path / "full.safetensors"), "pt") as f:
        meta = f.metadata()
    state = load_file(str(tmp_path / "full.safetensors"))
    del state["int_prior.operand_max"]
    save_file(state, str(tmp_path / "v040.safetensors"), metadata=meta)
    old = PQCodecModel.load(tmp_path / "v040.safetensors")
    assert int(old.int_prior.operand_max) == 255 and old.int_prior.blocks[0].ln1.act == 255
    assert old.int_prior.head._rows(slice(None))["int8"] is None
    codec = Codec(old, b"v040")
    rgb = random_image(24, 40)
    data = codec.encode(rgb, 2)
    header, decoded = codec.decode_tokens(data)
    assert np.array_equal(decoded, codec.image_to_tokens(rgb, codec.active_at(2)))


@pytest.fixture(scope="module")
def shipped():
    from pqcodec.zoo import load_codec
    return load_codec()


def test_shipped_prior_is_exact_by_construction(shipped):
    act = int(shipped.model.int_prior.operand_max)
    for lin in _linears(shipped.model.int_prior):
        assert float(lin.weight.abs().double().sum(1).max()) * act < ACC_LIMIT


def test_shipped_integer_prior_costs_under_one_percent(shipped):
    """Bits per index of the integer prior against the float prior it was calibrated from, on two
    Kodak windows at levels 1 and 5 (eval/prior_gain.py measures all of Kodak)."""
    from PIL import Image
    from pathlib import Path
    from pqcodec.train.quantize import prior_bits
    rgb = np.asarray(Image.open(Path(__file__).parent / "data" / "kodim23.png").convert("RGB"))[:128, :256]
    cfg = shipped.config
    windows = to_windows(torch.from_numpy(shipped.image_to_tokens(rgb, cfg.num_subvectors)), cfg.window)
    step_of = torch.from_numpy(Schedule(cfg.window, 12, cfg.schedule_seed).step_of())
    from pqcodec.zoo import load_model
    whole = load_model()  # with the float prior (the codec's model is coding-only)
    for active in (1, cfg.num_subvectors):
        with torch.inference_mode():
            float_bits, _ = prior_bits(whole, windows, active, step_of)
            int_bits, _ = prior_bits(whole, windows, active, step_of, integer=True)
        assert int_bits <= float_bits * 1.01, (active, int_bits, float_bits)


def test_uncalibrated_weights_are_refused_with_a_clear_error(tmp_path, tiny_weights):
    from pqcodec.errors import UnsupportedFileError
    from pqcodec.codec import Codec
    with pytest.raises(UnsupportedFileError, match="integer prior"):
        Codec(PQCodecModel.load(tiny_weights, without_prior=True), b"test")


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("dim", [256, 150])
def test_layer_norm_is_the_integer_formula(dim, reciprocal, monkeypatch):
    """IntLayerNorm against its formula in Python integers (floor divisions, an integer square root),
    for a power-of-two width and another, on rows of residuals up to the clamp, negative totals and
    constant rows (std 0) included; also where a division by a number multiplies by its rounded
    reciprocal, as CUDA's does: -7 x 150 times the nearest double to 1/150 floors to -8, so at width
    150 the mean needs its corrections (a power of two's reciprocal is exact)."""
    g = torch.Generator().manual_seed(dim)
    ln = integer_prior.IntLayerNorm(dim)
    ln.gain.copy_(torch.randint(-(1 << 29), 1 << 29, (dim,), generator=g))
    ln.offset.copy_(torch.randint(-(1 << 22), 1 << 22, (dim,), generator=g))
    h = torch.randint(-integer_prior.RESID_LIMIT, integer_prior.RESID_LIMIT + 1, (40, dim), generator=g)
    h[1] = torch.randint(-3, 2, (dim,), generator=g)           # small, a total that is no multiple of dim
    h[2] = -integer_prior.RESID_LIMIT
    h[3] = 7
    h[4] = -7                                                   # a mean that -7 x 150 x (1/150) floors to -8
    assert (math.floor(-7 * dim * (1.0 / dim)) != -7) == (dim == 150)
    if reciprocal:
        div = torch.div
        monkeypatch.setattr(torch, "div", lambda a, b, **k: a * (1.0 / b) if isinstance(b, (int, float)) else div(a, b, **k))
    got = ln(h.to(torch.float64)).to(torch.int64)
    monkeypatch.undo()
    act, frac = ln.act, integer_prior.LN_FRAC
    for row, out in zip(h.tolist(), got.tolist()):
        mean = sum(row) // dim
        d = [x - mean for x in row]
        r = max(1, math.isqrt(sum(x * x for x in d)))
        want = [(x * gm // r + off + (1 << (frac - 1))) >> frac for x, gm, off in zip(d, ln.gain.tolist(), ln.offset.tolist())]
        assert out == [min(act, max(-act, v)) for v in want]


def test_the_cache_reads_only_what_was_written(tiny_codec, monkeypatch):
    """The key/value cache is allocated, not zeroed: filled with NaN instead, the files (windows cut
    off at two edges, positions outside the image included) and their decodes are the same."""
    from conftest import random_image
    img = random_image(90, 75, seed=4)
    data = tiny_codec.encode(img, 2)
    tokens = tiny_codec.decode_tokens(data)[1]
    init = integer_prior.IntCache.__init__

    def nan_filled(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for t in self.keys + self.values:
            t.fill_(float("nan"))
    monkeypatch.setattr(integer_prior.IntCache, "__init__", nan_filled)
    assert tiny_codec.encode(img, 2) == data
    assert np.array_equal(tiny_codec.decode_tokens(data)[1], tokens)
