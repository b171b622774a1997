"""The command line as a user meets it: round trips, stdin/stdout, and bad input that must end in a
one-line error, a non-zero exit and no output file."""
import io

import pytest
from PIL import Image

from conftest import patched, random_image, run_cli


@pytest.fixture
def png(tmp_path):
    p = tmp_path / "in.png"
    Image.fromarray(random_image(30, 50)).save(p)
    return p


def _assert_clean_failure(r, outdir, message):
    err = r.stderr.decode()
    assert r.returncode != 0
    assert err.count("\n") == 1 and err.startswith("pqcodec: error:"), err
    assert "Traceback" not in err
    assert message in err, err
    assert not list(outdir.glob(".*.part")), "a temporary output was left behind"


def test_encode_decode_info(tiny_weights, png, tmp_path):
    r = run_cli("encode", png, "-o", tmp_path / "a.bin", "--model", tiny_weights, "-q", "2")
    assert r.returncode == 0, r.stderr.decode()
    r = run_cli("decode", tmp_path / "a.bin", "-o", tmp_path / "a.png", "--model", tiny_weights)
    assert r.returncode == 0, r.stderr.decode()
    assert Image.open(tmp_path / "a.png").size == (50, 30)
    r = run_cli("info", tmp_path / "a.bin")
    out = r.stdout.decode()
    assert r.returncode == 0 and "50 x 30" in out and "bpp" in out and "steps" in out and "version 3" in out


def test_stdin_stdout(tiny_weights, png):
    r = run_cli("encode", "-", "-o", "-", "--model", tiny_weights, stdin=png.read_bytes())
    assert r.returncode == 0 and r.stdout[:2] == b"PQ"
    r2 = run_cli("decode", "-", "-o", "-", "--model", tiny_weights, stdin=r.stdout)
    assert r2.returncode == 0
    assert Image.open(io.BytesIO(r2.stdout)).size == (50, 30)


def test_no_overwrite_without_force(tiny_weights, png, tmp_path):
    out = tmp_path / "x.bin"
    out.write_bytes(b"precious")
    r = run_cli("encode", png, "-o", out, "--model", tiny_weights)
    assert r.returncode != 0 and b"--force" in r.stderr and out.read_bytes() == b"precious"
    assert run_cli("encode", png, "-o", out, "--model", tiny_weights, "--force").returncode == 0
    assert out.read_bytes()[:2] == b"PQ"


def _bin(tiny_weights, png, tmp_path) -> bytes:
    r = run_cli("encode", png, "-o", "-", "--model", tiny_weights)
    assert r.returncode == 0
    return r.stdout


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("not_image", "not an image"),
    ("empty", "empty"),
])
def test_bad_encode_inputs(tiny_weights, tmp_path, case, message):
    src = tmp_path / f"{case}.png"
    if case == "not_image":
        src.write_text("just some text\n")
    elif case == "empty":
        src.write_bytes(b"")
    out = tmp_path / "out.bin"
    r = run_cli("encode", src, "-o", out, "--model", tiny_weights)
    _assert_clean_failure(r, tmp_path, message)
    assert not out.exists()


@pytest.mark.parametrize("case, message", [
    ("truncated", "error"),
    ("bitflip", "error"),
    ("magic", "magic"),
    ("version", "version"),
    ("empty", "empty"),
    ("missing", "no such file"),
])
def test_bad_bin_files(tiny_weights, png, tmp_path, case, message):
    data = bytearray(_bin(tiny_weights, png, tmp_path))
    if case == "truncated":
        data = data[:len(data) // 2]
    elif case == "bitflip":
        data[-3] ^= 0x10
    elif case == "magic":
        data[0:2] = b"JP"
    elif case == "version":
        data[2] = 77
    elif case == "empty":
        data = b""
    src = tmp_path / "in.bin"
    if case != "missing":
        src.write_bytes(bytes(data))
    out = tmp_path / "out.png"
    r = run_cli("decode", src, "-o", out, "--model", tiny_weights)
    _assert_clean_failure(r, tmp_path, message)
    assert not out.exists()


def test_output_in_missing_folder(tiny_weights, png, tmp_path):
    r = run_cli("encode", png, "-o", tmp_path / "nope" / "a.bin", "--model", tiny_weights)
    _assert_clean_failure(r, tmp_path, "does not exist")
    r = run_cli("decode", tmp_path / "whatever.bin", "-o", tmp_path / "nope" / "a.png")
    _assert_clean_failure(r, tmp_path, "does not exist")


def test_unknown_output_extension(tiny_weights, png, tmp_path):
    (tmp_path / "a.bin").write_bytes(_bin(tiny_weights, png, tmp_path))
    r = run_cli("decode", tmp_path / "a.bin", "-o", tmp_path / "a.xyz", "--model", tiny_weights)
    _assert_clean_failure(r, tmp_path, "extension")
    assert r.returncode == 2  # a bad command line


def test_file_names_its_model(tiny_weights, png, tmp_path):
    """Files carry their weights' hash: decoding without those weights, or with others, is a clear error."""
    import torch
    from pqcodec.model import PQCodecModel
    (tmp_path / "a.bin").write_bytes(_bin(tiny_weights, png, tmp_path))
    r = run_cli("decode", tmp_path / "a.bin", "-o", tmp_path / "a.png")
    _assert_clean_failure(r, tmp_path, "does not ship")
    other = PQCodecModel.load(tiny_weights)
    with torch.no_grad():
        other.decoder.net[0].bias.add_(1)
    other.save(tmp_path / "other.safetensors")
    r = run_cli("decode", tmp_path / "a.bin", "-o", tmp_path / "a.png", "--model", tmp_path / "other.safetensors")
    _assert_clean_failure(r, tmp_path, "was made with model")
    assert not (tmp_path / "a.png").exists()
    info = run_cli("info", tmp_path / "a.bin").stdout.decode()
    assert "not shipped" in info


def test_retired_model_is_named(tiny_weights, png, tmp_path):
    """A file of a model an earlier release shipped says which release that was (decode and info)."""
    data = _bin(tiny_weights, png, tmp_path)
    for i, byte in enumerate(bytes.fromhex("a945f74d")):  # pq-s8-m12k256 of 0.2.0
        data = patched(data, 3 + i, byte)
    (tmp_path / "old.bin").write_bytes(data)
    r = run_cli("decode", tmp_path / "old.bin", "-o", tmp_path / "old.png")
    _assert_clean_failure(r, tmp_path, "pqcodec 0.2.0")
    assert "pq-s8-m12k256 of pqcodec 0.2.0; not shipped now" in run_cli("info", tmp_path / "old.bin").stdout.decode()


def test_overlong_input_is_refused_unread(tmp_path):
    from pqcodec.bitstream import MAX_FILE_BYTES
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # sparse: no disk used
        f.truncate(MAX_FILE_BYTES + 1)
    r = run_cli("decode", big, "-o", tmp_path / "a.png")
    _assert_clean_failure(r, tmp_path, "longer than any pqcodec file")


@pytest.mark.parametrize("argv", [["--help"], ["encode", "--help"], ["decode", "--help"], ["compare", "--help"],
                                  ["info", "FILE"], ["info", "MISSING"], ["encode"]])
def test_help_info_and_usage_errors_do_not_import_torch(tmp_path, argv):
    """torch's import is most of a second: `pqcodec --help`, `info` and a bad command line answer
    without it (the networks load only for encode and decode)."""
    import subprocess
    import sys
    import pqcodec
    path = tmp_path / "k.bin"
    path.write_bytes(pqcodec.encode(random_image(16, 16), 1))
    argv = [str(path) if a == "FILE" else str(tmp_path / "missing.bin") if a == "MISSING" else a for a in argv]
    code = ("import sys\nfrom pqcodec.cli import main\ntry:\n    status = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    status = e.code\nassert 'torch' not in sys.modules, 'torch imported'\n"
            "sys.exit(status)\n")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert "torch imported" not in r.stderr, r.stderr
    assert r.returncode == (0 if argv[0] == "--help" or argv[-1] in ("--help", str(path)) else
                            1 if "missing" in argv[-1] else 2), (r.returncode, r.stderr)
