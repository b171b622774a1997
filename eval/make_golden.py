#!/usr/bin/env python3
"""Write the golden files: small .bin files of the shipped default model, every level, one image
of two window chunks (so a chunk check is in the stream), a greyscale one and one with another step
count, with their token CRC and the SHA-256 of their decoded pixels, into tests/data/golden/.
tests/test_golden.py decodes them on every test run, so no change can silently break files that
exist. Run it once per format version and shipped model (the files of earlier versions stay,
for the release that reads them; a model's files go in a folder of its name, except those of the
version's first model, and golden.json keeps the other models' entries):

    python eval/make_golden.py                            # the default model
    python eval/make_golden.py --model pq-s8-m12k256-v4   # a named one
"""
import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

import pqcodec
from pqcodec import bitstream

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "kodim23.png"


def sources() -> dict[str, tuple[np.ndarray, list[int], int]]:
    """name -> (image, levels, steps)"""
    rgb = np.asarray(Image.open(SOURCE).convert("RGB"))
    wide = np.concatenate([rgb, rgb[:, ::-1]], axis=1)[:384, :1408]     # 11 x 3 windows: 2 chunks
    grey = np.asarray(Image.fromarray(rgb[200:264, 300:364]).convert("L"))
    return {"kodim23-96x160": (rgb[128:224, 256:416], [1, 2, 3, 4, 5], pqcodec.DEFAULT_STEPS),
            "kodim23-1408x384": (wide, [1], pqcodec.DEFAULT_STEPS),
            "kodim23-grey-64x64": (grey, [2], pqcodec.DEFAULT_STEPS),
            "kodim23-96x160-steps5": (rgb[128:224, 256:416], [3], 5)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "golden"))
    ap.add_argument("--model", default=pqcodec.DEFAULT_MODEL, help="a shipped model's name")
    args = ap.parse_args()
    out = Path(args.out) / f"v{bitstream.FORMAT_VERSION}"
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "golden.json").read_text())["files"] if (out / "golden.json").exists() else []
    entries = [e for e in old if e["model"] != args.model]
    sub = f"{args.model}/" if entries else ""  # the version's first model keeps the top folder
    (out / sub).mkdir(exist_ok=True)
    codec = pqcodec.load_codec(args.model)
    for name, (img, levels, steps) in sources().items():
        for q in levels:
            data = codec.encode(img, q, steps)
            header, tokens = codec.decode_tokens(data)
            pixels = np.asarray(codec.decode(data))
            fname = f"{sub}{name}-q{q}.bin"
            (out / fname).write_bytes(data)
            entries.append({"file": fname, "model": args.model, "pqcodec": pqcodec.__version__, "quality": q, "steps": steps,
                            "width": header.width, "height": header.height, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(), "token_crc32": f"{header.checksum:08x}",
                            "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
                            "pixels_shape": list(pixels.shape)})
            print(f"{fname}: {len(data)} bytes")
    import torch
    first = json.loads((out / "golden.json").read_text())["pqcodec"] if old else pqcodec.__version__
    meta = {"format_version": bitstream.FORMAT_VERSION, "pqcodec": first,  # the release of the first files
            "pixels_cpu_capability": torch.backends.cpu.get_cpu_capability(), "files": entries}
    (out / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(entries)} files and golden.json to {out}")


if __name__ == "__main__":
    main()
