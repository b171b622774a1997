"""Which cores are idle at this moment, and torch's threads fitted to them.

A codec runs beside other work. A parallel operation on torch's threads waits at its end for every
thread; when another process holds a core, the thread the system paused holds up the whole
operation, and two threads become slower than one. So where the work is split is decided from the
cores that are idle when it starts (Linux's /proc/loadavg: the runnable tasks of the whole machine,
less this process's own, within a container's CPU quota):
- the token coder's window groups (coding/window_groups.py) run on two threads only where a core
  is idle;
- the transforms (analysis and synthesis, codec.py) take `idle_threads()` for each tile: kodim01,
  05, 09, 13, 17 and 23 beside one busy process on two cores took 0.366 s (analysis) and 0.322 s
  (synthesis) on torch's two threads, 0.279 and 0.248 s on one; on an idle machine two threads
  stay (0.129 and 0.123 s, against 0.257 and 0.227 on one; docs/experiments.md, transforms-load-28).
Elsewhere than Linux the count is unknown and nothing changes.
"""
import functools
import os

import torch

from .numerics import torch_threads


def idle_cores(proc: str = "/proc", cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Cores that no other process is running on at this moment: usable cores minus the running
    tasks of other processes (/proc/loadavg counts every runnable task; this process's own, the
    calling thread and any of torch's threads still spinning after a parallel operation, are
    subtracted), within a container's CPU quota. None where unknown (not Linux)."""
    try:
        with open(f"{proc}/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir(f"{proc}/self/task"):
            try:
                with open(f"{proc}/self/task/{task}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended meanwhile
                continue
        cores = min(len(os.sched_getaffinity(0)), quota_cores(cgroup))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return max(0, cores - max(0, running - own))


@functools.cache
def quota_cores(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs a container's quota allows (cgroup v2's cpu.max, v1's cfs_quota_us), rounded up;
    a large number where there is none; read once a process. /proc/loadavg counts the whole host's
    tasks, so in a container on a busy host this rarely leaves an idle core: one thread, as it should."""
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(f"{cgroup}/{quota_file}") as f:
                fields = f.read().split()
            if period_file:
                with open(f"{cgroup}/{period_file}") as f:
                    fields.append(f.read().strip())
        except OSError:
            continue
        if fields[0] in ("max", "-1"):
            return 1 << 16
        return max(1, -(-int(fields[0]) // int(fields[1])))
    return 1 << 16


def idle_threads(device: torch.device | str = "cpu"):
    """`numerics.torch_threads` of the cores idle now (at least one, at most the count the caller
    has: `--threads` and a folder run's workers stay within theirs); the count as it is on a GPU, or
    where the idle cores are unknown. Only the time should depend on it: here the transforms give
    the same indices, distances and pixels on one thread and on two (24 Kodak images and a 3 MP
    image in tiles), as `--threads 1` always could."""
    count = torch.get_num_threads()
    idle = idle_cores() if torch.device(device).type == "cpu" and count > 1 else None
    return torch_threads(count if idle is None else max(1, min(count, idle)))
