"""`mlkube archive/serve/predict`: a run's models as TorchServe archives, on a local TorchServe, and asked."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlkube.serving.archive import archive_run
from mlkube.serving.server import (
    describe,
    renew_key,
    run_serve_spec,
    running_server,
    serve_run,
    wait_for_interrupt,
)
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import Run


def cmd_archive(args: argparse.Namespace) -> int:
    run = Run.open(args.run)
    for mar in archive_run(run, args.model, force=args.force):
        print(mar)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    run = Run.open(args.run)
    if args.stop:
        server = running_server(run.serving)
        if server is None:
            print(f"no TorchServe runs for {run.id}")
            return 0
        server.stop()
        print(f"stopped TorchServe of {run.id} (pid {server.pid})")
        return 0
    if args.renew_key:
        server = running_server(run.serving)
        if server is None:
            raise MlkubeError(
                f"no TorchServe runs for {run.id}: there is no key to renew", f"mlkube serve {run.path}"
            )
        renew_key(server, args.renew_key)
        print(f"renewed the {args.renew_key} key of TorchServe for {run.id}: {server.token_file}")
        return 0
    serve = run_serve_spec(run)
    if args.host is not None:  # where a server binds is the deployment's choice (a pod: 0.0.0.0)
        serve = serve.model_copy(update={"host": args.host})
    server = serve_run(run, serve, names=args.model)
    print(describe(server))
    if args.detach:
        print(f"stop it with: mlkube serve {run.path} --stop")
    else:
        wait_for_interrupt(server)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    run = Run.open(args.run)
    server = running_server(run.serving)
    if server is None:
        raise MlkubeError(f"no TorchServe runs for {run.id}", f"start it with `mlkube serve {run.path}`")
    if args.model not in server.models:
        raise MlkubeError(
            f"the server of {run.id} does not serve {args.model!r}", f"choose from {server.models}"
        )
    source = server.example(args.model) if args.input is None else Path(args.input)
    if str(source) != "-" and not source.is_file():
        raise MlkubeError(
            f"no request file {source}", 'give a JSON file {"instances": [...]} (schemas: docs/serving.md)'
        )
    payload = sys.stdin.buffer.read() if str(source) == "-" else source.read_bytes()
    print(json.dumps(server.predict(args.model, payload), indent=2))
    return 0
