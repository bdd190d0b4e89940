"""A driver killed without `ray.shutdown()` leaves no Ray process behind (the reaper of the local Ray), and
kills nothing of another local Ray on the same machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

DRIVER = """
import json, sys, time
import psutil
from mlkube.trainer.classical.search import connect_ray
from mlkube.trainer.progress import Progress

connect_ray(None, 1, Progress(quiet=True))
ray_pids = [p.pid for p in psutil.Process().children(recursive=True) if "reaper" not in " ".join(p.cmdline())]
print(json.dumps(ray_pids), flush=True)
time.sleep(600)
"""


def start_driver():
    """A process that starts its local Ray through mlkube's connect_ray; it and the Ray processes under it."""
    import psutil

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env)
    line = driver.stdout.readline()
    assert line, f"the driver ended with {driver.wait()} before its Ray was up"
    return driver, [psutil.Process(pid) for pid in json.loads(line)]


def test_a_killed_driver_leaves_no_ray_process_behind_and_another_local_ray_keeps_running():
    """SIGKILL leaves Ray's agents (re-parented to init) running for a minute or more; the reaper kills every
    process that driver's local Ray started within seconds, and none of a second local Ray on the machine
    (which its driver started beside the first: a Ray of its own, not the first one joined)."""
    other, others = start_driver()
    try:
        driver, processes = start_driver()
        try:
            names = " ".join(p.name() + " " + " ".join(p.cmdline()) for p in processes)
            assert "raylet" in names and "ray::" in names  # the agents, started by the raylet
            assert not {p.pid for p in processes} & {p.pid for p in others}  # two Rays, not one joined
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in processes):
            time.sleep(0.2)
        assert [p.pid for p in processes if _alive(p)] == []
        assert all(_alive(p) for p in others)  # the other driver's Ray is untouched
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
