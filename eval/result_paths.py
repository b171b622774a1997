"""Where the evaluation scripts write their results (rd.py, train_baselines.py).

Output files are named after the test folder (`--tag`, default: the folder's name: kodak-rd.png for
../shared/data/kodak, my_photos-rd.png for my_photos/) and go to `--out`, default ./results in the
current folder. The committed results in docs/results are written only when asked for by name
(`--out docs/results`), so that a run on one's own photos never replaces them.
"""
import argparse
from pathlib import Path

DEFAULT_OUT = Path("results")


def add_output_args(ap: argparse.ArgumentParser, folder_arg: str, out_flag: str = "--out"):
    """--out (or `out_flag`) and --tag; `folder_arg` names the argument whose folder names the outputs."""
    ap.add_argument(out_flag, default=None, help=f"folder for the results (default: ./{DEFAULT_OUT}; "
                    "the committed ones: docs/results)")
    ap.add_argument("--tag", default=None, help=f"prefix of the output files (default: the name of {folder_arg})")


def output_location(out: str | None, tag: str | None, folder: str) -> tuple[Path, str]:
    """(folder to write in, file-name prefix) for results on the images of `folder`."""
    return Path(out) if out else DEFAULT_OUT, tag or folder_tag(folder)


def folder_tag(folder: str) -> str:
    """A file-name prefix from a folder's name: 'kodak' for ../shared/data/kodak/."""
    name = Path(folder).resolve().name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "images"
