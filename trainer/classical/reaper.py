"""A watchdog for the local Ray that mlkube starts, so that a driver killed without `ray.shutdown()`
(SIGKILL, the OOM killer) leaves no Ray process behind.

Ray's GCS and raylet share the driver's fate, but the agents the raylet starts (DashboardAgent,
RuntimeEnvAgent) are re-parented to init and linger on (measured: still there 20 s after the driver was
killed). The reaper is a small process of its own session: it holds the read end of a pipe whose write end
only the driver holds, keeps a list of every process under the Ray processes the driver started (with their
start times, so a reused pid is never hit), and when the pipe closes (the driver is gone, whatever killed it)
it kills those still alive. It ends by itself once the Ray it watches has shut down.

    python -m mlkube.trainer.classical.reaper FD PID...
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterable

POLL_S = 0.5
READY_TIMEOUT_S = 10
_pipes: list[int] = []  # the write ends: open for the driver's whole life, closed by its death


def children() -> set[int]:
    """The pids of this process's children now."""
    import psutil

    return {p.pid for p in psutil.Process().children()}


def start_reaper(ray_roots: Iterable[int]) -> subprocess.Popen:
    """Watch the Ray processes `ray_roots` (the driver's children that `ray.init` started) and everything
    under them, for as long as this process lives."""
    read, write = os.pipe()
    os.set_inheritable(read, True)
    try:
        reaper = subprocess.Popen(
            [sys.executable, "-m", __name__, str(read), *map(str, sorted(ray_roots))],
            pass_fds=(read,),
            start_new_session=True,  # not in the driver's process group: a group kill must not take it first
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(read)
    _pipes.append(write)
    assert reaper.stdout is not None
    with reaper.stdout:  # it says when it has seen the processes once: a kill from then on is covered
        select.select([reaper.stdout], [], [], READY_TIMEOUT_S)
    return reaper


def watch(fd: int, roots: list[int], poll: float = POLL_S) -> None:
    """Track the processes under `roots` until `fd` reaches end of file (then kill them) or every one of them
    has ended (Ray was shut down)."""
    import psutil

    seen: dict[int, float] = {}  # pid → start time
    alive = _track(roots, seen)
    os.write(sys.stdout.fileno(), b"watching\n")
    sys.stdout.close()
    while True:
        if not alive:
            return
        ready, _, _ = select.select([fd], [], [], poll)
        if ready and not os.read(fd, 1):  # end of file: the driver died
            _track(roots, seen)
            break
        alive = _track(roots, seen)
    for pid, started in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.kill()
        except psutil.Error:
            continue


def _track(roots: list[int], seen: dict[int, float]) -> int:
    """Add every live process under `roots` (roots included) to `seen`; how many of `seen` still live (those
    re-parented away from the roots included; zombies are dead)."""
    import psutil

    for pid in roots:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in family:
            try:
                seen.setdefault(process.pid, process.create_time())
            except psutil.Error:
                continue
    alive = 0
    for pid, started in seen.items():
        try:
            process = psutil.Process(pid)
            alive += process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
    return alive


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]])
