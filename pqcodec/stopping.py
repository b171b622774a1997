"""How a command-line run ends: its exit statuses, and signals turned into exceptions (SIGTERM into
Terminated, as Python turns SIGINT into KeyboardInterrupt), so that a terminated run cleans up like
an interrupted one; a short section of bookkeeping can hold the exception back until it is done."""
import signal
from contextlib import contextmanager

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT    # 130: Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM    # 143: SIGTERM
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE   # 141: the reader went away, as `cat big | head` reports


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt: `except Exception` lets it pass."""


def stop_status(stop: BaseException) -> int:
    """The exit status of a run stopped by KeyboardInterrupt or Terminated."""
    return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


class StopSignals:
    """Within `with StopSignals({signal: exception class})` (main thread), each signal raises its
    exception, except inside `deferred()`, which holds it and raises it when that block ends.
    A signal this process was started with ignored stays ignored (`keep_ignored`), as Python does for
    SIGINT: a job started in the background or under nohup is not meant to be stopped by it."""

    def __init__(self, raises: dict, keep_ignored: bool = True):
        self.raises = {s: e for s, e in raises.items()
                       if not (keep_ignored and signal.getsignal(s) == signal.SIG_IGN)}
        self.deferring = False
        self.pending = None
        self.old = {}

    def install(self) -> "StopSignals":
        """Installs the handlers (for good, when not used as a context manager)."""
        self.old = {s: signal.signal(s, self._handle) for s in self.raises}
        return self

    def reinstall(self):
        """Installs the handlers again, over those a library put in their place meanwhile (Ray's
        driver sets its own for SIGTERM); leaving the block still restores those from before."""
        for s in self.raises:
            signal.signal(s, self._handle)

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.deferring:
            self.pending = self.pending or self.raises[signum]
        else:
            raise self.raises[signum]()

    @contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
            if self.pending:
                stop, self.pending = self.pending, None
                raise stop()


def sigterm_raises() -> StopSignals:
    """SIGTERM raises Terminated within the block (SIGINT keeps raising KeyboardInterrupt)."""
    return StopSignals({signal.SIGTERM: Terminated})
