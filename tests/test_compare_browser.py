"""`pqcodec compare`'s page in a real browser (headless Chromium, eval/headless.py): no JavaScript
errors, every image decoded, the split slider and the 1:1 zoom show exactly the decoded pixels of the
two codecs chosen, where they should be; dragging pans both. The last screenshot is saved as
artifacts/compare-browser.png (ignored by git; CI keeps it).

Skipped where no Chromium (or websocket-client) is installed, except under CI (CI=true), where
.ci/run installs both and a missing one fails the test."""
import base64
import importlib.util
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, run_cli

ROOT = Path(__file__).resolve().parent.parent
from eval.headless import Browser, find_chromium

ARTIFACT = ROOT / "artifacts" / "compare-browser.png"
WIDTH, HEIGHT = 640, 400          # the test image (a crop of kodim23): wider than the viewer below
VIEWPORT = (520, 700)


def _require(ok: bool, why: str):
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}; CI must run this test (.ci/run installs chromium and the test extra)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    src = folder / "parrots.png"
    Image.open(DATA / "kodim23.png").convert("RGB").crop((64, 60, 64 + WIDTH, 60 + HEIGHT)).save(src)
    out = folder / "report.html"
    r = run_cli("compare", src, "-o", out, "--quiet")  # the default level, where JPEG fits too
    assert r.returncode == 0, r.stderr.decode()
    return out


@pytest.fixture
def browser():
    chromium = find_chromium()
    _require(chromium is not None, "no chromium installed (apt-get install chromium)")
    _require(importlib.util.find_spec("websocket") is not None,
             "websocket-client is not installed (pip install -e '.[test]')")
    with Browser(chromium, *VIEWPORT) as b:
        yield b


def _embedded(html: str) -> dict[str, np.ndarray]:
    """codec -> the decoded pixels the page embeds for it."""
    found = re.findall(r"<img draggable=false data-codec='([^']*)' alt='[^']*' src='data:image/png;base64,([^']*)'>", html)
    return {codec: np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")) for codec, data in found}


def _show(b: Browser, left: str, right: str, split: int, zoom: bool):
    b.evaluate(f"""(() => {{
        const s = document.querySelector("section.comparison");
        const set = (el, v) => {{ el.value = v; el.dispatchEvent(new Event("input")); }};
        set(s.querySelector("select.left"), {left!r}); set(s.querySelector("select.right"), {right!r});
        set(s.querySelector("input.split"), {split});
        const z = s.querySelector("input.zoom");
        if (z.checked !== {str(zoom).lower()}) z.click();
        s.querySelector(".viewer").scrollIntoView();
        return true; }})()""")


def _view(b: Browser):
    """({v: the viewer's rect in the page, top: its top in the viewport, imgs: [x, y, width] of the
    images shown, in the viewer, split: the divider's x in the viewer}, the viewer's pixels)."""
    geo = b.evaluate("""(() => {
        const s = document.querySelector("section.comparison"), v = s.querySelector(".viewer").getBoundingClientRect();
        const shown = Array.from(s.querySelectorAll(".stage img")).filter(i => !i.hidden).map(i => i.getBoundingClientRect());
        const d = s.querySelector(".divider").getBoundingClientRect();
        return {v: {x: v.x + scrollX, y: v.y + scrollY, width: v.width, height: v.height}, top: v.y,
                imgs: shown.map(r => [r.x - v.x, r.y - v.y, r.width]), split: d.x + d.width / 2 - v.x}; })()""")
    shot = np.asarray(Image.open(io.BytesIO(b.screenshot(clip=geo["v"]))).convert("RGB"))
    return geo, shot


def _check_pixels(shot: np.ndarray, geo: dict, left: np.ndarray, right: np.ndarray):
    """At 1:1 the viewer shows `left` left of the split and `right` right of it, pixel for pixel
    (away from the divider line and the labels)."""
    ox, oy, _ = geo["imgs"][0]
    ox, oy = round(ox), round(oy)
    split = round(geo["split"])
    h, w = shot.shape[:2]
    rows = slice(30, h)  # below the labels
    for image, cols in ((left, range(0, split - 5)), (right, range(split + 5, w))):
        cols = np.array(cols)
        assert cols.size > 20, (split, w)
        shown = shot[rows][:, cols].astype(int)
        expected = image[np.arange(30, h) - oy][:, cols - ox].astype(int)
        assert np.abs(shown - expected).max() <= 1


def test_the_page_in_chromium(report, browser):
    b = browser
    b.open(report)
    assert b.evaluate("Promise.all(Array.from(document.images).map(i => i.decode())).then(() => true)")
    images = b.evaluate("Array.from(document.images).map(i => [i.dataset.codec, i.complete, i.naturalWidth, i.naturalHeight])")
    html = report.read_text()
    shown_rows = re.search(r"<table class=results>.*?</table>", html, re.S)[0].count("<tr><td>")  # not 'absent'
    assert [c for c, *_ in images][:2] == ["original", "pqcodec"] and "JPEG" in [c for c, *_ in images]
    assert len(images) == 1 + shown_rows
    assert all(complete and (w, h) == (WIDTH, HEIGHT) for _, complete, w, h in images), images
    pixels = _embedded(html)
    assert set(pixels) == {c for c, *_ in images}

    # 1:1: the original left of the split, JPEG right of it; moving the slider moves the boundary
    _show(b, "original", "JPEG", 300, zoom=True)
    geo1, shot1 = _view(b)
    assert geo1["imgs"][0] == geo1["imgs"][1] and geo1["imgs"][0][2] == WIDTH  # both at 1:1, in the same place
    _check_pixels(shot1, geo1, pixels["original"], pixels["JPEG"])
    _show(b, "original", "JPEG", 800, zoom=True)
    geo2, shot2 = _view(b)
    assert geo2["split"] > geo1["split"] + 200
    _check_pixels(shot2, geo2, pixels["original"], pixels["JPEG"])
    between = slice(round(geo1["split"]) + 5, round(geo2["split"]) - 5)
    assert np.abs(shot1[30:, between].astype(int) - shot2[30:, between]).mean() > 1  # the pixels there changed

    # dragging pans both images together, still pixel for pixel
    v = geo2["v"]
    x0, y0 = v["x"] + v["width"] / 2, geo2["top"] + 100
    b.drag(x0, y0, x0 + 50, y0)
    geo3, shot3 = _view(b)
    assert geo3["imgs"][0] == geo3["imgs"][1]
    assert round(geo3["imgs"][0][0] - geo2["imgs"][0][0]) == 50
    _check_pixels(shot3, geo3, pixels["original"], pixels["JPEG"])

    # fit mode: the whole image scaled into the viewer; a drag there moves the split
    _show(b, "pqcodec", "WebP" if "WebP" in pixels else "JPEG", 500, zoom=False)
    geo4, _ = _view(b)
    assert geo4["v"]["width"] < WIDTH and geo4["imgs"][0][2] == pytest.approx(geo4["v"]["width"], abs=1)
    v = geo4["v"]
    b.drag(v["x"] + 40, geo4["top"] + 100, v["x"] + 100, geo4["top"] + 100)
    assert b.evaluate("+document.querySelector('input.split').value") == pytest.approx(100 / v["width"] * 1000, abs=3)

    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_bytes(b.screenshot(full_page=True))
    assert b.errors == []
