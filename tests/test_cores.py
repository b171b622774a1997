"""Idle cores (pqcodec/cores.py): the cores other processes leave, within a container's quota, and
torch's threads fitted to them for the transforms (never above the count set, nothing on a GPU or
where unknown), put back after."""
import pytest
import torch

from pqcodec import cores


def test_idle_cores_are_the_cores_other_processes_leave(tmp_path, monkeypatch):
    """/proc/loadavg counts 3 running tasks; 2 are this process's threads (the caller, and one of
    torch's still spinning), 1 sleeps: one other process runs, so of 4 cores 3 are idle."""
    (tmp_path / "loadavg").write_text("1.02 0.88 0.75 3/211 4242\n")
    for tid, state in ((10, "R"), (11, "R"), (12, "S")):
        (tmp_path / "self" / "task" / str(tid)).mkdir(parents=True)
        (tmp_path / "self" / "task" / str(tid) / "stat").write_text(f"{tid} (py thon) (x) {state} 1 2 3\n")
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cores.idle_cores(str(tmp_path)) == 3
    (tmp_path / "loadavg").write_text("1.02 0.88 0.75 7/211 4242\n")   # five others: none idle
    assert cores.idle_cores(str(tmp_path)) == 0
    assert cores.idle_cores(str(tmp_path / "missing")) is None


def test_a_containers_cpu_quota_bounds_the_cores(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    (proc / "self" / "task" / "10").mkdir(parents=True)
    (proc / "self" / "task" / "10" / "stat").write_text("10 (python) R 1 2 3\n")
    (proc / "loadavg").write_text("0.10 0.10 0.10 1/99 4242\n")
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(64)))
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    (v1 / "cpu").mkdir(parents=True)
    (v2 / "cpu.max").write_text("150000 100000\n")                     # 1.5 CPUs: 2
    assert cores.idle_cores(str(proc), str(v2)) == 2
    (v2 / "cpu.max").write_text("max 100000\n")                        # no quota
    assert cores.idle_cores(str(proc), str(v2)) == 2          # the quota is read once a process
    cores.quota_cores.cache_clear()
    assert cores.idle_cores(str(proc), str(v2)) == 64
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")            # cgroup v1: 1 CPU
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores.idle_cores(str(proc), str(v1)) == 1


def test_idle_cores_on_this_machine_are_a_count_of_its_cores():
    idle = cores.idle_cores()
    if idle is None:
        pytest.skip("no /proc/loadavg here")
    assert 0 <= idle <= len(cores.os.sched_getaffinity(0))


@pytest.mark.parametrize("idle, expected", [(0, 1), (1, 1), (3, 2), (None, 2)])
def test_idle_threads_fit_torchs_threads_to_the_idle_cores(monkeypatch, idle, expected):
    monkeypatch.setattr(cores, "idle_cores", lambda: idle)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cores.idle_threads():
            assert torch.get_num_threads() == expected   # at least one, at most the two set
        assert torch.get_num_threads() == 2
        with cores.idle_threads("meta"):                 # not a CPU: left as it is
            assert torch.get_num_threads() == 2
        with pytest.raises(KeyboardInterrupt):           # put back however the work ends
            with cores.idle_threads():
                raise KeyboardInterrupt
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_each_tile_runs_on_the_idle_cores_and_the_count_comes_back(tiny_codec, monkeypatch):
    """The transforms' tile iterator holds `idle_threads` while a tile's work runs, and puts the
    count back after each tile, and when the work stops in the middle of one."""
    monkeypatch.setattr(cores, "idle_cores", lambda: 1)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inside = [torch.get_num_threads() for _ in tiny_codec._tiles(300, 300)]
        assert len(inside) > 1 and set(inside) == {1} and torch.get_num_threads() == 2
        with pytest.raises(KeyboardInterrupt):
            for _ in tiny_codec._tiles(300, 300):
                raise KeyboardInterrupt
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
