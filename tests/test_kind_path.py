"""The kind path and the image, as far as a machine with no Docker engine can check them: shellcheck, the
scripts' dry runs, hadolint and BuildKit's own Dockerfile parser; the real up → e2e → down run is marked
`kind`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.k8s.schemas import CRDS, KUBE_VERSION, problems

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
KIND = ROOT / "deploy" / "kind"
BIN = ROOT / ".venv" / "bin"
SCRIPTS = ("up.sh", "e2e.sh", "down.sh")


def dry_run(script: str, **env: str) -> list[str]:
    """The commands a script would run (DRY_RUN=1), one string each."""
    proc = subprocess.run(
        ["bash", str(KIND / script)],
        env={**os.environ, "DRY_RUN": "1", "RUN_ID": "e2e-1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stderr.splitlines() if line.startswith("+ ")]


def common(name: str) -> str:
    (value,) = re.findall(
        rf"^{name}=\$\{{{name}:-([^}}]+)\}}", (KIND / "common.sh").read_text(), flags=re.MULTILINE
    )
    return value


def dockerfile() -> list:
    import dockerfile as parser

    return list(parser.parse_file(str(ROOT / "Dockerfile")))


# ------------------------------------------------------------------------------------------- scripts
def test_scripts_pass_shellcheck():
    proc = subprocess.run(
        [str(BIN / "shellcheck"), "-x", "--severity=style", *SCRIPTS, "common.sh"],
        cwd=KIND,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_image_build_scripts_pass_shellcheck():
    proc = subprocess.run(
        [str(BIN / "shellcheck"), "-x", "--severity=style", "build.sh", "engine.sh", "base.sh", "slim.sh"],
        cwd=ROOT / "deploy" / "docker",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_strict_executable_bash(script):
    path = KIND / script
    assert os.access(path, os.X_OK)
    assert path.read_text().startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in path.read_text()


def test_up_creates_the_cluster_installs_both_operators_and_loads_the_image():
    commands = dry_run("up.sh")
    assert commands[0] == f"kind create cluster --name mlkube --config {KIND}/cluster.yaml --wait 180s"
    assert any(
        c.startswith("helm upgrade --install kuberay-operator kuberay/kuberay-operator --version 1.7.0")
        for c in commands
    )
    assert any("training-operator.git/manifests/overlays/standalone?ref=v1.9.0" in c for c in commands)
    assert any("kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0" in c for c in commands)
    assert (
        "kubectl -n kubeflow-system rollout status deployment/kubeflow-trainer-controller-manager"
        in " ".join(commands)
    )
    assert not any("kueue" in c for c in commands)
    build, load = commands[-2:]
    assert build.startswith("docker build --build-arg BASE=mlkube-base:bookworm ")  # deploy/docker/build.sh
    assert (
        build.endswith(f" -t mlkube:dev {ROOT}") and load == "kind load docker-image mlkube:dev --name mlkube"
    )
    assert not any("elasticjob" in c for c in commands)
    signing = [c for c in commands if "create secret generic" in c]
    assert len(signing) == 1 and signing[0].startswith(
        "kubectl -n mlkube create secret generic mlkube-signing "
    )
    assert " --from-file=key=" in signing[0]  # from a private file: the key never appears on a command line


def test_up_installs_the_elasticjob_controller_on_request():
    assert f"kubectl apply -k {KIND}/elasticjob" in dry_run("up.sh", ELASTICJOB="1")


def test_up_installs_kueue_on_request():
    commands = dry_run("up.sh", KUEUE="1")
    assert (
        "kubectl apply --server-side -f https://github.com/kubernetes-sigs/kueue/releases/download/v0.19.2/"
        "manifests.yaml" in commands
    )
    assert any(c.startswith("kubectl -n kueue-system wait deploy/kueue-controller-manager") for c in commands)


def test_up_builds_the_gpu_variant_on_request():
    (build,) = [c for c in dry_run("up.sh", VARIANT="gpu") if c.startswith("docker build ")]
    assert " --build-arg BASE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime " in build
    assert " --build-arg TORCH_FROM=base " in build and "/opt/extras/wheels" not in build


def test_operator_versions_are_those_of_the_vendored_crds():
    readme = (CRDS / "README.md").read_text()
    assert re.search(rf"ray.io_rayjobs.yaml.*\| v{re.escape(common('KUBERAY_VERSION'))} ", readme)
    assert re.search(
        rf"kubeflow.org_pytorchjobs.yaml.*\| {re.escape(common('TRAINING_OPERATOR_VERSION'))} ", readme
    )
    assert re.search(
        rf"trainer.kubeflow.org_trainjobs.yaml.*\| {re.escape(common('TRAINER_VERSION'))} ", readme
    )


def test_e2e_tunes_serves_the_tuned_run_predicts_with_torchserves_key_and_collects_logs():
    commands = dry_run("e2e.sh")
    mlkube = str(ROOT / ".venv/bin/mlkube")
    assert commands[0] == (
        f"{mlkube} submit {KIND}/experiment.yaml --kind ray --run-id e2e-1 -n mlkube "
        f"-f {KIND}/values.yaml --timeout 1800"
    )
    install = next(c for c in commands if c.startswith("helm upgrade --install mlkube-serve-e2e-1"))
    assert "--set serve.runId=e2e-1" in install and "--set runs.claimName=mlkube-runs" in install
    assert "helm test mlkube-serve-e2e-1 -n mlkube --logs" in commands
    assert (
        "kubectl -n mlkube exec deploy/mlkube-serve-e2e-1-serve -- "
        "mlkube predict /runs/e2e-1 --model classical" in commands
    )
    assert any(
        c.startswith("kubectl") and "/runs/e2e-1/serving/key_file.json" in c and "Authorization: Bearer" in c
        for c in commands
    )
    assert any(c.startswith("curl") and " -H @" in c and "/predictions/classical" in c for c in commands)
    assert "collect" in (KIND / "e2e.sh").read_text() and "trap collect EXIT" in (KIND / "e2e.sh").read_text()


def test_e2e_trains_the_lstm_on_request():
    assert any("--kind elastic --run-id e2e-1-lstm" in c for c in dry_run("e2e.sh", ELASTIC="1"))


def test_down_deletes_the_cluster():
    assert dry_run("down.sh") == ["kind delete cluster --name mlkube"]


def test_a_missing_tool_stops_up_with_the_install_hint(tmp_path):
    for tool in ("bash", "dirname", "basename", "cat"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run(
        [str(tmp_path / "bash"), str(KIND / "up.sh")],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "up.sh: docker not found: install Docker" in proc.stderr


def test_kind_cluster_has_one_control_plane_two_workers_at_the_validated_version():
    config = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert {n["image"] for n in config["nodes"]} == {f"kindest/node:v{KUBE_VERSION.rsplit('.', 1)[0]}.1"}


def test_the_loaded_image_is_the_one_kind_pods_run_and_never_pull():
    image = yaml.safe_load((KIND / "values.yaml").read_text())["image"]
    assert f"{image['repository']}:{image['tag']}" == common("IMAGE") and image["pullPolicy"] == "Never"


def test_elasticjob_v1_crd_is_valid_and_keeps_the_vendored_fields():
    v1 = yaml.safe_load((KIND / "elasticjob" / "crd.yaml").read_text())
    assert problems(v1) == []
    vendored = yaml.safe_load((CRDS / "elastic.pytorch.org_elasticjobs.yaml").read_text())
    v1_schema = v1["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    vendored_schema = vendored["spec"]["validation"]["openAPIV3Schema"]
    assert set(v1_schema["properties"]["spec"]["properties"]) == set(
        vendored_schema["properties"]["spec"]["properties"]
    )


# ------------------------------------------------------------------------------------------- the image
def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_dockerfile_builds_cpu_by_default_and_gpu_through_build_arguments_alone():
    """Every stage is FROM ${BASE}: the legacy builder builds every stage, so none may need an image (a CUDA
    base) that the build was not given; the GPU build is BASE plus TORCH_FROM=base."""
    commands = dockerfile()
    assert {c.value[0] for c in commands if c.cmd == "FROM"} == {"${BASE}"}
    args = dict(c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0])
    assert args["BASE"] == "python:3.11-slim-bookworm"
    assert args["TORCH_FROM"] == '"--index-url https://download.pytorch.org/whl/cpu"'
    torch = next(c for c in commands if c.cmd == "RUN" and "$TORCH_FROM" in c.value[0])
    assert '"torch==${TORCH_VERSION}+cpu"' in torch.value[0] and '"$TORCH_FROM" == base' in torch.value[0]


def test_the_cpu_image_installs_the_torch_that_constraints_pin():
    (pinned,) = re.findall(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), flags=re.MULTILINE)
    assert f"ARG TORCH_VERSION={pinned}" in (ROOT / "Dockerfile").read_text()


def test_the_image_runs_mlkube_as_the_charts_non_root_user():
    commands = dockerfile()
    user = [c.value[0] for c in commands if c.cmd == "USER"][-1]
    uid = yaml.safe_load((ROOT / "helm/mlkube/values.yaml").read_text())["security"]["runAsUser"]
    assert user == f"{uid}:{uid}" and uid != 0
    assert [c for c in commands if c.cmd == "ENTRYPOINT"][-1].value == ("mlkube",)
    assert 'mlkube = "mlkube.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_every_copied_path_exists_and_passes_dockerignore():
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = [
        src.rstrip("/") for c in dockerfile() if c.cmd == "COPY" and not c.flags for src in c.value[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src == a or src.startswith(f"{a}/") for a in allowed), (
            f"{src} is excluded by .dockerignore"
        )
    assert (ROOT / ".dockerignore").read_text().splitlines()[1] == "**"
    assert not {".venv", ".git", "tests", "runs"} & set(allowed)


# ------------------------------------------------------------------------------------------- the real thing
@pytest.mark.kind
def test_kind_up_e2e_down():
    """On a machine with Docker and kind: the whole path, for real (about 20 minutes)."""
    env = {**os.environ, "CLUSTER": "mlkube-test"}
    try:
        for script in ("up.sh", "e2e.sh"):
            subprocess.run(["bash", str(KIND / script)], env=env, check=True, timeout=3600)
    finally:
        subprocess.run(["bash", str(KIND / "down.sh")], env=env, check=False, timeout=600)
