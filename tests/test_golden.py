"""Golden files (eval/make_golden.py): files each format version this pqcodec writes (3: plain, 4:
generated, 5: mapped, 6: all three of a model with a conditional head, 7: all three with flat
blocks) made with each shipped model decode to the recorded tokens, exactly, on any machine, and
re-encoding their tokens gives back their bytes; their decoded pixels stay within a bound of the
reference stored beside each file (eval/golden_pixels.py: the synthesis transform is float, and
another CPU's kernels move a value by a level here and there). A change that breaks existing files
fails here; it needs a new format version (bitstream.py)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pqcodec import bitstream
from pqcodec.coding import layout

from eval import golden_pixels

GOLDEN = Path(__file__).parent / "data" / "golden"
VERSIONS = (bitstream.PLAIN_VERSION, bitstream.GENERATED_VERSION, bitstream.MAPPED_VERSION, bitstream.CONDITIONAL_VERSION,
            bitstream.FLAT_VERSION)
META = {v: json.loads((GOLDEN / f"v{v}" / "golden.json").read_text()) for v in VERSIONS}
ENTRIES = [dict(e, version=v) for v in VERSIONS for e in META[v]["files"]]


def _codec(entry):
    from pqcodec.zoo import load_codec
    return load_codec(entry["model"])


PLAIN_SETS = sorted({(e["model"], e["version"]) for e in ENTRIES if not e.get("generated") and "window_levels" not in e})


@pytest.mark.parametrize("model, version", PLAIN_SETS)
def test_golden_files_cover_every_level_and_a_chunk_check(model, version):
    from pqcodec.zoo import DEFAULT_MODEL, load_codec
    entries = [e for e in ENTRIES if e["model"] == model and e["version"] == version
               and not e.get("generated") and "window_levels" not in e]
    assert {e["quality"] for e in entries} == set(range(1, load_codec(model).num_levels() + 1))
    windows = [-(-e["width"] // 128) * -(-e["height"] // 128) for e in entries]
    assert max(windows) > layout.WINDOW_CHUNK
    assert DEFAULT_MODEL in {e["model"] for e in ENTRIES}




@pytest.mark.parametrize("version", [bitstream.GENERATED_VERSION, bitstream.CONDITIONAL_VERSION, bitstream.FLAT_VERSION])
def test_generated_golden_files_cover_every_sampler_and_a_chunk_check(version):
    generated = [e["generated"] for e in ENTRIES if e["version"] == version and e.get("generated")]
    assert {g["sharpen"] for g in generated if g["sent"] < 12} >= {0, 1, 2}
    assert any(g["sent"] == 0 for g in generated) and any(g["sent"] == 12 for g in generated)
    assert max(-(-g["grid_height"] // 16) * -(-g["grid_width"] // 16) for g in generated if g["sent"] < 12) > layout.WINDOW_CHUNK


@pytest.mark.parametrize("version", [bitstream.MAPPED_VERSION, bitstream.CONDITIONAL_VERSION, bitstream.FLAT_VERSION])
def test_mapped_golden_files_cover_rate_control_groups_of_several_chunks_and_skipped_levels(version):
    mapped = [e for e in ENTRIES if e["version"] == version and "window_levels" in e]
    assert any("max15000" in e["file"] for e in mapped)          # what rate control writes
    groups = [np.unique(e["window_levels"], return_counts=True) for e in mapped]
    assert any(len(levels) >= 3 for levels, _ in groups)
    assert any(len(levels) >= 2 and counts.max() > layout.WINDOW_CHUNK for levels, counts in groups)
    assert any(np.diff(levels).max() > 1 for levels, _ in groups if len(levels) > 1)   # a map that skips levels


@pytest.mark.parametrize("entry", ENTRIES, ids=[f'v{e["version"]}/{e["file"]}' for e in ENTRIES])
def test_golden_file_decodes_as_recorded(entry):
    codec = _codec(entry)
    data = (GOLDEN / f'v{entry["version"]}' / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], "the golden file itself changed"
    header, tokens = codec.decode_tokens(data)
    assert f"{layout.token_checksum(tokens):08x}" == entry["token_crc32"]
    assert codec.encode_tokens(tokens, header.height, header.width, header.greyscale, header.steps, header.generated,
                               header.flat) == data
    pixels = np.asarray(codec.decode(data))
    assert list(pixels.shape) == entry["pixels_shape"]
    # the synthesis transform is float: its pixels are pinned by a bound, on every machine (measured
    # across kernel families and thread counts: at most 1 level, in at most 50 values of a file; the
    # bounds and their margin: eval/golden_pixels.py); the tokens and bytes above are pinned exactly
    assert entry["pixels_reference"] == golden_pixels.reference_name(entry["file"])
    values, mask = golden_pixels.read_reference(GOLDEN / f'v{entry["version"]}' / entry["pixels_reference"])
    assert mask.mean() >= 0.06, "the reference samples too little of the image"
    c = golden_pixels.compare(pixels, values, mask)
    assert golden_pixels.within_bounds(c), (
        f"decoded pixels moved from the reference: max |diff| {c['max_abs']} (bound {golden_pixels.MAX_ABS_DIFF}), "
        f"{c['differing']} of {c['compared']} values differ (bound {golden_pixels.allowed_differing(c['compared'])}), "
        f"the largest at {c['worst_at']}")


def test_pixel_bounds_catch_a_changed_decoder():
    """The bound is not vacuous: a reference against pixels one level off everywhere, or a few levels
    off in one window, fails it; pixels one level off in a few places (another CPU's kernels) pass."""
    entry = next(e for e in ENTRIES if golden_pixels.sample_mask(*e["pixels_shape"][:2]) is not None)
    values, mask = golden_pixels.read_reference(GOLDEN / f'v{entry["version"]}' / entry["pixels_reference"])
    assert 0.06 <= mask.mean() < 0.1
    assert golden_pixels.within_bounds(golden_pixels.compare(values, values, mask))
    few = values.copy()
    ys, xs = np.nonzero(mask)
    few[ys[::5000], xs[::5000]] ^= 1                     # a level in a few sampled places
    assert golden_pixels.within_bounds(golden_pixels.compare(few, values, mask))
    everywhere = np.clip(values.astype(np.int16) + 1, 0, 255).astype(np.uint8)
    assert not golden_pixels.within_bounds(golden_pixels.compare(everywhere, values, mask))
    window = values.copy()
    window[100:140, 100:140] = np.clip(window[100:140, 100:140].astype(np.int16) + 6, 0, 255)
    assert not golden_pixels.within_bounds(golden_pixels.compare(window, values, mask))
