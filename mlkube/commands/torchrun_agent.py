"""torchrun's agent for a local rendezvous, with the rendezvous store in the agent's own process:
`python -m mlkube.commands.torchrun_agent FD TORCHRUN-ARGS...`.

FD is a socket the launcher bound to loopback and passed down (`mlkube.torchrun.launch`); the c10d store is
served on it (TCPStore given just a host would listen on every interface), then torchrun runs here with the
given arguments (`--rdzv-conf is_host=false` via PET_RDZV_CONF: it joins this store). The launcher itself
then never imports torch: one interpreter fewer holds it while the workers train.
"""

from __future__ import annotations

import socket
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or not args[0].isdigit():
        raise SystemExit("usage: python -m mlkube.commands.torchrun_agent FD TORCHRUN-ARGS...")
    from torch.distributed import run as torchrun

    from mlkube.trainer.lstm.store import tcp_store_server

    listener = socket.socket(fileno=int(args[0]))
    addr = listener.getsockname()[0]
    store = tcp_store_server(addr, 0, listener, multi_tenant=True, wait_for_workers=False)
    try:
        torchrun.main(args[1:])  # torchrun's own exit: an exception (exit 1) when the workers failed
    finally:
        del store


if __name__ == "__main__":
    main()
