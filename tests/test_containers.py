"""The image and the chart's workloads in real containers (a Docker engine from Debian's packages, the image
from deploy/docker/build.sh): each test's containers on their own network, each its own hostname, the runs
directory on a shared volume as the PVC is. Skips, saying why, only where no engine can be had; `make test`
brings one up."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from mlkube.cluster.chart import deep_merge, render
from tests.containers import (
    MAX_IMAGE_BYTES,
    RELEASE,
    ROOT,
    Cluster,
    chart,
    docker,
    image_size,
    new_cluster,
    wait_until,
)
from tests.test_chart import kind_everything, only, pod_templates

pytestmark = pytest.mark.container
pytest_plugins = ["tests.containers"]  # the image and cluster fixtures
QUICK = "quick"  # the quickstart's run id on the session's volume


@pytest.fixture(scope="session")
def trained(image, tmp_path_factory) -> Iterator[Cluster]:
    """A session's cluster whose volume holds the README's quickstart, run inside the image by the chart's Ray
    head pod (env, mounts, read-only root, uid 1000), the spec as the user wrote it (serve.host: loopback)."""
    made = new_cluster(image, tmp_path_factory.mktemp("pods"))
    try:
        spec = (ROOT / "examples/quickstart.yaml").read_text() + "run_dir: /runs\n"
        made.config_maps[f"{RELEASE}-spec"] = {"experiment.yaml": spec}
        head = pod_templates(only(chart(), "RayJob"))[1]
        made.start_pod(
            "quickstart",
            head,
            injected={"command": ["mlkube"], "args": ["run", "/spec/experiment.yaml", "--run-id", QUICK]},
        )
        code = made.wait("quickstart", timeout=900)
        assert code == 0, made.logs("quickstart")[-4000:]
        yield made
    finally:
        made.close()


# ------------------------------------------------------------------------------------------- the image
def test_cpu_image_is_under_the_documented_size(image, capsys):
    size = image_size(image)
    with capsys.disabled():
        print(f"\n[container] image {image}: {size / 1e9:.2f} GB (limit {MAX_IMAGE_BYTES / 1e9:.1f} GB)")
    assert size < MAX_IMAGE_BYTES


def test_image_runs_as_uid_1000_with_only_tmp_and_runs_writable(cluster):
    cluster.run(
        "contract",
        [
            "-c",
            "id -u; id -g; touch /tmp/ok /runs/ok; touch /opt/venv/x 2>/dev/null && echo writable || true",
        ],
        entrypoint="bash",
    )
    assert cluster.logs("contract").split() == ["1000", "1000"]


def test_mlkube_help_answers_in_the_image(cluster):
    assert "usage: mlkube" in cluster.run("help", ["--help"])


def test_mlkube_bytecode_is_compiled_into_the_image(cluster):
    """PYTHONDONTWRITEBYTECODE and a read-only root: every module's .pyc must already be there."""
    script = (
        "import importlib.util, mlkube, pathlib\n"
        "root = pathlib.Path(mlkube.__file__).parent\n"
        "cached = lambda p: pathlib.Path(importlib.util.cache_from_source(p)).is_file()\n"
        "print(*[p for p in root.rglob('*.py') if not cached(p)])"
    )
    assert cluster.run("pyc", ["-c", script], entrypoint="python").strip() == ""


def test_quickstart_runs_inside_the_image(trained):
    board = json.loads(trained.read(f"/runs/{QUICK}/leaderboard.json"))
    deep = {row["model"]: row["median_nse"] for row in board["deep"]["rows"]}
    assert deep["lstm"] > deep["climatology"]
    assert trained.read(f"/runs/{QUICK}/report.html").lstrip().lower().startswith("<!doctype html")


# ------------------------------------------------------------------------------------------- serving
def helm_test_pod(values: dict) -> dict:
    """The chart's `helm test` pod (a hook, which render() leaves out)."""
    import helm_python as helm

    with helm.Chart.load(str(ROOT / "helm/mlkube")) as loaded:
        text = loaded.render(values, name=RELEASE, namespace="mlkube")["mlkube/templates/tests/predict.yaml"]
    return yaml.safe_load(text)


def from_another_host(cluster: Cluster, script: str) -> str:
    """A Python snippet run in a throwaway container on the cluster's network: its output ('' on failure)."""
    proc = docker(
        "run",
        "--rm",
        "--network",
        cluster.tag,
        "--entrypoint",
        "python",
        cluster.image,
        "-c",
        script,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def wait_for_startup_probe(cluster: Cluster, container: dict, host: str) -> None:
    """Wait as the kubelet's startup probe of `container` would (its TCP port, period × failure threshold)."""
    startup = container["startupProbe"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}[startup["tcpSocket"]["port"]]
    wait_until(
        "the startup probe",
        lambda: tcp_probe(cluster, host, port),
        timeout=startup["periodSeconds"] * startup["failureThreshold"],
        every=3,
    )


def tcp_probe(cluster: Cluster, host: str, port: int) -> bool:
    """What the kubelet's tcpSocket probe does: connect from outside the pod's network namespace."""
    return (
        from_another_host(
            cluster,
            f"import socket; socket.create_connection(({host!r}, {port}), timeout=3).close(); print('ok')",
        )
        == "ok"
    )


def refusal(cluster: Cluster, url: str) -> str:
    """Status and error type of a POST without the key, sent from another host."""
    return from_another_host(
        cluster,
        "import json, urllib.request, urllib.error\n"
        f"request = urllib.request.Request({url!r}, data=b'{{}}')\n"
        "try: urllib.request.urlopen(request, timeout=10); print(200)\n"
        "except urllib.error.HTTPError as err: print(err.code, json.load(err).get('type'))",
    )


def test_the_charts_serve_deployment_serves_to_other_hosts_and_passes_helm_test(trained):
    values = deep_merge(kind_everything(), {"serve": {"enabled": True, "runId": QUICK}})
    deployment = only(render(values, RELEASE, "mlkube").objects, "Deployment")
    (template,) = pod_templates(deployment)
    (server,) = template["spec"]["containers"]
    service = f"{RELEASE}-serve"
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    trained.start_pod("serve", template, aliases=[service])
    try:
        wait_for_startup_probe(trained, server, service)
        assert all(tcp_probe(trained, service, port) for port in ports.values()), ports
        test_pod = helm_test_pod(values)
        trained.start_pod("helm-test", test_pod)
        code = trained.wait("helm-test", timeout=300)
        out = trained.logs("helm-test")
        assert code == 0, out
        assert {line.split(":")[0] for line in out.splitlines() if ":" in line} >= {"classical", "lstm"}
        # token authorization on: without the key TorchServe refuses (400 InvalidKeyException, as on the host)
        url = f"http://{service}:{ports['inference']}/predictions/classical"
        assert refusal(trained, url) in {"400 InvalidKeyException", "401 InvalidKeyException"}
    finally:
        docker("rm", "-f", trained.container("serve"), trained.container("helm-test"), check=False)


def test_the_charts_kserve_predictor_serves_the_open_inference_protocol_and_passes_helm_test(trained):
    """serve.kind kserve: the InferenceService's predictor pod as KServe runs it (its PodSpec, what KServe
    adds), reached by KServe's Service name from other hosts; the chart's helm test predicts through it, and
    the Open Inference Protocol answers with the key: inference, model metadata from the card, model and
    server readiness (mlkube's agent, built in the image), 404 for an unknown model; no key is refused."""
    from tests.containers_operators import kserve_env, kserve_predictor_pod

    values = deep_merge(kind_everything(), {"serve": {"enabled": True, "runId": QUICK, "kind": "kserve"}})
    isvc = only(render(values, RELEASE, "mlkube").objects, "InferenceService")
    template = kserve_predictor_pod(isvc)
    (server,) = template["spec"]["containers"]
    service = f"{isvc['metadata']['name']}-predictor"
    port = {p["name"]: p["containerPort"] for p in server["ports"]}["inference"]
    trained.start_pod("kserve", template, aliases=[service], injected={"extra_env": kserve_env(isvc)})
    try:
        wait_for_startup_probe(trained, server, service)
        url = f"http://{service}:{port}"
        test_pod = helm_test_pod(values)
        trained.start_pod("kserve-test", test_pod, injected={"extra_env": {"URL": url}})
        code = trained.wait("kserve-test", timeout=300)
        assert code == 0, trained.logs("kserve-test")
        oip = docker(
            "run",
            "--rm",
            "--network",
            trained.tag,
            "-v",
            f"{trained.volume}:/runs:ro",
            "--entrypoint",
            "python",
            trained.image,
            "-c",
            "import json, urllib.request, urllib.error\n"
            f"key = json.load(open('/runs/{QUICK}/serving/key_file.json'))['inference']['key']\n"
            f"body = json.load(open('/runs/{QUICK}/serving/examples/classical.json'))\n"
            "row = body['instances'][0]\n"
            "inputs = [{'name': k, 'shape': [1], 'datatype': 'FP64', 'data': [v]} for k, v in row.items()]\n"
            "def call(path, data=None, auth=True):\n"
            "    headers = {'Content-Type': 'application/json'}\n"
            "    headers.update({'Authorization': 'Bearer ' + key} if auth else {})\n"
            f"    request = urllib.request.Request({url!r} + path, data=data, headers=headers)\n"
            "    try: response = urllib.request.urlopen(request, timeout=30)\n"
            "    except urllib.error.HTTPError as err: response = err\n"
            "    return [response.status, json.load(response)]\n"
            "print(json.dumps({\n"
            "    'infer': call('/v2/models/classical/infer', json.dumps({'inputs': inputs}).encode()),\n"
            "    'metadata': call('/v2/models/classical'), 'ready': call('/v2/models/classical/ready'),\n"
            "    'server ready': call('/v2/health/ready'), 'unknown': call('/v2/models/nonesuch/ready'),\n"
            "    'no key': call('/v2/models/classical', auth=False),\n"
            f"    'card': json.load(open('/runs/{QUICK}/models/classical/model.json')),\n"
            "}))",
            check=False,
        )
        assert oip.returncode == 0, oip.stderr[-2000:]
        answers = json.loads(oip.stdout)
        status, answer = answers["infer"]
        assert (
            status == 200 and answer["model_name"] == "classical" and len(answer["outputs"][0]["data"]) == 1
        )
        status, metadata = answers["metadata"]
        assert status == 200 and metadata["name"] == "classical" and metadata["versions"] == [QUICK]
        assert [(i["name"], i["shape"]) for i in metadata["inputs"]] == [
            (name, [-1]) for name in answers["card"]["features"]
        ]
        assert metadata["outputs"][0] == {
            "name": answers["card"]["target"],
            "datatype": "BYTES",
            "shape": [-1],
        }
        assert answers["ready"] == [200, {"name": "classical", "ready": True}]
        assert answers["server ready"] == [200, {"ready": True}]
        assert answers["unknown"][0] == 404 and "no model named 'nonesuch'" in answers["unknown"][1]["error"]
        assert answers["no key"][0] in {400, 401} and answers["no key"][1]["type"] == "InvalidKeyException"
    finally:
        docker("rm", "-f", trained.container("kserve"), trained.container("kserve-test"), check=False)
