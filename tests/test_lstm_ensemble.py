"""Seed ensembles of the LSTM: one signed card listing every member's weights and hash, an archive holding
them all, and a handler answering the mean of its members' answers; and the spec's refusals of bad
`lstm.ensemble` / `lstm.cv` settings. (Training an ensemble and the cross-validation over basins for real, on
Ray: tests/test_lstm_basin_cv.py; served through the real TorchServe: tests/test_serving_server.py.)"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tests.serving_fixtures import ENSEMBLE_MODEL, forcing_windows, make_run

MEMBERS = 3


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    from mlkube.trainer.run import Run

    return Run(make_run(tmp_path_factory.mktemp("runs"), ensemble=MEMBERS))


@pytest.mark.unit
def test_the_ensemble_card_lists_every_member_with_the_sha256_of_its_weights_and_is_signed(ensemble_run):
    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.card import LstmCard
    from mlkube.trainer.run import sha256_file

    folder = ensemble_run.model_dir(ENSEMBLE_MODEL)
    card = read_model_card(folder, expected=LstmCard)  # verifies the signature and every member's SHA-256
    assert card.name == ENSEMBLE_MODEL
    assert [m.seed for m in card.members] == list(range(MEMBERS))
    assert card.weights == card.members[0].weights
    for k, member in enumerate(card.members):
        assert member.sha256 == sha256_file(folder / member.weights)
        assert member.sha256 == read_model_card(ensemble_run.ensemble_member(k)).sha256  # the member's own


@pytest.mark.unit
def test_a_changed_member_is_refused_naming_its_weights_file(ensemble_run, tmp_path):
    import shutil

    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.errors import MlkubeError

    folder = tmp_path / ENSEMBLE_MODEL
    shutil.copytree(ensemble_run.model_dir(ENSEMBLE_MODEL), folder)
    last = folder / f"member-{MEMBERS - 1}.pt"
    data = bytearray(last.read_bytes())
    data[-1] ^= 0xFF  # one byte changed
    last.write_bytes(bytes(data))
    with pytest.raises(MlkubeError, match=f"integrity check failed for .*member-{MEMBERS - 1}.pt"):
        read_model_card(folder)


@pytest.mark.unit
def test_a_card_whose_members_do_not_start_with_its_weights_is_refused(ensemble_run):
    from pydantic import ValidationError

    from mlkube.trainer.card import LstmCard

    data = json.loads((ensemble_run.model_dir(ENSEMBLE_MODEL) / "model.json").read_text())
    data["members"] = data["members"][::-1]
    with pytest.raises(ValidationError, match="first member must be the card's `weights`"):
        LstmCard.model_validate(data)


@pytest.mark.integration
def test_the_ensemble_answers_the_mean_of_its_members_answers_in_process(ensemble_run):
    from mlkube.serving.handlers import InProcess

    body = json.dumps({"instances": forcing_windows(6)}).encode()
    [(status, answer)] = InProcess(ensemble_run.model_dir(ENSEMBLE_MODEL))([body])
    assert status == 200, answer
    alone = []
    for k in range(MEMBERS):
        [(code, member)] = InProcess(ensemble_run.ensemble_member(k))([body])
        assert code == 200, member
        alone.append(member["predictions"])
    assert not np.allclose(alone[0], alone[1])  # different seeds, different answers: the mean is no member
    np.testing.assert_allclose(answer["predictions"], np.mean(alone, axis=0), rtol=1e-12)


@pytest.mark.integration
def test_a_served_ensemble_answers_the_mean_of_its_members_predictions(ensemble_run):
    """Through a real TorchServe (the ensemble's own: on the session's server a fourth model made its Java
    frontend start a thread per batch): the answer is the mean of each member's answer, computed here from
    the member's saved network (expected_lstm) and by the member's handler in this process."""
    from mlkube.serving.handlers import InProcess
    from mlkube.serving.server import serve_run
    from tests.serving_fixtures import expected_lstm, serve_spec

    run = ensemble_run
    windows = forcing_windows(7, seed=5)
    server = serve_run(run, serve_spec(), names=[ENSEMBLE_MODEL])
    try:
        answer = server.predict(ENSEMBLE_MODEL, {"instances": windows})
    finally:
        server.stop()
    members = [run.ensemble_member(k) for k in range(MEMBERS)]
    body = json.dumps({"instances": windows}).encode()
    in_process = [InProcess(folder)([body])[0][1]["predictions"] for folder in members]
    by_hand = [expected_lstm(folder, windows) for folder in members]
    assert answer["model"] == ENSEMBLE_MODEL
    np.testing.assert_allclose(answer["predictions"], np.mean(in_process, axis=0), rtol=1e-12)
    np.testing.assert_allclose(answer["predictions"], np.mean(by_hand, axis=0), atol=1e-6)
    assert not np.allclose(by_hand[0], answer["predictions"], atol=1e-6)  # no single member's answer


@pytest.mark.integration
def test_the_ensemble_archive_holds_the_card_and_every_members_weights(ensemble_run):
    from mlkube.serving.archive import archive_run

    [mar] = archive_run(ensemble_run, [ENSEMBLE_MODEL])
    names = set(zipfile.ZipFile(mar).namelist())
    assert {"model.json", *(f"member-{k}.pt" for k in range(MEMBERS))} <= names


# ------------------------------------------------------------------------------------------- bad settings
BASE = "lstm:\n  sequence_length: 30\n  elastic: {nproc_per_node: 1}\n"
REFUSED = {
    "ensemble 0": (BASE + "  ensemble: 0\n", "lstm.ensemble", "greater than or equal to 1"),
    "ensemble not a number": (BASE + "  ensemble: three\n", "lstm.ensemble", "valid integer"),
    "one fold": (BASE + "  cv: {folds: 1}\n", "lstm.cv.folds", "greater than or equal to 2"),
    "unknown scheme": (BASE + "  cv: {scheme: loocv}\n", "lstm.cv.scheme", "'kfold' or 'group'"),
    "group without groups": (BASE + "  cv: {scheme: group}\n", "lstm.cv", "needs `groups`"),
    "groups under kfold": (BASE + "  cv: {groups: huc_02}\n", "lstm.cv", "applies to scheme group"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", REFUSED)
def test_bad_ensemble_and_cv_settings_are_refused_naming_the_field(case):
    from mlkube.trainer.errors import SpecError
    from mlkube.trainer.spec import parse_spec

    text, field, why = REFUSED[case]
    with pytest.raises(SpecError) as refused:
        parse_spec(text)
    assert field in str(refused.value) and why in str(refused.value)


DATA_REFUSED = {
    "more folds than sites": ("  cv: {folds: 5}\n", "lstm.cv.folds (5) exceeds the 4 sites"),
    "more folds than groups": (
        "  cv: {scheme: group, folds: 3,\n"
        "       groups: {'01022500': a, '01547700': a, '02064000': b, '03015500': b}}\n",
        "lstm.cv.folds (3) exceeds the 2 groups",
    ),
    "a site without a group": (
        "  cv: {scheme: group, groups: {'01022500': a, '01547700': b}}\n",
        "lstm.cv.groups: no group for site(s) ['02064000', '03015500']",
    ),
    "an unknown attribute": ("  cv: {scheme: group, groups: basin_colour}\n", "no attribute 'basin_colour'"),
    "per-site statistics": (
        "  cv: {}\npreprocess: {normalization: per_site}\n",
        "lstm.cv: preprocess.normalization per_site",
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", DATA_REFUSED)
def test_cv_settings_the_data_cannot_hold_are_refused_before_a_run_naming_the_field(case):
    from mlkube.pipeline import check_inputs
    from mlkube.trainer.errors import MlkubeError
    from mlkube.trainer.spec import parse_spec

    text, message = DATA_REFUSED[case]
    with pytest.raises(MlkubeError) as refused:
        check_inputs(parse_spec(BASE + text))
    assert message in str(refused.value)


@pytest.mark.unit
def test_leave_one_basin_out_holds_each_site_out_once_and_never_trains_on_it():
    from mlkube.trainer.lstm.basin_cv import basin_folds
    from mlkube.trainer.spec import BasinCVSpec

    sites = ("a", "b", "c", "d")
    folds = basin_folds(BasinCVSpec(), sites, None, seed=0)
    assert sorted(s for f in folds for s in f.test_sites) == list(sites)
    for fold in folds:
        assert len(fold.test_sites) == 1 and not set(fold.test_sites) & set(fold.train_sites)
        assert set(fold.test_sites) | set(fold.train_sites) == set(sites)


@pytest.mark.unit
def test_group_folds_hold_a_whole_group_out_together():
    from mlkube.trainer.lstm.basin_cv import basin_folds
    from mlkube.trainer.spec import BasinCVSpec

    sites = ("a", "b", "c", "d", "e", "f")
    groups = ["north", "north", "south", "south", "west", "west"]
    folds = basin_folds(BasinCVSpec(scheme="group", groups="region"), sites, groups, seed=1)
    assert len(folds) == 3
    held = [{groups[sites.index(s)] for s in f.test_sites} for f in folds]
    assert all(len(h) == 1 for h in held) and set().union(*held) == {"north", "south", "west"}
    for fold, [group] in zip(folds, held, strict=True):
        assert all(groups[sites.index(s)] != group for s in fold.train_sites)


@pytest.mark.unit
def test_the_camels_regions_group_the_shipped_basins():
    from mlkube.trainer.lstm.basin_cv import check_cv
    from mlkube.trainer.spec import parse_spec

    spec = parse_spec(BASE + "  cv: {scheme: group, groups: huc_02}\n")
    sites = ("01022500", "01547700", "02064000", "03015500")  # one HUC-02 region each
    folds = check_cv(spec, sites)
    assert sorted(f.test_sites for f in folds) == [(s,) for s in sites]
