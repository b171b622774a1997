"""The HTML page of `pqcodec compare`: one self-contained file (images as PNG data URIs, inline CSS
and a few KB of plain JavaScript; nothing is fetched), with an index of the images and, per image, a
split slider between any two of its decoded versions (or the original), a 1:1 zoom that pans both,
and the table of bytes, bpp, PSNR, MS-SSIM and times."""
import base64
import html
import math

from .compare import PILLOW_CODECS, Comparison, CodecResult, png_bytes

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-top:1px solid #ccc;padding-top:1em}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.6em 0}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
td:first-child,th:first-child,td.note,th:last-child{text-align:left}td.note{white-space:normal}tr.absent td{color:#999}td.note{font-size:.9em;color:#555}
.controls{display:flex;flex-wrap:wrap;gap:.4em 1em;align-items:center;margin:.5em 0}
.controls input[type=range]{flex:1;min-width:200px}
.viewer{position:relative;overflow:hidden;background:#777;cursor:ew-resize;user-select:none;touch-action:none}
.viewer.zoomed{cursor:grab}
.stage{position:absolute;left:0;top:0;transform-origin:0 0}
.stage img{position:absolute;left:0;top:0;max-width:none;image-rendering:pixelated}
.stage img.right{z-index:1}
.divider{position:absolute;top:0;bottom:0;width:2px;margin-left:-1px;background:#fff;z-index:2;pointer-events:none;
box-shadow:0 0 3px #000}
.tag{position:absolute;top:6px;z-index:3;background:rgba(0,0,0,.6);color:#fff;padding:1px 6px;font-size:12px;pointer-events:none}
.tag.l{left:6px}.tag.r{right:6px}
"""

# One function per section: layout (fit or 1:1), draw (which two images, where the split is),
# and pointer handling (drag in fit mode moves the split, in 1:1 mode pans both images).
JS = """
"use strict";
function setupComparison(sec) {
  const viewer = sec.querySelector(".viewer"), stage = sec.querySelector(".stage");
  const imgs = Array.from(stage.querySelectorAll("img"));
  const left = sec.querySelector("select.left"), right = sec.querySelector("select.right");
  const split = sec.querySelector("input.split"), zoom = sec.querySelector("input.zoom");
  const divider = sec.querySelector(".divider"), tagL = sec.querySelector(".tag.l"), tagR = sec.querySelector(".tag.r");
  const W = +viewer.dataset.width, H = +viewer.dataset.height;
  let scale = 1, ox = 0, oy = 0, drag = null;
  function clampPan() {
    const vw = viewer.clientWidth, vh = viewer.clientHeight;
    ox = W * scale <= vw ? 0 : Math.min(0, Math.max(vw - W * scale, ox));
    oy = H * scale <= vh ? 0 : Math.min(0, Math.max(vh - H * scale, oy));
  }
  function layout(recentre) {  // recentre: on switching to 1:1, its centre; on a resize, keep the pan
    const vw = viewer.clientWidth;
    if (zoom.checked) {
      scale = 1;
      viewer.style.height = Math.min(H, Math.max(200, Math.round(window.innerHeight * 0.7))) + "px";
      if (recentre) { ox = Math.round((vw - W) / 2); oy = Math.round((viewer.clientHeight - H) / 2); }
    } else {
      scale = Math.min(1, vw / W); ox = 0; oy = 0;
      viewer.style.height = Math.round(H * scale) + "px";
    }
    viewer.classList.toggle("zoomed", zoom.checked);
    clampPan(); draw();
  }
  function draw() {
    stage.style.transform = "translate(" + ox + "px," + oy + "px) scale(" + scale + ")";
    const x = split.value / 1000 * Math.min(viewer.clientWidth, ox + W * scale);
    for (const im of imgs) {
      const isLeft = im.dataset.codec === left.value, isRight = im.dataset.codec === right.value;
      im.hidden = !isLeft && !isRight;
      im.classList.toggle("right", isRight);
      im.style.clipPath = isRight ? "inset(0 0 0 " + Math.max(0, (x - ox) / scale) + "px)" : "none";
    }
    divider.style.left = x + "px";
    tagL.textContent = left.options[left.selectedIndex].text;
    tagR.textContent = right.options[right.selectedIndex].text;
  }
  function splitAt(clientX) {
    const r = viewer.getBoundingClientRect(), w = Math.min(r.width, ox + W * scale);
    split.value = Math.round(Math.max(0, Math.min(1, (clientX - r.left) / w)) * 1000);
    draw();
  }
  viewer.addEventListener("pointerdown", e => {
    e.preventDefault();  // no native drag of the image
    viewer.setPointerCapture(e.pointerId);
    drag = {x: e.clientX, y: e.clientY, ox: ox, oy: oy};
    if (!zoom.checked) splitAt(e.clientX);
  });
  viewer.addEventListener("pointermove", e => {
    if (!drag) return;
    if (zoom.checked) { ox = drag.ox + e.clientX - drag.x; oy = drag.oy + e.clientY - drag.y; clampPan(); draw(); }
    else splitAt(e.clientX);
  });
  viewer.addEventListener("pointerup", () => { drag = null; });
  viewer.addEventListener("pointercancel", () => { drag = null; });
  for (const el of [left, right, split]) el.addEventListener("input", draw);
  zoom.addEventListener("change", () => layout(true));
  window.addEventListener("resize", () => layout(false));
  layout(true);
}
document.querySelectorAll("section.comparison").forEach(setupComparison);
"""


def render(comparisons: list[Comparison], title: str, how: str) -> str:
    """The whole page. how: a paragraph on how pqcodec's size was set (the same for every image)."""
    parts = [f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body>\n<h1>{_e(title)}</h1>\n", _method(how)]
    if len(comparisons) > 1:
        parts.append(_index(comparisons))
    for i, c in enumerate(comparisons):
        parts.append(_section(c, f"image-{i + 1}"))
    parts.append(f"<script>{JS}</script>\n</body></html>\n")
    return "".join(parts)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _method(how: str) -> str:
    codecs = ", ".join(f"{pc.name} ({', '.join(f'{k}={v}' for k, v in pc.options)})" for pc in PILLOW_CODECS)
    return ("<p class=method><b>How the sizes were matched.</b> " + _e(how) + " The byte count of pqcodec's file is "
            f"then the budget of every other codec: {_e(codecs)}, each written by Pillow at the highest quality "
            "setting (by bisection over its settings) whose file is at most that many bytes, so no codec gets more "
            "bytes than pqcodec; a codec that cannot get that small is listed with its smallest file and not shown. "
            "Rate from file bytes; PSNR (RGB) and MS-SSIM (RGB, n/a under 161 px a side) against the input; "
            "times of one encode at the chosen setting (pqcodec by size: the whole rate-control search) and one "
            "decode, on this machine. The pictures are the decoded pixels, embedded losslessly as PNG.</p>\n")


def _index(comparisons: list[Comparison]) -> str:
    rows = "".join(f"<tr><td><a href='#image-{i + 1}'>{_e(c.name)}</a></td><td>{c.width}×{c.height}</td>"
                   f"<td>{c.budget}</td><td>{c.bpp(c.budget):.4f}</td><td>{_num(c.rows[0].psnr, 2)}</td></tr>"
                   for i, c in enumerate(comparisons))
    return ("<h2>Images</h2><table class=index><tr><th>image</th><th>size</th><th>pqcodec bytes</th><th>bpp</th>"
            f"<th>pqcodec PSNR</th></tr>{rows}</table>\n")


def _section(c: Comparison, anchor: str) -> str:
    shown = [r for r in c.rows if r.shown]
    choices = [("original", "original")] + [(r.codec, f"{r.codec} · {r.num_bytes} B") for r in shown]
    default_right = next((r.codec for r in shown if not r.is_pqcodec), "original")

    def select(cls: str, chosen: str) -> str:
        opts = "".join(f"<option value='{_e(v)}'{' selected' if v == chosen else ''}>{_e(t)}</option>"
                       for v, t in choices)
        return f"<label>{cls} <select class={cls}>{opts}</select></label>"

    images = [_img("original", c.original, c.name)] + [_img(r.codec, r.decoded, c.name) for r in shown]
    return (f"<section class=comparison id={anchor}><h2>{_e(c.name)} <small>{c.width}×{c.height}</small></h2>\n"
            f"<p>pqcodec at {_e(c.pqcodec_request)}: {c.budget} bytes; every other codec in at most {c.budget} bytes.</p>\n"
            f"<div class=controls>{select('left', c.rows[0].codec)}{select('right', default_right)}"
            "<input type=range class=split min=0 max=1000 value=500 aria-label='split position'>"
            "<label><input type=checkbox class=zoom> 1:1 zoom (drag to pan)</label></div>\n"
            f"<div class=viewer data-width={c.width} data-height={c.height} style='max-width:{c.width}px'><div class=stage>{''.join(images)}</div>"
            "<div class=divider></div><span class='tag l'></span><span class='tag r'></span></div>\n"
            f"{_table(c)}</section>\n")


def _img(codec: str, img, name: str) -> str:
    data = base64.b64encode(png_bytes(img)).decode("ascii")
    return f"<img draggable=false data-codec='{_e(codec)}' alt='{_e(name)}: {_e(codec)}' src='data:image/png;base64,{data}'>"


def _table(c: Comparison) -> str:
    head = ("<tr><th>codec</th><th>setting</th><th>bytes</th><th>bpp</th><th>PSNR dB</th><th>MS-SSIM</th>"
            "<th>MS-SSIM dB</th><th>encode s</th><th>decode s</th><th>size against pqcodec</th></tr>")
    return f"<div class=scroll><table class=results>{head}{''.join(_row(c, r) for r in c.rows)}</table></div>\n"


def _row(c: Comparison, r: CodecResult) -> str:
    size = "" if r.num_bytes is None else str(r.num_bytes)
    bpp = "" if r.num_bytes is None else f"{c.bpp(r.num_bytes):.4f}"
    cells = [r.codec, r.setting, size, bpp, _num(r.psnr, 2), _num(r.ms_ssim, 4), _num(_ms_ssim_db(r.ms_ssim), 2),
             _num(r.encode_s, 3), _num(r.decode_s, 3)]
    cls = "" if r.shown else " class=absent"
    return f"<tr{cls}>{''.join(f'<td>{_e(v)}</td>' for v in cells)}<td class=note>{_e(r.note)}</td></tr>"


def _ms_ssim_db(value):
    if value is None:
        return None
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


def _num(value, digits: int) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"
