"""The LSTM's parts in one process: skill scores, baselines, evaluation windows, checkpoints, the training
loop's resume and early stopping, the torchrun command line, and the checks made before torchrun starts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.scores import kge, nse, site_scores, summarize
from mlkube.trainer.spec import parse_spec

pytestmark = pytest.mark.unit

TINY = """
seed: 3
lstm:
  data: {name: synthetic, synthetic_sites: 3, synthetic_years: 2}
  sequence_length: 30
  model: {hidden_size: 8, num_layers: 2, dropout: 0.2}
  train: {epochs: 3, steps_per_epoch: 10, batch_size: 8, checkpoint_every: 10, warmup_days: 5}
"""


@pytest.fixture(scope="module")
def tiny():
    from mlkube.trainer.lstm.prepared import prepare

    spec = parse_spec(TINY)
    return spec, prepare(spec)


def weights(net) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


# ------------------------------------------------------------------------------------------------ metrics
def test_nse_is_one_for_a_perfect_simulation_and_zero_for_the_observed_mean():
    obs = np.array([1.0, 3.0, 2.0, 6.0])
    assert nse(obs, obs) == 1.0
    assert nse(np.full(4, obs.mean()), obs) == pytest.approx(0.0)
    assert kge(obs, obs) == pytest.approx(1.0)
    assert kge(obs * 2, obs) < 0.5  # twice the spread and twice the mean


def test_scores_leave_out_missing_days_and_summaries_leave_out_unscored_sites():
    obs = np.array([[1.0, np.nan, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    sim = np.array([[1.0, 99.0, 3.0, 4.0], [1.0, 2.0, 3.0, 2.0]])
    scores = site_scores(sim, obs, ["a", "b"])
    four = {name: scores["a"][name] for name in ("nse", "kge", "rmse", "bias")}
    assert four == {"nse": 1.0, "kge": pytest.approx(1.0), "rmse": 0.0, "bias": 0.0}
    assert np.isnan(scores["b"]["nse"])  # constant observations: NSE undefined
    assert summarize(scores)["median"]["nse"] == 1.0 and summarize(scores)["mean"]["rmse"] == pytest.approx(
        np.sqrt(0.5) / 2
    )


# ----------------------------------------------------------------------------------------------- baselines
def test_climatology_reproduces_a_purely_seasonal_series(tiny):
    from mlkube.trainer.lstm.baselines import climatology
    from mlkube.trainer.lstm.evaluate import observed

    _, prepared = tiny
    doy = (prepared.data.dates - prepared.data.dates.astype("datetime64[Y]")).astype(int)
    seasonal = np.sin(2 * np.pi * doy / 365)[None, :] + np.arange(3)[:, None]
    data = dataclasses.replace(prepared.data, target=seasonal.astype(np.float32))
    np.testing.assert_allclose(climatology(data, 30, 1, 0, "test"), observed(data, "test"), atol=1e-6)


def test_ridge_baseline_recovers_a_target_linear_in_yesterdays_inputs(tiny):
    from mlkube.trainer.lstm.baselines import BASELINES
    from mlkube.trainer.lstm.evaluate import score

    _, prepared = tiny
    data = prepared.data
    linear = np.full(data.target.shape, np.nan, np.float32)
    linear[:, 1:] = 2 * data.dynamic[:, :-1, 1] - data.dynamic[:, :-1, 3]
    test = score(
        BASELINES["Ridge"](dataclasses.replace(data, target=linear), 30, 1, 0, "test"),
        dataclasses.replace(data, target=linear),
        "test",
    )
    assert test["median"]["nse"] > 0.999


def every_day_float64_features(data, sequence_length: int) -> np.ndarray:
    """The lagged features as built before the memory work, a plain reference: [sites, days, features] of
    every site's every day, in float64, cast to float32 at the end."""
    from mlkube.trainer.lstm.baselines import LAGS, MEANS

    dynamic = data.dynamic.astype(np.float64)
    sites, days, _ = dynamic.shape
    columns = []
    for lag in range(min(LAGS, sequence_length)):
        shifted = np.full_like(dynamic, np.nan)
        shifted[:, lag:] = dynamic[:, : days - lag]
        columns.append(shifted)
    finite = np.isfinite(dynamic)
    zero = np.zeros((sites, 1, dynamic.shape[2]))
    total = np.concatenate([zero, np.where(finite, dynamic, 0.0).cumsum(axis=1)], axis=1)
    count = np.concatenate([zero, finite.cumsum(axis=1, dtype=np.float64)], axis=1)
    for window in sorted({min(w, sequence_length) for w in MEANS}):
        n = count[:, window:] - count[:, :-window]
        mean = np.full_like(dynamic, np.nan)
        means = (total[:, window:] - total[:, :-window]) / window
        mean[:, window - 1 :] = np.where(n == window, means, np.nan)
        columns.append(mean)
    columns.append(np.broadcast_to(data.static[:, None, :], (sites, days, data.static.shape[1])))
    return np.concatenate(columns, axis=2).astype(np.float32)


def test_regression_baselines_score_as_on_every_day_float64_features(tiny):
    from mlkube.trainer.classical import zoo
    from mlkube.trainer.lstm.baselines import simulate_baselines, site_rows, training_rows
    from mlkube.trainer.lstm.evaluate import observed, score

    _, prepared = tiny
    data, horizon = prepared.data, 2
    features = every_day_float64_features(data, 30)
    x = {}
    for period in ("train", "test"):
        first, last = max(data.periods[period][0], horizon - 1), data.periods[period][1]
        x[period] = features[:, first - (horizon - 1) : last - (horizon - 1)].reshape(-1, features.shape[2])
    y = observed(data, "train", horizon).reshape(-1).astype(np.float64)
    rows, target = training_rows(data, 30, horizon, 0)
    np.testing.assert_array_equal(rows, x["train"])
    np.testing.assert_array_equal(target, y)
    scored = np.concatenate([site_rows(data, site, 30, horizon, "test") for site in range(len(data.sites))])
    np.testing.assert_array_equal(scored, x["test"])
    fit = np.isfinite(x["train"]).all(axis=1) & np.isfinite(y)
    pipeline = zoo.build_pipeline(zoo.plan("Ridge", "regression", {}, "auto", 0, 0))
    reference = pipeline.fit(x["train"][fit], y[fit]).predict(x["test"]).reshape(len(data.sites), -1)
    theirs = score(reference, data, "test", horizon)["sites"]
    # every row (max_rows at or above the rows there are) and predicted one site at a time: the same scores
    for max_rows, block in ((None, 64), (len(y), 1)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("mlkube.trainer.lstm.baselines.SITE_BLOCK", block)
            simulated = simulate_baselines(["Ridge", "climatology"], data, 30, horizon, 0, "test", max_rows)
        assert list(simulated) == ["Ridge", "climatology"]
        ours = score(simulated["Ridge"], data, "test", horizon)["sites"]
        for site in data.sites:
            np.testing.assert_allclose(list(ours[site].values()), list(theirs[site].values()), atol=1e-6)


def test_regression_baselines_fit_a_seeded_sample_of_max_rows_training_days(tiny):
    from mlkube.trainer.lstm.baselines import simulate_baselines, training_rows

    _, prepared = tiny
    data = prepared.data
    every, target = training_rows(data, 30, 1, 0)
    rows, sampled = training_rows(data, 30, 1, 0, max_rows=500)
    assert rows.shape == (500, every.shape[1]) and sampled.shape == (500,)
    # rows of the full set, each drawn once, in site and day order
    index = {row.tobytes() + day.tobytes(): i for i, (row, day) in enumerate(zip(every, target, strict=True))}
    positions = [index[row.tobytes() + day.tobytes()] for row, day in zip(rows, sampled, strict=True)]
    assert positions == sorted(set(positions))
    again, _ = training_rows(data, 30, 1, 0, max_rows=500)
    other, _ = training_rows(data, 30, 1, 1, max_rows=500)
    np.testing.assert_array_equal(again, rows)  # the seed's sample
    assert not np.array_equal(other, rows)
    sims = [simulate_baselines(["GBM"], data, 30, 1, 0, "test", n)["GBM"] for n in (500, None)]
    assert sims[0].shape == sims[1].shape and np.isfinite(sims[0]).any()
    assert not np.allclose(sims[0], sims[1], equal_nan=True)  # fitted on other rows


def test_the_spec_names_exactly_the_baselines_there_are():
    import typing

    from mlkube.trainer.lstm.baselines import BASELINES
    from mlkube.trainer.spec import LstmSpec

    (choice,) = typing.get_args(LstmSpec.model_fields["baselines"].annotation)
    assert set(typing.get_args(choice)) == set(BASELINES) == set(LstmSpec().baselines)


# ---------------------------------------------------------------------------------------------- evaluation
def test_days_whose_input_window_holds_a_gap_are_not_scored_and_later_days_are(tiny):
    from mlkube.trainer.lstm.evaluate import simulate
    from mlkube.trainer.lstm.model import architecture, build_model
    from mlkube.trainer.preprocess import standardize

    spec, prepared = tiny
    lo, _ = prepared.data.periods["test"]
    dynamic = prepared.data.dynamic.copy()
    dynamic[0, lo + 10, 0] = np.nan
    data = standardize(dataclasses.replace(prepared.data, dynamic=dynamic), prepared.stats)
    sim = simulate(build_model(architecture(spec.lstm, data)), data, prepared.stats, "test", 30, 1)
    gap = np.isnan(sim[0])
    assert gap[10:40].all() and not gap[:10].any() and not gap[40:].any()
    assert np.isfinite(sim[1:]).all()


# ---------------------------------------------------------------------------------------------- checkpoints
def test_a_truncated_checkpoint_is_detected_and_the_previous_one_is_used(tmp_path):
    import torch

    from mlkube.trainer.lstm.checkpoint import checkpoints, latest_checkpoint, save_checkpoint

    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((100,), float(step))})
    assert [p.name for p in checkpoints(tmp_path)] == [
        "step-000000040.ckpt",
        "step-000000030.ckpt",
        "step-000000020.ckpt",
    ]
    newest = checkpoints(tmp_path)[0]
    newest.write_bytes(newest.read_bytes()[:-7])
    warnings = []
    state, path = latest_checkpoint(tmp_path, warn=warnings.append)
    assert state["step"] == 30 and path.name == "step-000000030.ckpt"
    assert "truncated" in warnings[0]


def test_a_checkpoint_changed_on_disk_fails_its_hash(tmp_path):
    from mlkube.trainer.lstm.checkpoint import read_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path, 1, {"step": 1})
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------------------- training loop
class Crash(Exception):
    pass


def crash_at(step: int):
    def hook(info):
        if info.step == step:
            raise Crash

    return hook


def test_resuming_from_the_last_complete_checkpoint_ends_with_bit_identical_weights(tiny, tmp_path):
    from mlkube.trainer.lstm.train import Trainer

    spec, prepared = tiny
    calm = Trainer(spec.lstm, spec.seed, prepared, checkpoints=tmp_path / "calm")
    calm.fit()
    crashed = Trainer(spec.lstm, spec.seed, prepared, checkpoints=tmp_path / "crash", hooks=(crash_at(25),))
    with pytest.raises(Crash):
        crashed.fit()
    newest = tmp_path / "crash" / "step-000000020.ckpt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short on disk: step 10 is the last complete one
    resumed = Trainer(spec.lstm, spec.seed, prepared, checkpoints=tmp_path / "crash")
    state = resumed.fit()
    assert [s["from_step"] for s in state.segments] == [0, 10]
    assert_same_weights(weights(resumed.net), weights(calm.net))
    untimed = [
        [{k: v for k, v in h.items() if k != "samples_per_second"} for h in t.state.history]
        for t in (resumed, calm)
    ]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 3


def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best_weights(tiny):
    from mlkube.trainer.lstm.train import Trainer

    spec, prepared = tiny
    lstm = spec.lstm.model_copy(deep=True)
    lstm.train.learning_rate = 0.5  # diverges: validation NSE gets no better after the first epochs
    lstm.train.epochs, lstm.train.early_stopping_patience = 20, 2
    trainer = Trainer(lstm, spec.seed, prepared)
    state = trainer.fit()
    assert state.stopped and len(state.history) == state.best_epoch + 2 < 20
    best = max(h["validation_nse"] for h in state.history)
    assert trainer.validation_nse() == pytest.approx(best)


def test_nse_loss_weights_flat_sites_more():
    from mlkube.trainer.lstm.train import loss_weights

    stats = type("Stats", (), {"target_site_std": np.array([0.5, 1.0, 2.0])})()
    assert np.all(np.diff(loss_weights("nse", stats)) < 0)
    assert np.all(loss_weights("mse", stats) == 1)


# ------------------------------------------------------------------------------------------ launch, checks
def test_torchrun_command_carries_the_contract_flags(tmp_path):
    from mlkube.torchrun import torchrun_command
    from mlkube.trainer.run import Run

    spec = parse_spec("lstm: {elastic: {nproc_per_node: 3, max_restarts: 5}}")
    run = Run.start(spec.to_yaml(), tmp_path, run_id="r-1")
    command = torchrun_command(spec.lstm.elastic, run, 7, 29511)
    # the local rendezvous: torchrun in mlkube's agent module, which serves the store on the socket (fd 7)
    assert command[1:4] == ["-m", "mlkube.commands.torchrun_agent", "7"]
    assert command[4:10] == [
        "--nnodes=1",
        "--nproc-per-node=3",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:29511",
        "--rdzv-id=r-1",
        "--max-restarts=5",
    ]
    assert command[10:] == [
        "-m",
        "mlkube.commands.lstm_worker",
        "--spec",
        str(run.path / "spec.yaml"),
        "--run-dir",
        str(run.path),
    ]
    spec.lstm.elastic.rdzv_endpoint, spec.lstm.elastic.rdzv_backend = "etcd-host:2379", "etcd-v2"
    spec.lstm.elastic.max_nodes = 4
    command = torchrun_command(spec.lstm.elastic, run)
    assert command[1:3] == ["-m", "torch.distributed.run"]  # other nodes' torchrun join the spec's endpoint
    assert command[3:6] == [
        "--nnodes=1:4",
        "--nproc-per-node=3",
        "--rdzv-backend=etcd-v2",
    ]


def test_mlkube_run_parses_the_series_once_for_its_checks_and_its_prepare_stage(tmp_path, monkeypatch):
    from mlkube.pipeline import check_inputs
    from mlkube.trainer.lstm import prepared as module
    from mlkube.trainer.run import Run

    parsed = []
    load_filled = module.load_filled
    monkeypatch.setattr(module, "load_filled", lambda *args: parsed.append(args) or load_filled(*args))
    spec = parse_spec(TINY)
    check_inputs(spec)  # `mlkube run` checks the spec on the series, then its prepare stage saves them
    run = Run.start(spec.to_yaml(), tmp_path, run_id="r-1")
    saved = module.prepare(spec, run.path)
    assert len(parsed) == 1 and run.prepared_lstm.is_file()
    assert saved.seconds > 0 and module.summary(saved)["seconds"] == saved.seconds  # the parse, recorded
    assert module.load_prepared(spec, run.path).data_hash == saved.data_hash
    module.prepare(spec)  # nothing held any more: parsed again
    check_inputs(spec)
    module.prepare(parse_spec(TINY.replace("seed: 3", "seed: 4")))  # another spec's series: its own
    assert len(parsed) == 4


def test_a_batch_smaller_than_the_workers_is_refused_before_torchrun_starts(tiny):
    from mlkube.trainer.lstm.stage import check_training

    spec, prepared = tiny
    lstm = spec.lstm.model_copy(deep=True)
    lstm.train.batch_size, lstm.elastic.nproc_per_node = 3, 4
    with pytest.raises(MlkubeError, match=r"batch_size \(3\) is smaller than the number of workers \(4"):
        check_training(lstm, prepared)


def test_a_lone_worker_trains_on_every_cpu_it_is_given_and_numba_on_one(tmp_path):
    import os

    from mlkube.trainer.run import read_json

    spec = parse_spec(TINY.replace("epochs: 3", "epochs: 1"))
    (tmp_path / "spec.yaml").write_text(spec.to_yaml())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "NUMBA_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "mlkube.commands.lstm_worker", "--spec", str(tmp_path / "spec.yaml")]
        + ["--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    record = read_json(tmp_path / "models" / "lstm" / "training.json")
    assert record["torch_threads"] == len(os.sched_getaffinity(0))  # after the sampler's Numba kernels ran


def test_entry_point_without_an_lstm_section_exits_2_with_the_fix(tmp_path):
    (tmp_path / "spec.yaml").write_text("data: {name: iris}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlkube.commands.lstm_worker",
            "--spec",
            str(tmp_path / "spec.yaml"),
            "--run-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "has no `lstm` section" in proc.stderr and "Traceback" not in proc.stderr


def test_prepared_series_read_back_equal_with_their_statistics(tiny, tmp_path):
    from mlkube.trainer.lstm.prepared import read_prepared, save_prepared
    from mlkube.trainer.run import Run

    _, prepared = tiny
    back = read_prepared(save_prepared(Run(tmp_path).prepared_lstm, prepared))
    assert back.data.data_hash() == prepared.data_hash == back.data_hash
    for field in dataclasses.fields(prepared.stats):
        np.testing.assert_array_equal(getattr(back.stats, field.name), getattr(prepared.stats, field.name))


def architecture(**changes):
    from mlkube.trainer.card import Architecture

    fields = {"n_dynamic": 3, "n_static": 2, "hidden_size": 16, "num_layers": 2, "dropout": 0.3}
    return Architecture(**{**fields, "static_embedding": None, **changes})


@pytest.mark.parametrize("changes", [{}, {"static_embedding": 4}, {"input_layer": False}])
def test_last_day_and_the_last_days_are_the_forward_pass_over_every_day(changes):
    import torch

    from mlkube.trainer.lstm.model import build_model

    torch.manual_seed(0)
    net = build_model(architecture(**changes)).eval()
    x = torch.randn(5, 40, 5)
    with torch.inference_mode():
        torch.testing.assert_close(net.last_day(x), net(x)[:, -1], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(net(x, days=7), net(x)[:, -7:], atol=1e-6, rtol=1e-6)
        assert net.last_day(x).shape == (5,)


def test_the_fast_network_takes_the_same_training_step_as_a_plain_lstm_and_head_over_every_day():
    """No input layer, the forget-gate bias, the head on the scored days only: one Adam step equals that of
    nn.LSTM + nn.Linear run over all days with the loss on the last ones (neuralhydrology's CudaLSTM)."""
    import torch
    from torch import nn

    from mlkube.trainer.lstm.model import build_model

    torch.manual_seed(0)
    net = build_model(architecture(num_layers=1, dropout=0.0, input_layer=False, initial_forget_bias=3.0))
    reference = nn.ModuleDict({"lstm": nn.LSTM(5, 16, batch_first=True), "head": nn.Linear(16, 1)})
    reference.load_state_dict(net.state_dict())  # the same parameters, nothing else
    assert torch.equal(net.lstm.bias_hh_l0[16:32], torch.full((16,), 3.0))
    x, y = torch.randn(8, 40, 5), torch.randn(8, 30)

    def step(parameters, predict) -> None:
        optimizer = torch.optim.Adam(parameters, lr=0.01)
        ((predict() - y) ** 2).mean().backward()
        optimizer.step()

    step(net.parameters(), lambda: net(x, days=30))
    step(reference.parameters(), lambda: reference.head(reference.lstm(x)[0]).squeeze(-1)[:, -30:])
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, atol=1e-6, rtol=1e-6)


def test_the_network_options_round_trip_through_the_model_card(tmp_path):
    import torch

    from mlkube.trainer.lstm.model import build_model, load_lstm_model, save_lstm_model
    from tests.serving_fixtures import lstm_network

    _, fields = lstm_network()
    shape = fields["architecture"].model_copy(
        update={"input_layer": False, "initial_forget_bias": 2.5, "static_embedding": 3}
    )
    net = build_model(shape)
    save_lstm_model(tmp_path, net, {**fields, "architecture": shape})
    loaded, card = load_lstm_model(tmp_path)
    assert card.architecture == shape and loaded.input is None
    x = torch.randn(2, 10, shape.n_dynamic + shape.n_static)
    torch.testing.assert_close(loaded(x), net.eval()(x))


# ---------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
def test_on_cuda_the_network_takes_the_cudnn_path_and_agrees_with_the_cpu():
    import torch

    from mlkube.trainer.lstm.model import build_model

    torch.manual_seed(0)
    net = build_model(architecture(n_dynamic=5, n_static=0, dropout=0.0)).eval()
    x = torch.randn(4, 50, 5)
    with torch.no_grad():
        on_cpu = net(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            on_gpu = net.cuda()(x.cuda())
    assert any("cudnn_rnn" in event.key for event in profile.key_averages())
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-3)


@pytest.mark.gpu
def test_training_on_cuda_with_mixed_precision_lowers_the_loss(tiny):
    from mlkube.trainer.lstm.train import Trainer, Worker

    spec, prepared = tiny
    lstm = spec.lstm.model_copy(deep=True)
    lstm.train.learning_rate, lstm.train.epochs = 0.01, 6
    state = Trainer(lstm, spec.seed, prepared, Worker(device="cuda:0")).fit()
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def cpu_runs_bfloat16() -> bool:
    from mlkube.trainer.lstm.train import cpu_bfloat16

    return cpu_bfloat16()


@pytest.mark.skipif(
    not cpu_runs_bfloat16(), reason="this CPU runs no bfloat16 natively (AVX-512 BF16 or AMX)"
)
def test_cpu_bfloat16_runs_the_lstm_in_bfloat16_and_lowers_the_loss(tiny):
    import torch

    from mlkube.trainer.lstm.train import Trainer

    spec, prepared = tiny
    lstm = spec.lstm.model_copy(deep=True)
    lstm.train.learning_rate, lstm.train.epochs, lstm.train.cpu_precision = 0.01, 6, "bfloat16"
    trainer = Trainer(lstm, spec.seed, prepared)
    assert trainer.amp == torch.bfloat16
    seen = []
    hook = trainer.net.lstm.register_forward_hook(lambda module, args, out: seen.append(out[0].dtype))
    trainer.train_step(0)
    hook.remove()
    assert seen == [torch.bfloat16]
    state = trainer.fit()
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())  # weights stay float32


def test_cpu_bfloat16_falls_back_to_float32_where_the_cpu_lacks_it_and_says_so(tiny, monkeypatch, capsys):
    from mlkube.trainer.lstm import train

    spec, prepared = tiny
    lstm = spec.lstm.model_copy(deep=True)
    assert train.Trainer(lstm, spec.seed, prepared).amp is None  # float32 by default
    lstm.train.cpu_precision = "bfloat16"
    monkeypatch.setattr(train, "cpu_bfloat16", lambda: False)
    trainer = train.Trainer(lstm, spec.seed, prepared)
    assert trainer.amp is None and train.precision(trainer.amp) == "float32"
    assert "runs no bfloat16 natively" in capsys.readouterr().out
