"""pqcodec command line: encode, decode, info. Errors are one line on stderr and a non-zero exit;
outputs are written to a temporary file beside the target and renamed into place, so a failed run
leaves nothing behind, and an existing output is only replaced with --force."""
import argparse
import os
import sys
from pathlib import Path

from .errors import PQCodecError
from .files import read_coded_file, write_atomic

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


class CliError(Exception):
    pass


def _read_input(name: str, coded: bool = False) -> bytes:
    """The whole input. coded: a .bin file, refused unread when longer than any pqcodec file can be."""
    if name == "-":
        return read_coded_file(sys.stdin.buffer) if coded else sys.stdin.buffer.read()
    p = Path(name)
    if not p.exists():
        raise CliError(f"{name}: no such file")
    if not p.is_file():
        raise CliError(f"{name}: not a regular file")
    return read_coded_file(p) if coded else p.read_bytes()


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
    write_atomic(Path(name), data)


def _image_format(name: str) -> str:
    if name == "-":
        return "PNG"
    from PIL import Image
    ext = Path(name).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise CliError(f"{name}: unknown image extension {ext or '(none)'} (use .png for a lossless copy of the decoded image)")
    return fmt


def _run_folder(args, decode: bool) -> int:
    from . import batch
    src, dst = Path(args.input), Path(args.output)
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.output == "-" or (dst.exists() and not dst.is_dir()):
        raise CliError(f"{args.output}: the output of a folder must be a folder")
    if not dst.parent.is_dir():
        raise CliError(f"{args.output}: folder {dst.parent} does not exist")
    if not batch.plan(src, dst, decode):
        raise CliError(f"{args.input}: no {'.bin files' if decode else 'images'} in this folder")
    dst.mkdir(exist_ok=True)
    options = dict(model=args.model, quality=getattr(args, "quality", None), steps=getattr(args, "steps", None))
    report = batch.run(src, dst, decode, options, args.workers, args.force, progress=not args.quiet)
    batch.print_report(report)
    return EXIT_ERROR if report.failed else 0


def cmd_encode(args):
    import pqcodec
    if Path(args.input).is_dir():
        return _run_folder(args, decode=False)
    _check_output(args.output, args.force)
    data = _read_input(args.input)
    out = pqcodec.encode(data, quality=args.quality, steps=args.steps, model=args.model)
    _write_output(args.output, out)


def cmd_decode(args):
    import pqcodec
    if Path(args.input).is_dir():
        return _run_folder(args, decode=True)
    _check_output(args.output, args.force)
    fmt = _image_format(args.output)
    from .image import image_bytes
    img = pqcodec.decode(_read_input(args.input, coded=True), model=args.model)
    _write_output(args.output, image_bytes(img, fmt))


def cmd_info(args):
    from .bitstream import unpack
    from .zoo import describe_model
    data = _read_input(args.input, coded=True)
    h, payload = unpack(data)
    rows = [("model", f"{h.model_hash.hex()} ({describe_model(h.model_hash)})"),
            ("image", f"{h.width} x {h.height}" + (" greyscale" if h.greyscale else " RGB")),
            ("sub-quantizers", f"{h.active} in use (set by the quality level)"), ("steps", str(h.steps)),
            ("file bytes", f"{len(data)} (header {len(data) - len(payload)}, payload {len(payload)})"),
            ("bpp", f"{8 * len(data) / (h.width * h.height):.4f}"), ("token crc32", f"{h.checksum:08x}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:{width}}  {v}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .codec import DEFAULT_STEPS
    p = argparse.ArgumentParser(prog="pqcodec", description="Learned image codec: product-quantized "
                                "autoencoder + masked-image-modeling prior + range coding.")
    p.add_argument("--version", action="version", version=f"pqcodec {__version__}")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="compress an image into a .bin file")
    e.add_argument("input", help="image file (PNG, JPEG, WebP, ...), - for stdin, or a folder of images")
    e.add_argument("-o", "--output", required=True, help=".bin file, - for stdout, or for a folder input an output folder")
    e.add_argument("-q", "--quality", type=int, help="1 (smallest file) .. the model's levels; default: the model's default")
    e.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"coding steps per window (default {DEFAULT_STEPS})")
    e.add_argument("--model", help="weights file outside the shipped zoo (research use; decode needs it too)")
    e.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    e.set_defaults(run=cmd_encode)
    d = sub.add_parser("decode", help="decompress a .bin file into an image")
    d.add_argument("input", help=".bin file, - for stdin, or a folder of .bin files")
    d.add_argument("-o", "--output", required=True, help="image file (format from its extension; .png advised), "
                   "- for PNG on stdout, or for a folder input an output folder (PNG files)")
    d.add_argument("--model", help="weights file, for files made with --model")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    d.set_defaults(run=cmd_decode)
    for sp in (e, d):
        sp.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 1,
                        help="folders: worker processes (default: one per CPU core)")
        sp.add_argument("--quiet", action="store_true", help="folders: no progress bar")
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
        status = args.run(args)
    except (CliError, PQCodecError) as e:
        print(f"pqcodec: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"pqcodec: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pqcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
