"""Where the networks run: `--device cpu|cuda|auto` (CLI) and `device=` (API).

The transforms, the integer prior and the conditional head run on the device; the range coder and
the container on the CPU. A file is the same bytes on every device: the prior's and the head's
integers are exact on any device (coding/integer_prior.py), and the transforms' float differences
(a decoded pixel may differ by a level, as between CPU families) never reach the tokens.

The default is "cpu": "auto" takes a CUDA device where torch sees one. A GPU pays off on large
images and folders (the networks' work grows with the pixels; model loading and CUDA's start-up do
not), less on one small image.
"""
from .errors import PQCodecError

DEVICES = ("cpu", "cuda", "auto")
DEFAULT_DEVICE = "cpu"


def resolve_device(device=None) -> str:
    """"cpu", "cuda", "cuda:N", "auto" (CUDA where available, else CPU), None (the default) or a
    torch.device -> the device to run on, as torch names it; a one-line PQCodecError for a name
    that is not a device, or a CUDA device torch does not see."""
    import torch
    if device is None:
        device = DEFAULT_DEVICE
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise PQCodecError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise PQCodecError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "torch sees no CUDA device"
            raise PQCodecError(f"device {device}: {why} (use --device cpu or auto)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise PQCodecError(f"device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return str(parsed)
