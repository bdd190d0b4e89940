"""Model archives (TorchServe's .mar: a zip with MAR-INF/MANIFEST.json), the checks before serving them,
and the TorchServe configuration written for a run."""

from __future__ import annotations

import json
import zipfile

import pytest

from mlkube.trainer.run import Run
from tests.serving_fixtures import RUN_ID, make_run, record_archive, serve_spec

pytestmark = pytest.mark.unit


@pytest.fixture
def run(tmp_path):
    from mlkube.trainer.run import Run

    return Run.open(make_run(tmp_path))


def test_archive_packs_model_json_and_weights_and_no_code_versioned_by_run_id(run):
    """The manifest names the handler as the installed module, which TorchServe's worker imports by name."""
    from mlkube.serving.archive import archive_run

    for mar in archive_run(run):
        with zipfile.ZipFile(mar) as z:
            manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
            meta = json.loads(z.read("model.json"))
            assert set(z.namelist()) == {"MAR-INF/MANIFEST.json", "model.json", meta["weights"]}
        assert (manifest["modelName"], manifest["modelVersion"]) == (mar.stem, RUN_ID)
        assert manifest["serializedFile"] == meta["weights"]
        module = {"classical": "sklearn_handler", "lstm": "lstm_handler"}[mar.stem]
        assert manifest["handler"] == f"mlkube.serving.handlers.{module}"


def test_an_up_to_date_archive_is_kept_and_force_rebuilds_it(run):
    from mlkube.serving.archive import archive_run

    [mar] = archive_run(run, ["classical"])
    first = mar.stat().st_mtime_ns
    archive_run(run, ["classical"])
    assert mar.stat().st_mtime_ns == first
    archive_run(run, ["classical"], force=True)
    assert mar.stat().st_mtime_ns != first


def test_an_archive_made_with_the_handlers_source_inside_is_made_anew(run):
    """Archives recorded without archives.json's `format` hold the handler's source: serving refuses them."""
    from mlkube.serving.archive import ARCHIVES_JSON, FORMAT, archive_run, read_archives
    from mlkube.trainer.run import atomic_write_json

    [mar] = archive_run(run, ["classical"])
    records = read_archives(run)
    del records["classical"]["format"]
    atomic_write_json(run.model_store / ARCHIVES_JSON, records)
    first = mar.stat().st_mtime_ns
    archive_run(run, ["classical"])
    assert mar.stat().st_mtime_ns != first and read_archives(run)["classical"]["format"] == FORMAT


def test_archive_refuses_weights_that_fail_the_integrity_check(run):
    from mlkube.serving.archive import archive_run
    from mlkube.trainer.errors import MlkubeError

    (run.models / "classical" / "model.skops").write_bytes(b"not the model that was saved")
    with pytest.raises(MlkubeError, match="integrity check failed .*model.skops"):
        archive_run(run, ["classical"])


def test_serving_refuses_an_archive_changed_after_it_was_made(run, tmp_path):
    from mlkube.serving.archive import archive_run, stage_archives
    from mlkube.trainer.errors import MlkubeError

    [mar] = archive_run(run, ["lstm"])
    with open(mar, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(MlkubeError, match="integrity check failed .*lstm.mar"):
        stage_archives(run, ["lstm"], tmp_path / "store")


def test_the_checked_copy_holds_exactly_the_archives_files(run, tmp_path):
    from mlkube.serving.archive import archive_run, stage_archives

    marks = archive_run(run)
    stage_archives(run, ["classical", "lstm"], tmp_path / "store")
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o700
    for mar in marks:
        with zipfile.ZipFile(mar) as z, zipfile.ZipFile(tmp_path / "store" / mar.name) as copy:
            assert sorted(copy.namelist()) == sorted(z.namelist())
            for name in z.namelist():
                assert copy.read(name) == z.read(name)


def _replant(run, name: str, change) -> None:
    """Rewrite archive `name` with `change(entries)` (name → bytes) and record its SHA-256 in archives.json,
    as a writer of the runs volume who cannot read the signing key could."""
    mar = run.model_store / f"{name}.mar"
    with zipfile.ZipFile(mar) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    change(entries)
    with zipfile.ZipFile(mar, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    record_archive(run, name)


def _manifest_naming(handler: str):
    def change(entries):
        manifest = json.loads(entries["MAR-INF/MANIFEST.json"])
        manifest["model"]["handler"] = handler
        entries["MAR-INF/MANIFEST.json"] = json.dumps(manifest).encode()

    return change


PLANTED = {
    "a module that shadows an installed one": (
        lambda e: e.update({"numpy.py": b"import os"}),
        r"classical.mar holds 'numpy.py': an archive of model 'classical' holds only",
    ),
    "a package folder": (
        lambda e: e.update({"mlkube/__init__.py": b"", "mlkube/serving/__init__.py": b""}),
        r"classical.mar holds 'mlkube/__init__.py' \(and 1 more\)",
    ),
    "the handler's source, as torch-model-archiver packed it": (
        lambda e: e.update({"sklearn_handler.py": b"import os"}),
        r"classical.mar holds 'sklearn_handler.py'",
    ),
    "a manifest naming another handler": (
        _manifest_naming("os:system"),
        r"classical.mar: MAR-INF/MANIFEST.json is not the manifest of model 'classical'",
    ),
    "no weights": (lambda e: e.pop("model.skops"), r"classical.mar lacks 'model.skops'"),
    "weights larger than the signed card's": (
        lambda e: e.update({"model.skops": e["model.skops"] * 2}),
        r"classical.mar: 'model.skops' is encrypted or holds \d+ bytes, more than its \d+",
    ),
}


@pytest.mark.parametrize("planted", PLANTED)
def test_serving_refuses_an_archive_holding_anything_but_the_signed_cards_files(run, tmp_path, planted):
    """archives.json is rewritten to match: the archive's contents are checked against the signed card."""
    from mlkube.serving.archive import archive_run, stage_archives
    from mlkube.trainer.errors import MlkubeError

    change, message = PLANTED[planted]
    archive_run(run, ["classical"])
    _replant(run, "classical", change)
    with pytest.raises(MlkubeError, match=message) as refused:
        stage_archives(run, ["classical"], tmp_path / "store")
    assert "mlkube archive" in refused.value.fix
    assert not (tmp_path / "store" / "classical.mar").exists()


def test_unknown_model_names_the_choices(run):
    from mlkube.serving.archive import archive_run
    from mlkube.trainer.errors import MlkubeError

    with pytest.raises(MlkubeError, match=r"no model \['cnn'\].*\n.*\['classical', 'lstm'\]"):
        archive_run(run, ["cnn"])


def test_config_binds_loopback_keeps_token_auth_and_model_api_off_and_batches_from_spec(tmp_path):
    from mlkube.serving.server import config_properties

    serve = serve_spec(batch_size=4, max_batch_delay_ms=7, max_request_bytes=2048, token_expiration_min=720)
    socket = tmp_path / "private" / "management.sock"
    store = tmp_path / "private" / "model-store"
    text = config_properties(Run(tmp_path / RUN_ID), serve, ["classical"], tmp_path / "tmp", socket, store)
    props = dict(line.split("=", 1) for line in text.splitlines())
    for key in ("inference_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:")
    assert props["management_address"] == f"unix:{socket}"
    assert props["model_store"] == str(store)  # the checked copies, not the runs volume's archives
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert (props["disable_token_authorization"], props["enable_model_api"], props["metrics_mode"]) == (
        "false",
        "false",
        "prometheus",
    )
    assert props["max_request_size"] == "2048" and props["token_expiration_min"] == "720"
    # A deployment's host opens inference and metrics to the network, never gRPC (its management service).
    run, wide_spec = Run(tmp_path / RUN_ID), serve_spec(host="0.0.0.0")
    wide = config_properties(run, wide_spec, ["classical"], tmp_path, socket, store)
    wide_props = dict(line.split("=", 1) for line in wide.splitlines())
    assert wide_props["inference_address"].startswith("http://0.0.0.0:")
    assert wide_props["grpc_inference_address"] == wide_props["grpc_management_address"] == "127.0.0.1"
    model = json.loads(props["models"])["classical"][RUN_ID]
    assert (model["batchSize"], model["maxBatchDelay"]) == (4, 7)


def test_a_temporary_directory_too_deep_for_the_worker_sockets_is_refused_naming_it(tmp_path, monkeypatch):
    """The workers' sockets are in the private folder's tmp/ (java.io.tmpdir), whatever the run folder."""
    import tempfile

    from mlkube.serving.server import private_folder
    from mlkube.trainer.errors import MlkubeError

    deep = tmp_path.joinpath(*["a-long-folder-name"] * 5)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(MlkubeError, match="too deep for a Unix socket path") as refused:
        private_folder()
    assert str(deep) in str(refused.value)
    assert list(deep.iterdir()) == []


def test_a_start_that_fails_leaves_no_private_folder_behind(run, scratch, monkeypatch):
    """The management socket's private folder is made before TorchServe starts; if the start fails (here: the
    process cannot be spawned), the folder goes too."""
    import subprocess
    import tempfile

    from mlkube.serving import server
    from mlkube.serving.archive import archive_run

    archive_run(run, ["classical"])
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def cannot_spawn(*args, **kwargs):
        raise OSError("no such interpreter")

    monkeypatch.setattr(subprocess, "Popen", cannot_spawn)
    with pytest.raises(OSError, match="no such interpreter"):
        server.start(run, serve_spec(), ["classical"])
    assert list(scratch.iterdir()) == []
    assert not (run.serving / "key_file.json").exists()  # nor the empty key file TorchServe would have filled


def test_the_key_file_is_made_anew_and_a_link_planted_at_its_name_is_removed_not_followed(tmp_path):
    """TorchServe writes its keys through the link in its private working directory; what someone who can
    write the runs folder left at the key file's name (here: a link to a file of the serving user's) is gone,
    and its target untouched."""
    from mlkube.serving.server import key_file_link

    victim = tmp_path / "victim"
    victim.write_text("kept")
    serving, private = tmp_path / "serving", tmp_path / "private"
    serving.mkdir()
    private.mkdir()
    (serving / "key_file.json").symlink_to(victim)
    key_file_link(serving / "key_file.json", private / "key_file.json")
    assert victim.read_text() == "kept"
    key_file = serving / "key_file.json"
    assert (
        not key_file.is_symlink()
        and key_file.read_text() == ""
        and (key_file.stat().st_mode & 0o777) == 0o600
    )
    assert (private / "key_file.json").readlink() == key_file
