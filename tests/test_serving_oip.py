"""The handlers' Open Inference Protocol (KServe v2), called in this process exactly as a TorchServe worker
calls them: the same predictions as mlkube's JSON, and a 400 naming the input for every problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.serving_fixtures import (
    DYNAMIC,
    SEQUENCE_LENGTH,
    STATIC,
    TARGET,
    expected_lstm,
    forcing_windows,
    iris_instances,
    iris_pipeline,
    lstm_network,
    lstm_series,
    lstm_statistics,
)

pytestmark = pytest.mark.unit
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = dict(zip(FEATURES, [5.9, 3.0, 5.1, 1.8], strict=True))


@pytest.fixture(scope="module")
def per_site(tmp_path_factory):
    """An LSTM with per-site statistics for the fixture's sites s0, s1, s2, its folder and statistics."""
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.lstm.model import save_lstm_model

    stats = lstm_statistics(normalization="per_site")
    network, fields = lstm_network(stats=stats)
    folder = tmp_path_factory.mktemp("per_site")
    save_lstm_model(folder, network, fields)
    return InProcess(folder, version="v1"), folder, stats


def tensor(name: str, shape: list, data: list, datatype: str = "FP64") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def oip(inputs: list[dict], **fields) -> bytes:
    return json.dumps({"inputs": inputs, **fields}).encode()


def columns(rows: list[dict], datatype: str = "FP64") -> list[dict]:
    """One tensor [n] per feature."""
    return [tensor(f, [len(rows)], [row[f] for row in rows], datatype) for f in FEATURES]


def windows(instances: list[dict], sites: list[str] | None = None, nested: bool = True) -> list[dict]:
    """The LSTM's tensors for mlkube JSON instances: [n, days] per dynamic input (nested or flat row-major),
    [n] per static attribute, BYTES [n] "site"."""
    n = len(instances)

    def data(name: str) -> list:
        rows = [i["dynamic"][name] for i in instances]
        return rows if nested else [v for row in rows for v in row]

    dynamic = [tensor(name, [n, SEQUENCE_LENGTH], data(name)) for name in DYNAMIC]
    static = [tensor(name, [n], [i["static"][name] for i in instances]) for name in STATIC]
    return dynamic + static + ([tensor("site", [n], sites, "BYTES")] if sites is not None else [])


def mlkube(instances) -> bytes:
    return json.dumps({"instances": instances}).encode()


def output(answer: dict, name: str) -> dict:
    [found] = [o for o in answer["outputs"] if o["name"] == name]
    return found


def test_a_tabular_oip_request_per_feature_answers_the_predictions_of_mlkube_json(classical):
    pipeline, meta, data = iris_pipeline()
    rows = iris_instances(data.iloc[::7])
    [(status, answer)] = classical([oip(columns(rows), id="42")])
    [(json_status, expected)] = classical([mlkube(rows)])
    assert (status, json_status) == (200, 200), answer
    assert {k: answer[k] for k in ("model_name", "model_version", "id")} == {
        "model_name": "classical",
        "model_version": "v1",
        "id": "42",
    }
    labels = output(answer, "species")
    assert (labels["datatype"], labels["shape"], labels["data"]) == (
        "BYTES",
        [len(rows)],
        expected["predictions"],
    )
    assert labels["data"] == [meta["classes"][c] for c in pipeline.predict(data.iloc[::7])]
    probabilities = output(answer, "probabilities")
    assert (probabilities["datatype"], probabilities["shape"]) == ("FP64", [len(rows), 3])
    assert json.loads(probabilities["parameters"]["classes"]) == meta["classes"]
    expected_p = [[p[c] for c in meta["classes"]] for p in expected["probabilities"]]
    assert np.reshape(probabilities["data"], (len(rows), 3)).tolist() == expected_p


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("nested", [True, False])
def test_a_tabular_oip_request_as_one_features_tensor_answers_the_same(classical, datatype, nested):
    _, _, data = iris_pipeline()
    rows = iris_instances(data.iloc[3::11])
    table = [[row[f] for f in FEATURES] for row in rows]
    body = oip([tensor("features", [len(rows), 4], table if nested else sum(table, []), datatype)])
    [(status, answer)] = classical([body])
    [(_, expected)] = classical([mlkube(rows)])
    assert status == 200, answer
    assert output(answer, "species")["data"] == expected["predictions"]
    assert "id" not in answer  # none was given


def test_an_lstm_oip_request_answers_the_predictions_of_mlkube_json(lstm, run_path):
    instances = forcing_windows(3, seed=11)
    flat = windows(instances, nested=False)
    [(status, answer)] = lstm([oip(windows(instances))])
    [(_, expected)] = lstm([mlkube(instances)])
    [(flat_status, flat_answer)] = lstm([oip(flat)])
    assert (status, flat_status) == (200, 200), answer
    [prediction] = answer["outputs"]
    assert (prediction["name"], prediction["datatype"], prediction["shape"]) == (TARGET, "FP64", [3])
    assert prediction["parameters"] == {"horizon": expected["horizon"]}
    assert prediction["data"] == expected["predictions"] == flat_answer["outputs"][0]["data"]
    np.testing.assert_allclose(
        prediction["data"], expected_lstm(run_path / "models" / "lstm", instances), rtol=1e-6
    )


def test_an_lstm_with_per_site_statistics_takes_the_sites_as_a_bytes_tensor(per_site):
    handler, folder, stats = per_site
    [window] = forcing_windows(1, seed=6)
    sites = list(lstm_series().sites)
    instances = [{**window, "site": site} for site in sites]
    [(status, answer)] = handler([oip(windows(instances, sites))])
    [(_, expected)] = handler([mlkube(instances)])
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == expected["predictions"]
    assert len(set(expected["predictions"])) == len(sites)
    np.testing.assert_allclose(
        expected["predictions"], expected_lstm(folder, instances, stats, sites=range(len(sites))), rtol=1e-6
    )


def test_an_oip_request_may_ask_for_some_outputs_only(classical):
    [(status, answer)] = classical([oip(columns([ROW]), outputs=[{"name": "probabilities"}])])
    assert status == 200
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]


def test_a_mixed_batch_is_predicted_in_one_call_and_each_request_answered_in_its_protocol(lstm, monkeypatch):
    calls = []
    predict = lstm.handler.predict
    monkeypatch.setattr(lstm.handler, "predict", lambda batch: calls.append(len(batch)) or predict(batch))
    first, second = forcing_windows(1, seed=1), forcing_windows(2, seed=2)
    answers = lstm([mlkube(first), oip(windows(second)), mlkube(second), oip(windows(first))])
    assert [status for status, _ in answers] == [200] * 4 and calls == [6]
    # the same windows at other places of the batch
    np.testing.assert_allclose(answers[0][1]["predictions"], answers[3][1]["outputs"][0]["data"], rtol=1e-6)
    np.testing.assert_allclose(answers[2][1]["predictions"], answers[1][1]["outputs"][0]["data"], rtol=1e-6)


def test_a_bad_oip_request_gets_400_and_spoils_no_batch(classical, lstm):
    good = forcing_windows(2, seed=3)
    bad = windows(good)
    bad[0]["datatype"] = "BOOL"
    answers = lstm([mlkube(good), oip(bad), oip(windows(good))])
    assert [status for status, _ in answers] == [200, 400, 200]
    np.testing.assert_allclose(answers[0][1]["predictions"], answers[2][1]["outputs"][0]["data"], rtol=1e-6)
    beyond = columns([ROW])
    beyond[3]["data"] = [1e308]  # infinite after scaling: a 400 for it alone, never NaN in an answer
    answers = classical([oip(columns([ROW])), oip(beyond), mlkube([ROW])])
    assert [status for status, _ in answers] == [200, 400, 200]
    assert "the model's answer is not a finite number" in answers[1][1]["error"]


def test_metadata_names_every_tensor_with_its_datatype_and_shape_from_the_card(classical, lstm, per_site):
    assert classical.metadata() == {
        "name": "classical",
        "versions": ["v1"],
        "platform": "sklearn_skops",
        "inputs": [{"name": f, "datatype": "FP64", "shape": [-1]} for f in FEATURES],
        "outputs": [
            {"name": "species", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    dynamic = [{"name": n, "datatype": "FP64", "shape": [-1, SEQUENCE_LENGTH]} for n in DYNAMIC]
    static = [{"name": n, "datatype": "FP64", "shape": [-1]} for n in STATIC]
    target = [{"name": TARGET, "datatype": "FP64", "shape": [-1]}]
    assert lstm.metadata() == {
        "name": "lstm",
        "versions": ["v1"],
        "platform": "pytorch_statedict",
        "inputs": dynamic + static,
        "outputs": target,
    }
    site = {"name": "site", "datatype": "BYTES", "shape": [-1]}
    assert per_site[0].metadata()["inputs"] == dynamic + static + [site]


def _changed(inputs: list[dict], change) -> list[dict]:
    inputs = json.loads(json.dumps(inputs))
    change({t["name"]: t for t in inputs}, inputs)
    return inputs


def _tab(change):
    return lambda: oip(_changed(columns([ROW, ROW]), change))


def _win(change):
    return lambda: oip(_changed(windows(forcing_windows(2, seed=4)), change))


def _site(change):
    instances = forcing_windows(1, seed=5)
    return lambda: oip(_changed(windows(instances, ["s0"]), change))


def _set(name: str, key: str, value):
    return lambda by_name, _: by_name[name].__setitem__(key, value)


def _value(name: str, index, value):
    def change(by_name, _):
        data = by_name[name]["data"]
        if isinstance(index, tuple):
            data[index[0]][index[1]] = value
        else:
            data[index] = value

    return change


PRCP = "input 'prcp'"
SEPAL = "input 'sepal length (cm)'"
# One change to a valid request each, and what the 400 says: the input, and what is allowed.
OIP_BAD = {
    # datatypes
    "BOOL for a feature": (
        "classical",
        _tab(_set("sepal length (cm)", "datatype", "BOOL")),
        f"{SEPAL}: datatype BOOL is not allowed; it takes numbers: FP64, FP32, FP16, INT64",
    ),
    "BYTES for a window": (
        "lstm",
        _win(_set("prcp", "datatype", "BYTES")),
        f"{PRCP}: datatype BYTES is not allowed (BYTES holds strings, and the model needs numbers); it takes "
        "numbers: FP64",
    ),
    "an unknown datatype": (
        "lstm",
        _win(_set("tmax", "datatype", "FLOAT64")),
        """input 'tmax': unknown datatype "FLOAT64"; the Open Inference Protocol's are BOOL, UINT8""",
    ),
    "the site as a number": (
        "per_site",
        _site(lambda t, _: t["site"].update(datatype="INT64", data=[0])),
        "input 'site': datatype INT64 is not allowed; it takes BYTES (one site id per window)",
    ),
    "a number in a BYTES site": (
        "per_site",
        _site(_set("site", "data", [0])),
        "input 'site'[0]: expected a string (datatype BYTES), got number 0",
    ),
    "an unknown site": (
        "per_site",
        _site(_set("site", "data", ["09999999"])),
        "input 'site'[0]: unknown site '09999999'; the model was trained on 3 site(s): s0, s1, s2",
    ),
    "a string in FP64 data": (
        "lstm",
        _win(_value("srad", (1, 5), "1.5")),
        "input 'srad'[35] (datatype FP64): expected a number, got string",
    ),
    "null in FP64 data": (
        "classical",
        _tab(_value("petal width (cm)", 1, None)),
        "[1] (datatype FP64): expected a number, got null",
    ),
    "a boolean in FP64 data": (
        "classical",
        _tab(_value("petal width (cm)", 0, True)),
        "expected a number, got boolean",
    ),
    "a fraction in INT64 data": (
        "classical",
        _tab(lambda t, _: t["sepal width (cm)"].update(datatype="INT64", data=[3, 1.5])),
        "input 'sepal width (cm)'[1]: expected an integer (datatype INT64), got number 1.5",
    ),
    "300 as UINT8": (
        "classical",
        _tab(lambda t, _: t["sepal width (cm)"].update(datatype="UINT8", data=[3, 300])),
        "input 'sepal width (cm)'[1]: 300 is outside datatype UINT8 (0 to 255)",
    ),
    "1e39 as FP32": (
        "lstm",
        _win(lambda t, _: t["area"].update(datatype="FP32", data=[1e39, 1.0])),
        "input 'area'[0]: 1e+39 is outside datatype FP32",
    ),
    "NaN": ("classical", lambda: oip(columns([ROW])).replace(b"5.9", b"NaN"), "NaN is not allowed"),
    "2^70 in FP64 data": ("lstm", _win(_value("prcp", (0, 2), 2**70)), "does not fit in 64 bits"),
    # shapes
    "a shape the data does not fill": (
        "lstm",
        _win(lambda t, _: t["prcp"].update(data=sum(t["prcp"]["data"], [])[:-1])),
        f"{PRCP}: shape [2, 30] holds 60 values, but data has 59",
    ),
    "a table the data does not fill": (
        "classical",
        lambda: oip([tensor("features", [2, 4], [1.0] * 7)]),
        "input 'features': shape [2, 4] holds 8 values, but data has 7",
    ),
    "a short window": (
        "lstm",
        _win(lambda t, _: t["prcp"].update(shape=[2, 29], data=[w[:29] for w in t["prcp"]["data"]])),
        f"{PRCP}: shape [2, 29] does not fit; it takes [n, 30] (n windows of sequence_length = 30 daily "
        "values",
    ),
    "a window without its batch dimension": (
        "lstm",
        _win(lambda t, _: t["prcp"].update(shape=[30], data=t["prcp"]["data"][0])),
        f"{PRCP}: shape [30] does not fit; it takes [n, 30]",
    ),
    "nesting that is not the shape": (
        "lstm",
        _win(lambda t, _: t["prcp"].update(data=[h for w in t["prcp"]["data"] for h in (w[:15], w[15:])])),
        f"{PRCP}: data nested in arrays must follow the shape [2, 30] (or be one flat array of 60 values",
    ),
    "inputs of different instance counts": (
        "lstm",
        _win(lambda t, _: t["elev_mean"].update(shape=[1], data=[700.0])),
        "input 'elev_mean': shape [1] has 1 instance(s), but input 'prcp' has 2",
    ),
    "no instances": (
        "classical",
        lambda: oip([tensor(f, [0], []) for f in FEATURES]),
        f"{SEPAL}: shape [0] holds no instances; send at least one",
    ),
    "a negative dimension": (
        "classical",
        _tab(_set("petal length (cm)", "shape", [-2])),
        "input 'petal length (cm)': shape must be a non-empty list of non-negative integers, got [-2]",
    ),
    "a features table of 3 columns": (
        "classical",
        lambda: oip([tensor("features", [1, 3], [5.9, 3.0, 5.1])]),
        "input 'features': shape [1, 3] does not fit; it takes [n, 4]",
    ),
    # names
    "a missing input": (
        "lstm",
        _win(lambda _, inputs: inputs.pop(1)),
        "the inputs lack ['tmax']; the model takes 'prcp' [n, 30], 'tmax' [n, 30], 'srad' [n, 30], "
        "'area' [n], 'elev_mean' [n] (n: the windows)",
    ),
    "an unknown input": (
        "lstm",
        _win(lambda _, inputs: inputs.append(tensor("snow", [2], [0.0, 0.0]))),
        "the inputs have unknown ['snow']",
    ),
    "a missing feature": (
        "classical",
        _tab(lambda _, inputs: inputs.pop()),
        "the inputs lack ['petal width (cm)']; the model takes one input per feature, each [n]",
    ),
    "a table under another name": (
        "classical",
        lambda: oip([tensor("input-0", [1, 4], list(ROW.values()))]),
        f"the inputs lack {FEATURES} and have unknown ['input-0']; the model takes one input per feature, "
        f"each [n]: {FEATURES}, or one input 'features' [n, 4] (n: the instances)",
    ),
    "an input given twice": (
        "lstm",
        _win(lambda t, inputs: inputs.append(t["srad"])),
        "input 'srad' is given twice; send each input once",
    ),
    "the site missing": ("per_site", _site(lambda _, inputs: inputs.pop()), "the inputs lack ['site']"),
    # the envelope
    "no inputs": ("classical", lambda: oip([]), '"inputs" must be a non-empty list of tensors'),
    "inputs not a list": ("classical", lambda: json.dumps({"inputs": {"x": 1}}).encode(), '"inputs" must be'),
    "an unknown key": (
        "classical",
        lambda: oip(columns([ROW]), model="classical"),
        "unknown key(s) ['model'] in the Open Inference Protocol request; it takes ['id', 'parameters', "
        "'inputs', 'outputs']",
    ),
    "a numeric id": ("classical", lambda: oip(columns([ROW]), id=42), '"id" must be a string, got number 42'),
    "parameters not an object": (
        "classical",
        lambda: oip(columns([ROW]), parameters=[1]),
        '"parameters" must be an object',
    ),
    "a tensor without a datatype": (
        "lstm",
        _win(lambda t, _: t["prcp"].pop("datatype")),
        f"{PRCP} lacks ['datatype']; a tensor has ['name', 'shape', 'datatype', 'data', 'parameters']",
    ),
    "a tensor with an unknown key": (
        "lstm",
        _win(_set("prcp", "content", [])),
        f"{PRCP} has unknown ['content']",
    ),
    "a tensor without a name": (
        "classical",
        _tab(lambda _, inputs: inputs[0].pop("name")),
        'inputs[0]: "name" must be a string, got null',
    ),
    "a tensor that is not an object": ("classical", lambda: oip([[1.0]]), "inputs[0]: expected a tensor"),
    "data not an array": (
        "classical",
        _tab(_set("sepal length (cm)", "data", 5.9)),
        f"{SEPAL}: data must be an array, got number",
    ),
    "an unknown output asked for": (
        "classical",
        lambda: oip(columns([ROW]), outputs=[{"name": "logits"}]),
        """"outputs" asks for unknown output(s) ['logits']; the model's outputs are ['species', """
        "'probabilities']",
    ),
}


@pytest.mark.parametrize("case", OIP_BAD)
def test_every_oip_problem_gets_400_naming_the_input_and_what_is_allowed(classical, lstm, per_site, case):
    model, make, message = OIP_BAD[case]
    handler = {"classical": classical, "lstm": lstm, "per_site": per_site[0]}[model]
    bad = make()
    assert handler.handler._fast_rows(bad) is None  # never mlkube's fast path
    sites = ["s1"] if model == "per_site" else None
    good = oip(columns([ROW])) if model == "classical" else oip(windows(forcing_windows(1), sites))
    answers = handler([good, bad, good])
    assert [status for status, _ in answers] == [200, 400, 200], answers[1]
    assert message in answers[1][1]["error"], answers[1][1]
    assert answers[1][1]["code"] == 400


# ------------------------------------------------------- the frontend plugin (GET /v2/models/<m>[/ready])
def test_the_plugin_is_built_from_source_into_an_agent_jar_that_replaces_torchserves_oip_handler(tmp_path):
    """`plugin.build`: javac against the installed TorchServe; the jar names its agent in the manifest and
    carries the replacement handler as a resource (a class file of TorchServe's handler's name)."""
    import zipfile

    from mlkube.serving import plugin

    jar = plugin.build(tmp_path / "out", plugin.model_server_jar())
    with zipfile.ZipFile(jar) as archive:
        names = set(archive.namelist())
        manifest = archive.read("META-INF/MANIFEST.MF").decode()
        replacement = archive.read(plugin.REPLACEMENT)
    assert f"Premain-Class: {plugin.AGENT}" in manifest.splitlines()
    assert "mlkube/torchserve/Agent.class" in names
    assert plugin.REPLACED not in names  # TorchServe's own class stays the one on the class path
    assert replacement[:4] == bytes.fromhex("cafebabe")
    assert plugin.REPLACED.removesuffix(".class").encode() in replacement
    assert sorted(p.name for p in jar.parent.iterdir()) == [plugin.JAR]  # nothing half-written beside it


def test_serving_without_javac_or_a_built_plugin_is_refused_naming_the_fix(tmp_path, monkeypatch):
    from mlkube.serving import plugin
    from mlkube.trainer.errors import MlkubeError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no javac
    monkeypatch.delenv(plugin.PLUGIN_ENV, raising=False)
    with pytest.raises(MlkubeError, match="needs javac") as err:
        plugin.plugin_jar()
    assert "openjdk-17-jdk-headless" in err.value.fix
    assert not list((tmp_path / "cache").rglob("*.jar"))

    monkeypatch.setenv(plugin.PLUGIN_ENV, str(tmp_path / "empty"))
    with pytest.raises(MlkubeError, match=f"{plugin.PLUGIN_ENV}=.*empty holds no {plugin.JAR}"):
        plugin.plugin_jar()


def test_a_built_plugin_is_reused_and_rebuilt_when_its_source_changes(tmp_path, monkeypatch):
    from mlkube.serving import plugin

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(plugin.PLUGIN_ENV, raising=False)
    first = plugin.plugin_jar()
    built = first.stat().st_mtime_ns
    assert plugin.plugin_jar() == first and first.stat().st_mtime_ns == built
    sources = tmp_path / "sources"
    sources.mkdir()
    for path in plugin.SOURCES.glob("*.java"):
        (sources / path.name).write_text(path.read_text() + "\n// changed\n")
    monkeypatch.setattr(plugin, "SOURCES", sources)
    second = plugin.plugin_jar()
    assert second != first and second.is_file()
