"""The command line's errors, as a stranger meets them: one line naming the file (or `stdin`), a
non-zero exit, never a traceback; what can be checked is checked before the work (the output format
and whether it holds the image: a damaged payload shows that the decode never ran); warnings are one
line; a reader that goes away is not an error; an unexpected exception is still one line.
Where standard streams or the process matter, the CLI runs in a process of its own (run_cli); else
in this one (the `cli` fixture: `pqcodec.cli.main`, what the `pqcodec` command runs), which is fast."""
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import random_image, run_cli


@pytest.fixture
def png(tmp_path):
    p = tmp_path / "in.png"
    Image.fromarray(random_image(30, 50)).save(p)
    return p


def _one_line(r, status=1) -> str:
    err = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    assert r.returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _damaged_bin(codec, height: int, width: int) -> bytes:
    """A file of `codec` with a good header for a height x width image and a payload that does not
    decode: a decode that ran would fail on it."""
    from pqcodec import bitstream
    header = bitstream.Header(codec.model_hash, codec.config.active_levels[0], 12, height, width, False, 0)
    return bitstream.pack(header, bytes(8))


@pytest.mark.parametrize("args, where", [(["--threads", "-3"], "before"), (["--threads", "0"], "after"),
                                         (["--threads", "many"], "after")])
def test_bad_thread_counts(cli, png, tmp_path, args, where):
    cmd = ["encode", png, "-o", tmp_path / "a.bin"]
    r = cli(*(args + cmd if where == "before" else cmd + args))
    err = _one_line(r, status=2)
    assert err.startswith("pqcodec") and "--threads" in err and not (tmp_path / "a.bin").exists()


def test_threads_after_the_subcommand(tiny_weights, png, tmp_path):
    r = run_cli("encode", png, "-o", tmp_path / "a.bin", "--model", tiny_weights, "--threads", "1")
    assert r.returncode == 0 and r.stderr == b"", r.stderr


def test_help_shows_the_quality_range_and_default(cli):
    from pqcodec.zoo import DEFAULT_MODEL, ZOO, load_codec
    levels = load_codec(DEFAULT_MODEL).num_levels()
    text = " ".join(cli("encode", "--help").stdout.decode().split())
    assert f"1 (smallest file) .. {levels}; default {ZOO[DEFAULT_MODEL].default_level}" in text, text


@pytest.mark.parametrize("name, message, status", [("out.psd", "cannot write", 2), ("out.jpg", "change the decoded", 2),
                                                   ("out.ico", "cannot hold", 1), ("out.webp", "cannot hold", 1)])
def test_output_format_is_checked_before_the_decode(cli, tiny_codec, tiny_weights, tmp_path, name, message, status):
    """.psd: Pillow cannot write it; .jpg changes the pixels (both a bad command line, status 2);
    .ico would shrink a 50x30 image; WebP cannot hold 20000 px."""
    size = (8, 20000) if name.endswith(".webp") else (30, 50)
    src = tmp_path / "in.bin"
    src.write_bytes(_damaged_bin(tiny_codec, *size))
    r = cli("decode", src, "-o", tmp_path / name, "--model", tiny_weights)
    err = _one_line(r, status)
    assert f"{tmp_path / name}: " in err and message in err and "damaged" not in err, err
    assert not (tmp_path / name).exists()


def test_ico_that_holds_the_image_is_written(cli, tiny_codec, tiny_weights, tmp_path):
    (tmp_path / "a.bin").write_bytes(tiny_codec.encode(random_image(16, 16)))
    r = cli("decode", tmp_path / "a.bin", "-o", tmp_path / "a.ico", "--model", tiny_weights)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "a.ico").size == (16, 16)


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_closed_stdout(tiny_codec, tiny_weights, png, tmp_path, command):
    source = png if command == "encode" else tmp_path / "a.bin"
    if command == "decode":
        source.write_bytes(tiny_codec.encode(png))
    r = subprocess.run([sys.executable, "-m", "pqcodec", command, str(source), "-o", "-", "--model", str(tiny_weights)],
                       capture_output=False, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=300)
    assert "stdout: is closed" in _one_line(r)


def test_stdin_is_read_bounded(tmp_path):
    """An endless stdin (here /dev/zero) is refused once longer than any image pqcodec codes."""
    from pqcodec.files import MAX_IMAGE_STREAM_BYTES
    with open("/dev/zero", "rb") as zero:
        r = subprocess.run([sys.executable, "-m", "pqcodec", "encode", "-", "-o", str(tmp_path / "a.bin")],
                           stdin=zero, capture_output=True, timeout=120)
    err = _one_line(r)
    assert err.startswith("pqcodec: error: stdin: longer than") and str(MAX_IMAGE_STREAM_BYTES) in err, err


def test_errors_name_the_file_or_stdin(cli, tiny_codec, tiny_weights, tmp_path, png):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    err = _one_line(cli("encode", bad, "-o", tmp_path / "a.bin", "--model", tiny_weights))
    assert err.startswith(f"pqcodec: error: {bad}: not an image"), err
    coded = tiny_codec.encode(png)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(coded[:-5])
    err = _one_line(cli("decode", cut, "-o", tmp_path / "a.png", "--model", tiny_weights))
    assert err.startswith(f"pqcodec: error: {cut}: "), err
    err = _one_line(run_cli("encode", "-", "-o", tmp_path / "a.bin", "--model", tiny_weights, stdin=b"not an image"))
    assert err.startswith("pqcodec: error: stdin: not an image"), err
    err = _one_line(run_cli("info", "-", stdin=coded[:3]))
    assert err.startswith("pqcodec: error: stdin: "), err


def corrupt_exif_jpeg(path):
    import struct
    ifd = (struct.pack("<H", 3) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHII", 0x010F, 2, 200, 5000)
           + struct.pack("<HHII", 0x8769, 4, 1, 9999))  # orientation, then a tag and an IFD pointing past the end
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"
    Image.fromarray(random_image(20, 30)).save(path, exif=exif)


def test_pillow_warnings_are_one_line(cli, tiny_weights, tmp_path):
    src = tmp_path / "exif.jpg"
    corrupt_exif_jpeg(src)
    with warnings.catch_warnings(record=True) as caught:  # the file does make Pillow warn, more than once
        warnings.simplefilter("always")
        with Image.open(src) as img:
            ImageOps.exif_transpose(img)
    assert len(caught) >= 2
    r = cli("encode", src, "-o", tmp_path / "a.bin", "--model", tiny_weights)
    err = r.stderr.decode()
    assert r.returncode == 0 and err.count("\n") == 1, err
    assert err.startswith(f"pqcodec: warning: {src}: Pillow: ") and "more warning" in err, err
    assert "site-packages" not in err and "UserWarning" not in err


@pytest.mark.parametrize("command", ["info", "decode"])
def test_a_reader_that_goes_away_is_not_an_error(tiny_codec, tiny_weights, png, tmp_path, command):
    """`pqcodec ... | head`: EPIPE ends the run quietly, with the status a shell shows for SIGPIPE."""
    coded = tmp_path / "a.bin"
    coded.write_bytes(tiny_codec.encode(png))
    read_end, write_end = os.pipe()
    os.close(read_end)
    args = ["info", str(coded)] if command == "info" else \
        ["decode", str(coded), "-o", "-", "--model", str(tiny_weights)]
    try:
        r = subprocess.run([sys.executable, "-m", "pqcodec", *args], stdout=write_end, stderr=subprocess.PIPE,
                           timeout=300)
    finally:
        os.close(write_end)
    assert r.returncode == 141 and r.stderr == b"", r.stderr


@pytest.mark.parametrize("patched, named, debug", [("encode_image", True, None), ("encode_image", True, "--debug"),
                                                   ("_check_model_args", False, None),
                                                   ("_check_model_args", False, "PQCODEC_DEBUG")])
def test_an_unexpected_error_is_one_line(cli, monkeypatch, tiny_weights, png, tmp_path, patched, named, debug):
    """A bug (here a RuntimeError planted in the encoder's path, or before it) still ends in one line
    naming what went wrong; the traceback only with --debug or PQCODEC_DEBUG=1."""
    import pqcodec.cli

    def boom(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(pqcodec.cli, patched, boom)
    monkeypatch.setenv("PQCODEC_DEBUG", "1" if debug == "PQCODEC_DEBUG" else "")
    args = [png, "-o", tmp_path / "a.bin", "--model", tiny_weights] + (["--debug"] if debug == "--debug" else [])
    r = cli("encode", *args)
    err = r.stderr.decode()
    last = err.strip().splitlines()[-1]
    prefix = f"pqcodec: error: {png}: internal error" if named else "pqcodec: error: internal error"
    assert r.returncode == 1 and last.startswith(prefix) and "RuntimeError: boom" in last, err
    if debug:
        assert "Traceback" in err and ", in boom" in err
    else:
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "a.bin").exists()


# -- issue 26: what the outputs do, usage errors, files that end where they end, sizes, counts ------
@pytest.mark.parametrize("args", [["-q", "99"], ["-q", "0"], ["--generative"], ["--max-bytes", "500", "--effort", "3"],
                                  ["-q", "2", "--max-bytes", "500"], ["--threads", "0"], ["-o", "{tmp}/a.png"]])
def test_every_bad_command_line_is_status_2(cli, tiny_weights, png, tmp_path, args):
    """--quality 99 (above the model's levels) exited 1 where --quality 0 exits 2: a bad command
    line is status 2 whether argparse or pqcodec finds it, one line, before any work."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "-o" in args else ["-o", tmp_path / "a.bin"]
    err = _one_line(cli("encode", png, *out, *args, "--model", tiny_weights), status=2)
    assert err.startswith("pqcodec") and ": error: " in err and not list(tmp_path.glob("a.*")), err


@pytest.mark.parametrize("name, loses", [("x.jpg", "lossy compression"), ("x.gif", "256 colours"),
                                         ("x.avif", "lossy compression")])
def test_a_format_that_changes_the_pixels_only_when_asked(cli, flat_blocks_bin, tiny_weights, tmp_path, name, loses):
    """`decode -o x.gif` cut the image to 256 colours, .jpg and .avif were lossy, without a word.
    Refused (status 2, naming the format and the lossless choices) unless --lossy-output, which
    writes it with one line saying how far the file is from the decoded pixels."""
    from PIL import features
    if name == "x.avif" and not features.check("avif"):
        pytest.skip("this Pillow writes no AVIF")
    coded, png = flat_blocks_bin
    out = tmp_path / name
    err = _one_line(cli("decode", coded, "-o", out, "--model", tiny_weights), status=2)
    assert f"{out}: " in err and loses in err and ".png" in err and "--lossy-output" in err and not out.exists()
    r = cli("decode", coded, "-o", out, "--model", tiny_weights, "--lossy-output")
    err = _one_line(r, status=0)
    assert err.startswith(f"pqcodec: warning: {out}: ") and loses in err and " dB PSNR from them" in err, err
    with Image.open(out) as written, Image.open(io.BytesIO(png)) as decoded:
        assert written.size == decoded.size and not np.array_equal(np.asarray(written.convert("RGB")), np.asarray(decoded))


def test_lossless_formats_hold_the_decoded_pixels(cli, flat_blocks_bin, tiny_weights, tmp_path):
    """.webp is written lossless (Pillow's default is lossy); these and .png read back the same pixels."""
    from pqcodec.formats import changes_pixels
    coded, png = flat_blocks_bin
    with Image.open(io.BytesIO(png)) as decoded:
        expected = np.asarray(decoded)
    for name in ("x.webp", "x.tif", "x.bmp", "x.png"):
        r = cli("decode", coded, "-o", tmp_path / name, "--model", tiny_weights)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
        with Image.open(tmp_path / name) as written:
            assert np.array_equal(np.asarray(written.convert("RGB")), expected), name
    assert [f for f in ("PNG", "WEBP", "TIFF", "BMP", "JPEG", "GIF") if changes_pixels(f)] == ["JPEG", "GIF"]


def test_bytes_after_the_end_of_a_file_are_refused(cli, tiny_codec, tiny_weights, png, tmp_path):
    """4 junk bytes appended decoded without complaint (8 were refused): the range decoder's state
    holds two words, so a word after the seal was read into it and not seen as left over."""
    coded = tiny_codec.encode(png)
    for junk in (b"\0" * 4, b"abcd", b"\xff" * 8, b"\0"):
        path = tmp_path / "a.bin"
        path.write_bytes(coded + junk)
        err = _one_line(cli("decode", path, "-o", tmp_path / "a.png", "--model", tiny_weights))
        expected = "payload length is not a whole number" if len(junk) % 4 else f"{len(junk)} bytes after the end"
        assert err.startswith(f"pqcodec: error: {path}: ") and expected in err, err
        assert not (tmp_path / "a.png").exists()


def _png_header(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG that claims width x height: what Pillow reads when it opens one (the
    pixels are never decoded: the size is refused first)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [12000, 30000])
def test_an_oversize_image_is_refused_in_pqcodecs_words(cli, tiny_weights, tmp_path, side):
    """12000^2 printed Pillow's DecompressionBombWarning before pqcodec's message; 30000^2 was refused
    in Pillow's words ("could be decompression bomb DOS attack"). Both: pqcodec's limit, one line."""
    import pqcodec
    from pqcodec.limits import MAX_PIXELS, MAX_SIDE
    from pqcodec.errors import PQCodecError
    src = tmp_path / "big.png"
    src.write_bytes(_png_header(side, side))
    err = _one_line(cli("encode", src, "-o", tmp_path / "a.bin", "--model", tiny_weights))
    assert err.startswith(f"pqcodec: error: {src}: ") and "exceeds the supported size" in err, err
    assert f"({MAX_SIDE} px per side, {MAX_PIXELS} pixels)" in err and "bomb" not in err, err
    with warnings.catch_warnings(record=True) as caught, pytest.raises(PQCodecError, match="supported size"):
        warnings.simplefilter("always")
        pqcodec.encode(src.read_bytes(), model=str(tiny_weights))
    assert not caught, [str(w.message) for w in caught]


def test_counts_agree_with_their_nouns(tiny_codec):
    """"cannot fit in 1 bytes": a count of 1 takes the singular, wherever a message counts."""
    from pqcodec.request import EncodeRequest
    from pqcodec.ratecontrol import RateError, encode_to_size
    from pqcodec.words import counted
    assert [counted(n, "byte") for n in (0, 1, 2)] == ["0 bytes", "1 byte", "2 bytes"]
    assert counted(1, "coder pass", "coder passes") == "1 coder pass" and counted(3, "pass", "passes") == "3 passes"
    with pytest.raises(RateError, match=r"cannot fit in 1 byte: the smallest file this model reaches is \d+ bytes"):
        encode_to_size(tiny_codec, random_image(16, 16), max_bytes=1)
    assert "at most 1 byte (rate control)" in EncodeRequest(max_bytes=1).describe(tiny_codec, 16, 16)
