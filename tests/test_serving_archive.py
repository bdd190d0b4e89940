"""Model archives (real torch-model-archiver) and the TorchServe configuration written for a run."""

from __future__ import annotations

import json
import zipfile

import pytest

from mlkube.trainer.run import Run
from tests.serving_fixtures import RUN_ID, make_run, serve_spec

pytestmark = pytest.mark.unit


@pytest.fixture
def run(tmp_path):
    from mlkube.trainer.run import Run

    return Run.open(make_run(tmp_path))


def test_archive_packs_handler_model_json_and_weights_versioned_by_run_id(run):
    from mlkube.serving.archive import archive_run

    for mar in archive_run(run):
        with zipfile.ZipFile(mar) as z:
            manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
            meta = json.loads(z.read("model.json"))
            assert set(z.namelist()) == {
                "MAR-INF/MANIFEST.json",
                "model.json",
                meta["weights"],
                manifest["handler"],
            }
        assert (manifest["modelName"], manifest["modelVersion"]) == (mar.stem, RUN_ID)
        assert manifest["handler"] == {"classical": "sklearn_handler.py", "lstm": "lstm_handler.py"}[mar.stem]


def test_an_up_to_date_archive_is_kept_and_force_rebuilds_it(run):
    from mlkube.serving.archive import archive_run

    [mar] = archive_run(run, ["classical"])
    first = mar.stat().st_mtime_ns
    archive_run(run, ["classical"])
    assert mar.stat().st_mtime_ns == first
    archive_run(run, ["classical"], force=True)
    assert mar.stat().st_mtime_ns != first


def test_archive_refuses_weights_that_fail_the_integrity_check(run):
    from mlkube.serving.archive import archive_run
    from mlkube.trainer.errors import MlkubeError

    (run.models / "classical" / "model.skops").write_bytes(b"not the model that was saved")
    with pytest.raises(MlkubeError, match="integrity check failed .*model.skops"):
        archive_run(run, ["classical"])


def test_serving_refuses_an_archive_changed_after_it_was_made(run):
    from mlkube.serving.archive import archive_run, verify_archives
    from mlkube.trainer.errors import MlkubeError

    [mar] = archive_run(run, ["lstm"])
    with open(mar, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(MlkubeError, match="integrity check failed .*lstm.mar"):
        verify_archives(run, ["lstm"])


def test_unknown_model_names_the_choices(run):
    from mlkube.serving.archive import archive_run
    from mlkube.trainer.errors import MlkubeError

    with pytest.raises(MlkubeError, match=r"no model \['cnn'\].*\n.*\['classical', 'lstm'\]"):
        archive_run(run, ["cnn"])


def test_config_binds_loopback_keeps_token_auth_and_model_api_off_and_batches_from_spec(tmp_path):
    from mlkube.serving.server import config_properties

    serve = serve_spec(batch_size=4, max_batch_delay_ms=7, max_request_bytes=2048, token_expiration_min=720)
    socket = tmp_path / "private" / "management.sock"
    text = config_properties(Run(tmp_path / RUN_ID), serve, ["classical"], tmp_path / "tmp", socket)
    props = dict(line.split("=", 1) for line in text.splitlines())
    for key in ("inference_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:")
    assert props["management_address"] == f"unix:{socket}"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert (props["disable_token_authorization"], props["enable_model_api"], props["metrics_mode"]) == (
        "false",
        "false",
        "prometheus",
    )
    assert props["max_request_size"] == "2048" and props["token_expiration_min"] == "720"
    # A deployment's host opens inference and metrics to the network, never gRPC (its management service).
    run, wide_spec = Run(tmp_path / RUN_ID), serve_spec(host="0.0.0.0")
    wide = config_properties(run, wide_spec, ["classical"], tmp_path, socket)
    wide_props = dict(line.split("=", 1) for line in wide.splitlines())
    assert wide_props["inference_address"].startswith("http://0.0.0.0:")
    assert wide_props["grpc_inference_address"] == wide_props["grpc_management_address"] == "127.0.0.1"
    model = json.loads(props["models"])["classical"][RUN_ID]
    assert (model["batchSize"], model["maxBatchDelay"]) == (4, 7)


def test_worker_sockets_of_a_deep_run_folder_get_a_short_path_to_the_same_folder(tmp_path):
    import os
    import shutil

    from mlkube.serving.server import SOCKET_PATH_MAX, java_tmpdir, private_folder

    private = private_folder()
    try:
        assert java_tmpdir(tmp_path / "tmp", private) == tmp_path / "tmp"
        deep = tmp_path.joinpath(*["a-long-folder-name"] * 6, "serving", "tmp")
        deep.mkdir(parents=True)
        link = java_tmpdir(deep, private)
        assert link.parent == private and (private.stat().st_mode & 0o777) == 0o700
        assert len(os.fsencode(link / ".ts.sock.65535")) <= SOCKET_PATH_MAX
        assert link.resolve() == deep.resolve()
    finally:
        shutil.rmtree(private)


def test_a_start_that_fails_leaves_no_private_folder_behind(run, tmp_path, monkeypatch):
    """The management socket's private folder is made before TorchServe starts; if the start fails (here: the
    process cannot be spawned), the folder goes too."""
    import subprocess
    import tempfile

    from mlkube.serving import server

    scratch = tmp_path / "scratch"
    scratch.mkdir()
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
