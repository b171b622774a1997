"""No exit 0 without every byte written (issue 26): a full disk, or a write the system takes only part
of, ends the run with one line naming the output and status 1; a reader of stdout that goes away
ends it with 141 and nothing on stderr; a folder run starts no input after a full disk, and what it
wrote stays whole. Where the process matters the CLI runs in a process of its own."""
import errno
import os
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from conftest import random_image
from pqcodec import batch, files
from pqcodec.stopping import StopSignals

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")


def _pqcodec(*args) -> list[str]:
    return [sys.executable, "-m", "pqcodec", *map(str, args)]


def _one_line(r, status: int) -> str:
    err = r.stderr.decode()
    assert r.returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    return err


@pytest.fixture
def png(tmp_path) -> Path:
    p = tmp_path / "in.png"
    Image.fromarray(random_image(30, 50)).save(p)
    return p


# -- single files --------------------------------------------------------------------------------
@needs_dev_full
@pytest.mark.parametrize("command", ["encode", "decode", "info"])
def test_a_full_disk_under_stdout_is_one_line(tiny_codec, tiny_weights, png, tmp_path, command):
    """`pqcodec encode x.png -o - > /dev/full` (and decode, info): every write fails with ENOSPC."""
    source = png
    if command != "encode":
        source = tmp_path / "a.bin"
        source.write_bytes(tiny_codec.encode(png))
    args = [command, source] + (["-o", "-", "--model", tiny_weights] if command != "info" else [])
    with open("/dev/full", "wb") as full:
        r = subprocess.run(_pqcodec(*args), stdout=full, stderr=subprocess.PIPE, timeout=300)
    assert _one_line(r, 1) == "pqcodec: error: stdout: cannot write it (No space left on device)\n"


def _file_size_limit(limit: int):
    """For preexec_fn: the process may not make a file longer than `limit` bytes (RLIMIT_FSIZE). A
    write across the limit takes the bytes below it, the next fails with EFBIG (Python ignores
    SIGXFSZ): what a disk that fills up mid-write does, with ENOSPC."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("output", ["stdout", "file"])
def test_a_write_cut_short_is_an_error(tiny_codec, tiny_weights, png, tmp_path, output):
    """`encode -o - > s.bin` on a disk that fills up after part of the file exited 0 with the file
    cut (a BufferedWriter reports a short write as a count, not an error)."""
    limit = len(tiny_codec.encode(png)) // 2
    target = tmp_path / "a.bin"
    args = _pqcodec("encode", png, "-o", "-" if output == "stdout" else target, "--model", tiny_weights)
    with open(target if output == "stdout" else os.devnull, "wb") as out:
        r = subprocess.run(args, stdout=out, stderr=subprocess.PIPE, preexec_fn=_file_size_limit(limit), timeout=300)
    name = "stdout" if output == "stdout" else target
    assert _one_line(r, 1) == f"pqcodec: error: {name}: cannot write it (File too large)\n"
    if output == "stdout":
        assert target.stat().st_size == limit  # the system took part of the file: the status says it is cut
    else:
        assert not target.exists() and not list(tmp_path.glob(".*.part"))


def test_a_reader_that_closes_early_gets_status_141(flat_blocks_bin, tiny_weights):
    """`pqcodec decode k.bin -o - | head -c 10`: the reader takes 10 bytes and closes while pqcodec
    still has bytes to write (its PNG is longer than the pipe holds), so its write meets EPIPE:
    status 141, as a shell shows SIGPIPE, and nothing on stderr ("Exception ignored ..." included)."""
    import fcntl
    coded, png = flat_blocks_bin
    read_end, write_end = os.pipe()
    capacity = fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # the smallest: a page
    if len(png) <= capacity + 10:
        pytest.skip(f"the decoded PNG ({len(png)} bytes) fits in this system's smallest pipe ({capacity})")
    p = subprocess.Popen(_pqcodec("decode", coded, "-o", "-", "--model", tiny_weights), stdout=write_end,
                         stderr=subprocess.PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        first = reader.read(10)
    _, err = p.communicate(timeout=300)
    assert first == png[:len(first)] and first  # it was writing the image when the reader left
    assert p.returncode == 141 and err == b"", err


def test_write_all_goes_on_after_a_short_write_and_raises_at_a_full_disk(tmp_path, monkeypatch):
    real_write, calls = os.write, []

    def takes_three_then_full(fd, data):
        calls.append(len(data))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data[:3]))
    path = tmp_path / "out"
    with open(path, "wb") as f:
        files.write_all(f.fileno(), b"abcdef")
    assert path.read_bytes() == b"abcdef"
    monkeypatch.setattr(os, "write", takes_three_then_full)
    with open(path, "wb") as f, pytest.raises(OSError) as e:
        files.write_all(f.fileno(), b"0123456789")
    assert e.value.errno == errno.ENOSPC and calls == [10, 7, 4] and path.read_bytes() == b"012345"
    with pytest.raises(files.OutputError, match="cannot write it") as e:
        files.write_atomic(tmp_path / "atomic", b"x" * 10)
    assert files.is_disk_full(e.value) and not list(tmp_path.glob(".atomic.*"))


# -- folder runs ---------------------------------------------------------------------------------
class _InlinePool:
    """batch._Pool's interface with workers that code in this process (a job runs when the loop
    waits for it): the run loop and the workers' job code, without processes, so that a write can
    be made to fail here."""

    def __init__(self, setup):
        self.setup, self.workers, self.unfinished = setup, [], 0

    def start_worker(self):
        worker = SimpleNamespace(job=None, alive=lambda: True)
        worker.give = lambda job, w=worker: setattr(w, "job", job)
        self.workers.append(worker)
        return worker

    def busy(self) -> bool:
        return any(w.job for w in self.workers)

    def wait(self) -> list:
        done = []
        for w in self.workers:
            if w.job:
                sent = []
                batch._do_job(w.job, self.setup, SimpleNamespace(send=sent.append), StopSignals({}))
                done.append((w, sent[-1]))
        return done

    def stop(self, hurry: bool) -> list:
        return []


def test_a_folder_run_starts_no_input_after_a_full_disk(cli, tiny_weights, tmp_path, monkeypatch):
    """The disk fills up on the third output (files.write_all raises ENOSPC): the two
    written stay whole, the third is listed, no input is started after it, and the run says so."""
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(6):
        Image.fromarray(random_image(8, 8, seed=i)).save(src / f"im{i}.png")
    monkeypatch.setattr(batch, "_Pool", _InlinePool)
    monkeypatch.setattr(batch, "encode_image", lambda source, name, options: f"coded {Path(name).name}".encode())
    real_write_all, outputs = files.write_all, []

    def fills_up_at_the_third_output(fd, data):
        outputs.append(data)
        if len(outputs) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, data)
    monkeypatch.setattr(files, "write_all", fills_up_at_the_third_output)
    out = tmp_path / "bins"
    r = cli("encode", src, "-o", out, "--model", tiny_weights, "-j", "1", "--quiet")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 1, err
    assert len(outputs) == 3  # nothing was tried after the full disk
    assert sorted(p.name for p in out.iterdir()) == ["im0.bin", "im1.bin"]  # no temporary file either
    assert (out / "im1.bin").read_bytes() == b"coded im1.png"
    assert err[0] == "pqcodec: 2 written, 0 skipped (output exists; --force replaces), 1 failed, 3 not done"
    assert err[1] == f"pqcodec: error: {out / 'im2.bin'}: cannot write it (No space left on device)"
    assert err[2].startswith("pqcodec: stopped: the disk is full") and "rerun the same command" in err[2]
    assert len(err) == 3
