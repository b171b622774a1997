"""Folders: `pqcodec encode DIR -o OUTDIR` / `pqcodec decode DIR -o OUTDIR`.

Inputs: every file under DIR whose extension is one Pillow reads (formats.readable_suffixes), or
.bin to decode; other files are counted as ignored. Each maps to the same relative path under OUTDIR
with the new extension (.bin, or .png to decode). Inputs that would share an output (a.png and
a.jpg, or a.png and a.PNG, all a.bin; names are compared ignoring case, as macOS and Windows do)
keep their extension in the output name instead (a.png.bin, a.jpg.bin), and a note says so; should
such a name still be another input's output (a.png.jpg -> a.png.bin), that input fails with a
message. Existing outputs
are skipped unless --force, so rerunning a batch finishes what is missing.

Workers are processes of their own (spawn), one file at a time each, writing with
files.write_atomic. They ignore SIGINT: a Ctrl-C reaches the whole process group, and this process
decides. On Ctrl-C or SIGTERM it stops them: SIGTERM to each (a worker removes its temporary file and
exits; one whose output is being put in place finishes that and reports it first), SIGKILL to any
left after STOP_GRACE_S, then it removes the temporary files of killed workers and reports what was
written and what was not done. A second Ctrl-C during that kills the workers at once. A worker whose
parent dies (even by SIGKILL) stops likewise, so no worker outlives its run.

A write that fails for want of space (ENOSPC, EDQUOT) ends the run too: no input is started after
it, the workers finish the inputs they are on, and the report counts the rest as not done.
"""
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path, PurePosixPath

from .files import OutputError, check_replaceable, is_disk_full, temp_files_of, write_atomic
from .formats import is_image_name
from .jobs import CodingOptions, decode_image, details, encode_image, failure_line, folded_warnings, is_internal
from .stopping import StopSignals, Terminated
from .words import counted

STOP_GRACE_S = 1.0  # after SIGTERM, how long workers get to clean up before SIGKILL


# -- the plan: which input goes where --------------------------------------------------------------
@dataclass
class Plan:
    jobs: list[tuple[Path, Path]]                              # (input, output), sorted
    failed: list[tuple[Path, str]] = field(default_factory=list)   # inputs refused by the plan
    renamed: list[list[tuple[Path, Path]]] = field(default_factory=list)  # groups that kept their extension
    ignored: int = 0                                           # files that are not inputs by name


def plan(src: Path, dst: Path, decode: bool) -> Plan:
    """Every input under `src` and its output under `dst`, as the module says."""
    names = [PurePosixPath(p.relative_to(src).as_posix()) for p in src.rglob("*") if p.is_file()]
    return plan_names(names, decode, src.joinpath, dst.joinpath)


def plan_names(names, decode: bool, input_at, output_at) -> Plan:
    """The plan for the files `names` (PurePosixPaths relative to the input folder, in any order), by
    the rules the module states: `input_at(name)` and `output_at(name)` are the input and the output
    a relative name stands for (a Path in a folder, or the URI of an object in a store)."""
    names = sorted(names)
    inputs = [n for n in names if (n.suffix.lower() == ".bin" if decode else is_image_name(n))]
    suffix = ".png" if decode else ".bin"
    natural = defaultdict(list)
    for n in inputs:
        natural[_key(n.with_suffix(suffix))].append(n)
    result = Plan([], ignored=len(names) - len(inputs))
    outputs = {}
    for group in natural.values():
        for n in group:
            outputs[n] = output_at(n.with_suffix(suffix) if len(group) == 1 else n.with_name(n.name + suffix))
        if len(group) > 1:
            result.renamed.append([(input_at(n), outputs[n]) for n in group])
    claimed = defaultdict(list)  # exact names: b.PNG.bin and b.png.bin are two files where both inputs can be
    for n in inputs:
        claimed[str(outputs[n])].append(n)
    for group in claimed.values():
        first = input_at(group[0])
        result.jobs.append((first, outputs[group[0]]))
        for n in group[1:]:
            result.failed.append((input_at(n), f"{input_at(n)}: its output {outputs[n]} would also be written from "
                                                f"{first}; rename one of them"))
    result.jobs.sort()
    return result


def _key(path: Path) -> str:
    """Output names that are one file on a case-insensitive file system (macOS, Windows, a FAT
    drive) are the same; should kept extensions differ only in case there, the write that comes
    second fails at files.write_atomic, which never replaces."""
    return str(path).casefold()


# -- the report ------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    written: int = 0
    skipped: list = field(default_factory=list)    # outputs that existed
    failed: list = field(default_factory=list)     # (input, one line naming it)
    ignored: int = 0                               # files that are not inputs by name
    renamed: list = field(default_factory=list)    # Plan.renamed
    warnings: list = field(default_factory=list)   # (input, one line)
    details: list = field(default_factory=list)    # tracebacks of internal errors, for --debug
    not_done: int = 0                              # left when the run was stopped
    stopped: BaseException | None = None           # KeyboardInterrupt or Terminated
    disk_full: bool = False                        # a write found the disk full: no input started after it

    def ended_early(self) -> bool:
        return self.stopped is not None or self.disk_full

    def record(self, src: Path, outcome: "Outcome"):
        if outcome.failure is None:
            self.written += 1
        else:
            self.failed.append((src, outcome.failure))
            self.disk_full = self.disk_full or outcome.disk_full
        self.warnings += [(src, w) for w in outcome.warnings]
        if outcome.details:
            self.details.append(outcome.details)


def print_report(report: BatchReport, debug: bool = False, file=None):
    """Notes and warnings, a summary line, one line per failed input, and how the run was stopped."""
    file = file or sys.stderr
    for group in report.renamed:
        names = ", ".join(str(p) for p, _ in group)
        print(f"pqcodec: note: {names} would share one output name: written as "
              f"{', '.join(o.name for _, o in group)}", file=file)
    for src, line in report.warnings:
        print(f"pqcodec: warning: {src}: {line}", file=file)
    summary = (f"pqcodec: {report.written} written, {len(report.skipped)} skipped (output exists; --force "
               f"replaces), {len(report.failed)} failed")
    if report.ignored:
        summary += f", {counted(report.ignored, 'other file')} ignored (not an input by extension)"
    if report.ended_early():
        summary += f", {report.not_done} not done"
    print(summary, file=file)
    for _, line in sorted(report.failed):
        print(f"pqcodec: error: {line}", file=file)
    if debug:
        for text in report.details:
            print(text, file=file, end="")
    if report.disk_full and report.stopped is None:
        print("pqcodec: stopped: the disk is full (no input started after that); what was written is complete: "
              "free some space and rerun the same command to do the rest", file=file)
    if report.stopped is not None:
        how = "SIGTERM" if isinstance(report.stopped, Terminated) else "Ctrl-C"
        print(f"pqcodec: stopped by {how}; nothing half-written is left: rerun the same command to do the rest",
              file=file)


# -- the run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What every worker is given once."""
    decode: bool
    options: CodingOptions
    force: bool
    threads: int
    debug: bool


@dataclass
class Outcome:
    failure: str | None = None        # one line naming the input, or None: written
    disk_full: bool = False           # the write failed for want of space (ENOSPC, EDQUOT)
    warnings: list = field(default_factory=list)
    details: str | None = None        # traceback of an internal error


def run(plan_: Plan, decode: bool, options: CodingOptions, workers: int, force: bool, progress: bool,
        threads: int | None = None, debug: bool = False) -> BatchReport:
    """Codes the plan's jobs in `workers` processes. Ctrl-C and SIGTERM stop it as the module says;
    the report then has `stopped` set; after a full disk no job is started (`disk_full`)."""
    report = BatchReport(failed=list(plan_.failed), ignored=plan_.ignored, renamed=plan_.renamed)
    todo = deque()
    for src, dst in plan_.jobs:
        if os.path.lexists(dst) and not force and not dst.is_dir():
            report.skipped.append(dst)
            continue
        try:
            check_replaceable(dst, force, [src])
        except OutputError as e:
            report.failed.append((src, str(e)))
            continue
        todo.append((src, dst))
    if not todo:
        return report
    workers = min(workers, len(todo))
    setup = Setup(decode, options, force, threads or max(1, (os.cpu_count() or 1) // workers), debug)
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc="decode" if decode else "encode", unit="file", disable=not progress)
    pool = _Pool(setup)
    stops = StopSignals({signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated})
    try:
        with stops:
            try:
                with stops.deferred():
                    for _ in range(workers):
                        pool.start_worker().give(todo.popleft())
                while pool.busy():
                    for worker, outcome in pool.wait():
                        with stops.deferred():  # the books stay right: a job is in todo, in flight or recorded
                            report.record(worker.job[0], outcome)
                            bar.update(1)
                            worker.job = None
                            if todo and not report.disk_full:
                                if not worker.alive():
                                    worker = pool.start_worker()
                                worker.give(todo.popleft())
            except (KeyboardInterrupt, Terminated) as stop:
                report.stopped = stop
            finally:
                for src, outcome in pool.stop(hurry=report.stopped is not None):
                    report.record(src, outcome)
                report.not_done = len(todo) + pool.unfinished
    finally:
        bar.close()
    report.failed.sort()
    return report


class _Worker:
    """One worker process, its end of the pipe, and the job it is on."""

    def __init__(self, ctx, setup: Setup):
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(theirs, setup), daemon=True)
        with _children_ignore_sigint():
            self.process.start()
        theirs.close()
        self.job = None

    def give(self, job):
        self.job = job
        self.conn.send(job)

    def alive(self) -> bool:
        return self.process.is_alive()

    def outcomes(self) -> list:
        """The outcomes it sent that are not read yet (also after it died)."""
        out = []
        try:
            while self.conn.poll():
                out.append(self.conn.recv())
        except (EOFError, OSError):
            pass
        return out


class _Pool:
    """The workers of a run; the main loop hands each one job at a time."""

    def __init__(self, setup: Setup):
        self.ctx = multiprocessing.get_context("spawn")  # a forked torch can deadlock in its thread pools
        self.setup = setup
        self.workers: list[_Worker] = []
        self.unfinished = 0

    def start_worker(self) -> _Worker:
        worker = _Worker(self.ctx, self.setup)
        self.workers.append(worker)
        return worker

    def busy(self) -> bool:
        return any(w.job for w in self.workers)

    def wait(self) -> list:
        """Blocks until a busy worker reports or dies; (worker, outcome) for each that did."""
        busy = [w for w in self.workers if w.job]
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        done = []
        for w in busy:
            sent = w.outcomes()
            if sent:
                done.append((w, sent[-1]))
            elif not w.alive():
                done.append((w, Outcome(failure=self._died(w))))
        return done

    def _died(self, w: _Worker) -> str:
        """Cleans up after a worker that died on its job; the failure line for that job."""
        src, dst = w.job
        for tmp in temp_files_of(dst, w.process.pid):
            tmp.unlink(missing_ok=True)
        code = w.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return f"{src}: the worker process coding it died ({how}; out of memory?)"

    def stop(self, hurry: bool) -> list:
        """Ends every worker: idle ones are told to exit; with `hurry` (an interrupt) busy ones get
        SIGTERM, and SIGKILL after STOP_GRACE_S or at a second Ctrl-C. Removes the temporary files
        of killed workers. Returns (input, outcome) for the outcomes sent meanwhile; `unfinished`
        counts the jobs that were not done."""
        with _signals_kill(self.workers):
            for w in self.workers:
                if w.alive():
                    if hurry and w.job:
                        w.process.terminate()
                    else:
                        _send_quietly(w.conn, None)
            deadline = time.monotonic() + (STOP_GRACE_S if hurry else 10 * STOP_GRACE_S)
            for w in self.workers:
                w.process.join(max(0.0, deadline - time.monotonic()))
            for w in self.workers:
                if w.alive():
                    w.process.kill()
                    w.process.join()
        results = []
        for w in self.workers:
            sent = w.outcomes()
            if w.job and sent:
                results.append((w.job[0], sent[-1]))
            elif w.job:
                self.unfinished += 1
                for tmp in temp_files_of(w.job[1], w.process.pid):
                    tmp.unlink(missing_ok=True)
            w.conn.close()
        return results


def _send_quietly(conn, message):
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):
        pass  # the worker is gone already


@contextmanager
def _children_ignore_sigint():
    """Processes started inside ignore SIGINT: an ignored signal stays ignored across exec, and
    Python then installs no KeyboardInterrupt handler, not even while the child starts. A Ctrl-C
    arriving meanwhile is held and delivered to this process after the block."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def _signals_kill(workers: list):
    """Within the block, SIGINT and SIGTERM (a second Ctrl-C) SIGKILL every worker at once instead
    of interrupting the clean-up."""
    def kill_all(signum, frame):
        for w in workers:
            if w.alive():
                w.process.kill()
    old = {s: signal.signal(s, kill_all) for s in (signal.SIGINT, signal.SIGTERM)
           if signal.getsignal(s) != signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


# -- a worker --------------------------------------------------------------------------------------
class _Stop(BaseException):
    """SIGTERM, or the parent died: the worker ends (after the write it is committing, if any)."""


def _stop_when_parent_dies():
    """A thread that sends this process SIGTERM when its parent process ends, however it ended."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


def _worker_main(conn, setup: Setup):
    """A worker's life: jobs from `conn` until None, EOF or SIGTERM; one Outcome sent per job. It
    ends with os._exit: nothing is left to flush (outputs are synced, a stopped job's temporary file
    removed), and tearing down torch would take most of a second."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # it stays ignored
    # for the whole life of the process, even if started with SIGTERM ignored: it is how it is stopped
    stopper = StopSignals({signal.SIGTERM: _Stop}, keep_ignored=False).install()
    _stop_when_parent_dies()
    status = 0
    try:
        import torch
        torch.set_num_threads(setup.threads)
        while (job := _next_job(conn)) is not None:
            _do_job(job, setup, conn, stopper)
    except _Stop:
        pass
    except BaseException:  # a bug in this loop: the main process reports the job's worker as died
        traceback.print_exc()
        status = 1
    finally:
        sys.stderr.flush()
        os._exit(status)


def _next_job(conn):
    """The next (input, output), or None when told to end or when the main process is gone."""
    try:
        return conn.recv()
    except EOFError:
        return None


def _do_job(job, setup: Setup, conn, stopper: StopSignals):
    """Codes one file and writes its output; the write and the report are not split by SIGTERM."""
    src, dst = job
    outcome, data = Outcome(), None
    try:
        with folded_warnings(outcome.warnings, show_others=setup.debug):
            if setup.decode:
                data = decode_image(src, str(src), dst, "PNG", setup.options)
            else:
                data = encode_image(src, str(src), setup.options)
    except Exception as e:  # bad input, or a bug: one line either way, and the batch goes on
        outcome.failure = failure_line(str(src), e)
        outcome.details = details(e) if is_internal(e) else None
    with stopper.deferred():
        if data is not None:
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(dst, data, setup.force, inputs=[src])
            except (OutputError, OSError) as e:
                outcome.failure = failure_line(str(src), e)
                outcome.disk_full = is_disk_full(e)
        conn.send(outcome)
