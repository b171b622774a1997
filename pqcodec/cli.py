"""pqcodec command line: encode, decode, info. Errors are one line on stderr and a non-zero exit;
outputs are written to a temporary file beside the target and renamed into place, so a failed run
leaves nothing behind, and an existing output is only replaced with --force."""
import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

from .errors import PQCodecError

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


class CliError(Exception):
    pass


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    p = Path(name)
    if not p.exists():
        raise CliError(f"{name}: no such file")
    if not p.is_file():
        raise CliError(f"{name}: not a regular file")
    return p.read_bytes()


def _check_output(name: str, force: bool):
    """Fail before any work if the output cannot or may not be written."""
    if name == "-":
        return
    p = Path(name)
    if not p.parent.is_dir():
        raise CliError(f"{name}: folder {p.parent} does not exist")
    if p.is_dir():
        raise CliError(f"{name}: is a folder")
    if p.exists() and not force:
        raise CliError(f"{name}: exists (use --force to overwrite)")


def _write_output(name: str, data: bytes):
    if name == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    p = Path(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        os.unlink(tmp)
        raise


def _image_format(name: str) -> str:
    if name == "-":
        return "PNG"
    from PIL import Image
    ext = Path(name).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise CliError(f"{name}: unknown image extension {ext or '(none)'} (use .png for a lossless copy of the decoded image)")
    return fmt


def cmd_encode(args):
    import pqcodec
    _check_output(args.output, args.force)
    data = _read_input(args.input)
    out = pqcodec.encode(data, quality=args.quality, steps=args.steps, model=args.model)
    _write_output(args.output, out)


def cmd_decode(args):
    import pqcodec
    _check_output(args.output, args.force)
    fmt = _image_format(args.output)
    img = pqcodec.decode(_read_input(args.input), model=args.model)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    _write_output(args.output, buf.getvalue())


def cmd_info(args):
    from .container import unpack
    from .zoo import ZOO
    data = _read_input(args.input)
    h, payload = unpack(data)
    model = ZOO[h.model_id].name if h.model_id in ZOO else ("weights given by path" if h.model_id == 0 else "unknown")
    rows = [("model", f"{h.model_id} ({model})"), ("image", f"{h.width} x {h.height}" + (" greyscale" if h.greyscale else " RGB")),
            ("quality", f"{h.active} (sub-quantizers in use)"), ("steps", str(h.steps)),
            ("file bytes", f"{len(data)} (header {len(data) - len(payload)}, payload {len(payload)})"),
            ("bpp", f"{8 * len(data) / (h.width * h.height):.4f}"), ("token crc32", f"{h.checksum:08x}")]
    for k, v in rows:
        print(f"{k:12} {v}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .codec import DEFAULT_STEPS
    p = argparse.ArgumentParser(prog="pqcodec", description="Learned image codec: product-quantized "
                                "autoencoder + masked-image-modeling prior + range coding.")
    p.add_argument("--version", action="version", version=f"pqcodec {__version__}")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="compress an image into a .bin file")
    e.add_argument("input", help="image file (PNG, JPEG, WebP, ...) or - for stdin")
    e.add_argument("-o", "--output", required=True, help=".bin file, or - for stdout")
    e.add_argument("-q", "--quality", type=int, help="1 (smallest file) .. the model's levels; default: the model's default")
    e.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"coding steps per window (default {DEFAULT_STEPS})")
    e.add_argument("--model", help="weights file outside the shipped zoo (research use; decode needs it too)")
    e.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    e.set_defaults(run=cmd_encode)
    d = sub.add_parser("decode", help="decompress a .bin file into an image")
    d.add_argument("input", help=".bin file or - for stdin")
    d.add_argument("-o", "--output", required=True, help="image file (format from its extension; .png advised), or - for PNG on stdout")
    d.add_argument("--model", help="weights file, for files made with --model")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    d.set_defaults(run=cmd_decode)
    i = sub.add_parser("info", help="print a .bin file's header fields, size and bpp")
    i.add_argument("input", help=".bin file or - for stdin")
    i.set_defaults(run=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        args.run(args)
    except (CliError, PQCodecError) as e:
        print(f"pqcodec: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"pqcodec: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pqcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
