"""The c10d TCPStore servers of the local elastic training, listening on one address only (TCPStore given just
a host listens on every interface). Light on imports: torchrun's agent wrapper imports this module."""

from __future__ import annotations

import socket


def listen(addr: str, port: int) -> socket.socket:
    """A listening socket bound to `addr` only (port 0: a free one), for `tcp_store_server`. Clients that
    connect before a store serves it wait in its backlog."""
    return socket.create_server((addr, port), family=socket.AF_INET6 if ":" in addr else socket.AF_INET)


def tcp_store_server(addr: str, port: int, listener: socket.socket | None = None, **options):
    """A TCPStore server that listens on `addr` only (port 0: a free one; `.port` says which): it gets a
    socket already bound there (`listener`, from `listen`, or a new one), and owns it."""
    import torch.distributed as dist

    listener = listener if listener is not None else listen(addr, port)
    port = listener.getsockname()[1]
    return dist.TCPStore(addr, port, is_master=True, master_listen_fd=listener.detach(), **options)
