"""The local launcher of the LSTM's elastic training: torchrun on this machine, show its progress, and keep
its log in the run.

By default the rendezvous is local (c10d on a free loopback port, one node), and nothing of it listens
beyond loopback: this process hosts the c10d store on a socket bound to 127.0.0.1 (TCPStore alone listens on
every interface), and `LOCAL_RENDEZVOUS` keeps torchrun from hosting one (`is_host=false`), makes MASTER_ADDR
loopback (`--local-addr`), has rank 0 host the workers' store there instead of torchrun's shared one (which
would listen everywhere), and binds gloo to `lo`. With `lstm.elastic.rdzv_endpoint` set, the spec's backend,
endpoint and min..max nodes are used, so torchrun on other machines can join the group. Each launch gets its
own TMPDIR (torchrun and inductor leave folders there), removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.elastic import PREFIX, listen, tcp_store_server
from mlkube.trainer.progress import Progress
from mlkube.trainer.run import Run

WORKER = "mlkube.commands.lstm_worker"  # the module each torchrun worker runs
LOOPBACK = "127.0.0.1"
# torchrun's flags as its PET_* variables, and the variables the workers read, for a local rendezvous
LOCAL_RENDEZVOUS = {
    "PET_RDZV_CONF": "is_host=false",  # the store is this process's (see `launch`)
    "PET_LOCAL_ADDR": LOOPBACK,  # MASTER_ADDR
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # rank 0 hosts the workers' store, on MASTER_ADDR only
    "GLOO_SOCKET_IFNAME": "lo",
}
# with other nodes: rank 0 hosts each formation's own store (see elastic.process_group.store). On torchrun's
# shared store, a node joining a later round waits forever for the address its agent reads there: torch's
# rank-0 agent publishes it in the first round only (DynamicRendezvousHandler.next_rendezvous), and the
# survivor's agent then fails with `DistStoreError: wait timeout ... role_info/0, role_info/1`
NODES_RENDEZVOUS = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
FAILURE_MARK = (
    "failed (exitcode"  # torchrun's line when a worker died (it restarts the group, up to max_restarts)
)


def torchrun_command(elastic, run: Run, local_port: int) -> list[str]:
    """`python -m torch.distributed.run ... -m mlkube.commands.lstm_worker --spec ... --run-dir ...` for this
    run."""
    if elastic.rdzv_endpoint:
        nodes, backend, endpoint = (
            f"{elastic.min_nodes}:{elastic.max_nodes}",
            elastic.rdzv_backend,
            elastic.rdzv_endpoint,
        )
    else:
        nodes, backend, endpoint = "1", "c10d", f"{LOOPBACK}:{local_port}"
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={elastic.nproc_per_node}",
        f"--rdzv-backend={backend}",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={run.id}",
        f"--max-restarts={elastic.max_restarts}",
        "-m",
        WORKER,
        "--spec",
        str(run.spec_file),
        "--run-dir",
        str(run.path),
    ]


def launch(elastic, run: Run, progress: Progress) -> None:
    """Run torchrun to the end; show rank 0's progress lines and worker failures."""
    log = run.lstm_log
    log.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="mlkube-torchrun-")
    local = not elastic.rdzv_endpoint
    # torchrun starts before this process imports torch for the store (1.3 s here): the two imports overlap,
    # and torchrun's agent waits in the socket's backlog until the store serves
    listener = listen(LOOPBACK, 0) if local else None
    store = None
    env = {**os.environ, "TMPDIR": tmp, **(LOCAL_RENDEZVOUS if local else NODES_RENDEZVOUS)}
    try:
        with (
            open(log, "a") as out,
            subprocess.Popen(
                torchrun_command(elastic, run, listener.getsockname()[1] if listener else 0),
                env=env,
                pass_fds=run.writer_fds,  # the run stays locked while torchrun lives, past a killed driver
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ) as proc,
        ):
            assert proc.stdout is not None  # stdout=PIPE
            try:
                if listener is not None:
                    store = tcp_store_server(
                        LOOPBACK, 0, listener, multi_tenant=True, wait_for_workers=False
                    )
                for line in proc.stdout:
                    out.write(line)
                    out.flush()
                    if line.startswith(PREFIX):
                        progress.say(line.strip())
                    elif FAILURE_MARK in line:
                        progress.say(f"torchrun: worker {line.split('] ', 1)[-1].strip()}")
            finally:
                if proc.poll() is None:
                    proc.terminate()  # torchrun stops its workers on SIGTERM
                proc.wait()
    finally:
        if listener is not None and store is None:
            listener.close()  # torchrun failed to start, or the store did
        del store  # stops listening
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise MlkubeError(
            f"LSTM training failed: torchrun exited with {proc.returncode}{_tail(log)}",
            f"read {log}; after fixing the cause, `mlkube run SPEC --resume {run.id}` continues from "
            "the last checkpoint",
        )


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "; last lines of its log:\n    " + "\n    ".join(text) if text else ""
