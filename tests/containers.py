"""Real containers for the `container` tests: the one image (built once by deploy/docker/build.sh, or reused
when it exists), and a `Cluster` per test: a user-defined network, the runs volume (as the PVC), the
containers started on them, each its own hostname; `close()` removes every one of them, even after a failure.

`start_pod` runs a rendered pod template's container as Kubernetes would: its command/args (with `$(VAR)`
expanded), env, working dir, security context, and volumes (PVC: the runs volume, ConfigMap and Secret: files,
emptyDir: a tmpfs)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("MLKUBE_IMAGE", "mlkube:dev")
LABEL = "mlkube.test"
MAX_IMAGE_BYTES = 2_500_000_000  # docs/cluster.md's promise for the CPU image
RELEASE = "ct"  # the Helm release the tests render
SIGNING = {"mlkube-signing": {"key": secrets.token_bytes(32)}}  # the chart's signing.secretName, entry `key`


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return proc


def engine_or_skip() -> None:
    """An engine answers (deploy/docker/engine.sh starts one where it can), or the test skips saying why."""
    if shutil.which("docker") is None:
        pytest.skip("container: no docker client on PATH (install docker.io, or run `make test-image`)")
    if docker("info", check=False).returncode == 0:
        return
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy/docker/engine.sh")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"container: no Docker engine can be had here: {proc.stderr.strip()}")


@pytest.fixture(scope="session")
def image() -> str:
    """The image every container test runs (built when absent)."""
    engine_or_skip()
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        subprocess.run(
            ["bash", str(ROOT / "deploy/docker/build.sh")], env={**os.environ, "IMAGE": IMAGE}, check=True
        )
    return IMAGE


def chart(**values: object) -> list[dict]:
    """The chart for the kind values with every workload on, and `values` on top."""
    from mlkube.cluster.chart import deep_merge, render
    from tests.test_chart import kind_everything

    return render(deep_merge(kind_everything(), values), RELEASE, "mlkube").objects


def new_cluster(image: str, tmp: Path) -> Cluster:
    made = Cluster(image, tmp)
    made.secrets.update(SIGNING)
    return made


@pytest.fixture
def cluster(image, tmp_path) -> Iterator[Cluster]:
    """A test's own network, volume and containers, removed afterwards whatever the test did."""
    made = new_cluster(image, tmp_path)
    try:
        yield made
    finally:
        made.close()
    assert made.left_behind() == []


def image_size(name: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", name).stdout)


def wait_until(what: str, condition: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Cluster:
    """One test's containers on their own network and runs volume; everything carries the cluster's label."""

    def __init__(self, image: str, files: Path):
        self.image = image
        self.tag = f"mlkube-t{uuid.uuid4().hex[:8]}"
        self.files = files  # ConfigMaps and Secrets as files, bind-mounted read-only
        self.volume = f"{self.tag}-runs"
        self.secrets: dict[str, dict[str, bytes]] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        docker("network", "create", "--label", f"{LABEL}={self.tag}", self.tag)
        docker("volume", "create", "--label", f"{LABEL}={self.tag}", self.volume)

    def container(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def start(
        self,
        host: str,
        args: Sequence[str] = (),
        *,
        entrypoint: str | None = None,
        env: dict[str, str] | None = None,
        flags: Sequence[str] = (),
        aliases: Sequence[str] = (),
    ) -> str:
        """Start a container named `host` (its hostname and network alias), the runs volume on /runs,
        read-only root and a writable /tmp as the chart's securityContext, uid 1000 (the image's user)."""
        cmd = [
            "run",
            "-d",
            "--name",
            self.container(host),
            "--hostname",
            host,
            "--label",
            f"{LABEL}={self.tag}",
        ]
        cmd += ["--network", self.tag, "--network-alias", host, *(f"--network-alias={a}" for a in aliases)]
        cmd += ["--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777", "-v", f"{self.volume}:/runs"]
        cmd += ["--user", "1000:1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        cmd += [f"--env={k}={v}" for k, v in (env or {}).items()]
        cmd += [*flags, *(["--entrypoint", entrypoint] if entrypoint else []), self.image, *args]
        docker(*cmd)
        return host

    def run(self, host: str, args: Sequence[str], timeout: float = 600, **kwargs: Any) -> str:
        """Start, wait for the exit, and return the output; a non-zero exit fails with the output's end."""
        self.start(host, args, **kwargs)
        code = self.wait(host, timeout)
        out = self.logs(host)
        assert code == 0, f"{host}: {' '.join(args)} exited {code}:\n{out[-4000:]}"
        return out

    def wait(self, host: str, timeout: float) -> int:
        try:
            return int(docker("wait", self.container(host), timeout=timeout).stdout.strip())
        except subprocess.TimeoutExpired as err:
            raise AssertionError(
                f"{host} still runs after {timeout:.0f} s:\n{self.logs(host)[-4000:]}"
            ) from err

    def logs(self, host: str) -> str:
        proc = docker("logs", self.container(host), check=False)
        return proc.stdout + proc.stderr

    def exec(self, host: str, *args: str, timeout: float = 120, check: bool = True) -> str:
        proc = docker("exec", self.container(host), *args, timeout=timeout, check=check)
        return proc.stdout + proc.stderr

    def running(self, host: str) -> bool:
        proc = docker("inspect", "--format", "{{.State.Running}}", self.container(host), check=False)
        return proc.stdout.strip() == "true"

    def kill(self, host: str) -> None:
        docker("kill", self.container(host))

    def remove(self, host: str) -> None:
        """Remove a (dead) container, so that a replacement can take its name."""
        docker("rm", "-f", self.container(host))

    def disconnect(self, host: str) -> None:
        docker("network", "disconnect", self.tag, self.container(host))

    def connect(self, host: str, aliases: Sequence[str] = ()) -> None:
        docker(
            "network",
            "connect",
            "--alias",
            host,
            *(f"--alias={a}" for a in aliases),
            self.tag,
            self.container(host),
        )

    def read(self, path: str) -> str:
        """A file of the runs volume, read by a throwaway container (the volume is not a path here)."""
        return docker(
            "run", "--rm", "-v", f"{self.volume}:/runs:ro", "--entrypoint", "cat", self.image, path
        ).stdout

    def close(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}={self.tag}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=300)
        docker("network", "rm", self.tag, check=False)
        docker("volume", "rm", "-f", self.volume, check=False)

    def left_behind(self) -> list[str]:
        """What of this cluster the engine still holds (empty after close)."""
        found = []
        for kind in ("container", "network", "volume"):
            listed = docker(
                kind,
                "ls",
                *(["-a"] if kind == "container" else []),
                "-q",
                "--filter",
                f"label={LABEL}={self.tag}",
                check=False,
            ).stdout.split()
            found += [f"{kind} {name}" for name in listed]
        return found

    # ------------------------------------------------------------------------------------ rendered pods
    def start_pod(
        self,
        host: str,
        template: dict,
        *,
        container: int = 0,
        aliases: Sequence[str] = (),
        injected: dict[str, Any] | None = None,
        flags: Sequence[str] = (),
    ) -> str:
        """Run container `container` of a rendered pod template as the kubelet would, after what the operator
        injects (`injected`: command, args, extra_env and docker flags; tests/containers_operators.py)."""
        spec = template["spec"]
        c = {**spec["containers"][container], **(injected or {})}
        env = {**pod_env(c.get("env", []), self.secrets), **(injected or {}).get("extra_env", {})}
        words = [expand(w, env) for w in [*c.get("command", []), *c.get("args", [])]]
        mounts = self.mounts(spec.get("volumes", []), c.get("volumeMounts", []))
        flags = [*flags, *c.get("flags", []), *mounts]
        if c.get("workingDir"):
            flags += ["--workdir", c["workingDir"]]
        user = spec.get("securityContext", {})
        assert c.get("securityContext", {}).get("readOnlyRootFilesystem") is True, (
            f"{c['name']}: root writable"
        )
        assert user.get("runAsUser") == 1000 and user.get("runAsNonRoot") is True, (
            f"{c['name']}: not uid 1000"
        )
        entrypoint, args = (words[0], words[1:]) if c.get("command") else (None, words)
        return self.start(host, args, entrypoint=entrypoint, env=env, flags=flags, aliases=aliases)

    def mounts(self, volumes: list[dict], mounts: list[dict]) -> Iterator[str]:
        by_name = {v["name"]: v for v in volumes}
        for m in mounts:
            volume, path = by_name[m["name"]], m["mountPath"]
            ro = ",readonly" if m.get("readOnly") else ""
            if "persistentVolumeClaim" in volume:
                if path != "/runs":
                    yield from ("-v", f"{self.volume}:{path}{':ro' if ro else ''}")
            elif "emptyDir" in volume:
                if path != "/tmp":
                    yield from ("--mount", f"type=tmpfs,destination={path},tmpfs-mode=1777")
            elif "configMap" in volume:
                data = self.config_maps[volume["configMap"]["name"]]
                yield from (
                    "--mount",
                    f"type=bind,source={self.write(volume['name'], data, 0o444)},target={path}{ro}",
                )
            elif "secret" in volume:
                data = self.secrets[volume["secret"]["secretName"]]
                mode = volume["secret"].get("defaultMode", 0o644)
                yield from (
                    "--mount",
                    f"type=bind,source={self.write(volume['name'], data, mode)},target={path}{ro}",
                )
            else:
                raise AssertionError(f"volume {volume['name']}: a kind this helper does not mount: {volume}")

    def write(self, name: str, data: dict[str, Any], mode: int) -> Path:
        """Files as the kubelet projects them: one per key, owned by the pod's fsGroup (1000)."""
        folder = self.files / self.tag / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        for key, value in data.items():
            path = folder / key
            path.write_bytes(value if isinstance(value, bytes) else value.encode())
            try:
                os.chown(path, 1000, 1000)
                path.chmod(mode)
            except PermissionError:  # not root: readable by everyone instead
                path.chmod(0o444)
        return folder


def pod_env(env: list[dict], secrets: dict[str, dict[str, bytes]]) -> dict[str, str]:
    """A container's env as the kubelet gives it: values, Secret keys, `$(VAR)` of earlier entries expanded"""
    out: dict[str, str] = {}
    for entry in env:
        if "value" in entry:
            out[entry["name"]] = expand(str(entry["value"]), out)
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = secrets[ref["name"]][ref["key"]].decode()
        else:
            raise AssertionError(f"env {entry['name']}: a source this helper does not resolve: {entry}")
    return out


def expand(word: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env (an unknown name stays as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), word)


def read_json(cluster: Cluster, path: str) -> Any:
    return json.loads(cluster.read(path))


# Every pod the chart makes, for each kind of workload it can render (training.kind × ray.mode × serve.kind),
# and the container test that runs it: "<kind>/<object name without the release>/<first container>" → test.
# tests/test_container_coverage.py fails when the chart renders a pod missing here (a new workload), or when
# a test named here is gone.
WORKLOAD_VARIANTS: dict[str, dict[str, Any]] = {
    "kind values": {},
    "trainjob": {"training": {"kind": "trainjob"}},
    "elasticjob": {"training": {"kind": "elasticjob"}},
    "raycluster": {"ray": {"mode": "cluster"}},
    "kserve": {"serve": {"kind": "kserve"}},
}
_DISTRIBUTED = "tests/test_containers_distributed.py"
_RAY_JOB = f"{_DISTRIBUTED}::test_ray_tunes_across_hosts_and_retries_the_trials_of_a_killed_worker"
_RAY_CLUSTER = f"{_DISTRIBUTED}::test_raycluster_mode_a_driver_elsewhere_tunes_through_the_ray_client_address"
_ELASTIC_JOB = f"{_DISTRIBUTED}::test_elasticjob_nodes_meet_through_the_charts_etcd_and_train"
RUN_IN_CONTAINERS = {
    "RayJob/tune/ray-job-submitter": _RAY_JOB,
    "RayJob/tune/ray-head": _RAY_JOB,
    "RayJob/tune/ray-worker": _RAY_JOB,
    "RayCluster/ray/ray-head": _RAY_CLUSTER,
    "RayCluster/ray/ray-worker": _RAY_CLUSTER,
    "PyTorchJob/train/pytorch": f"{_DISTRIBUTED}::"
    "test_torch_elastic_across_hosts_loses_a_node_the_survivor_resumes_and_a_replacement_joins",
    "TrainingRuntime/train/node": f"{_DISTRIBUTED}::"
    "test_trainjob_nodes_train_together_with_what_trainer_v2_gives_them",
    "ElasticJob/train/elasticjob-worker": _ELASTIC_JOB,
    "Deployment/etcd/etcd": _ELASTIC_JOB,
    "Deployment/serve/torchserve": "tests/test_containers.py::"
    "test_the_charts_serve_deployment_serves_to_other_hosts_and_passes_helm_test",
    "InferenceService/serve/kserve-container": "tests/test_containers.py::"
    "test_the_charts_kserve_predictor_serves_the_open_inference_protocol_and_passes_helm_test",
}


def pod_specs(obj: Any, found: list[dict] | None = None) -> list[dict]:
    """Every pod spec (a mapping with `containers`) anywhere inside a rendered object, whatever its kind."""
    found = [] if found is None else found
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            found.append(obj)
        for value in obj.values():
            pod_specs(value, found)
    elif isinstance(obj, list):
        for value in obj:
            pod_specs(value, found)
    return found


def workload_pods(objs: list[dict]) -> set[str]:
    """The chart's pods as RUN_IN_CONTAINERS names them."""
    return {
        f"{o['kind']}/{o['metadata']['name'].removeprefix(RELEASE + '-')}/{spec['containers'][0]['name']}"
        for o in objs
        for spec in pod_specs(o.get("spec", {}))
    }
