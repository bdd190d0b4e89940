"""`mlkube submit/status/logs/delete`: run a spec's tuning, elastic training or serving on Kubernetes.

submit renders the Helm chart (the objects `helm install` would create) with values from the spec, creates
them after a server-side dry run, then waits with progress, streams the driver's log and exits 0 on success, 1
on failure. With `--dry-run` it prints the rendered objects as YAML and contacts no cluster (like
`helm template`).
"""

from __future__ import annotations

import argparse

import yaml

from mlkube.cluster.chart import check_run_id, read_values_file, release_name, render, values_for
from mlkube.cluster.jobs import CHART_KINDS, LOG_ROLE, WORKLOADS, no_run, pod_phase, read_spec, wait
from mlkube.cluster.kube import Kube, current_namespace
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.progress import Progress
from mlkube.trainer.run import new_run_id


def cmd_submit(args: argparse.Namespace) -> int:
    spec = read_spec(args.spec)
    if args.kind == "serve" and not args.run_id:
        raise MlkubeError("--kind serve needs the run to serve", "give its id: --run-id RUN_ID")
    if args.kind == "elastic":
        check_elastic_alone(spec)
    run_id = check_run_id(args.run_id or new_run_id())
    namespace = args.namespace or spec.cluster.namespace
    values = values_for(spec, args.kind, run_id, [read_values_file(f) for f in args.values or []])
    rendered = render(values, release_name(run_id), namespace)
    if args.dry_run:
        print(yaml.safe_dump_all(rendered.objects, sort_keys=False), end="")
        return 0
    progress = Progress(quiet=args.quiet)
    kube = Kube(namespace, args.context)
    kube.apply(rendered.objects, dry_run=True)
    for name in kube.apply(rendered.objects):
        progress.say(f"created {name}")
    kind, name = next((o["kind"], o["metadata"]["name"]) for o in rendered.objects if o["kind"] in WORKLOADS)
    if args.detach:
        print(
            f"run {run_id}: submitted {kind}/{name} to {namespace}; "
            f"follow it with `mlkube status {run_id} -n {namespace}`"
        )
        return 0
    state = wait(kube, kind, name, run_id, LOG_ROLE[args.kind], args.timeout, args.poll, progress)
    print(f"run {run_id}: {kind}/{name} {state.text}")
    if state.ok and args.kind == "serve":
        print(rendered.notes)
    return 0 if state.ok else 1


def check_elastic_alone(spec) -> None:
    """The training job runs one elastic training of the spec's network and nothing else: the LSTM's search,
    basin folds and ensemble members are Ray Tune trials, which only `mlkube run` (the RayJob) runs."""
    lstm = spec.lstm
    if lstm is None:
        raise MlkubeError("--kind elastic trains the LSTM, and the spec has no `lstm` section", "add one")
    wanted = [
        name
        for name, on in (
            ("lstm.search", lstm.search is not None),
            ("lstm.cv", lstm.cv is not None),
            (f"lstm.ensemble: {lstm.ensemble}", lstm.ensemble > 1),
        )
        if on
    ]
    if wanted:
        raise MlkubeError(
            f"--kind elastic runs one elastic training, not {', '.join(wanted)}: those run as Ray Tune "
            "trials inside `mlkube run`",
            "submit with --kind ray (the RayJob runs every stage of the spec), or drop them from the spec",
        )


def cmd_status(args: argparse.Namespace) -> int:
    kube = _kube(args)
    workloads = [
        (kind, obj, read(obj))
        for kind, (api, read) in WORKLOADS.items()
        for obj in kube.find(api, kind, args.run_id)
    ]
    pods = kube.pods(args.run_id)
    if not workloads and not pods:
        raise no_run(args.run_id, kube.namespace)
    for kind, obj, state in workloads:
        print(f"{kind}/{obj['metadata']['name']}: {state.text}")
    for pod in pods:
        print(f"  pod {pod['metadata']['name']}: {pod_phase(pod)}")
    return 1 if any(state.done and not state.ok for _, _, state in workloads) else 0


def cmd_logs(args: argparse.Namespace) -> int:
    kube = _kube(args)
    pods = kube.pods(args.run_id)
    if not pods:
        raise no_run(args.run_id, kube.namespace)
    for pod in pods:
        name = pod["metadata"]["name"]
        print(f"==> pod {name} <==", flush=True)
        for line in kube.log_lines(name, follow=args.follow):
            print(line, flush=True)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    kube = _kube(args)
    deleted = []
    for api, kind in CHART_KINDS:
        for obj in kube.find(api, kind, args.run_id):
            kube.delete(api, kind, obj["metadata"]["name"])
            deleted.append(f"{kind}/{obj['metadata']['name']}")
    if not deleted:
        raise no_run(args.run_id, kube.namespace)
    print(f"run {args.run_id}: deleted {', '.join(deleted)} (the runs volume and its results are kept)")
    return 0


def _kube(args: argparse.Namespace) -> Kube:
    return Kube(args.namespace or current_namespace(args.context), args.context)
