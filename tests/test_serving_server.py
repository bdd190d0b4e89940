"""One real TorchServe (Java frontend, Python workers) serving both archives of a run, and a real
Prometheus."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.serving_fixtures import (
    TABLES_MODEL,
    expected_lstm,
    forcing_windows,
    iris_instances,
    iris_pipeline,
    make_run,
    record_archive,
    scrape,
    serve_spec,
)

pytestmark = pytest.mark.integration
# A long batch delay so that concurrent requests surely meet in a batch, even on a busy machine.
SPEC = {"batch_size": 8, "max_batch_delay_ms": 50}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The session's TorchServe: both models of one run, stopped at the end."""
    from mlkube.serving.archive import archive_run
    from mlkube.serving.server import serve_run
    from mlkube.trainer.run import Run

    path = make_run(tmp_path_factory.mktemp("runs"), serve=serve_spec(**SPEC), tables=True)
    run = Run.open(path)
    plant_in_serving_folder(run.serving)
    archive_run(run)
    hide_in_archive(run, "classical", "numpy.py", planted_module(imported_marker(run.path)))
    server = serve_run(run)
    yield server
    server.stop()


def planted_module(marker: Path) -> bytes:
    """A module that would run in the worker if it reached its sys.path: it leaves `marker`, then puts the
    installed module in its place, so that the worker goes on as if nothing happened."""
    return f"""import os, sys
open({str(marker)!r}, "w").close()
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules[__name__]
import numpy
""".encode()


def imported_marker(run_path: Path) -> Path:
    return run_path / "planted-module-imported"


def hide_in_archive(run, name: str, planted: str, data: bytes) -> None:
    """Put a file entry before archive `name`'s own, outside its central directory, and record the archive's
    new SHA-256 in archives.json, as a writer of the runs volume who cannot read the signing key could.
    Python's zipfile reads the central directory and lists the honest entries only; TorchServe's Java unzip
    (ZipInputStream) reads the local headers in order and would unpack `planted` too."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(planted, data)
        local = buffer.getvalue()[: buffer.tell()]  # the entry, without the central directory close() adds
    mar = run.model_store / f"{name}.mar"
    mar.write_bytes(local + mar.read_bytes())
    with zipfile.ZipFile(mar) as z:
        assert planted not in z.namelist()
    record_archive(run, name)


# What someone who can write the runs folder, but not read the signing key, drops into the serving folder
# before the server starts: a resource the Java frontend reads from the first entry of its classpath (log4j2's
# component properties; log4j2.debug is harmless, but the same file can name a class log4j2 instantiates).
PLANTED = "log4j2.component.properties"


def plant_in_serving_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PLANTED).write_text("log4j2.debug=true\n")


def post(server, model: str, body: bytes, headers: dict | None = None) -> requests.Response:
    """POST to the inference API, with the inference key unless `headers` says otherwise."""
    from mlkube.serving.client import auth_header

    headers = (
        {"Content-Type": "application/json", **auth_header(server.token_file)} if headers is None else headers
    )
    return requests.post(
        f"{server.url('inference')}/predictions/{model}", data=body, headers=headers, timeout=60
    )


def request(instances) -> bytes:
    return json.dumps({"instances": instances}).encode()


def worker_pids(server, model: str) -> list[int]:
    status, body = server.manage("GET", f"/models/{model}")
    assert status == 200, body
    return [w["pid"] for w in body[0]["workers"] if w["status"] == "READY"]


def moved(before: dict, after: dict, name: str, model: str) -> float:
    return after.get((name, model), 0.0) - before.get((name, model), 0.0)


def scrape_when_moved(server, before: dict, name: str, model: str, by: float, timeout: float = 15) -> dict:
    """Scrape until `name` moved by at least `by`: the worker's metrics reach the frontend after its
    answers."""
    deadline = time.monotonic() + timeout
    after = scrape(server)
    while moved(before, after, name, model) < by and time.monotonic() < deadline:
        time.sleep(0.2)
        after = scrape(server)
    return after


IRIS_ROW = {
    "sepal length (cm)": 5.9,
    "sepal width (cm)": 3.0,
    "petal length (cm)": 5.1,
    "petal width (cm)": 1.8,
}
GOOD = {"classical": request([IRIS_ROW]), "lstm": request(forcing_windows(1))}


def with_row(**changes) -> bytes:
    row = {k: v for k, v in {**IRIS_ROW, **changes}.items() if v is not ...}
    return request([row])


def with_window(change) -> bytes:
    [instance] = forcing_windows(1)
    change(instance)
    return request([instance])


BAD = {
    "malformed JSON": ("classical", b'{"instances": [', "not valid JSON"),
    "not an object": ("classical", b"[1, 2]", "must be a JSON object"),
    "deeply nested": ("classical", b"[" * 100_000 + b"]" * 100_000, "nests JSON too deeply"),
    "empty batch": ("classical", request([]), "non-empty list"),
    "missing feature": ("classical", with_row(**{"petal width (cm)": ...}), "lacks ['petal width (cm)']"),
    "unknown feature": ("classical", with_row(colour=1.0), "has unknown ['colour']"),
    "NaN": ("classical", with_row().replace(b"5.9", b"NaN"), "NaN is not allowed"),
    "infinity": ("classical", with_row().replace(b"5.9", b"1e999"), "inf is not allowed"),
    "string for a number": (
        "classical",
        with_row(**{"sepal length (cm)": "5.9"}),
        "expected a number, got string",
    ),
    "boolean for a number": (
        "classical",
        with_row(**{"sepal length (cm)": True}),
        "expected a number, got boolean",
    ),
    "short window": (
        "lstm",
        with_window(lambda i: i["dynamic"]["prcp"].pop()),
        "sequence_length = 30 daily values, got 29",
    ),
    "null in a window": (
        "lstm",
        with_window(lambda i: i["dynamic"]["tmax"].__setitem__(3, None)),
        "tmax[3]: expected a number, got null",
    ),
    "missing static": ("lstm", with_window(lambda i: i.pop("static")), "lacks ['static']"),
}


def test_served_predictions_equal_the_in_process_models(server):
    pipeline, meta, data = iris_pipeline()
    answer = server.predict("classical", {"instances": iris_instances(data)})
    assert answer["predictions"] == [meta["classes"][c] for c in pipeline.predict(data)]
    served = [[p[name] for name in meta["classes"]] for p in answer["probabilities"]]
    np.testing.assert_allclose(served, pipeline.predict_proba(data), atol=1e-6)

    windows = forcing_windows(5)
    answer = server.predict("lstm", {"instances": windows})
    assert answer["version"] == server.folder.parent.name
    np.testing.assert_allclose(answer["predictions"], expected_lstm(lstm_folder(server), windows), atol=1e-6)


def test_a_model_trained_from_a_csv_with_categories_and_dates_answers_raw_rows_through_torchserve(server):
    """The round trip: a semicolon, decimal-comma CSV with categorical, boolean and date columns → mlkube's
    loader and ColumnTransformer pipeline → skops + card → .mar → TorchServe, asked with strings, booleans
    and ISO dates; an unknown category gets a 400 naming the column and its categories, and the worker
    keeps serving."""
    import pandas as pd

    from mlkube.trainer.artifacts import load_sklearn_model
    from mlkube.trainer.classical.trust import trusted_skops_types
    from mlkube.trainer.columns import convert
    from mlkube.trainer.run import Run
    from tests.serving_fixtures import TABLES_MODEL

    folder = Run(server.folder.parent).model_dir(TABLES_MODEL)
    pipeline, card = load_sklearn_model(folder, trusted_skops_types())
    rows = [card.example, {**card.example, "colour": "red", "member": True, "joined": "2024-11-30"}]
    answer = post(server, TABLES_MODEL, request(rows))
    assert answer.status_code == 200, answer.text
    X = convert(pd.DataFrame(rows), card.column_types(), folder / "request")
    assert answer.json()["predictions"] == [card.classes[c] for c in pipeline.predict(X)]
    workers = worker_pids(server, TABLES_MODEL)
    refused = post(server, TABLES_MODEL, request([{**card.example, "colour": "purple"}]))
    assert refused.status_code == 400
    assert (
        "feature 'colour'" in refused.json()["error"]
        and "['blue', 'green', 'red']" in refused.json()["error"]
    )
    assert post(server, TABLES_MODEL, request([card.example])).status_code == 200
    assert worker_pids(server, TABLES_MODEL) == workers


def lstm_folder(server) -> Path:
    """The served run's LSTM folder (the server runs in the run's serving/ folder)."""
    from mlkube.trainer.run import LSTM_MODEL, Run

    return Run(server.folder.parent).model_dir(LSTM_MODEL)


def test_served_lstm_trained_on_log_flow_answers_the_saved_networks_output_back_in_flow_units(server):
    """With log_target, the card carries the training kernels' transform, TorchServe's worker undoes it, and
    the answer equals the saved network's output de-transformed by training's own code."""
    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.preprocess.bodies import LOG_OFFSET

    transform = read_model_card(lstm_folder(server)).preprocessing.target_transform
    assert (transform.kind, transform.offset) == ("log", LOG_OFFSET)
    windows = forcing_windows(4, seed=9)
    answer = post(server, "lstm", request(windows))
    assert answer.status_code == 200, answer.text
    expected = expected_lstm(lstm_folder(server), windows)
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-6)
    assert (expected > -LOG_OFFSET).all()  # back in flow units: exp(.) - offset


def test_each_worker_may_use_the_cpus_of_its_models_share(server):
    """Intra-op threads split the CPUs among every worker; the LSTM's batch shards among its model's workers
    only."""
    import os

    import psutil

    from mlkube.serving.handlers.base import WORKER_CPUS_ENV
    from mlkube.trainer.signing import KEY_ENV, key_file

    for model in ("classical", "lstm"):
        [pid] = worker_pids(server, model)
        env = psutil.Process(int(pid)).environ()
        cpus = os.cpu_count()  # (a value set before TorchServe starts is kept)
        assert env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", str(max(1, cpus // 2)))
        assert env[WORKER_CPUS_ENV] == os.environ.get(WORKER_CPUS_ENV, str(cpus))
        assert env[KEY_ENV] == str(key_file())  # the key the worker checks model cards with


@pytest.mark.parametrize("case", BAD)
def test_bad_request_is_refused_naming_the_problem_and_the_worker_keeps_serving(server, case):
    model, body, message = BAD[case]
    workers = worker_pids(server, model)
    answer = post(server, model, body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert post(server, model, GOOD[model]).status_code == 200
    assert worker_pids(server, model) == workers


def test_body_over_the_configured_size_is_refused_by_torchserve(server):
    workers = worker_pids(server, "classical")
    answer = post(server, "classical", b" " * 1_048_577 + GOOD["classical"])
    assert (answer.status_code, answer.reason) == (413, "Request Entity Too Large")
    assert post(server, "classical", GOOD["classical"]).status_code == 200
    assert worker_pids(server, "classical") == workers


@pytest.mark.parametrize("api", ["inference", "management"])
@pytest.mark.parametrize("key", ["none", "wrong", "the other API's"])
def test_requests_without_their_api_key_are_refused(server, api, key):
    from mlkube.serving.client import auth_header, read_key, unix_request

    other = {"inference": "management", "management": "inference"}[api]
    headers = {
        "none": {},
        "wrong": {"Authorization": "Bearer not-a-key"},
        "the other API's": {"Authorization": f"Bearer {read_key(server.token_file, other)}"},
    }[key]

    def call(headers) -> tuple[int, dict]:
        if api == "inference":
            answer = post(
                server, "classical", GOOD["classical"], {"Content-Type": "application/json", **headers}
            )
            return answer.status_code, answer.json()
        return unix_request(server.management_socket, "GET", "/models", headers)

    status, body = call(headers)
    assert status in (400, 401)
    assert body["type"] == "InvalidKeyException"
    assert call(auth_header(server.token_file, api))[0] == 200


def test_keys_never_reach_the_logs_or_the_printed_instructions(server):
    from mlkube.serving.server import describe

    keys = [entry["key"] for entry in json.loads(server.token_file.read_text()).values()]
    post(server, "classical", GOOD["classical"])
    texts = [describe(server)] + [p.read_text(errors="replace") for p in (server.folder / "logs").iterdir()]
    assert all(k not in text for k in keys for text in texts)
    assert server.token_file.stat().st_mode & 0o077 == 0


def test_logs_keep_one_access_line_per_request_and_no_per_request_debug_lines(server):
    """TorchServe's own log4j2.xml logs every request ~10 times at DEBUG (ts_log.log twice, stdout once): 6 MB
    per 2,600 requests and most of the frontend's CPU. mlkube's keeps the access log and lifecycle lines
    only."""
    import psutil

    logs = server.folder / "logs"
    sizes = {
        name: (logs / name).stat().st_size for name in ("access_log.log", "ts_log.log", "torchserve.out")
    }
    for _ in range(20):
        assert post(server, "classical", GOOD["classical"]).status_code == 200
    time.sleep(0.5)  # log4j writes as the answers go out
    access = (logs / "access_log.log").read_text()[sizes["access_log.log"] :]
    assert access.count('"POST /predictions/classical HTTP/1.1" 200') == 20
    grown = {
        name: (logs / name).stat().st_size - size for name, size in sizes.items() if name != "access_log.log"
    }
    assert grown == {"ts_log.log": 0, "torchserve.out": 0}
    [java] = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
        and "org.pytorch.serve.ModelServer" in p.info["cmdline"]
        and str(server.folder / "config.properties") in " ".join(p.info["cmdline"])
    ]
    assert "-XX:TieredStopAtLevel=1" in java.info["cmdline"]  # serve.jvm_options, the default
    assert any(
        a.startswith("-Dlog4j.configurationFile=") and a.endswith("/serving/log4j2.xml")
        for a in java.info["cmdline"]
    )


def forks_since_boot() -> int:
    """Processes and threads this machine has created since boot (/proc/stat's `processes`)."""
    return int(
        next(
            line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("processes ")
        ).split()[1]
    )


def test_frontend_hands_batches_to_the_worker_without_starting_a_thread_each(server):
    """TorchServe sends each batch with CompletableFuture.runAsync; on a 2-CPU machine Java's common pool has
    1 thread and runAsync then starts a new thread per batch. mlkube gives the pool at least 2 threads."""
    sequential = 100  # one batch each
    post(server, "classical", GOOD["classical"])
    before = forks_since_boot()
    for _ in range(sequential):
        assert post(server, "classical", GOOD["classical"]).status_code == 200
    assert forks_since_boot() - before < sequential // 2


def test_dynamic_batching_from_the_spec_puts_concurrent_requests_in_one_call(server):
    status, [model] = server.manage("GET", "/models/lstm")
    assert status == 200
    assert (model["batchSize"], model["maxBatchDelay"]) == (SPEC["batch_size"], SPEC["max_batch_delay_ms"])
    before = scrape(server)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: post(server, "lstm", GOOD["lstm"]).status_code, range(32)))
    after = scrape_when_moved(server, before, "mlkube_predictions_total", "lstm", 32)
    assert statuses == [200] * 32
    assert moved(before, after, "mlkube_predictions_total", "lstm") == 32
    assert (
        0 < moved(before, after, "mlkube_handler_latency_ms_count", "lstm") < 32
    )  # fewer handler calls than requests


def test_torchserve_and_handler_metrics_count_every_request(server):
    before = scrape(server)
    for _ in range(3):
        post(server, "classical", request([IRIS_ROW, IRIS_ROW]))
    post(server, "classical", b"{")
    scrape_when_moved(
        server, before, "mlkube_rejected_total", "classical", 1
    )  # the last batch's metrics are in
    after = scrape_when_moved(server, before, "ts_inference_requests_total", "classical", 4)
    assert moved(before, after, "ts_inference_requests_total", "classical") == 4
    assert moved(before, after, "mlkube_predictions_total", "classical") == 3
    assert moved(before, after, "mlkube_rejected_total", "classical") == 1
    assert moved(before, after, "mlkube_input_rows_total", "classical") == 6


def test_prometheus_sees_the_request_counter_move_by_the_requests_sent(server, prometheus_server):
    prometheus_server.scrape(f"127.0.0.1:{server.ports['metrics']}", "serving-tests")
    query = 'sum(ts_inference_requests_total{component="serving-tests", model_name="lstm"})'

    def value(result) -> float | None:
        return float(result[0]["value"][1]) if result else None

    before = scrape(server)
    post(server, "lstm", GOOD["lstm"])  # the series exists from here on
    served = scrape_when_moved(server, before, "ts_inference_requests_total", "lstm", 1)[
        ("ts_inference_requests_total", "lstm")
    ]
    start = value(prometheus_server.wait_for(query, lambda result: value(result) == served))
    for _ in range(5):
        assert post(server, "lstm", GOOD["lstm"]).status_code == 200
    prometheus_server.wait_for(query, lambda result: value(result) == start + 5)
    time.sleep(2)  # two more scrapes: the counter stays at exactly the requests sent
    assert value(prometheus_server.query(query)) == start + 5


ATTACKS = {
    "2 KB of nested brackets": ("lstm", b'{"instances": [' + b"[" * 1100 + b"]" * 1100 + b"]}", "nests JSON"),
    "2^70 in a window": (
        "lstm",
        with_window(lambda i: i["dynamic"]["prcp"].__setitem__(0, 2**70)),
        "does not fit in 64 bits",
    ),
    "1e308 × weights → inf": (
        "lstm",
        with_window(lambda i: i["dynamic"]["tmax"].__setitem__(0, 1e308)),
        "is outside what the model can take",
    ),
    "1e308 × scale → inf": ("classical", with_row(**{"petal width (cm)": 1e308}), "not a finite number"),
}


def test_concurrent_batches_mixing_attacks_and_good_requests_answer_each_request_alone(server):
    """With batching on, each attack meets good requests in a batch: it gets its 400, they their 200s, and
    every answer is strict JSON (no NaN)."""
    from mlkube.serving.handlers import strict_json

    sent = [(case, *ATTACKS[case]) for case in ATTACKS] * 4
    sent += [("good", model, GOOD[model], None) for model in ("lstm", "classical") for _ in range(12)]
    before = scrape(server)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda s: post(server, s[1], s[2]), sent))
    for (case, _, _, message), answer in zip(sent, answers, strict=True):
        parsed = strict_json(answer.text)
        assert (case, answer.status_code) == (case, 400 if message else 200), answer.text
        assert message is None or message in parsed["error"]
    after = scrape_when_moved(server, before, "mlkube_rejected_total", "lstm", 12)
    batches = moved(before, after, "mlkube_handler_latency_ms_count", "lstm")
    assert 0 < batches < 12 + 12  # requests met in batches
    assert moved(before, after, "mlkube_predictions_total", "lstm") == 12


def test_management_api_refuses_registering_models_and_allowed_urls_name_the_model_store(server):
    """With enable_model_api=false, TorchServe 0.12 refuses registering and unregistering (405) but still
    describes, scales and sets the default version; allowed_urls names this run's model store only."""
    from mlkube.serving.server import allowed_urls

    for method, path, params in [
        ("POST", "/models", {"url": "https://example.com/model.mar"}),
        ("POST", "/models", {"url": f"file://{server.folder}/model-store/classical.mar"}),
        ("DELETE", "/models/classical", {}),
    ]:
        status, body = server.manage(method, path, params=params)
        assert (status, body["type"]) == (405, "MethodNotAllowedException")
    pinned = allowed_urls(Path(server.management_socket).parent / "model-store")  # the checked copies
    assert f"allowed_urls={pinned}\n" in (server.folder / "config.properties").read_text()
    assert f"Allowed Urls: [{pinned}]" in (server.folder / "logs" / "ts_log.log").read_text()
    assert "example" not in pinned and ".*" not in pinned


# -------------------------------------------------------------------- the Open Inference Protocol (KServe v2)
def v2(server, path: str, body: bytes | None = None, key: bool = True) -> requests.Response:
    """A call to the inference API (POST with a body, else GET), with the inference key unless `key` is
    False."""
    from mlkube.serving.client import auth_header

    headers = {"Content-Type": "application/json", **(auth_header(server.token_file) if key else {})}
    url = f"{server.url('inference')}/{path}"
    if body is None:
        return requests.get(url, headers=headers, timeout=60)
    return requests.post(url, data=body, headers=headers, timeout=60)


def oip_columns(rows: list[dict], **fields) -> bytes:
    inputs = [
        {"name": f, "shape": [len(rows)], "datatype": "FP64", "data": [row[f] for row in rows]}
        for f in IRIS_ROW
    ]
    return json.dumps({"inputs": inputs, **fields}).encode()


def oip_windows(instances: list[dict], **fields) -> bytes:
    n = len(instances)
    dynamic = [
        {
            "name": name,
            "shape": [n, len(series)],
            "datatype": "FP32",
            "data": [i["dynamic"][name] for i in instances],
        }
        for name, series in instances[0]["dynamic"].items()
    ]
    static = [
        {"name": name, "shape": [n], "datatype": "FP64", "data": [i["static"][name] for i in instances]}
        for name in instances[0]["static"]
    ]
    inputs = dynamic + static
    return json.dumps({"inputs": inputs, **fields}).encode()


def outputs(answer: requests.Response) -> dict[str, list]:
    assert answer.status_code == 200, answer.text
    return {tensor["name"]: tensor["data"] for tensor in answer.json()["outputs"]}


@pytest.mark.parametrize("path", ["v2/models/{}/infer", "predictions/{}"])
def test_an_oip_request_through_torchserve_returns_the_predictions_of_mlkube_json(server, path):
    """TorchServe 0.12 hands POST /v2/models/<m>/infer to the handler as it does /predictions/<m> (where
    KServe's TorchServe runtime forwards a v2 request); the handler answers in the request's protocol."""
    _, meta, data = iris_pipeline()
    rows = iris_instances(data.iloc[::5])
    expected = post(server, "classical", request(rows)).json()
    answer = v2(server, path.format("classical"), oip_columns(rows, id="iris-1"))
    got = outputs(answer)
    assert {k: answer.json()[k] for k in ("model_name", "model_version", "id")} == {
        "model_name": "classical",
        "model_version": server.folder.parent.name,
        "id": "iris-1",
    }
    assert got["species"] == expected["predictions"]
    probabilities = [[p[c] for c in meta["classes"]] for p in expected["probabilities"]]
    assert np.reshape(got["probabilities"], (len(rows), len(meta["classes"]))).tolist() == probabilities

    windows = forcing_windows(3, seed=12)
    expected = post(server, "lstm", request(windows)).json()
    got = outputs(v2(server, path.format("lstm"), oip_windows(windows)))
    assert got == {expected["target"]: expected["predictions"]}
    np.testing.assert_allclose(
        got[expected["target"]], expected_lstm(lstm_folder(server), windows), rtol=1e-6
    )


def test_a_bad_oip_request_through_torchserve_gets_400_naming_the_input_and_the_worker_keeps_serving(server):
    windows = forcing_windows(1)
    bad = json.loads(oip_windows(windows))
    bad["inputs"][1]["datatype"] = "BYTES"
    workers = worker_pids(server, "lstm")
    answer = v2(server, "v2/models/lstm/infer", json.dumps(bad).encode())
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("input 'tmax': datatype BYTES is not allowed")
    assert outputs(v2(server, "v2/models/lstm/infer", oip_windows(windows)))
    assert worker_pids(server, "lstm") == workers


def test_the_oip_health_and_server_metadata_answer_with_the_inference_key(server):
    """GET /v2/health/live, /v2/health/ready and /v2 answer behind the inference key, like /ping; ready
    says every model has a worker (mlkube's agent: TorchServe's own answered a constant true)."""
    assert (v2(server, "v2/health/live").status_code, v2(server, "v2/health/live").json()) == (
        200,
        {"live": True},
    )
    assert (v2(server, "v2/health/ready").status_code, v2(server, "v2/health/ready").json()) == (
        200,
        {"ready": True},
    )
    assert v2(server, "v2").json() == {"name": "mlkube (TorchServe)", "version": "0.12.0", "extensions": []}
    assert v2(server, "v2/health/live", key=False).json()["type"] == "InvalidKeyException"


@pytest.mark.parametrize("model", ["classical", "lstm", TABLES_MODEL])
def test_oip_model_metadata_over_http_is_the_handlers_metadata_from_the_card(server, model):
    """GET /v2/models/<m> (and .../versions/<run id>) answers the protocol's $metadata_model_response: what
    the model's handler derives from its signed card, each input and output with its datatype and shape."""
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.artifacts import read_model_card

    folder = server.folder.parent / "models" / model
    run_id = server.folder.parent.name
    expected = InProcess(folder, version=run_id).metadata()
    for path in (f"v2/models/{model}", f"v2/models/{model}/versions/{run_id}"):
        answer = v2(server, path)
        assert (answer.status_code, answer.json()) == (200, expected), path
    # what the workers wrote, in the server's private folder (not on the runs volume)
    written = Path(server.management_socket).parent / "oip" / f"{model}.json"
    assert json.loads(written.read_text()) == expected
    metadata = expected
    assert set(metadata) == {"name", "versions", "platform", "inputs", "outputs"}
    assert (metadata["name"], metadata["versions"]) == (model, [run_id])
    card = read_model_card(folder)
    inputs = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]]
    if model == "lstm":
        days = card.preprocessing.sequence_length
        assert inputs == [(n, "FP64", [-1, days]) for n in card.preprocessing.dynamic_inputs] + [
            (n, "FP64", [-1]) for n in card.preprocessing.static_inputs
        ]
        assert metadata["outputs"] == [{"name": card.target, "datatype": "FP64", "shape": [-1]}]
    else:
        assert [name for name, _, shape in inputs] == card.features
        assert {tuple(shape) for _, _, shape in inputs} == {(-1,)}
    if model == "classical":
        assert metadata["outputs"] == [
            {"name": card.target, "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(card.classes)]},
        ]


def readiness(server, model: str) -> tuple[int, int]:
    """The status codes of GET /v2/models/<model>/ready and GET /v2/health/ready."""
    return v2(server, f"v2/models/{model}/ready").status_code, v2(server, "v2/health/ready").status_code


def test_oip_model_ready_follows_the_models_workers(server):
    """GET /v2/models/<m>/ready is 200 while a worker has the model loaded and 400 (the protocol: a 4xx is
    false) once it has none, like /v2/health/ready; the metadata stays; scaled back, both are 200 again."""
    from mlkube.serving.server import models_ready

    model = TABLES_MODEL
    assert readiness(server, model) == (200, 200)
    assert v2(server, f"v2/models/{model}/ready").json() == {"name": model, "ready": True}
    scale = {"synchronous": "true"}
    try:
        status, body = server.manage(
            "PUT", f"/models/{model}", params={**scale, "min_worker": 0, "max_worker": 0}
        )
        assert status == 200, body
        ready = v2(server, f"v2/models/{model}/ready")
        assert (ready.status_code, ready.json()["ready"]) == (400, False)
        assert f"model '{model}' has no worker with the model loaded" in ready.json()["error"]
        server_ready = v2(server, "v2/health/ready")
        assert (server_ready.status_code, server_ready.json()["ready"]) == (400, False)
        assert model in server_ready.json()["error"]
        assert v2(server, "v2/models/lstm/ready").status_code == 200  # the other models are unaffected
        assert v2(server, f"v2/models/{model}").status_code == 200
        assert v2(server, f"v2/models/{model}/infer", b'{"inputs": []}').status_code == 503
    finally:
        server.manage("PUT", f"/models/{model}", params={**scale, "min_worker": 1, "max_worker": 1})
        deadline = time.monotonic() + 120
        while not models_ready(server) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert readiness(server, model) == (200, 200)


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("v2/models/nonesuch", "no model named 'nonesuch' is served here"),
        ("v2/models/nonesuch/ready", "no model named 'nonesuch' is served here"),
        ("v2/models/lstm/versions/v9", "model 'lstm' has no version 'v9'"),
        ("v2/models/lstm/versions/v9/ready", "model 'lstm' has no version 'v9'"),
    ],
)
def test_an_unknown_oip_model_or_version_gets_404_naming_it_and_the_server_keeps_serving(server, path, named):
    answer = v2(server, path)
    assert answer.status_code == 404
    assert answer.json()["error"].startswith(named)
    assert answer.json()["code"] == 404
    assert v2(server, "v2/models/lstm/ready").status_code == 200
    assert post(server, "classical", request([IRIS_ROW])).status_code == 200


@pytest.mark.parametrize("path", ["v2/models/lstm", "v2/models/lstm/ready", "v2/models/nonesuch"])
@pytest.mark.parametrize("key", ["none", "wrong", "management"])
def test_the_oip_model_endpoints_refuse_requests_without_the_inference_key(server, path, key):
    from mlkube.serving.client import auth_header

    headers = {
        "none": {},
        "wrong": {"Authorization": "Bearer not-the-key"},
        "management": auth_header(server.token_file, "management"),
    }[key]
    answer = requests.get(f"{server.url('inference')}/{path}", headers=headers, timeout=60)
    assert (answer.status_code, answer.json()["type"]) == (400, "InvalidKeyException")
    assert "name" not in answer.json()  # nothing of the model leaks


# ------------------------------------------------------------------------------------ the management API
def test_the_management_api_is_on_no_network_only_on_a_socket_in_a_private_folder(server):
    """Its key can scale workers without bound (TorchServe has no cap), so no address reaches it: the TCP
    listeners are the inference and metrics ports and gRPC on loopback only."""
    import psutil

    listening = {
        (c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)  # Java listens on IPv4-mapped IPv6 addresses
        for pid in group_pids(server.pid)
        for c in psutil.Process(pid).net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }
    served = {(server.host, server.ports["inference"]), (server.host, server.ports["metrics"])}
    assert served <= listening and len(listening - served) == 2  # gRPC inference and management
    assert all(ip == "127.0.0.1" for ip, _ in listening - served)
    socket_path = Path(server.management_socket)
    assert socket_path.is_socket() and (socket_path.parent.stat().st_mode & 0o777) == 0o700
    assert socket_path.parent.stat().st_uid == os.getuid()
    status, [model] = server.manage("GET", "/models/classical")
    assert status == 200 and model["modelName"] == "classical"


def test_renewing_the_inference_key_refuses_the_old_one_and_clients_read_the_new_one(server):
    from mlkube.serving.client import read_key
    from mlkube.serving.server import renew_key

    old = read_key(server.token_file)
    renew_key(server, "inference")
    new = read_key(server.token_file)
    assert new != old
    stale = post(server, "classical", GOOD["classical"], {"Authorization": f"Bearer {old}"})
    assert stale.status_code in (400, 401) and stale.json()["type"] == "InvalidKeyException"
    assert post(server, "classical", GOOD["classical"]).status_code == 200


def test_nothing_in_the_serving_folder_is_on_the_servers_classpath_or_sys_path(server):
    """TorchServe's launcher starts Java with `-cp .:<frontend jars>` and itself runs as `python -m`: both
    take code from their working directory, which is the private folder (0700), not the serving folder on
    the runs volume; the planted resource there was not read, and the keys still reach the serving folder."""
    import psutil

    private = Path(server.management_socket).parent
    processes = {psutil.Process(pid).name(): psutil.Process(pid) for pid in group_pids(server.pid)}
    java = processes["java"]
    command = java.cmdline()
    classpath = command[command.index("-cp") + 1].split(":")
    assert "." in classpath  # the launcher's, unchanged: the working directory is what makes it safe
    cwd = Path(java.cwd())
    entries = [(cwd / entry.removesuffix("*")).resolve() for entry in classpath]
    assert (
        cwd == private and (private.stat().st_mode & 0o777) == 0o700 and private.stat().st_uid == os.getuid()
    )
    assert Path(psutil.Process(server.pid).cwd()) == private  # the Python launcher's sys.path[0]
    assert not any(entry == server.folder or entry in server.folder.parents for entry in entries)
    assert not any(server.folder in entry.parents for entry in entries)
    assert (server.folder / PLANTED).is_file() and not any((entry / PLANTED).exists() for entry in entries)
    assert "StatusLogger" not in (server.folder / "logs" / "torchserve.out").read_text(errors="replace")
    # TorchServe wrote its keys through the link in its working directory, into the serving folder.
    key_file = server.folder / "key_file.json"
    assert (private / "key_file.json").readlink() == key_file and not key_file.is_symlink()
    assert (key_file.stat().st_mode & 0o777) == 0o600 and json.loads(key_file.read_text())["inference"]["key"]
    assert post(server, "classical", GOOD["classical"]).status_code == 200


def group_pids(pgid: int) -> list[int]:
    import psutil

    pids = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                pids.append(process.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return pids


# ------------------------------------------------------------------------------- what the archives may hold
def test_a_file_hidden_from_pythons_zip_reader_never_reaches_the_worker(server):
    """The fixture's classical archive carries a numpy.py before its own entries, outside its central
    directory: TorchServe serves the copy of the checked entries, so the worker never imports it."""
    private = Path(server.management_socket).parent
    unpacked = list((private / "tmp" / "models").glob("*/model.json"))
    assert len(unpacked) == len(server.models)  # unpacked in the private folder, not on the runs volume
    assert not (server.folder / "tmp").exists()
    assert not any((folder.parent / "numpy.py").exists() for folder in unpacked)
    assert not imported_marker(server.folder.parent).exists()
    assert post(server, "classical", GOOD["classical"]).status_code == 200


def test_an_archive_with_a_planted_module_is_refused_before_any_worker_imports_it(tmp_path, scratch):
    """A writer of the runs volume swaps in an archive with a numpy.py (which the worker would import from
    the unpacked model folder, ahead of the installed NumPy) and an archives.json that matches it."""
    import zipfile

    from mlkube.serving.archive import archive_run
    from mlkube.serving.server import running_server, serve_run
    from mlkube.trainer.errors import MlkubeError
    from mlkube.trainer.run import Run

    run = Run.open(make_run(tmp_path / "runs", serve=serve_spec()))
    [mar] = archive_run(run, ["classical"])
    with zipfile.ZipFile(mar, "a") as z:
        z.writestr("numpy.py", planted_module(imported_marker(run.path)))
    record_archive(run, "classical")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tempfile.tempdir", str(scratch))
        with pytest.raises(MlkubeError, match=r"classical\.mar holds 'numpy\.py'") as refused:
            serve_run(run, names=["classical"], timeout=60)
    assert "mlkube archive" in (refused.value.fix or "")
    assert not imported_marker(run.path).exists()
    assert running_server(run.serving) is None and list(scratch.iterdir()) == []
