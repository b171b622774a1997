"""A file decodes anywhere: the coding path gives the same bytes where a machine rounds the inputs of
float32 products to bf16 or TF32 (emulated here on any CPU, numerics.py), under deterministic
algorithms, and on any device (`device=`, `--device`); weights that could not be coded exactly on
every machine are refused when loaded."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pqcodec
from pqcodec.coding import layout
from pqcodec.errors import PQCodecError, UnsupportedFileError
from pqcodec.coding import integer_prior, kernels
from pqcodec.numerics import BF16_BITS, TF32_BITS, OPERAND_EXACT, RoundedProducts, round_significand

ROOT = Path(__file__).resolve().parent.parent
V7 = ROOT / "tests" / "data" / "golden" / "v7"
# the shipped model at every level, a mapped file (levels 1 and 5 by window) and generated files
# (drawn steps, a flat layer): the small ones of golden set v7
EMULATED = [f"plain-kodim23-96x160-q{q}.bin" for q in range(1, 6)] + [
    "mapped-kodim23-96x160-q1q5.bin", "generated-kodim23-12x18-sent6-argmax-q1.bin",
    "generated-kodim23-max200-with-layer.bin"]


def test_rounding_is_bf16s_and_keeps_integers_up_to_the_bound():
    x = torch.randn(100_000) * 1000
    assert torch.equal(round_significand(x, BF16_BITS), x.bfloat16().float())
    ints = torch.arange(-4096, 4097, dtype=torch.float32)
    kept8 = round_significand(ints, BF16_BITS) == ints
    assert bool(kept8[ints.abs() <= OPERAND_EXACT].all()) and not bool(kept8[ints.abs() == OPERAND_EXACT + 1].any())
    assert bool((round_significand(ints, TF32_BITS) == ints)[ints.abs() <= 2048].all())


def test_rounded_products_reach_every_kind_of_product():
    a, b = torch.tensor([[257.0]]), torch.tensor([[1.0]])
    with RoundedProducts(BF16_BITS) as mode:
        got = [torch.nn.functional.linear(a, b), a @ b, torch.matmul(a, b), torch.bmm(a[None], b[None])[0],
               torch.einsum("ij,jk->ik", a, b), a.double() @ b.double()]
    assert [float(g) for g in got] == [256.0] * 5 + [257.0]  # float64 is left alone
    assert mode.calls == 10


@pytest.fixture
def float32_products(monkeypatch):
    """The float32 product path (the int8 kernels, where a CPU has them, bypass it)."""
    from pqcodec.zoo import load_codec
    codec = load_codec()

    def reset():
        kernels.int8_products.cache_clear()
        codec.model.int_prior.forget_derived()
        codec.model.int_cond.forget_derived()
    monkeypatch.setenv("PQCODEC_INT8", "0")
    reset()
    yield codec
    monkeypatch.undo()
    reset()


def _recode(codec, data: bytes) -> tuple[str, bytes]:
    header, tokens = codec.decode_tokens(data)
    again = codec.encode_tokens(tokens, header.height, header.width, header.greyscale, header.steps,
                                header.generated, header.flat)
    return f"{layout.token_checksum(tokens):08x}", again


RECORDED = {e["file"]: e["token_crc32"] for e in json.loads((V7 / "golden.json").read_text())["files"]}


# TF32 keeps 11 significant bits, bf16 8: an operand exact in bf16 is exact in TF32 too, so TF32 is
# checked on the files with the widest operands only (levels 4-5: the conditional head's)
@pytest.mark.parametrize("bits, name", [(BF16_BITS, n) for n in EMULATED]
                         + [(TF32_BITS, n) for n in EMULATED if "q5" in n or "q4" in n],
                         ids=[f"bf16-{n}" for n in EMULATED] + [f"tf32-{n}" for n in EMULATED if "q5" in n or "q4" in n])
def test_shipped_model_files_are_the_same_under_rounded_products(float32_products, bits, name):
    """A golden file decodes to its recorded tokens and re-encodes to its bytes while every float32
    product of the coding path has its inputs rounded as a bf16/TF32 machine would."""
    codec = float32_products
    data = (V7 / name).read_bytes()
    with RoundedProducts(bits) as mode:
        assert _recode(codec, data) == (RECORDED[name], data)
    assert mode.calls > 50  # the products were reached (the test is not vacuous)


def test_the_emulation_catches_a_wide_float32_operand(float32_products, monkeypatch):
    """The control: with the conditional head's lower indices entering as one float32 product of
    their embeddings' sum s_j (|s_j| up to 957), as in pqcodec 0.11.0, bf16 rounding changes a
    level-5 file; the test above would see it. (The head now adds table rows instead, exact under
    any rounding: IntConditionalHead.lower_table.)"""
    codec = float32_products
    head = codec.model.int_cond

    def wide_term(pre, lower, j):
        s_j = sum(head.embed[i * head.K + lower[i]].float() for i in range(j))          # (m, E), |s_j| <= 957
        rows = slice((j - 1) * head.hidden, j * head.hidden)
        acc = pre[:, rows] + torch.nn.functional.linear(s_j, head.from_lower.weight[rows].float())
        g = integer_prior.lookup(head.table("gelu", head.operand_dtype), acc)
        return head.out(g, rows=slice((j - 1) * head.K, j * head.K))
    data = (V7 / "plain-kodim23-96x160-q5.bin").read_bytes()
    monkeypatch.setattr(head, "term", wide_term)
    assert _recode(codec, data) == (RECORDED["plain-kodim23-96x160-q5.bin"], data)  # exact without rounding
    with RoundedProducts(BF16_BITS):
        try:
            changed = _recode(codec, data)[1] != data
        except pqcodec.CorruptFileError:
            changed = True
    assert changed


def test_deterministic_algorithms_and_autocast_change_nothing():
    from pqcodec.zoo import load_codec
    codec = load_codec()
    data = (V7 / "plain-kodim23-96x160-q4.bin").read_bytes()
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _recode(codec, data)[1] == data
    finally:
        torch.use_deterministic_algorithms(before)


def test_weights_that_are_not_exact_everywhere_are_refused(tiny_weights, tmp_path):
    """A prior whose attention table holds weights beyond bf16's exact integers (as a careless
    calibration could write) cannot be loaded to code: one line naming what is wrong."""
    from safetensors.torch import load_file, save_file
    from pqcodec.zoo import load_custom_codec
    state = load_file(tiny_weights)
    key = next(k for k in state if k.endswith("att_exp"))
    state[key] = state[key].clone()
    state[key][0] = OPERAND_EXACT + 44
    bad = tmp_path / "bad.safetensors"
    from safetensors import safe_open
    with safe_open(tiny_weights, "pt") as f:
        save_file(state, bad, metadata=f.metadata())
    with pytest.raises(UnsupportedFileError, match="cannot be coded exactly on every machine.*attention weights up to 300"):
        load_custom_codec(str(bad))


def test_device_cpu_and_auto_write_the_same_file(tiny_weights):
    from conftest import random_image
    rgb = random_image(40, 56, seed=3)
    files = {d: pqcodec.encode(rgb, 2, model=str(tiny_weights), device=d) for d in (None, "cpu", "auto")}
    assert len(set(files.values())) == 1
    img = {d: np.asarray(pqcodec.decode(files["cpu"], model=str(tiny_weights), device=d)) for d in ("cpu", "auto")}
    assert np.array_equal(img["cpu"], img["auto"])


@pytest.mark.parametrize("device, message", [("gpu", "device must be one of cpu, cuda, auto"),
                                             ("cuda:x", "device must be one of")])
def test_a_device_that_is_no_device_is_one_line(device, message):
    with pytest.raises(PQCodecError, match=message):
        pqcodec.encode(np.zeros((16, 16, 3), np.uint8), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: nothing to refuse")
def test_cuda_without_cuda_is_one_line(tmp_path):
    from pqcodec.cli import main
    out = tmp_path / "k.bin"
    with pytest.raises(PQCodecError, match="device cuda: .*(no CUDA support|no CUDA device)"):
        pqcodec.encode(np.zeros((16, 16, 3), np.uint8), device="cuda")
    assert main(["encode", str(ROOT / "tests" / "data" / "kodim23.png"), "-o", str(out), "--device", "cuda"]) == 1
    assert not out.exists()


def test_cli_device_option(tmp_path, capsys):
    from pqcodec.cli import main
    src = tmp_path / "small.png"
    from PIL import Image
    Image.open(ROOT / "tests" / "data" / "kodim23.png").crop((0, 0, 64, 48)).save(src)
    for device in ("cpu", "auto"):
        assert main(["encode", str(src), "-o", str(tmp_path / f"{device}.bin"), "--device", device, "-q", "1"]) == 0
        assert main(["decode", str(tmp_path / f"{device}.bin"), "-o", str(tmp_path / f"{device}.png"),
                     "--device", device]) == 0
    assert (tmp_path / "cpu.bin").read_bytes() == (tmp_path / "auto.bin").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["encode", str(src), "-o", str(tmp_path / "x.bin"), "--device", "tpu"])
    assert e.value.code == 2 and "must be cpu, cuda, cuda:N or auto" in capsys.readouterr().err


@pytest.mark.timeout(900)
def test_gpu_check_dry_run(tmp_path):
    """The prepared GPU check (eval/gpu_check.py) runs its steps with the CPU in the GPU's place."""
    report = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, "-m", "eval.gpu_check", "--dry-run", "--quick",
                          "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    r = json.loads(report.read_text())
    assert r["dry_run"] and not r["failures"] and r["golden"]["checked"] >= 2
    assert {f["way"] for f in r["files"]} == {"level 1", "max 200 B"}
    assert all(f["same_bytes"] and f["cpu_file_same_tokens"] and f["device_file_same_tokens"] for f in r["files"])
    assert r["reduced_precision_same_bytes"] == {"high": True, "medium": True}


def coding_digests() -> dict:
    """SHA-256 of what coding gives in this process: files of a kodim23 crop (levels 1 and 5, 200 bytes
    with a generated part, one refinement step) and the pixels of those files and of golden v7 files
    (plain, generated, and by the perceptual decoder)."""
    import hashlib
    from PIL import Image
    from pqcodec.zoo import load_codec
    codec = load_codec()
    crop = np.asarray(Image.open(ROOT / "tests" / "data" / "kodim23.png").convert("RGB"))[96:192, 200:360]
    files = {"q1": codec.encode(crop, 1), "q5": codec.encode(crop, 5), "effort1": codec.encode(crop, 3, effort=1),
             "max200": pqcodec.encode(crop, max_bytes=200)}
    files.update({n: (V7 / n).read_bytes() for n in ("plain-kodim23-96x160-q3.bin",
                                                     "generated-kodim23-12x18-sent6-argmax-q1.bin")})
    out = {f"bytes {k}": hashlib.sha256(v).hexdigest() for k, v in files.items()}
    for k, v in files.items():
        out[f"pixels {k}"] = hashlib.sha256(np.asarray(pqcodec.decode(v)).tobytes()).hexdigest()
    out["pixels perceptual"] = hashlib.sha256(np.asarray(pqcodec.decode(files["q5"], decoder="perceptual")).tobytes()).hexdigest()
    return out


def test_coding_ignores_the_callers_default_dtype():
    """After torch.set_default_dtype(torch.float64), before pqcodec loads anything: the same bytes and
    the same pixels as under the default float32 (a model built in float64 did not encode at all)."""
    script = ("import json, torch; torch.set_default_dtype(torch.float64); import test_anywhere; "
              "print(json.dumps(test_anywhere.coding_digests()))")
    r = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1]) == coding_digests()
