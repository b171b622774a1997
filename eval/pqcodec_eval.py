"""pqcodec as an eval subject: code every image at one level, or at one size asked for (rate
control, --max-bytes / --bpp), rate from the file bytes."""
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .common import ROOT, image_key, load_rgb_images, quality_row, source_fingerprint
from .result_paths import output_location


def load(model_path: str | None):
    """(codec, identity): identity names the weights (SHA-256) and the code, for the result cache."""
    from pqcodec.zoo import DEFAULT_MODEL, ZOO, load_codec, load_custom_codec, sha256_of
    if model_path:
        codec = load_custom_codec(model_path)
        weights = sha256_of(Path(model_path))
    else:
        codec, weights = load_codec(DEFAULT_MODEL), ZOO[DEFAULT_MODEL].sha256
    return codec, dict(weights=weights, code=source_fingerprint(ROOT / "pqcodec"))


def whole_model(model_path: str | None):
    """The model with its float prior and head (a Codec's is coding-only): the weights file given,
    else the shipped default."""
    from pqcodec.model import PQCodecModel
    from pqcodec.zoo import load_model, models_dir
    return PQCodecModel.load(model_path, search=(models_dir(),)) if model_path else load_model()


def level_run(args, tool: str):
    """What a script coding the levels of a folder (args.folder, .model, .levels, .out, .tag) starts
    from: (images, codec, identity, levels, output folder); args.tag is filled in. No images: a
    one-line exit naming `tool`."""
    images = load_rgb_images(args.folder)
    if not images:
        raise SystemExit(f"{tool}: error: no images under {args.folder}")
    codec, identity = load(args.model)
    levels = args.levels or list(range(1, codec.num_levels() + 1))
    out, args.tag = output_location(args.out, args.tag, args.folder)
    return images, codec, identity, levels, out


def code_one(codec, rgb: np.ndarray, quality: int, steps: int, effort: int = 0) -> dict:
    """Rate and distortion from a real encode and decode, the prior's ideal bits, whether the
    decoded tokens equal the encoded ones, and coding times. effort: latent refinement steps."""
    t0 = time.perf_counter()
    data, stats = codec.encode_with_stats(rgb, quality, steps, effort=effort)
    t1 = time.perf_counter()
    header, tokens = codec.decode_tokens(data)
    rec = codec.render(header, tokens)
    t2 = time.perf_counter()
    return dict(quality_row(len(data), rgb, rec), bits_model=stats.bits_model, indices=stats.num_indices,
                header_bytes=stats.header_bytes, exact=bool(np.array_equal(tokens, stats.tokens)),
                encode_s=t1 - t0, decode_s=t2 - t1)


def run_level(codec, identity: dict, images, quality: int, steps: int, cache, effort: int = 0) -> list[dict]:
    """Per-image rows (image name added) at one quality level (and `effort`, refine.py)."""
    rows = []
    for name, rgb in tqdm(images, desc=f"pqcodec q{quality}" + (f" effort {effort}" if effort else ""), leave=False):
        key = dict(codec="pqcodec", **identity, quality=quality, steps=steps, image=image_key(rgb),
                   **({"effort": effort} if effort else {}))
        rows.append(dict(cache.get_or_compute(key, lambda: code_one(codec, rgb, quality, steps, effort)), image=name))
    return rows


def code_to_size(codec, rgb: np.ndarray, max_bytes: int | None, bpp: float | None, steps: int,
                 distortion: str = "latent") -> dict:
    """Rate control's file for a size asked for (ratecontrol.encode_to_size), decoded."""
    from pqcodec.ratecontrol import encode_to_size
    t0 = time.perf_counter()
    r = encode_to_size(codec, rgb, max_bytes=max_bytes, bpp=bpp, steps=steps, distortion=distortion)
    t1 = time.perf_counter()
    header, tokens = codec.decode_tokens(r.data)
    rec = codec.render(header, tokens)
    return dict(quality_row(len(r.data), rgb, rec), max_bytes=r.max_bytes, level=r.level, rd_lambda=r.rd_lambda,
                generated=header.generated is not None, mapped=header.mapped, encodes=r.encodes, encode_s=t1 - t0)


def run_size(codec, identity: dict, images, size: tuple[str, float], steps: int, cache,
             distortion: str = "latent") -> list[dict]:
    """Per-image rows at one size asked for: size ("max_bytes", N) or ("bpp", B); RDOQ's distortion."""
    kind, value = size
    rows = []
    for name, rgb in tqdm(images, desc=f"pqcodec {kind} {value:g}", leave=False):
        key = dict(codec="pqcodec-ratecontrol", **identity, **{kind: value}, steps=steps, image=image_key(rgb),
                   **({} if distortion == "latent" else {"distortion": distortion}))
        rows.append(dict(cache.get_or_compute(key, lambda: code_to_size(
            codec, rgb, int(value) if kind == "max_bytes" else None, value if kind == "bpp" else None, steps,
            distortion)), image=name))
    return rows
