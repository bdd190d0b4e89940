"""The learning-rate range test: the suggestion rule on curves made by hand, and `mlkube lr-range` on the
shipped CAMELS-US sample (real training steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.lr_range import check_bounds, suggest
from tests.conftest import ROOT

RATES = list(np.geomspace(1e-5, 1.0, 101))  # 20 steps a decade


@pytest.mark.unit
def test_the_suggestion_is_a_tenth_of_the_rate_at_the_lowest_smoothed_loss():
    valley = [1 + (np.log10(r) + 2) ** 2 for r in RATES]  # lowest at 1e-2
    assert suggest(RATES, valley) == pytest.approx(1e-3)
    assert suggest(RATES, [1.0 + 0.01 * i for i in range(len(RATES))]) is None  # it never fell
    assert suggest(RATES[:2], [1.0, 0.5]) is None  # too short to say


@pytest.mark.unit
@pytest.mark.parametrize(
    ("steps", "low", "high", "message"),
    [(5, 1e-5, 1.0, "at least 10 steps"), (100, 1.0, 1e-5, "need 0 < min < max"), (100, 0, 1.0, "0 < min")],
)
def test_bad_bounds_are_refused_naming_them(steps, low, high, message):
    with pytest.raises(MlkubeError, match=message):
        check_bounds(steps, low, high)


@pytest.mark.integration
def test_lr_range_trains_with_a_growing_rate_and_writes_the_curve_and_figure(run_cli, tmp_path):
    done = run_cli("lr-range", ROOT / "examples" / "hydrology.yaml", "--steps", "30", "--out", "curve")
    assert done.returncode == 0, done.stderr
    assert "lr-range: step 30/30" in done.stderr and "Traceback" not in done.stderr
    curve = json.loads((tmp_path / "curve" / "lr_range.json").read_text())
    rates = np.array(curve["learning_rates"])
    np.testing.assert_allclose(rates, np.geomspace(1e-5, 1.0, 30)[: len(rates)], rtol=1e-9)
    assert len(curve["losses"]) == len(rates) == (len(rates) if curve["diverged"] else 30)
    assert all(np.isfinite(curve["losses"][:-1]))
    if curve["suggested"] is not None:
        assert f"suggested learning rate: {curve['suggested']:.3g}" in done.stdout
        assert rates[0] <= curve["suggested"] * 10 <= rates[-1]
    assert (tmp_path / "curve" / "lr_range.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.integration
def test_lr_range_of_a_spec_without_an_lstm_is_a_message(run_cli, tmp_path):
    (tmp_path / "iris.yaml").write_text("data: {name: iris}\n")
    refused = run_cli("lr-range", "iris.yaml")
    assert refused.returncode == 2 and "the spec trains no LSTM" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "lr-range").exists()
