"""Image collections on a Ray cluster: `pqcodec encode SRC -o DST --ray [ADDRESS]`, `pqcodec decode
SRC -o DST --ray [ADDRESS]`, and `encode_dataset` / `decode_dataset` (docs/cluster.md).

Inputs: a local folder, or a folder of any file system pyarrow reads, named by its URI
(s3://bucket/prefix, gs://..., hdfs://..., file:///...). They are listed by the process that runs the
job and named by folder mode's rules (batch.plan_names): the same output names, the same inputs that
keep their extension, the same refusals. Outputs already there are skipped before the job starts
(unless `force`), so a rerun codes only what is missing.

The work: a Ray Data pipeline of the inputs, coded by a pool of actors that each load the codec once:
one CPU each by default, one GPU each when the device asked for is CUDA. An actor reads its input
itself (a local folder must therefore be at the same path on every machine of the cluster; a URI is
read from the store) and returns the output's bytes, or the one line that says why the input failed.
The outputs are the bytes `pqcodec encode` / `pqcodec decode` write for the same file and options.

The writes: the process that runs the job writes every output into the local folder DST, with
files.write_atomic as folder mode does: a whole file or nothing, never over an existing file without
`force`. An actor writes nothing, so an actor killed mid-input leaves nothing behind; Ray restarts it
and codes the input again (up to RETRIES times), and the same input gives the same bytes.

Stopping: Ctrl-C or SIGTERM ends the job: no output is written after it (the one being put in place
is finished), the pipeline is closed and Ray shut down where this process started or joined it,
which ends the job's actors on every machine; the report says what was written and what was not
done. Ray itself is imported only here, only when a job runs: `pip install pqcodec[ray]`.
"""
import logging
import os
import queue
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from .batch import BatchReport, plan, plan_names, print_report
from .errors import CorruptFileError, ImageError, PQCodecError
from .files import OutputError, check_replaceable, is_disk_full, read_bounded, write_atomic
from .jobs import CodingOptions, decode_image, details, encode_image, failure_line, folded_warnings, is_internal
from .stopping import StopSignals, Terminated

STOP_GRACE_S = 5.0  # after a stop, how long the pipeline gets to close before Ray is shut down
RETRIES = 3          # how many times Ray codes an input again after the actor coding it died
INSTALL_HINT = 'Ray is not installed: pip install "pqcodec[ray]" (or pip install "ray[data]>=2.40")'
MAX_BLOCKS = 20_000  # inputs go to the actors in at most this many groups (one input each in smaller jobs)


class RayMissingError(PQCodecError):
    """--ray without Ray installed: the message says how to install it."""


def import_ray():
    """The ray module, or RayMissingError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs both; a bare `pip install ray` lacks Ray Data's needs)
    except ImportError:
        raise RayMissingError(INSTALL_HINT) from None
    return ray


def is_uri(name: str) -> bool:
    """Whether `name` is a URI (s3://..., file:///...) rather than a local path."""
    scheme, sep, _ = str(name).partition("://")
    return bool(sep) and scheme.isidentifier()


# -- the report ------------------------------------------------------------------------------------
@dataclass
class BulkReport(BatchReport):
    """Folder mode's report, and what the job moved and how fast."""
    bytes_in: int = 0          # read by the actors, of the inputs that were written
    bytes_out: int = 0         # written
    startup_s: float = 0.0     # from the start until Ray and the pipeline were ready to take inputs
    elapsed_s: float = 0.0     # the whole job, start-up included
    coded: int = 0             # inputs the actors returned (written or failed)
    first_s: float | None = None   # when the first came back (from the start)
    last_s: float | None = None    # when the last one came back

    def images_per_s(self) -> float:
        """Images per second once running: from the first input that came back to the last."""
        if self.coded < 2 or self.last_s <= self.first_s:
            return 0.0
        return (self.coded - 1) / (self.last_s - self.first_s)


def print_bulk_report(report: BulkReport, debug: bool = False, file=None):
    """Folder mode's report (batch.print_report), then what the job moved and how fast."""
    file = file or sys.stderr
    print_report(report, debug=debug, file=file)
    overall = report.written / report.elapsed_s if report.elapsed_s > 0 else 0.0
    print(f"pqcodec: {report.written} images in {report.elapsed_s:.1f} s ({overall:.2f} images/s; "
          f"{report.images_per_s():.2f} images/s once running, after {report.startup_s:.1f} s of start-up), "
          f"{_mb(report.bytes_in)} in, {_mb(report.bytes_out)} out, {len(report.failed)} errors", file=file)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# -- listing the inputs ----------------------------------------------------------------------------
def plan_for(src: str, dst: Path, decode: bool):
    """Folder mode's plan for a local folder `src`; for a URI, the same rules on the files pyarrow
    lists under it (recursively), the inputs named by their URIs."""
    if not is_uri(src):
        return plan(Path(src), dst, decode)
    from pyarrow import fs as pafs
    try:
        store, root = pafs.FileSystem.from_uri(src)
        infos = store.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as e:
        raise PQCodecError(f"{src}: cannot list it ({' '.join(str(e).split())})") from None
    base = src.rstrip("/")
    root = root.rstrip("/")
    names = [PurePosixPath(i.path[len(root):].lstrip("/")) for i in infos if i.type == pafs.FileType.File]
    return plan_names(names, decode, lambda n: f"{base}/{n}", dst.joinpath)


# -- an actor --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorSetup:
    """What every actor is given once."""
    decode: bool
    options: CodingOptions
    threads: int
    debug: bool
    root: str | None = None   # the URI the inputs are under, or None for a local folder


class Coder:
    """A Ray actor: loads the codec once, then codes batches of inputs into output bytes (never
    raising for an input: a failure is its one line)."""

    def __init__(self, setup: ActorSetup):
        import torch
        from .devices import resolve_device
        torch.set_num_threads(setup.threads)
        device = resolve_device(setup.options.device)
        self.setup = replace(setup, options=replace(setup.options, device=device))
        self.store = None  # the file system of a URI source, opened on first use
        try:  # the codec, loaded once (files made with another model load theirs on first use)
            from .zoo import codec_to_encode
            codec_to_encode(setup.options.model, device)
        except Exception:  # each input then fails with the one line that names the model
            pass

    def __call__(self, batch: dict) -> dict:
        out = {"index": [], "data": [], "failure": [], "warnings": [], "details": [], "bytes_in": []}
        for index, source, output in zip(batch["index"], batch["source"], batch["output"]):
            data, failure, warned, trace, size = self.code(str(source), str(output))
            out["index"].append(int(index))
            out["data"].append(data)
            out["failure"].append(failure)
            out["warnings"].append("\n".join(warned))
            out["details"].append(trace)
            out["bytes_in"].append(size)
        import numpy as np
        out["data"] = np.array(out["data"] + [None], dtype=object)[:-1]  # bytes as they are (no fixed width)
        return out

    def code(self, source: str, output: str):
        """(output bytes, failure line, warnings, traceback, input bytes) of one input."""
        setup, warned = self.setup, []
        try:
            with folded_warnings(warned, show_others=setup.debug):
                raw, size = self.read(source)
                if setup.decode:
                    data = decode_image(raw, source, output, "PNG", setup.options)
                else:
                    data = encode_image(raw, source, setup.options)
            return data, "", warned, "", size
        except Exception as e:  # bad input, or a bug: one line either way, and the job goes on
            return b"", failure_line(source, e), warned, details(e) if is_internal(e) else "", 0

    def read(self, source: str):
        """What to code (a Path, or the bytes read from a store, bounded) and its size in bytes."""
        if self.setup.root is None:
            path = Path(source)
            return path, path.stat().st_size
        if self.store is None:
            from pyarrow import fs as pafs
            self.store, self.root_path = pafs.FileSystem.from_uri(self.setup.root)
        path = self.root_path.rstrip("/") + "/" + source[len(self.setup.root.rstrip("/")):].lstrip("/")
        if self.setup.decode:
            from .bitstream import MAX_FILE_BYTES
            limit, too_long = MAX_FILE_BYTES, CorruptFileError(f"longer than any pqcodec file can be ({MAX_FILE_BYTES} bytes)")
        else:
            from .files import MAX_IMAGE_STREAM_BYTES
            limit, too_long = MAX_IMAGE_STREAM_BYTES, ImageError(
                f"longer than any image pqcodec codes can be ({MAX_IMAGE_STREAM_BYTES} bytes)")
        with self.store.open_input_stream(path) as f:
            data = read_bounded(f, limit, too_long)
        return data, len(data)


# -- the job ---------------------------------------------------------------------------------------
def encode_dataset(src, dst, options: CodingOptions = CodingOptions(), **job) -> BulkReport:
    """Encodes every image under `src` (a local folder or a URI) into .bin files under the local
    folder `dst`, named as `pqcodec encode SRC -o DST` names them, on Ray; see `run_job` for the
    other arguments. The report says what was written, skipped and failed."""
    return run_job(str(src), Path(dst), False, options, **job)


def decode_dataset(src, dst, options: CodingOptions = CodingOptions(), **job) -> BulkReport:
    """Decodes every .bin file under `src` (a local folder or a URI) into PNG files under the local
    folder `dst`, as `pqcodec decode SRC -o DST` does, on Ray; see `run_job`."""
    return run_job(str(src), Path(dst), True, options, **job)


def run_job(src: str, dst: Path, decode: bool, options: CodingOptions, **job) -> BulkReport:
    """Codes the inputs under `src` into `dst` on Ray, as the module says; `run_plan` says what `job` may hold."""
    return run_plan(plan_for(src, dst, decode), src, dst, decode, options, **job)


def run_plan(the_plan, src: str, dst: Path, decode: bool, options: CodingOptions, *, address: str | None = None,
             force: bool = False, actors: int | None = None, threads: int | None = None, progress: bool = False,
             debug: bool = False) -> BulkReport:
    """Codes the jobs of `the_plan` (plan_for(src, dst, decode)) on Ray. `address`: None or "" for
    the Ray this process has joined already (ray.init), or else a new local instance; "auto",
    "HOST:PORT" or "ray://HOST:PORT" to join that cluster. `actors`: how many (default: one per CPU
    of the cluster, or one per GPU for a CUDA device); `threads`: torch's CPU threads in each
    (default 1: an actor has one CPU). Ctrl-C and SIGTERM stop it (the report's `stopped`)."""
    started = time.monotonic()
    dst.mkdir(parents=True, exist_ok=True)
    report = BulkReport(failed=list(the_plan.failed), ignored=the_plan.ignored, renamed=the_plan.renamed)
    todo = []
    for source, output in the_plan.jobs:
        if os.path.lexists(output) and not force and not output.is_dir():
            report.skipped.append(output)
            continue
        try:
            check_replaceable(output, force, [] if is_uri(str(source)) else [source])
        except OutputError as e:
            report.failed.append((source, str(e)))
            continue
        todo.append((source, output))
    if todo:
        _run(todo, src, decode, options, address, force, actors, threads, progress, debug, report, started)
    report.elapsed_s = time.monotonic() - started
    report.failed.sort(key=lambda f: str(f[0]))
    return report


def _run(todo, src, decode, options, address, force, actors, threads, progress, debug, report: BulkReport,
         started: float):
    ray = import_ray()
    stops = StopSignals({signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated})
    ours = False  # whether this job started or joined Ray (and so shuts it down)
    rows = bar = None
    left = dict(enumerate(todo))
    try:
        with stops:
            try:
                with stops.deferred():
                    if not ray.is_initialized():
                        if not debug:
                            _quiet_ray_logs()
                        _join(ray, address, debug)
                        ours = True
                        stops.reinstall()  # Ray's driver takes SIGTERM for itself
                    rows, bar = _pipeline(ray, todo, src, decode, options, actors, threads, progress, debug)
                report.startup_s = time.monotonic() - started
                for row in rows.each():
                    with stops.deferred():  # the books stay right: an input is left, or written, or failed
                        index = row["index"]
                        source, output = left.pop(index)
                        _record(row, source, output, force, report)
                        now = time.monotonic() - started
                        report.first_s = now if report.first_s is None else report.first_s
                        report.last_s = now
                        report.coded += 1
                        bar.update(1)
                        if report.disk_full:
                            break
            except (KeyboardInterrupt, Terminated) as stop:
                report.stopped = stop
            finally:
                with _signals_ignored():
                    if rows is not None:  # the reader closes the pipeline, whose executor ends the actors
                        rows.stop()
                        rows.join(Rows.STOP_WAIT_S if not ours else STOP_GRACE_S)
                    if ours:  # and a Ray that Ray's own shut-down finds idle ends whole, its agents too
                        ray.shutdown()  # ends the job's actors on every machine
    finally:
        if bar is not None:
            bar.close()
    if report.ended_early():
        report.not_done = len(left)
    else:  # the pipeline ended without these: their actors died RETRIES + 1 times, or Ray lost them
        report.failed += [(source, f"{source}: the Ray worker coding it died, {RETRIES + 1} times (out of memory?)")
                          for source, _ in left.values()]


def _record(row: dict, source, output: Path, force: bool, report: BulkReport):
    """Writes one output the actors returned (or records its failure)."""
    warned = [line for line in (row["warnings"] or "").split("\n") if line]
    report.warnings += [(source, w) for w in warned]
    if row["details"]:
        report.details.append(row["details"])
    if row["failure"]:
        report.failed.append((source, row["failure"]))
        return
    data = bytes(row["data"])
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(output, data, force, inputs=[] if is_uri(str(source)) else [source])
    except (OutputError, OSError) as e:
        report.failed.append((source, failure_line(str(source), e)))
        report.disk_full = report.disk_full or is_disk_full(e)
        return
    report.written += 1
    report.bytes_in += int(row["bytes_in"])
    report.bytes_out += len(data)


def _join(ray, address: str | None, debug: bool):
    """Starts a local Ray instance (no address) or joins the cluster at `address`; a cluster that
    cannot be reached is one line, at once (Ray itself would keep trying for minutes)."""
    host, sep, port = (address or "").rpartition(":")
    if host and sep and port.isdigit() and "://" not in address:
        import socket
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise PQCodecError(f"Ray cluster {address}: cannot reach it ({e.strerror or e}); start it with "
                               "`ray start --head` there, or give its head's address") from None
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=debug)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise PQCodecError(f"Ray cluster {address or '(local)'}: cannot join it ({' '.join(str(e).split())})") from None


def _pipeline(ray, todo, src, decode, options, actors, threads, progress, debug):
    """The Ray Data pipeline of the inputs to do, started: (an iterator of its output rows, a
    progress bar)."""
    from tqdm import tqdm
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours instead: one bar of files written
    context.max_errored_blocks = -1       # an input whose actors keep dying is reported, the rest go on
    resources = ray.cluster_resources()
    gpu = _wants_gpu(resources, options.device)
    if actors is None:
        actors = max(1, int(resources.get("GPU" if gpu else "CPU", 1)))
    actors = min(actors, len(todo))
    per_actor = dict(num_gpus=1, num_cpus=1) if gpu else dict(num_cpus=1)
    if gpu:  # Ray shows each actor its own GPU alone, as device 0
        options = replace(options, device="cuda")
    setup = ActorSetup(decode, options, threads or 1, debug, src if is_uri(src) else None)
    items = [{"index": i, "source": str(source), "output": str(output)} for i, (source, output) in enumerate(todo)]
    dataset = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
    # one input at a time on each actor: when an actor dies, only the input it was coding is tried again
    # (inputs queued behind it would each spend a retry on the death of an actor they never ran on)
    pool = ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)
    how = dict(batch_size=1, batch_format="numpy", compute=pool, **per_actor)
    try:
        with warnings.catch_warnings():  # Ray says it will take these as named parameters
            warnings.simplefilter("ignore")
            coded = dataset.map_batches(_bound(setup), max_restarts=-1, max_task_retries=RETRIES, **how)
    except TypeError:  # a Ray that takes no remote arguments here: its own retries (again and again)
        coded = dataset.map_batches(_bound(setup), **how)
    bar = tqdm(total=len(todo), desc="decode" if decode else "encode", unit="file", disable=not progress)
    return Rows(iter(coded.iter_rows())), bar


class Rows:
    """The pipeline's output rows, read by a thread of their own: Ctrl-C and SIGTERM then interrupt
    this process's wait for the next row, never Ray's code (an exception raised inside Ray Data's
    iterator can leave one of its locks held, and stopping it then waits for good)."""
    END = object()
    STOP_WAIT_S = 30.0  # how long `join` waits for the reader (to close the pipeline) after `stop`

    def __init__(self, iterator):
        self.queue = queue.Queue(maxsize=64)  # back-pressure: the reader waits while the writes catch up
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(iterator,), name="pqcodec-rows", daemon=True)
        self.thread.start()

    def _read(self, iterator):
        try:
            for row in iterator:
                if not self._put(row):
                    break
            else:
                self._put(self.END)
        except BaseException as e:  # Ray's error: raised where the rows are taken
            self._put(e)
        finally:
            if self.stopping.is_set():
                iterator.close()  # stops the pipeline

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def each(self):
        """The rows, as they come."""
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is self.END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self):
        """Tells the reader to take no more rows, and to close the pipeline."""
        self.stopping.set()

    def join(self, timeout: float):
        self.thread.join(timeout)


def _bound(setup: ActorSetup):
    """The actor class for this job: a Coder given `setup` (a class of its own, sent with the
    actor's definition rather than as an argument, which Ray keeps in its object store)."""
    class JobCoder(Coder):
        def __init__(self):
            super().__init__(setup)
    return JobCoder


def _wants_gpu(resources: dict, device: str) -> bool:
    """Whether the actors take a GPU each: for cuda or cuda:N, and for auto where the cluster has one
    (`resources`: ray.cluster_resources())."""
    if device == "auto":
        return resources.get("GPU", 0) > 0
    return device.startswith("cuda")


def _quiet_ray_logs():
    """Ray Data's notes on each dataset (its plan, its progress) are not the user's concern here."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # and its core's notes on how actors restart


@contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored within: stopping Ray is not itself interrupted."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
