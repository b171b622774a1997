"""Ray's worker set-up hook for tests/test_bulk.py (runtime_env "worker_process_setup_hook", run in
each worker process before it takes work): an actor that encodes an input whose name holds KILL_MARK
dies by SIGKILL, mid-job, the first time only (a marker file beside the input says it was tried);
one whose name holds ALWAYS_KILL_MARK dies every time (as on an image that always runs out of memory)."""
import os
import signal
from pathlib import Path

KILL_MARK = "kill-me"
ALWAYS_KILL_MARK = "always-dies"


def marker_of(name: str) -> Path:
    """The file that says an input's first try was made (and killed its actor)."""
    return Path(name + ".tried")


def kill_on_first_try():
    import pqcodec.bulk as bulk
    real = bulk.encode_image

    def encode_image(source, name, options, notes=None):
        if ALWAYS_KILL_MARK in str(name):
            os.kill(os.getpid(), signal.SIGKILL)
        if KILL_MARK in str(name) and not marker_of(str(name)).exists():
            marker_of(str(name)).write_bytes(b"")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(source, name, options, notes)
    bulk.encode_image = encode_image
