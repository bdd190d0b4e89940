"""The local launcher of the LSTM's elastic training: torchrun on this machine, show its progress, and keep
its log in the run.

By default the rendezvous is local (c10d on a free loopback port, one node), and nothing of it listens
beyond loopback: torchrun's agent serves the c10d store on a socket this process bound to 127.0.0.1
(`mlkube.commands.torchrun_agent`; TCPStore alone listens on every interface), `LOCAL_RENDEZVOUS` keeps
torchrun from hosting another (`is_host=false`), makes MASTER_ADDR loopback (`--local-addr`), has rank 0 host
the workers' store there instead of torchrun's shared one (which would listen everywhere), and binds gloo to
`lo`. This process never imports torch for it. With `lstm.elastic.rdzv_endpoint` set, the spec's backend,
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
from mlkube.trainer.lstm.elastic import PREFIX
from mlkube.trainer.lstm.store import listen
from mlkube.trainer.progress import Progress
from mlkube.trainer.run import Run

WORKER = "mlkube.commands.lstm_worker"  # the module each torchrun worker runs
AGENT = "mlkube.commands.torchrun_agent"  # torchrun with the local rendezvous store in its process
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


def torchrun_command(elastic, run: Run, store_fd: int | None = None, local_port: int = 0) -> list[str]:
    """`python -m torch.distributed.run ... -m mlkube.commands.lstm_worker --spec ... --run-dir ...` for this
    run; for a local rendezvous (`store_fd`: the loopback socket, bound to `local_port`, that the store
    serves) `python -m mlkube.commands.torchrun_agent FD ...` with the same arguments."""
    if elastic.rdzv_endpoint:
        nodes, backend, endpoint = (
            f"{elastic.min_nodes}:{elastic.max_nodes}",
            elastic.rdzv_backend,
            elastic.rdzv_endpoint,
        )
        launcher = ["torch.distributed.run"]
    else:
        nodes, backend, endpoint = "1", "c10d", f"{LOOPBACK}:{local_port}"
        launcher = [AGENT, str(store_fd)]
    return [
        sys.executable,
        "-m",
        *launcher,
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
    # the local rendezvous store lives in torchrun's agent (mlkube.commands.torchrun_agent), on a socket bound
    # to loopback here: this process never imports torch for it
    listener = listen(LOOPBACK, 0) if local else None
    env = {**os.environ, "TMPDIR": tmp, **(LOCAL_RENDEZVOUS if local else NODES_RENDEZVOUS)}
    try:
        with (
            open(log, "a") as out,
            subprocess.Popen(
                torchrun_command(
                    elastic,
                    run,
                    listener.fileno() if listener else None,
                    listener.getsockname()[1] if listener else 0,
                ),
                env=env,
                # the run stays locked while torchrun lives, past a killed driver
                pass_fds=(*run.writer_fds, *([listener.fileno()] if listener else [])),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            ) as proc,
        ):
            assert proc.stdout is not None  # stdout=PIPE
            if listener is not None:
                listener.close()  # the agent's now
            try:
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
        if listener is not None:
            listener.close()
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
