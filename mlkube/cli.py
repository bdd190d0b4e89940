"""The `mlkube` command. Each subcommand is one line in COMMANDS; handlers are imported only when called, so
`mlkube --help` answers without importing ray, torch or kubernetes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML)")
    p.add_argument("--run-id", help="run folder name under the spec's run_dir (default: a fresh id)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run stage by stage (same spec)")
    p.add_argument("--serve", action="store_true", help="archive the best models, start TorchServe, send a sample prediction")
    p.add_argument("--stages", help="comma-separated subset of stages to run (default: all the spec enables)")


def _spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML)")
    p.add_argument("--reference", action="store_true", help="print the spec reference (every key, default, meaning)")


def _run_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder, or a run id under ./runs")


# name, help, arguments, handler ("module:function", imported on use)
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], str]] = [
    ("run", "run the stages a spec enables, in one run directory", _run_args, "mlkube.pipeline:cmd_run"),
    ("validate", "check a spec and print every problem (exit 2 if any)", _spec_arg, "mlkube.pipeline:cmd_validate"),
    ("show", "print a run's leaderboard as a table", _run_ref, "mlkube.pipeline:cmd_show"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlkube",
        description="The classic ML workflow from one YAML spec: on this machine, or unchanged on Kubernetes.",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print only results and errors (for CI)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text, add_args, handler in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = args.handler.split(":")
    from trainer.errors import MlkubeError

    try:
        return getattr(importlib.import_module(module), func)(args) or 0
    except MlkubeError as err:
        print(f"mlkube: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("mlkube: interrupted; continue with --resume <run-id>", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
