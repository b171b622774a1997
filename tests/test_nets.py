"""The networks' contracts: the prior sees only earlier steps; the quantizer's codebooks stay in use;
the schedule is fixed. (The integer prior's cached path against its one pass: test_integer_prior.py.)"""
import numpy as np
import pytest
import torch

from pqcodec.nets import MIMPrior, ProductQuantizer
from pqcodec.bitstream import Schedule, cosine_boundaries, seeded_permutation


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
