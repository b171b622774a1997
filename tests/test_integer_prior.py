"""The integer-exact prior: its one-pass frequencies are the step-by-step ones the coder uses, for
any batch split, its tables are valid for the range coder, its float32 sums stay in
the exact range for any operands, and it costs little rate against the float prior it was made from."""

import numpy as np
import pytest
import torch

from pqcodec.bitstream import PROB_BITS, Schedule
from pqcodec.latent import to_windows
from pqcodec.model import PQCodecModel
from pqcodec.nets.integer_prior import ACC_LIMIT, ACT, IntLinear


def _staged(prior, tokens, active, schedule, valid):
    """The decoder's way: step by step with the cache; frequencies (B, N, active, K)."""
    B, N, M = tokens.shape
    out = torch.zeros(B, N, active, prior.K, dtype=torch.float64)
    cache = prior.start_cache(B)
    for t in range(schedule.steps):
        pos = torch.from_numpy(schedule.positions(t))
        out[:, pos] = prior.predict(cache, active, pos).to(torch.float64)
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
        singles = torch.cat([prior.frequencies(tokens[b:b + 1], active, torch.from_numpy(schedule.step_of()), valid[b:b + 1])
                             for b in range(B)])
    keep = valid[..., None, None].expand_as(one_pass)
    assert torch.equal(one_pass.double()[keep], staged[keep])
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
    """Every partial sum of |operand| <= ACT times the int8 weights stays below 2^24; and the
    operands are bf16-exact (what a caller's matmul precision may round them to)."""
    assert torch.tensor(float(ACT), dtype=torch.bfloat16).item() == ACT
    for lin in _linears(tiny_codec.model.int_prior):
        assert float(lin.weight.abs().double().sum(1).max()) * ACT < ACC_LIMIT
    # and the bound is what makes a worst case exact: operands at +-ACT with the largest row
    lin = _linears(tiny_codec.model.int_prior)[0]
    x = torch.full((1, lin.weight.shape[1]), float(ACT)) * lin.weight[:1].float().sign()
    exact = lin.weight[0].abs().double().sum() * ACT + lin.bias[0].double()
    assert float(lin.accumulate(x)[0, 0]) == float(exact)


@pytest.fixture(scope="module")
def shipped():
    from pqcodec.zoo import load_codec
    return load_codec()


def test_shipped_prior_is_exact_by_construction(shipped):
    for lin in _linears(shipped.model.int_prior):
        assert float(lin.weight.abs().double().sum(1).max()) * ACT < ACC_LIMIT


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
    for active in (1, cfg.num_subvectors):
        with torch.inference_mode():
            float_bits, _ = prior_bits(shipped.model, windows, active, step_of)
            int_bits, _ = prior_bits(shipped.model, windows, active, step_of, integer=True)
        assert int_bits <= float_bits * 1.01, (active, int_bits, float_bits)


def test_uncalibrated_weights_are_refused_with_a_clear_error(tmp_path, tiny_weights):
    from pqcodec.errors import UnsupportedFileError
    from pqcodec.codec import Codec
    with pytest.raises(UnsupportedFileError, match="integer prior"):
        Codec(PQCodecModel.load(tiny_weights, without_prior=True), b"test")
