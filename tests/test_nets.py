"""The networks' contracts: the prior sees only earlier steps; the quantizer's codebooks stay in use;
the schedule is fixed. (The integer prior's cached path against its one pass: test_integer_prior.py.)"""
import numpy as np
import pytest
import torch

from pqcodec.nets import MIMPrior, ProductQuantizer
from pqcodec.coding.schedule import Schedule, cosine_boundaries, seeded_permutation


def test_prior_sees_only_earlier_steps():
    torch.manual_seed(0)
    prior = MIMPrior(2, 16, 4, 32, 2, 4).eval()
    tokens = torch.randint(0, 16, (1, 16, 2))
    step_of = torch.arange(16).div(4, rounding_mode="floor")[None]  # 4 steps of 4 positions
    changed = tokens.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 16  # alter the last step's tokens only
    with torch.no_grad():
        a = prior(tokens, torch.tensor([2]), step_of)
        b = prior(changed, torch.tensor([2]), step_of)
    assert torch.equal(a, b)  # no position's prediction may depend on its own or later tokens


def test_schedule_is_fixed_and_complete():
    assert seeded_permutation(8, 0).tolist() == seeded_permutation(8, 0).tolist()
    assert sorted(seeded_permutation(256, 5).tolist()) == list(range(256))
    assert seeded_permutation(256, 5).tolist() != seeded_permutation(256, 6).tolist()
    s = Schedule(16, 12, 0)
    b = s.boundaries
    assert b[0] == 0 and b[-1] == 256 and all(x < y for x, y in zip(b, b[1:]))
    assert b[1] < b[-1] - b[-2]  # cosine: small first steps, large last ones
    assert sorted(np.concatenate([s.positions(t) for t in range(12)]).tolist()) == list(range(256))
    assert cosine_boundaries(4, 4) == [0, 1, 2, 3, 4]


def test_quantizer_uses_its_codebooks_and_restarts_dead_codes():
    torch.manual_seed(0)
    q = ProductQuantizer(num_subvectors=2, codebook_size=32, subvector_dim=4).train()
    z = torch.randn(8, 8, 6, 6)
    zq, idx, commit = q(z)
    assert zq.shape == z.shape and idx.shape == (8, 2, 6, 6) and commit > 0
    # straight-through: values are the codewords, and re-encoding them gives the same indices
    assert torch.equal(q.encode(q.decode(idx)), idx)
    q.ema_count[0, :5] = 0.0  # five dead codes
    assert q.restart_dead_codes(z, threshold=0.01) >= 5
    assert q.usage().min() > 1


def test_nested_dropout_fills_unused_subvectors():
    q = ProductQuantizer(3, 8, 2).eval()
    idx = torch.randint(0, 8, (1, 3, 2, 2))
    full, one = q.decode(idx), q.decode(idx, active=1)
    assert torch.equal(full[:, :2], one[:, :2])
    assert torch.equal(one[0, 2:, 0, 0], q.filler[1:].flatten())


def test_decode_with_a_level_per_sample_is_each_samples_decode():
    """The perceptual fine-tune decodes a batch at mixed levels: the same latent as decoding each
    sample at its own level."""
    q = ProductQuantizer(3, 8, 2)
    q.filler.data.normal_()
    tokens = torch.randint(0, 8, (3, 3, 2, 3))
    active = torch.tensor([1, 3, 2])
    got = q.decode(tokens, active)
    for b in range(3):
        assert torch.equal(got[b], q.decode(tokens[b:b + 1], int(active[b]))[0])


def test_grown_model_codes_the_old_levels_as_before():
    from pqcodec.model import ModelConfig, PQCodecModel
    torch.manual_seed(0)
    small = PQCodecModel(ModelConfig(channels=8, num_subvectors=2, codebook_size=16, subvector_dim=4,
                                     prior_dim=16, prior_layers=1, prior_heads=2, window=4)).eval()
    small.quantizer.codebooks.normal_(0, 0.3)
    big = small.grown(5, (1, 2, 5)).eval()
    assert big.config.num_subvectors == 5 and big.config.active_levels == (1, 2, 5)
    x = torch.rand(1, 3, 32, 32)
    tokens = big.image_to_tokens(x)
    assert torch.equal(tokens[:, :2], small.image_to_tokens(x))
    for active in (1, 2):
        assert torch.allclose(big.tokens_to_image(tokens, active), small.tokens_to_image(tokens[:, :2], active))
        step_of = torch.randint(0, 3, (1, 16))
        flat = tokens.flatten(2).transpose(1, 2)
        act = torch.tensor([active])
        assert torch.allclose(big.prior(flat, act, step_of)[..., :active, :],
                              small.prior(flat[..., :2], act, step_of)[..., :active, :], atol=1e-6)
    # the new codebooks start dead, so the first restart seeds them from encoder outputs
    assert (big.quantizer.ema_count[2:] == 0).all()


def test_levels_must_increase_within_m():
    from pqcodec.model import ModelConfig
    with pytest.raises(ValueError):
        ModelConfig(num_subvectors=4, levels=(1, 3, 2))
    with pytest.raises(ValueError):
        ModelConfig(num_subvectors=4, levels=(1, 5))
    assert ModelConfig(num_subvectors=3).active_levels == (1, 2, 3)


def test_training_search_makes_codings_choices_under_bf16_autocast():
    """Training's codeword search (forward) must pick what coding's float64 `encode` picks, also
    under the bf16 autocast training runs in: a latent with a large common offset is where bf16's
    |x|^2 - 2 x.c + |c|^2 lost the ranking (6.5 % of kodim23's choices differed)."""
    torch.manual_seed(0)
    q = ProductQuantizer(num_subvectors=4, codebook_size=256, subvector_dim=16).eval()
    q.codebooks.normal_(0, 1).add_(3.0)
    z = torch.randn(2, 64, 16, 16) + 3.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, idx, _ = q(z)
    assert torch.equal(idx, q.encode(z))


def test_partial_windows_hide_the_positions_outside_the_image():
    """Training on edge windows (valid): what lies outside never reaches a prediction inside, the loss
    counts inside positions only, and all-inside equals no mask."""
    torch.manual_seed(0)
    prior = MIMPrior(2, 16, 4, 32, 2, 4).eval()
    tokens = torch.randint(0, 16, (3, 16, 2))
    step_of = torch.randint(0, 4, (3, 16))
    active = torch.tensor([1, 2, 2])
    valid = torch.ones(3, 4, 4, dtype=torch.bool)
    valid[0, 2:], valid[1, :, 3:], valid[2, 1:, 1:] = False, False, False  # bottom, right, corner cuts
    valid = valid.flatten(1)
    other = torch.where(valid[..., None], tokens, torch.randint(0, 18, tokens.shape))  # MASK/ABSENT too
    with torch.no_grad():
        a, b = prior(tokens, active, step_of, valid), prior(other, active, step_of, valid)
        assert torch.equal(a[valid], b[valid])
        assert torch.equal(prior.loss(tokens, active, step_of, valid), prior.loss(other.clamp_max(16), active, step_of, valid))
        everywhere = torch.ones_like(valid)
        assert torch.allclose(prior(tokens, active, step_of, everywhere), prior(tokens, active, step_of), atol=1e-6)
        assert not torch.allclose(prior(tokens, active, step_of, valid)[valid], prior(tokens, active, step_of)[valid])


def test_edge_windows_are_cut_like_codings():
    from pqcodec.train.windows import WindowSampler
    g = torch.arange(2 * 20 * 24).view(2, 20, 24).to(torch.int16)  # every position's value unique
    s = WindowSampler([g], 8, seed=0, mask_index=99)
    tokens, valid = s.edge_batch(200, edge_fraction=0.5)
    cut = ~valid.all(1)
    assert 60 < int(cut.sum()) < 140
    for t, v in zip(tokens[cut], valid[cut]):
        v = v.view(8, 8)
        vh, vw = int(v[:, 0].sum()), int(v[0].sum())
        assert v[:vh, :vw].all() and int(v.sum()) == vh * vw and (vh < 8 or vw < 8)  # top-left rectangle
        w = t.view(8, 8, 2)
        assert (w[~v] == 99).all()
        inside = w[:vh, :vw, 0]
        y, x = divmod(int(inside[0, 0]), 24)
        # the last rows / columns of the grid, as an image's bottom or right edge window holds them
        assert (vh == 8 or y + vh == 20) and (vw == 8 or x + vw == 24)
        assert torch.equal(inside, g[0, y:y + vh, x:x + vw].long())


def test_replicate_padding_sees_a_flat_image_as_flat_to_its_borders():
    """docs/quality.md, section 3: zero padding darkens a flat image's edges. With replicate padding
    every layer maps a constant input to an output without a border: the convolutions to a constant,
    the transposed convolution to its interior's 2-pixel pattern, edges included; so a constant
    image encodes to a constant latent, and a constant latent reaches the decoder's first upsampling
    constant. Zero padding fails each. The replicate transposed convolution equals the plain one away
    from the border, with the same weights (they carry over)."""
    from pqcodec.model import ModelConfig, PQCodecModel
    from pqcodec.nets.autoencoder import ReplicateConvTranspose2d
    torch.manual_seed(0)
    plain = torch.nn.ConvTranspose2d(4, 3, 5, stride=2, padding=2, output_padding=1)
    rep = ReplicateConvTranspose2d(4, 3, 5, stride=2, padding=2, output_padding=1)
    rep.load_state_dict(plain.state_dict())
    x = torch.randn(1, 4, 6, 7)
    flat_in = torch.full((1, 4, 6, 7), 0.7)
    with torch.no_grad():
        a, b = plain(x), rep(x)
        assert a.shape == b.shape == (1, 3, 12, 14)
        assert torch.allclose(a[..., 3:-3, 3:-3], b[..., 3:-3, 3:-3], atol=1e-6)
        for layer, flat in ((rep, True), (plain, False)):
            y = layer(flat_in)
            assert torch.allclose(y, y[..., 4:6, 4:6].repeat(1, 1, 6, 7), atol=1e-6) == flat

    config = dict(channels=8, num_subvectors=2, codebook_size=16, subvector_dim=4, prior_dim=16, prior_layers=1,
                  prior_heads=2, window=4)
    zeros = PQCodecModel(ModelConfig(**config)).eval()
    replicate = zeros.with_padding("replicate").eval()
    assert replicate.config.padding == "replicate"
    assert all(torch.equal(p, q) for p, q in zip(zeros.state_dict().values(), replicate.state_dict().values()))
    with torch.no_grad():
        for model, flat in ((replicate, True), (zeros, False)):
            z = model.encoder(torch.full((1, 3, 40, 48), 0.6))
            assert torch.allclose(z, z[..., :1, :1].expand_as(z), atol=1e-5) == flat
            h = model.decoder.net[:3](torch.full((1, 8, 5, 6), 0.3))   # before the first upsampling
            assert torch.allclose(h, h[..., :1, :1].expand_as(h), atol=1e-5) == flat


def test_padding_in_the_config_file():
    """"replicate" is saved with the weights and read back; "zeros" (every model up to v4) is left out
    of the JSON, so zero-padded weights stay readable by releases before the field; other values
    are refused."""
    from pqcodec.model import ModelConfig
    rep = ModelConfig(padding="replicate")
    assert ModelConfig.from_json(rep.to_json()) == rep
    assert "padding" not in ModelConfig().to_json() and ModelConfig.from_json(ModelConfig().to_json()).padding == "zeros"
    with pytest.raises(ValueError, match="padding"):
        ModelConfig(padding="reflect")
    with pytest.raises(ValueError, match="padding must be a string"):
        ModelConfig.from_json('{"padding": 1}')


def test_gdn_in_inference_is_the_training_formula_in_place():
    """Without autograd SimplifiedGDN divides its input in place, a band of rows at a time: the
    values of x / (beta + gamma |x|) over the whole tensor, bit for bit (a 1x1 normaliser)."""
    from pqcodec.nets import autoencoder
    torch.manual_seed(0)
    gdn = autoencoder.SimplifiedGDN(8)
    with torch.no_grad():
        gdn.gamma.add_(0.05 * torch.rand_like(gdn.gamma))
    x = torch.randn(1, 8, 37, 29).contiguous(memory_format=torch.channels_last)
    expected = gdn(x)                                      # autograd on: the plain formula
    saved = autoencoder._BAND_BYTES
    autoencoder._BAND_BYTES = 8 * 29 * 4 * 5               # 5 rows a band, the last one short
    try:
        with torch.no_grad():
            y = x.clone()
            out = gdn(y)
    finally:
        autoencoder._BAND_BYTES = saved
    assert out is y and torch.equal(out, expected)


def test_windows_of_cuts_the_windows_to_windows_makes():
    from pqcodec.coding.layout import to_windows, windows_of
    rng = np.random.default_rng(1)
    grid = rng.integers(0, 1000, (3, 37, 50, 2)).astype(np.int16)     # (C, h, w, L): 3 x 4 windows of 16
    whole = to_windows(torch.from_numpy(grid.transpose(0, 3, 1, 2).reshape(6, 37, 50).copy()), 16).view(-1, 256, 3, 2)
    ids = [0, 3, 5, 11]
    assert np.array_equal(windows_of(grid, 16, ids), whole[ids].numpy())
