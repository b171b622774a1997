"""pqcodec command line: encode, decode, info, compare; docs/cli.md states its guarantees.

Errors are one line on stderr that names the file ('stdin' for standard input), and a non-zero
exit: 1 for bad input or a failed write (a full disk), 2 for a bad command line (argparse's, and
UsageError: what the command line asks for cannot be done whatever the files), 130 after Ctrl-C,
141 when stdout's reader went away, 143 after SIGTERM; an unexpected error is one line too
('internal error'), its traceback behind --debug or PQCODEC_DEBUG=1. What can be checked is checked
before the work: the output's folder and whether it may be replaced, the output format, whether it
keeps the decoded pixels (a lossy or palette format only with --lossy-output) and whether it holds
the image, the quality level. Outputs are written by files.write_atomic: complete or not at all,
never over an existing file without --force; stdout by files.write_all: every byte, or an error.
"""
import argparse
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import PQCodecError
from .files import (check_folder_of, check_output, check_writable_folder, read_image_stream, write_all,
                    write_atomic)
from .jobs import CodingOptions, decode_image, details, encode_image, failure_line, folded_warnings, is_internal
from .request import EncodeRequest, RequestError
from .stopping import (EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, Terminated,
                       sigterm_raises, stop_status)
from .words import counted


class CliError(Exception):
    """A one-line message that names its file; `details` (a traceback) is shown with --debug."""

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details


class UsageError(CliError):
    """A bad command line found after parsing (a value out of the model's range, options that do not
    go together, an output named for what the command does not write): exit status 2, as argparse's."""


# -- inputs and outputs -----------------------------------------------------------------------------
def _display_name(name: str) -> str:
    return "stdin" if name == "-" else name


def _check_stream(fd: int, name: str, purpose: str):
    """Fails unless standard input or output (`fd`) is open, and not a terminal: pqcodec reads and
    writes binary data there."""
    try:
        os.fstat(fd)
    except OSError:
        raise CliError(f"{name}: is closed ({purpose})") from None
    if os.isatty(fd):
        raise CliError(f"{name}: is a terminal; pqcodec reads and writes binary data there ({purpose})")


def _image_source(name: str):
    """What to encode: the path of an image file, or the bytes of stdin (read bounded: Pillow would
    read a stream it cannot seek in whole)."""
    if name != "-":
        return Path(name)
    _check_stream(0, "stdin", "pipe an image in, or name a file")
    return read_image_stream(sys.stdin.buffer)


def _coded_source(name: str):
    """Where a .bin file comes from: its path, or stdin (both read bounded, sources.coded_input)."""
    if name != "-":
        return Path(name)
    _check_stream(0, "stdin", "pipe a .bin file in, or name a file")
    return sys.stdin.buffer


def _check_output(name: str, force: bool, input_name: str):
    """Before any work: the output can be written, and may be (files.check_output)."""
    if name == "-":
        _check_stream(1, "stdout", "redirect it to a file or a pipe, or give -o FILE")
        return
    check_output(Path(name), force, inputs=[] if input_name == "-" else [Path(input_name)])


def _write_output(name: str, data: bytes, force: bool, input_name: str):
    if name == "-":
        _write_stdout(data)
        return
    write_atomic(Path(name), data, force, inputs=[] if input_name == "-" else [Path(input_name)])


def _write_stdout(data: bytes):
    """Every byte of `data` to stdout, after what print() holds (_writing_stdout: its errors)."""
    with _writing_stdout():
        sys.stdout.flush()
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, ValueError, OSError):  # an in-memory stream in its place (tests)
            sys.stdout.buffer.write(data)
            return
        write_all(fd, data)


def _print_stdout(text: str):
    with _writing_stdout():
        sys.stdout.write(text)


@contextmanager
def _writing_stdout():
    """Within: a failed write to stdout (a full disk) becomes a CliError naming stdout, and stdout
    then leads nowhere, so that what it still holds is not tried again at exit (Python would print
    "Exception ignored ..."); a reader that went away stays a BrokenPipeError (main: status 141)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        _silence_stdout()
        raise CliError(f"stdout: cannot write it ({e.strerror or e})") from None


def _silence_stdout():
    """After a failed write to stdout (EPIPE, a full disk): it leads to /dev/null from now on, so
    that flushing what it still holds at exit raises nothing more (as the Python docs advise)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, 1)
    except OSError:
        pass
    finally:
        os.close(devnull)


@contextmanager
def _about(name: str, debug: bool):
    """Work on the file `name`: any error becomes a CliError naming it; Pillow's warnings become
    one line naming it."""
    lines = []
    try:
        with folded_warnings(lines, show_others=debug):
            yield
    except CliError:
        raise
    except BrokenPipeError:
        raise
    except Exception as e:
        raise CliError(failure_line(name, e), details(e) if is_internal(e) else None) from None
    finally:
        for line in lines:
            print(f"pqcodec: warning: {name}: {line}", file=sys.stderr)


# -- the model's levels, for --quality -------------------------------------------------------------
def _model_path(model: str | None) -> Path:
    from .zoo import DEFAULT_MODEL, ZOO, models_dir
    return Path(model) if model else models_dir() / ZOO[DEFAULT_MODEL].filename


def _model_levels(model: str | None) -> int | None:
    """How many quality levels the weights file has (read from its header), or None when it cannot
    be read here (the coder then says why)."""
    from safetensors import safe_open
    from .config import ModelConfig
    try:
        with safe_open(str(_model_path(model)), "numpy") as f:
            return len(ModelConfig.from_json(f.metadata()["config"]).active_levels)
    except Exception:  # missing or not a weights file: the coder reports it, naming the file
        return None


def _quality_help() -> str:
    from .zoo import DEFAULT_MODEL, ZOO
    levels = _model_levels(None)
    top = levels if levels else "the model's levels"
    return (f"quality level, 1 (smallest file) .. {top}; default {ZOO[DEFAULT_MODEL].default_level} "
            f"(shipped model {DEFAULT_MODEL}; a --model has its own levels)")


def _check_model_args(args):
    """--model names a file; --quality is one of the model's levels."""
    if args.model and not Path(args.model).is_file():
        raise CliError(f"{args.model}: no such weights file (--model)")
    quality = getattr(args, "quality", None)
    levels = _model_levels(args.model) if quality is not None else None
    if levels and not 1 <= quality <= levels:
        raise UsageError(f"--quality {quality}: this model's levels are 1..{levels}")


def _device(args) -> str:
    """--device resolved (devices.py): once for the run, so a folder's workers all get the same one."""
    from .devices import resolve_device
    return resolve_device(getattr(args, "device", None))


def _options(args) -> CodingOptions:
    return CodingOptions(model=args.model, request=_request(args), decoder=getattr(args, "decoder", None) or "mse",
                         device=_device(args))


def _request(args) -> EncodeRequest:
    """The encode request of the command line (request.py), its options checked together: a UsageError
    names them as flags."""
    request = EncodeRequest(quality=getattr(args, "quality", None), max_bytes=getattr(args, "max_bytes", None),
                            bpp=getattr(args, "bpp", None), steps=getattr(args, "steps", None),
                            effort=getattr(args, "effort", 0), generative=getattr(args, "generative", False),
                            flat=not getattr(args, "no_flat", False))
    try:
        return request.check(lambda field: "--" + field.replace("_", "-"))
    except RequestError as e:
        raise UsageError(str(e)) from None


# -- commands --------------------------------------------------------------------------------------
def _run_folder(args, decode: bool) -> int:
    from . import batch
    src, dst = Path(args.input), Path(args.output)
    if args.output == "-" or (dst.exists() and not dst.is_dir()):
        raise CliError(f"{args.output}: the output of a folder must be a folder")
    _check_output_folder(dst)
    _check_model_args(args)
    plan = _plan_with_work(args, batch.plan(src, dst, decode), decode)
    options = _options(args)  # a device that is not there fails before the folder is made
    dst.mkdir(exist_ok=True)
    report = batch.run(plan, decode, options, args.workers or os.cpu_count() or 1, args.force, progress=not args.quiet,
                       threads=args.threads, debug=args.debug)
    batch.print_report(report, debug=args.debug)
    return _run_status(report)


def _check_output_folder(dst: Path):
    """A folder run's output folder: writable where it exists, else one that can be made."""
    if dst.is_dir():
        check_writable_folder(dst, f"{dst}: ")
    else:
        check_folder_of(dst)


def _plan_with_work(args, plan, decode: bool):
    """The plan of a folder run, or CliError when the input holds nothing to code."""
    if not plan.jobs and not plan.failed:
        ignored = f" ({plan.ignored} other files ignored)" if plan.ignored else ""
        raise CliError(f"{args.input}: no {'.bin files' if decode else 'images'} in this folder{ignored}")
    return plan


def _run_status(report) -> int:
    """A folder run's exit status: the stop's, 1 when an input failed, else 0."""
    if report.stopped is not None:
        return stop_status(report.stopped)
    return EXIT_ERROR if report.failed else 0


def _run_ray(args, decode: bool) -> int:
    """`--ray [ADDRESS]`: a folder or a URI coded on Ray (bulk.py), into an output folder named as in
    folder mode."""
    from . import bulk
    if not (Path(args.input).is_dir() or bulk.is_uri(args.input)):
        what = "no such folder" if not Path(args.input).exists() else "not a folder"
        raise UsageError(f"{args.input}: {what}; --ray codes a folder or a URI (s3://bucket/prefix), not one file")
    dst = Path(args.output)
    if args.output == "-" or bulk.is_uri(args.output) or (dst.exists() and not dst.is_dir()):
        raise UsageError(f"{args.output}: the output of --ray must be a local folder")
    _check_output_folder(dst)
    _check_model_args(args)
    bulk.import_ray()  # not installed: one line that says how, before any listing
    plan = _plan_with_work(args, bulk.plan_for(args.input, dst, decode), decode)
    # the device is resolved by each actor, on its machine: this one may have no GPU
    options = CodingOptions(model=args.model, request=_request(args), decoder=getattr(args, "decoder", None) or "mse",
                            device=args.device)
    report = bulk.run_plan(plan, args.input, dst, decode, options, address=args.ray, force=args.force,
                           actors=args.workers, threads=args.threads, progress=not args.quiet, debug=args.debug)
    bulk.print_bulk_report(report, debug=args.debug)
    return _run_status(report)


def cmd_encode(args):
    from .formats import is_image_extension
    _request(args)  # options that do not go together fail before any work
    if args.ray is not None:
        return _run_ray(args, decode=False)
    if Path(args.input).is_dir():
        return _run_folder(args, decode=False)
    if args.output != "-" and is_image_extension(Path(args.output)):
        raise UsageError(f"{args.output}: encode writes a .bin file, not a {Path(args.output).suffix} image "
                       "(name the output NAME.bin, or - for stdout)")
    _check_model_args(args)
    _check_output(args.output, args.force, args.input)
    name = _display_name(args.input)
    notes, options = [], _options(args)
    with _about(name, args.debug):
        data = encode_image(_image_source(args.input), name, options, notes)
    _write_output(args.output, data, args.force, args.input)
    for note in notes:  # rate control: what the search chose and what it cost
        print(f"pqcodec: note: {name}: {note}", file=sys.stderr)


def _output_format(name: str, lossy_output: bool) -> str:
    """The Pillow format of decode's output `name` (PNG for stdout), from its extension: one Pillow
    writes, and that keeps the decoded pixels unless --lossy-output; else a UsageError."""
    from .formats import LOSSLESS_CHOICES, changes_pixels, how_it_changes, output_format
    if name == "-":
        return "PNG"
    try:
        fmt = output_format(Path(name))
    except PQCodecError as e:
        raise UsageError(str(e)) from None
    if changes_pixels(fmt) and not lossy_output:
        raise UsageError(f"{name}: {fmt} files change the decoded pixels ({how_it_changes(fmt)}); use a lossless "
                         f"format ({LOSSLESS_CHOICES}), or --lossy-output to write it all the same")
    return fmt


def cmd_decode(args):
    if args.ray is not None:
        return _run_ray(args, decode=True)
    if Path(args.input).is_dir():
        return _run_folder(args, decode=True)
    fmt = _output_format(args.output, args.lossy_output)
    _check_model_args(args)
    _check_output(args.output, args.force, args.input)
    options, lost = _options(args), []
    with _about(_display_name(args.input), args.debug):
        image = decode_image(_coded_source(args.input), _display_name(args.input), _display_name(args.output), fmt,
                             options, lost)
    _write_output(args.output, image, args.force, args.input)
    for line in lost:
        print(f"pqcodec: warning: {args.output}: {line}", file=sys.stderr)


def cmd_info(args):
    from .bitstream import unpack
    from .sources import coded_input
    from .zoo import describe_model
    name = _display_name(args.input)
    with _about(name, args.debug):
        data, _ = coded_input(_coded_source(args.input), name)
        h, payload = unpack(data)
    rows = [("format", f"version {h.version}" + (", sub-quantizers coded in order with the model's conditional head"
                                                 if h.conditional else "")),
            ("model", f"{h.model_hash.hex()} ({describe_model(h.model_hash)})"),
            ("image", f"{h.width} x {h.height}" + (" greyscale" if h.greyscale else " RGB")),
            ("sub-quantizers", f"up to {h.active} in use, a level per window (the level map, set by rate control)"
                               if h.mapped else f"{h.active} in use (set by the quality level)"),
            ("steps", str(h.steps))]
    if h.flat:
        from .flat import of_header
        with _about(name, args.debug):
            blocks = of_header(h)
        rows.append(("flat blocks", f"{blocks.count} of {counted(blocks.mask.size, 'block')} of 8 x 8 px painted in "
                                    f"one colour ({counted(len(h.flat), 'byte')} of the header)"))
    if h.generated:
        g = h.generated
        rows += [("generated", f"coded as a {g.grid_width} x {g.grid_height} token grid, resized to the image"),
                 ("steps sent", f"{g.sent} of {h.steps}" + ("" if g.sent == h.steps else
                                 f"; the rest drawn (sharpening {g.sharpen}, seed {g.seed})"))]
    rows += [
            ("file bytes", f"{len(data)} (header {len(data) - len(payload)}, payload {len(payload)})"),
            ("bpp", f"{8 * len(data) / (h.width * h.height):.4f}"), ("token crc32", f"{h.checksum:08x}")]
    width = max(len(k) for k, _ in rows)
    _print_stdout("".join(f"{k:{width}}  {v}\n" for k, v in rows))


def cmd_compare(args):
    from .compare import compare_all, expand_inputs
    from .compare_page import render
    from .zoo import codec_to_encode
    if Path(args.output).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"{args.output}: compare writes an HTML page (name the output NAME.html)")
    _check_model_args(args)
    paths = expand_inputs(args.images)
    output = Path(args.output)
    check_output(output, args.force, inputs=paths)
    device = _device(args)
    with _about(args.model or "model", args.debug):
        codec = codec_to_encode(args.model, device)
    request = _request(args)
    comparisons, failed, warned = compare_all(paths, codec, request, progress=not args.quiet)
    for line in warned:
        print(f"pqcodec: warning: {line}", file=sys.stderr)
    if not comparisons and len(failed) == 1:
        raise CliError(failed[0])
    for line in failed:
        _error(line)
    if not comparisons:
        raise CliError(f"{args.output}: not written: no image could be compared")
    if request.by_size:
        how = "pqcodec coded each image with rate control: the best quality within the size asked for."
    else:
        level = f"{request.quality}" if request.quality else f"{codec.default_level} (the default)"
        how = f"pqcodec coded each image at level {level} of {codec.num_levels()}."
    write_atomic(output, render(comparisons, "pqcodec against JPEG, WebP and AVIF at the same file size", how)
                 .encode("utf-8"), args.force, inputs=paths)
    return EXIT_ERROR if failed else 0


# -- the parser ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """A bad command line is one line too, and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _effort(text: str) -> int:
    from .refine import check_effort
    try:
        return check_effort(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    except PQCodecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _device_name(text: str) -> str:
    """cpu, cuda, cuda:N or auto; whether the device is there is checked when the run starts."""
    name, _, index = text.partition(":")
    if text in ("cpu", "cuda", "auto") or (name == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or auto, got {text!r}")


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return x


def _add_global_options(p: argparse.ArgumentParser, in_subcommand: bool):
    """--threads and --debug, before the subcommand or after it (where they override nothing when
    not given)."""
    unset = dict(default=argparse.SUPPRESS) if in_subcommand else {}
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice; "
                   "folders: CPU cores / workers each)", **(unset or dict(default=None)))
    p.add_argument("--debug", action="store_true", help="show the traceback of an internal error "
                   "(also: PQCODEC_DEBUG=1)", **(unset or dict(default=False)))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .coding.schedule import DEFAULT_STEPS
    from .decoders import DECODER_NAMES
    p = _Parser(prog="pqcodec", description="Learned image codec: product-quantized autoencoder + "
                "masked-image-modeling prior + range coding. docs/cli.md: what it guarantees.")
    p.add_argument("--version", action="version", version=f"pqcodec {__version__}")
    _add_global_options(p, in_subcommand=False)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="compress an image into a .bin file")
    e.add_argument("input", help="image file (PNG, JPEG, WebP, ... anything Pillow reads), - for stdin, "
                   "or a folder of images")
    e.add_argument("-o", "--output", required=True, help=".bin file, - for stdout, or for a folder input an "
                   "output folder")
    size = e.add_mutually_exclusive_group()
    size.add_argument("-q", "--quality", type=_positive_int, help=_quality_help())
    size.add_argument("--max-bytes", type=_positive_int, metavar="N",
                      help="the best quality whose file is at most N bytes (searches levels and RDOQ, and "
                      "below the lowest level shrinks the image: 200 bytes works; docs/ratecontrol.md); an "
                      "error if even the smallest file is larger")
    size.add_argument("--bpp", type=_positive_float, metavar="B",
                      help="the same with N = floor(B * width * height / 8)")
    e.add_argument("--generative", action="store_true",
                   help="with --max-bytes/--bpp below the lowest level: send part of the shrunken image and let "
                   "the decoder draw the rest from the prior (PQ-MIM's hybrid mode: more texture, lower PSNR)")
    e.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS,
                   help=f"coding steps per window (default {DEFAULT_STEPS})")
    e.add_argument("--effort", type=_effort, default=0, metavar="N",
                   help="with --quality: N steps (0-10) refining the codes toward the image: never farther from it "
                   "than effort 0, in a slightly larger file (Kodak level 3: 1 step +0.26 dB for 0.9 %% more bytes, "
                   "5 steps +0.43 dB for 3.9 %%, ~3x the encode time; more gains almost nothing); the decoder and "
                   "the format do not change (docs/cli.md)")
    e.add_argument("--no-flat", action="store_true",
                   help="do not send the image's flat 8x8 blocks (by default blocks of one colour are sent as that "
                   "colour and come back exact, costing a few bytes; docs/cli.md)")
    e.add_argument("--model", help="weights file outside the shipped zoo (research use; decode needs it too)")
    e.add_argument("-f", "--force", action="store_true", help="replace an existing output (a regular file only)")
    e.set_defaults(run=cmd_encode)
    d = sub.add_parser("decode", help="decompress a .bin file into an image")
    d.add_argument("input", help=".bin file, - for stdin, or a folder of .bin files")
    d.add_argument("-o", "--output", required=True, help="image file (format from its extension: .png advised, or "
                   ".tif, .webp (written lossless), .bmp ...; .jpg, .avif and .gif only with --lossy-output), - for "
                   "PNG on stdout, or for a folder input an output folder (PNG files)")
    d.add_argument("--model", help="weights file, for files made with --model")
    d.add_argument("--decoder", choices=DECODER_NAMES, default="mse",
                   help="mse (default): the model's own decoder, faithful but smooth at low rates; perceptual: "
                   "the adversarially fine-tuned decoder of the same files, sharper texture (docs/perceptual.md)")
    d.add_argument("--lossy-output", action="store_true",
                   help="allow an output format that changes the decoded pixels (.jpg, .avif, .gif: 256 colours), "
                   "with a warning saying how far the file is from them; refused without it")
    d.add_argument("-f", "--force", action="store_true", help="replace an existing output (a regular file only)")
    d.set_defaults(run=cmd_decode)
    for sp in (e, d):
        sp.add_argument("-j", "--workers", type=_positive_int, default=None,
                        help="folders: worker processes (default: one per CPU core); with --ray: actors "
                        "(default: one per CPU of the cluster, or per GPU with --device cuda)")
        sp.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="code a folder or a URI (s3://bucket/prefix) on Ray: a local instance, or with "
                        "ADDRESS (auto, HOST:PORT, ray://HOST:PORT) that cluster; output: a local folder, named as "
                        "in folder mode (docs/cluster.md; pip install \"pqcodec[ray]\")")
        sp.add_argument("--quiet", action="store_true", help="folders: no progress bar")
    i = sub.add_parser("info", help="print a .bin file's header fields, size and bpp")
    i.add_argument("input", help=".bin file or - for stdin")
    i.set_defaults(run=cmd_info)
    c = sub.add_parser("compare", help="an HTML page: pqcodec against JPEG, WebP and AVIF at the same file size")
    c.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of images")
    c.add_argument("-o", "--output", required=True, help="the page to write, NAME.html (self-contained)")
    size = c.add_mutually_exclusive_group()
    size.add_argument("-q", "--quality", type=_positive_int, help=_quality_help())
    size.add_argument("--bytes", "--max-bytes", dest="max_bytes", type=_positive_int, metavar="N",
                      help="pqcodec's best quality in at most N bytes (rate control); the others in as many")
    size.add_argument("--bpp", type=_positive_float, metavar="B",
                      help="the same with N = floor(B * width * height / 8)")
    c.add_argument("--model", help="weights file outside the shipped zoo (research use)")
    c.add_argument("-f", "--force", action="store_true", help="replace an existing output (a regular file only)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=cmd_compare)
    for sp in (e, d, c):
        sp.add_argument("--device", type=_device_name, default="cpu", metavar="{cpu,cuda,auto}",
                        help="where the networks run: cpu (default), cuda (or cuda:N), auto (CUDA if torch sees "
                        "it); the files are the same bytes on every device, range coding stays on the CPU")
    for sp in (e, d, i, c):
        _add_global_options(sp, in_subcommand=True)
    return p


# -- main ------------------------------------------------------------------------------------------
def _error(message: str):
    try:
        print(f"pqcodec: error: {message}", file=sys.stderr)
    except OSError:
        pass  # stderr is gone too: the exit status still says it


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.debug = args.debug or os.environ.get("PQCODEC_DEBUG", "") not in ("", "0")
    try:
        with sigterm_raises():
            if args.threads:
                import torch
                torch.set_num_threads(args.threads)
            status = args.run(args)
            if sys.stdout is not None:
                with _writing_stdout():
                    sys.stdout.flush()
    except CliError as e:
        if args.debug and e.details:
            print(e.details, file=sys.stderr, end="")
        _error(str(e))
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR
    except PQCodecError as e:  # OutputError and the like: they name their file
        _error(str(e))
        return EXIT_ERROR
    except BrokenPipeError:  # the reader of stdout went away (`| head`): quiet, as Unix tools are
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:
        _error(f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pqcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("pqcodec: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as e:  # a bug: still one line, the details on request
        if args.debug:
            print(details(e), file=sys.stderr, end="")
        _error(failure_line("pqcodec", e).removeprefix("pqcodec: "))
        return EXIT_ERROR
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
