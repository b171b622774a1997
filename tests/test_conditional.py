"""The conditional head (nets/conditional.py, coding/integer_conditional.py): the coder's
sub-quantizer-by-sub-quantizer tables are the teacher-forced ones, the head changes them, files are
format 6 and round-trip, its sums stay exact for any operands, int8 and float32 products agree, and
a weights file that holds only the head loads with its base."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, random_image, tiny_model
from pqcodec import bitstream
from pqcodec.coding import layout
from pqcodec.coding.schedule import Schedule
from pqcodec.errors import CorruptFileError
from pqcodec.coding.token_coder import TokenCoder
from pqcodec.coding.layout import to_windows, window_validity
from pqcodec.model import ModelConfig, PQCodecModel
from pqcodec.coding import kernels
from pqcodec.coding.integer_prior import ACC_LIMIT
from pqcodec.train.conditional import conditional_untrained
from pqcodec.train.quantize import prior_bits

COND = dataclasses.replace(TINY, num_subvectors=4, levels=(1, 2, 4), cond_embed=8, cond_hidden=16)


@pytest.fixture(scope="module")
def cond_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("cond") / "tiny-cond.safetensors"
    conditional_untrained(tiny_model(COND)).save(path)
    return path


@pytest.fixture(scope="module")
def cond_codec(cond_weights):
    from pqcodec.zoo import load_custom_codec
    return load_custom_codec(str(cond_weights))


def _ideal_bits(codec, tokens: np.ndarray) -> float:
    """Teacher-forced bits of a token grid (active, h, w) under the model's integer prior (and head)."""
    cfg, active = codec.config, tokens.shape[0]
    windows = to_windows(torch.from_numpy(tokens), cfg.window)
    x = torch.zeros(*windows.shape[:2], cfg.num_subvectors, dtype=torch.long)
    x[..., :active] = windows
    valid = window_validity(*tokens.shape[1:], cfg.window)
    step_of = torch.from_numpy(Schedule(cfg.window, 12, cfg.schedule_seed).step_of())
    with torch.inference_mode():
        return prior_bits(codec.model, x, active, step_of, valid, integer=True)[0]


@pytest.mark.parametrize("quality", [1, 2, 3])
def test_coder_tables_are_the_teacher_forced_ones_and_files_round_trip(cond_codec, quality):
    img = random_image(37, 45, seed=quality)   # partial windows at both edges
    data, stats = cond_codec.encode_with_stats(img, quality)
    header, tokens = cond_codec.decode_tokens(data)
    assert header.version == bitstream.CONDITIONAL_VERSION and header.conditional
    assert np.array_equal(tokens, stats.tokens)
    assert stats.window_bits.sum() == pytest.approx(_ideal_bits(cond_codec, tokens), rel=1e-12)


def test_the_head_changes_the_tables(cond_codec):
    """Without the head the same tokens cost other bits (the head is not a no-op), and with it the
    ideal bits of sub-quantizer 0 are unchanged (its row has no term)."""
    tokens = cond_codec.image_to_tokens(random_image(32, 32), 4)
    m = cond_codec.model
    plain = TokenCoder(m.int_prior, COND.window, COND.schedule_seed, COND.active_levels)
    with_head = TokenCoder(m.int_prior, COND.window, COND.schedule_seed, COND.active_levels, m.int_cond)
    assert plain.compress(tokens[:1], 12).bits == with_head.compress(tokens[:1], 12).bits
    assert plain.compress(tokens, 12).bits != with_head.compress(tokens, 12).bits


def test_mapped_and_generated_files_of_a_conditional_model_round_trip(cond_codec):
    from pqcodec.bitstream import Generated
    img = random_image(64, 72, seed=5)
    tokens = cond_codec.image_to_tokens(img, 4)
    counts = np.array([[1, 4, 2], [4, 1, 2]])   # windows of 4 x 4 tokens over the 8 x 9 grid
    data, _ = cond_codec.encode_mapped(tokens, counts, img.shape[:2], False, 12)
    header, decoded = cond_codec.decode_tokens(data)
    assert header.mapped and header.version == bitstream.CONDITIONAL_VERSION
    per_token = np.kron(counts, np.ones((4, 4), dtype=np.int64))[:8, :9]
    assert np.array_equal(decoded, np.where(np.arange(4)[:, None, None] < per_token, tokens, layout.UNUSED))
    small = cond_codec.image_to_tokens(img[:32, :32], 2)
    gen, grid = cond_codec.encode_generated(small, img.shape[:2], False, 12, Generated(4, 4, 3, 1, 5))
    header, decoded = cond_codec.decode_tokens(gen)
    assert header.generated and header.version == bitstream.CONDITIONAL_VERSION
    assert np.array_equal(decoded, grid)


def test_a_file_whose_version_contradicts_the_model_is_refused(cond_codec, tiny_codec):
    data = cond_codec.encode(random_image(16, 16), 2)
    header, payload = bitstream.unpack(data)
    as_plain = bitstream.pack(dataclasses.replace(header, conditional=False), payload)
    with pytest.raises(CorruptFileError, match="without a conditional head|with a conditional head"):
        cond_codec.decode_tokens(as_plain)
    other = tiny_codec.encode(random_image(16, 16), 1)
    h, p = bitstream.unpack(other)
    with pytest.raises(CorruptFileError, match="conditional head"):
        tiny_codec.decode_tokens(bitstream.pack(dataclasses.replace(h, conditional=True), p))


def test_float_head_row_j_reads_only_the_lower_indices(cond_weights):
    from pqcodec.model import PQCodecModel
    head = PQCodecModel.load(cond_weights).cond
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, COND.prior_dim, generator=g)
    tokens = torch.randint(0, COND.codebook_size, (5, COND.num_subvectors), generator=g)
    base = head(f, tokens, COND.num_subvectors)
    assert torch.equal(base[:, 0], torch.zeros_like(base[:, 0]))
    for j in range(COND.num_subvectors):
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + 1) % COND.codebook_size
        out = head(f, changed, COND.num_subvectors)
        assert torch.equal(out[:, :j + 1], base[:, :j + 1])          # rows up to j do not read index j
        if j + 1 < COND.num_subvectors:
            assert not torch.equal(out[:, j + 1:], base[:, j + 1:])  # the rows above do


def test_head_sums_are_exact_for_any_operands(cond_codec):
    """The largest |sum| any f (|f| <= 127) and lower sums within the calibrated bound can give stays
    below 2^24, so float32 gives the exact integer in any summation order."""
    _check_exact_by_construction(cond_codec.model.int_cond)


def test_shipped_head_is_exact_by_construction():
    from pqcodec.zoo import load_codec
    codec = load_codec()
    assert codec.config.conditional   # the default model has a head
    _check_exact_by_construction(codec.model.int_cond)


def _check_exact_by_construction(ih):
    E = ih.embed.shape[1]
    col_max = ih.embed.abs().double().view(ih.M, ih.K, E).amax(1)
    for j in range(1, ih.M):
        rows = slice((j - 1) * ih.hidden, j * ih.hidden)
        bound = col_max[:j].sum(0)
        assert float(bound.max()) <= int(ih.lower_max)
        reach = (ih.from_features.weight[rows].abs().double().sum(1) * 127 + ih.from_features.bias[rows].abs().double()
                 + (ih.from_lower.weight[rows].abs().double() * bound).sum(1))
        assert float(reach.max()) < ACC_LIMIT


def test_int8_and_float32_products_give_the_same_tables(cond_codec, monkeypatch):
    m = cond_codec.model
    tokens = torch.from_numpy(cond_codec.image_to_tokens(random_image(32, 32, seed=9), 4))
    x = to_windows(tokens, COND.window)
    valid = torch.ones(x.shape[:2], dtype=torch.bool)
    step_of = torch.from_numpy(Schedule(COND.window, 5, 0).step_of())

    def tables(on: bool):
        monkeypatch.setenv("PQCODEC_INT8", "1" if on else "0")
        monkeypatch.setattr(kernels, "_int8_is_faster", lambda *args: 1.0)
        kernels.int8_products.cache_clear()
        m.int_prior.forget_derived()
        m.int_cond.forget_derived()
        with torch.inference_mode():
            return m.int_prior.frequencies(x, 4, step_of, valid, m.int_cond)
    try:
        with_int8, without = tables(True), tables(False)
    finally:
        monkeypatch.undo()
        kernels.int8_products.cache_clear()
        m.int_prior.forget_derived()
        m.int_cond.forget_derived()
    assert torch.equal(with_int8, without)


def test_a_head_file_holds_only_the_head_and_loads_with_its_base(cond_weights, tmp_path):
    full = PQCodecModel.load(cond_weights)
    base = PQCodecModel(dataclasses.replace(COND, cond_embed=0, cond_hidden=0))
    base.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("cond.", "int_cond."))})
    base.save(tmp_path / "base.safetensors")
    full.save(tmp_path / "head.safetensors", base=tmp_path / "base.safetensors", float16=("cond.",))
    from safetensors import safe_open
    with safe_open(str(tmp_path / "head.safetensors"), "pt") as f:
        assert all(k.startswith(("cond.", "int_cond.")) for k in f.keys())
    loaded = PQCodecModel.load(tmp_path / "head.safetensors")
    want = full.state_dict()
    for k, v in loaded.state_dict().items():
        if k.startswith("cond."):
            assert torch.equal(v, want[k].half().float()), k
        else:
            assert torch.equal(v, want[k]), k
    from tools.gpu_lease import prepare
    with pytest.raises(SystemExit, match="holds only a conditional head"):   # a GPU lease trains the base
        prepare(tmp_path / "head.safetensors", tmp_path, tmp_path / "lease")
    (tmp_path / "base.safetensors").write_bytes(b"not the base")
    with pytest.raises(ValueError, match="needs its base weights"):
        PQCodecModel.load(tmp_path / "head.safetensors")
    with pytest.raises(ValueError, match="not this model's base"):
        full.save(tmp_path / "x.safetensors", base=_changed_base(tmp_path, full))


def _changed_base(tmp_path, full) -> str:
    """A base file one of whose shared tensors differs from the model's."""
    base = PQCodecModel(dataclasses.replace(COND, cond_embed=0, cond_hidden=0))
    base.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("cond.", "int_cond."))})
    with torch.no_grad():
        next(base.decoder.parameters()).add_(1)
    base.save(tmp_path / "changed.safetensors")
    return str(tmp_path / "changed.safetensors")


def test_config_without_a_head_keeps_its_json():
    assert "cond" not in ModelConfig().to_json()
    assert ModelConfig.from_json(COND.to_json()) == COND
    with pytest.raises(ValueError, match="both be 0 or both positive"):
        ModelConfig(cond_embed=4)


def test_version_6_headers_take_the_generated_or_the_mapped_bit_not_both():
    from pqcodec.bitstream import Generated, Header, pack, unpack
    h = Header(b"\0\1\2\3", 2, 12, 64, 64, False, 7, conditional=True)
    for header in (h, dataclasses.replace(h, mapped=True), dataclasses.replace(h, generated=Generated(4, 4, 3, 0, 0))):
        data = pack(header, b"")
        assert data[2] == bitstream.CONDITIONAL_VERSION and unpack(data)[0] == header
    both = bytearray(pack(dataclasses.replace(h, mapped=True), b""))
    both[7] |= 0x20
    body = bytes(both[:-2])
    with pytest.raises(CorruptFileError):
        unpack(body + bitstream.header_check(body))


def test_training_stage_writes_a_head_file_that_codes(tiny_weights, image_folder, tmp_path):
    """`pqcodec-train conditional` on a tiny model: trains, calibrates, writes only the head (its base
    named), and the weights code; `--epochs 0` recalibrates the head alone."""
    import json
    from pqcodec.codec import Codec
    from pqcodec.train.__main__ import main as train_main
    out = tmp_path / "cond"
    args = ["conditional", "--init", str(tiny_weights), "--data", str(image_folder), "--windows", "16",
            "--epochs", "1", "--batch", "64", "--embed", "4", "--hidden", "8", "--held-out", "4",
            "--calibration-windows", "8"]
    train_main([*args, "--out", str(out)])
    summary = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert summary["steps"] == 16 * 16 // 64 and set(summary["held_out_integer_bits"]) == {"prior", "with_head"}
    with pytest.raises(ValueError, match="needs its base weights"):
        PQCodecModel.load(out / "model.safetensors")           # the base is elsewhere...
    model = PQCodecModel.load(out / "model.safetensors", search=(tiny_weights.parent,))   # ...found there
    assert model.config.conditional and model.base_sha256 and bool(model.int_cond.calibrated)
    codec = Codec(model, b"cond")
    img = random_image(40, 48)
    header, tokens = codec.decode_tokens(codec.encode(img, 2))
    assert header.version == bitstream.CONDITIONAL_VERSION and np.array_equal(tokens, codec.image_to_tokens(img, 2))
    again = tmp_path / "again"
    (again).mkdir()
    (again / tiny_weights.name).write_bytes(tiny_weights.read_bytes())   # a head file's base beside it
    (again / "head.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    train_main([*args, "--init", str(again / "head.safetensors"), "--epochs", "0", "--out", str(again / "o")])
    recal = PQCodecModel.load(again / "o" / "model.safetensors", search=(again,))
    assert torch.equal(recal.cond.out[0].weight, model.cond.out[0].weight)   # not trained again


def test_shipped_head_saves_bits_and_its_integer_form_costs_under_one_percent():
    """On a crop of kodim23 (two windows), 8 sub-quantizers: the integer head's tables cost at most 1 %
    over the float head's, and at least 5 % less than the integer prior's alone (measured: +0.61 % and
    -11.2 %; eval/rd.py measures all of Kodak)."""
    from PIL import Image
    from pqcodec.zoo import load_codec, load_model
    codec = load_codec()
    m, cfg = load_model(), codec.config  # the model whole: its float prior and head
    rgb = np.asarray(Image.open(Path(__file__).parent / "data" / "kodim23.png").convert("RGB"))[:128, :256]
    windows = to_windows(torch.from_numpy(codec.image_to_tokens(rgb, cfg.num_subvectors)), cfg.window)
    step_of = torch.from_numpy(Schedule(cfg.window, 12, cfg.schedule_seed).step_of())
    active = 8
    x = torch.where(torch.arange(cfg.num_subvectors) < active, windows, m.prior.ABSENT)
    with torch.inference_mode():
        float_bits, n = prior_bits(m, windows, active, step_of)
        int_bits, _ = prior_bits(m, windows, active, step_of, integer=True)
        alone = m.int_prior.frequencies(x, active, step_of, torch.ones(x.shape[:2], dtype=torch.bool))
        alone_bits = float(-torch.log2((alone.gather(-1, x[..., :active, None]) + 1) / 2 ** layout.PROB_BITS).sum())
    assert int_bits <= float_bits * 1.01
    assert int_bits <= alone_bits * 0.95
