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
    p.add_argument(
        "--resume", metavar="RUN_ID", help="continue an interrupted run stage by stage (same spec)"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="archive the best models, start TorchServe, send a sample prediction",
    )
    p.add_argument("--stages", help="comma-separated subset of stages to run (default: all the spec enables)")


def _spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="experiment spec (YAML)")
    p.add_argument(
        "--reference", action="store_true", help="print the spec reference (every key, default, meaning)"
    )


def _run_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder, or a run id under ./runs")


def _archive_args(p: argparse.ArgumentParser) -> None:
    _run_ref(p)
    p.add_argument(
        "--model", action="append", help="only this model (repeatable; default: every model of the run)"
    )
    p.add_argument("--force", action="store_true", help="re-create archives that are up to date")


def _serve_args(p: argparse.ArgumentParser) -> None:
    _run_ref(p)
    p.add_argument(
        "--model", action="append", help="serve only this model (repeatable; default: every model of the run)"
    )
    p.add_argument(
        "--host",
        help="bind address of the inference and metrics APIs, e.g. 0.0.0.0 in a pod "
        "(default: the run's serve.host, loopback)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--detach", action="store_true", help="return once it serves (default: stay attached until Ctrl-C)"
    )
    mode.add_argument("--stop", action="store_true", help="stop the run's TorchServe")
    mode.add_argument(
        "--renew-key",
        choices=("inference", "management"),
        help="ask the running TorchServe for a new key of this API (over its management socket, with the API "
        "key); the old one stops working, clients read the new one from key_file.json",
    )


def _lr_range_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML) with an lstm section")
    p.add_argument("--steps", type=int, default=200, help="training steps of the test (default: 200)")
    p.add_argument("--min", type=float, default=1e-5, help="first learning rate (default: 1e-5)")
    p.add_argument("--max", type=float, default=1.0, help="last learning rate (default: 1)")
    p.add_argument(
        "--out", default="lr-range", help="folder for lr_range.json and lr_range.png (default: lr-range)"
    )


def _predict_args(p: argparse.ArgumentParser) -> None:
    _run_ref(p)
    p.add_argument("--model", required=True, help="the served model (e.g. classical, lstm)")
    p.add_argument("--input", help="request JSON file, '-' for stdin (default: the model's example request)")


def _cluster_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", help="the run id that `mlkube submit` printed")
    p.add_argument("--namespace", "-n", help="Kubernetes namespace (default: the kubeconfig context's)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML)")
    p.add_argument(
        "--kind",
        required=True,
        choices=("ray", "elastic", "serve"),
        help=(
            "ray: tuning on a KubeRay RayJob; elastic: the LSTM under torchrun; "
            "serve: TorchServe for --run-id"
        ),
    )
    p.add_argument("--run-id", help="run id (default: a fresh id); with --kind serve, the run to serve")
    p.add_argument("--namespace", "-n", help="Kubernetes namespace (default: the spec's cluster.namespace)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--values", "-f", action="append", metavar="FILE", help="chart values file merged on top (repeatable)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--detach", action="store_true", help="return once the objects exist; follow with `mlkube status`"
    )
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="print the objects it would create (YAML) and contact no cluster, like `helm template`",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the job (default 3600)")
    p.add_argument("--poll", type=float, default=5, help="seconds between status checks (default 5)")


def _logs_args(p: argparse.ArgumentParser) -> None:
    _cluster_ref(p)
    p.add_argument("--follow", action="store_true", help="keep streaming until the containers end")


def _watch_args(p: argparse.ArgumentParser) -> None:
    _run_ref(p)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between looks (default 2)")
    p.add_argument("--once", action="store_true", help="print once and exit")


def _compare_args(p: argparse.ArgumentParser) -> None:
    _run_ref(p)
    p.add_argument("other", help="the second run (folder or id)")


# name, help, arguments, handler ("module:function", imported on use)
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], str]] = [
    ("run", "run the stages a spec enables, in one run directory", _run_args, "mlkube.commands.runs:cmd_run"),
    (
        "validate",
        "check a spec and print every problem (exit 2 if any)",
        _spec_arg,
        "mlkube.commands.runs:cmd_validate",
    ),
    ("show", "print a run's leaderboard as a table", _run_ref, "mlkube.commands.runs:cmd_show"),
    (
        "report",
        "rebuild a run's leaderboard, figures and report.html",
        _run_ref,
        "mlkube.commands.runs:cmd_report",
    ),
    ("compare", "put two runs' leaderboards side by side", _compare_args, "mlkube.commands.runs:cmd_compare"),
    (
        "watch",
        "print a run's live progress until it finishes",
        _watch_args,
        "mlkube.commands.watch:cmd_watch",
    ),
    (
        "lr-range",
        "learning-rate range test of a spec's LSTM: loss against a growing rate, a rate suggested",
        _lr_range_args,
        "mlkube.commands.lr_range:cmd_lr_range",
    ),
    (
        "archive",
        "package a run's models as TorchServe archives (.mar)",
        _archive_args,
        "mlkube.commands.serving:cmd_archive",
    ),
    (
        "serve",
        "serve a run's models on a local TorchServe (token auth, Prometheus metrics)",
        _serve_args,
        "mlkube.commands.serving:cmd_serve",
    ),
    (
        "predict",
        "send a request to a model of a run's TorchServe",
        _predict_args,
        "mlkube.commands.serving:cmd_predict",
    ),
    (
        "submit",
        "run a spec's tuning, LSTM training or serving on Kubernetes",
        _submit_args,
        "mlkube.commands.cluster:cmd_submit",
    ),
    (
        "status",
        "state of a submitted run's jobs and pods",
        _cluster_ref,
        "mlkube.commands.cluster:cmd_status",
    ),
    ("logs", "logs of a submitted run's pods", _logs_args, "mlkube.commands.cluster:cmd_logs"),
    (
        "delete",
        "delete a submitted run's objects (its results on the runs volume stay)",
        _cluster_ref,
        "mlkube.commands.cluster:cmd_delete",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlkube",
        description=(
            "The classic ML workflow from one YAML spec: on this machine, or unchanged on Kubernetes."
        ),
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
    from mlkube.trainer.errors import MlkubeError

    try:
        return getattr(importlib.import_module(module), func)(args) or 0
    except MlkubeError as err:
        print(f"mlkube: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # e.g. `mlkube validate --reference | head`
        return 0
    except KeyboardInterrupt:
        print("mlkube: interrupted; continue with --resume <run-id>", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
