"""`pqcodec compare`: sizes matched honestly (no codec gets more bytes than pqcodec, and each gets
the highest setting that fits), a self-contained page that embeds exactly the decoded pixels, the
table's rows, the perceptual decoder where a model has one, and the command line's errors (one line,
a non-zero exit, no report written). The page in a browser: tests/test_compare_browser.py."""
import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from pqcodec import compare
from pqcodec.compare import PILLOW_CODECS, compare_image
from pqcodec.request import EncodeRequest
from pqcodec.compare_page import render


def _crop(w: int, h: int) -> Image.Image:
    return Image.open(DATA / "kodim23.png").convert("RGB").crop((200, 100, 200 + w, 100 + h))


@pytest.fixture(scope="module")
def codec():
    from pqcodec.zoo import load_codec
    return load_codec()


@pytest.fixture(scope="module")
def at_default(codec):
    return compare_image(codec, _crop(256, 192), "parrots", EncodeRequest())


def test_every_codec_gets_at_most_pqcodecs_bytes_and_the_highest_setting_that_fits(at_default):
    c = at_default
    assert c.rows[0].codec == "pqcodec" and c.rows[0].setting == "level 3" and c.budget == c.rows[0].num_bytes
    img = c.original
    by_name = {r.codec: r for r in c.rows}
    for pc in PILLOW_CODECS:
        row = by_name[pc.name]
        if not pc.available():
            assert not row.shown and "not available" in row.note
            continue
        assert row.shown, row.note  # at level 3 every classic codec gets this small
        q = int(row.setting.split()[-1])
        assert row.num_bytes == len(pc.encode(img, q)) <= c.budget
        if q < pc.highest:
            assert len(pc.encode(img, q + 1)) > c.budget  # one setting more would not fit
        decoded = np.asarray(Image.open(io.BytesIO(pc.encode(img, q))).convert("RGB"))
        assert np.array_equal(np.asarray(row.decoded), decoded)  # what the page shows is that file, decoded
        assert 20 < row.psnr < 50 and 0 < row.ms_ssim < 1 and row.encode_s > 0 and row.decode_s > 0


def test_a_codec_that_cannot_get_as_small_is_marked_and_not_shown(codec):
    c = compare_image(codec, _crop(320, 200), "parrots", EncodeRequest(quality=1))
    jpeg = next(r for r in c.rows if r.codec == "JPEG")
    assert not jpeg.shown and jpeg.num_bytes > c.budget and "cannot match" in jpeg.note
    page = render([c], "t", "how")
    assert "data-codec='JPEG'" not in page and f"{jpeg.num_bytes}" in page


def test_rate_control_sets_the_budget(codec):
    c = compare_image(codec, _crop(256, 192), "parrots", EncodeRequest(max_bytes=1500))
    assert c.budget <= 1500 and c.rows[0].setting.startswith("level") and "coder passes" in c.rows[0].setting
    assert all(r.num_bytes <= c.budget for r in c.rows if r.shown)
    assert "at most 1500 bytes" in c.pqcodec_request


def _embedded(page: str) -> dict[str, np.ndarray]:
    found = re.findall(r"<img draggable=false data-codec='([^']*)' alt='[^']*' src='data:image/png;base64,([^']*)'>", page)
    return {codec: np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))) for codec, data in found}


def test_the_page_is_self_contained_and_shows_the_decoded_pixels(at_default):
    page = render([at_default, at_default], "title", "how")
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page, re.I)  # nothing fetched
    assert "<link" not in page and not re.search(r"<script[^>]*\bsrc", page)
    assert "http://" not in page and "https://" not in page
    assert page.count("<img") == page.count("src='data:image/png;base64,")
    shown = _embedded(page)
    assert np.array_equal(shown["original"], np.asarray(at_default.original))
    for row in at_default.rows:
        if row.shown:
            assert np.array_equal(shown[row.codec], np.asarray(row.decoded)), row.codec
    # two images: an index linking to each section
    assert "href='#image-1'" in page and "href='#image-2'" in page and "id=image-2" in page


def test_the_table(at_default):
    page = render([at_default], "title", "how")
    table = re.search(r"<table class=results>(.*?)</table>", page, re.S)[1]
    rows = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table)]
    assert rows[0] == ["codec", "setting", "bytes", "bpp", "PSNR dB", "MS-SSIM", "MS-SSIM dB", "encode s", "decode s",
                       "size against pqcodec"]
    # the shipped model has a perceptual decoder: a second pqcodec row of the same file
    assert [r[0] for r in rows[1:]] == ["pqcodec", "pqcodec (perceptual)", "JPEG", "WebP", "AVIF"]
    budget = at_default.budget
    for cells, row in zip(rows[1:], at_default.rows):
        if row.shown:
            assert int(cells[2]) == row.num_bytes <= budget
            assert float(cells[3]) == pytest.approx(8 * row.num_bytes / (256 * 192), abs=1e-4)
            assert float(cells[4]) == pytest.approx(row.psnr, abs=0.01)
    assert "How the sizes were matched" in page and f"in at most {budget} bytes" in page


def test_an_unavailable_codec_says_so(codec, monkeypatch):
    monkeypatch.setattr(compare.PillowCodec, "available", lambda self: self.name != "AVIF")
    c = compare_image(codec, _crop(64, 48), "small", EncodeRequest(quality=5))
    avif = next(r for r in c.rows if r.codec == "AVIF")
    assert not avif.shown and avif.num_bytes is None and "no AVIF encoder" in avif.note
    assert c.rows[0].ms_ssim is None  # under 161 px: n/a
    assert "n/a" in render([c], "t", "how")


def test_an_image_pillow_cannot_write_leaves_the_others(codec, monkeypatch):
    real = compare.PillowCodec.encode

    def encode(self, img, quality):
        if self.name == "WebP":
            raise OSError("encoding error 5")
        return real(self, img, quality)
    monkeypatch.setattr(compare.PillowCodec, "encode", encode)
    c = compare_image(codec, _crop(64, 48), "small", EncodeRequest(quality=5))
    webp = next(r for r in c.rows if r.codec == "WebP")
    assert not webp.shown and "Pillow cannot write this image as WebP (encoding error 5)" in webp.note
    assert next(r for r in c.rows if r.codec == "JPEG").shown


def test_greyscale_stays_greyscale(codec):
    c = compare_image(codec, _crop(64, 48).convert("L"), "grey", EncodeRequest(quality=4))
    assert c.original.mode == "L" and all(r.decoded.mode == "L" for r in c.rows if r.shown)
    assert all(r.num_bytes <= c.budget for r in c.rows if r.shown)


class _WithPerceptual:
    """A codec whose model has a second decoder (the interface issue 16 adds to Codec)."""

    def __init__(self, codec):
        self.codec, self.default_level = codec, codec.default_level
        self.decoded_with = []

    def decoders(self):
        return ("mse", "perceptual")

    def num_levels(self):
        return self.codec.num_levels()

    def encode(self, *args, **kwargs):
        return self.codec.encode(*args, **kwargs)

    def decode(self, data, *, name=None, decoder="mse"):
        self.decoded_with.append(decoder)
        img = self.codec.decode(data, name=name)
        return img if decoder == "mse" else img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def test_every_decoder_of_the_model_is_shown_for_the_same_file(codec):
    c = compare_image(_WithPerceptual(codec), _crop(64, 48), "small", EncodeRequest(quality=2))
    plain, perceptual = c.rows[:2]
    assert perceptual.codec == "pqcodec (perceptual)" and perceptual.num_bytes == plain.num_bytes == c.budget
    assert np.array_equal(np.asarray(perceptual.decoded), np.asarray(plain.decoded)[:, ::-1])
    assert "data-codec='pqcodec (perceptual)'" in render([c], "t", "how")


# -- the command line -----------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.png"
    _crop(96, 64).save(p)
    return p


def _one_line(r, status=1) -> str:
    err = r.stderr.decode()
    assert r.returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_writes_a_page(cli, small, tmp_path):
    out = tmp_path / "r.html"
    r = cli("compare", small, "-o", out, "--quality", "2", "--quiet")
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "level 2 of 5" in page and "data-codec='original'" in page


def test_cli_missing_image(cli, small, tmp_path):
    out = tmp_path / "r.html"
    err = _one_line(cli("compare", small, tmp_path / "nope.png", "-o", out))
    assert "nope.png: no such file or folder" in err and not out.exists()


def test_cli_keeps_an_existing_report_without_force(cli, small, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("mine")
    err = _one_line(cli("compare", small, "-o", out, "--quiet"))
    assert "exists (use --force to replace it)" in err and out.read_text() == "mine"
    assert cli("compare", small, "-o", out, "--quiet", "--force").returncode == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli_output_must_be_html(cli, small, tmp_path):
    err = _one_line(cli("compare", small, "-o", tmp_path / "r.png"), status=2)  # a bad command line
    assert "writes an HTML page" in err and not (tmp_path / "r.png").exists()


def test_cli_size_too_small_is_one_line(cli, small, tmp_path):
    out = tmp_path / "r.html"
    err = _one_line(cli("compare", small, "-o", out, "--bytes", "5", "--quiet"))
    assert "small.png: cannot fit in 5 bytes" in err and not out.exists()


def test_cli_size_flags_conflict(cli, small, tmp_path):
    _one_line(cli("compare", small, "-o", tmp_path / "r.html", "--bytes", "500", "--quality", "2"), status=2)


def test_cli_folder_lists_a_broken_image_and_writes_the_others(cli, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    _crop(96, 64).save(folder / "a.png")
    _crop(80, 48).save(folder / "sub" / "b.jpg")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "r.html"
    r = cli("compare", folder, "-o", out, "--quality", "1", "--quiet")
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1 and b"broken.png: " in r.stderr, r.stderr
    page = out.read_text()
    assert page.count("<section class=comparison") == 2 and "a.png" in page and "b.jpg" in page
    assert "href='#image-2'" in page and "broken.png" not in page


def test_cli_empty_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    err = _one_line(cli("compare", tmp_path / "empty", "-o", tmp_path / "r.html"))
    assert "no images in this folder" in err
