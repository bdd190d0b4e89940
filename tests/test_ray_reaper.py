"""A driver killed without `ray.shutdown()` leaves no Ray process behind (the reaper of the local Ray)."""

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


def test_a_killed_driver_leaves_no_ray_process_behind():
    """SIGKILL leaves Ray's agents (re-parented to init) running for a minute or more; the reaper kills every
    process the local Ray started within seconds."""
    import psutil

    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        ray_pids = json.loads(driver.stdout.readline())
        processes = [psutil.Process(pid) for pid in ray_pids]
        names = " ".join(p.name() + " " + " ".join(p.cmdline()) for p in processes)
        assert "raylet" in names and "ray::" in names  # the agents, started by the raylet
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in processes):
        time.sleep(0.2)
    assert [p.pid for p in processes if _alive(p)] == []


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
