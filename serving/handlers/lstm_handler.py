"""TorchServe handler for the hydrology LSTM (`models/lstm/`): weights loaded with
`torch.load(weights_only=True)`. An ensemble's card (`members`) names several networks: each runs the window
and the answer is the mean of their predictions in the target's units (what each member alone would answer).

Request:  {"instances": [{"dynamic": {"<input>": [<sequence_length daily values>], ...},
                          "static": {"<attribute>": <number>, ...}, "site": "<site id>"}, ...]}
          every dynamic input and static attribute of the card's `preprocessing`, by name, in raw units;
          "static" only when the model has static inputs; "site" only when it was trained with per-site
          statistics (one of `preprocessing.sites`: its statistics standardise the window and de-standardise
          the answer). The whole window is the LSTM's warm-up: one prediction per window.
Response: {"model": "lstm", "version": "<run id>", "target": "<name>", "horizon": <days>,
           "predictions": [<target on the window's last day + horizon - 1, raw units>, ...]}

Open Inference Protocol: each dynamic input a tensor [n, sequence_length] (n windows, a number datatype),
each static attribute a tensor [n], and under per-site statistics "site" as BYTES [n]; all named as the
card's `preprocessing` names them. Output: the card's `target`, FP64 [n], `parameters.horizon` its days.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlkube.serving.handlers.base import (
    ModelHandler,
    RequestError,
    TensorSpec,
    check_names,
    check_tensors,
    json_type,
    number,
    numbers,
    worker_cpus,
)
from mlkube.trainer.card import LstmCard, Preprocessing

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# Standard deviations from the training mean beyond which an input is refused: no forcing or attribute is a
# thousand spreads from its mean (precipitation of 3 ± 6.5 mm/day would be 6.5 m a day), and a network that
# saturates would answer such a value with a finite, meaningless number.
MAX_STANDARD_SCORE = 1000.0


class LstmHandler(ModelHandler):
    """Standardise with the saved training statistics, run the window, de-standardise the last day's output
    and undo the card's target transform.

    Statistics are rows: one row under global normalization, one per site under per-site normalization. Then
    each window's last input column carries its site's row number from `rows` to `predict`.

    A batch runs as shards of windows, one thread each, on up to `worker_cpus()` threads. The recurrence
    parallelises across windows, not inside a time step: oneDNN with 2 intra-op threads synchronises them 365
    times per window and served the LSTM a third slower than 1 thread on 2 CPUs, while 2 shards of 4 windows
    take ~1.7 ms against 2.7 ms for 8 windows on one thread. So the model runs single-threaded within each
    shard.
    """

    platform = "pytorch_statedict"

    def load(self, model_dir: Path) -> tuple[Any, LstmCard]:
        import numpy as np
        import torch

        from mlkube.trainer.lstm.ensemble import load_lstm_members

        # one network, or an ensemble's members (each one's weights checked against the signed card)
        self.members, card = load_lstm_members(model_dir)
        p = card.preprocessing
        # site id → statistics row, under per-site normalization (the card names the sites there)
        self.sites: dict[str, int] | None = (
            {site: row for row, site in enumerate(_sites(p))} if p.normalization == "per_site" else None
        )
        self.days, self.dynamic, self.static = (
            p.sequence_length,
            list(p.dynamic_inputs),
            list(p.static_inputs),
        )
        self.keys = ["dynamic"] + (["static"] if self.static else []) + (["site"] if self.sites else [])
        self.n_inputs = len(self.dynamic) + len(self.static)
        # a window's columns: the inputs, then the site's row if per-site
        self.width = self.n_inputs + bool(self.sites)
        rows = 1 if self.sites is None else len(self.sites)
        static = [np.tile(np.asarray(v, dtype=float), (rows, 1)) for v in (p.static_mean, p.static_std)]
        self.mean = np.hstack([np.asarray(p.dynamic_mean, dtype=float).reshape(rows, -1), static[0]])
        self.std = np.hstack([np.asarray(p.dynamic_std, dtype=float).reshape(rows, -1), static[1]])
        self.target_mean = np.asarray(p.target_mean, dtype=float).reshape(rows)
        self.target_std = np.asarray(p.target_std, dtype=float).reshape(rows)
        self.transform = p.target_transform
        self.fields = {"target": card.target, "horizon": p.horizon}
        window = f"n windows of sequence_length = {self.days} daily values"
        self.tensors = (
            [TensorSpec(name, "FP64", (-1, self.days), window) for name in self.dynamic]
            + [TensorSpec(name, "FP64", (-1,), "one value per window") for name in self.static]
            + ([TensorSpec("site", "BYTES", (-1,), "one site id per window")] if self.sites else [])
        )
        self.output = TensorSpec(card.target, "FP64", (-1,))
        self.shards = worker_cpus()
        # the threads of every shard but the first (which runs in the worker's own thread)
        self.pool: ThreadPoolExecutor | None = None
        if self.shards > 1:
            from concurrent.futures import ThreadPoolExecutor

            torch.set_num_threads(1)
            self.pool = ThreadPoolExecutor(self.shards - 1, thread_name_prefix="mlkube-lstm-shard")
        with torch.inference_mode():  # a first pass, so that the first request does not pay for lazy set-up
            for member in self.members:
                member(torch.zeros(1, self.days, self.n_inputs))
        return self.members, card

    def site_row(self, site: Any, where: str) -> int:
        """The statistics row of a request's site id, or RequestError naming the known sites."""
        if not isinstance(site, str):
            raise RequestError(
                f"{where}: expected a site id (a string), got {json_type(site)} {json.dumps(site)[:40]}"
            )
        if self.sites is None:
            raise ValueError("site_row needs per-site statistics (the model has none)")
        if site not in self.sites:
            known = list(self.sites)
            raise RequestError(
                f"{where}: unknown site {site!r}; the model was trained on {len(known)} site(s): "
                f"{', '.join(known[:5])}{', ...' if len(known) > 5 else ''}"
            )
        return self.sites[site]

    def fast_rows(self, raw: Any) -> Any:
        """simdjson parses the body in C++ and hands each window over as a buffer of doubles: ~40 µs less per
        365-day window than typed msgspec decoding, ~6× faster than json.loads plus the checks in `rows`.
        Anything unusual (a missing, repeated or unknown name, a value that is not a number, a nested array, a
        "[" inside a string) goes to `rows`, which names the problem."""
        import numpy as np
        import simdjson

        try:
            # A new parser each time (it costs nothing): a parser cannot parse again while its last document
            # lives.
            # Any: simdjson's values are dynamically typed (an Object, an Array or a scalar, as the body is)
            body: Any = simdjson.Parser().parse(raw)
            instances = body["instances"]
            n = len(instances)
            # as_buffer flattens nested arrays: a valid body has exactly one "[" per window and one for
            # `instances`.
            if len(body) != 1 or not n or raw.count(b"[") != 1 + n * len(self.dynamic):
                return None
            windows = np.empty((n, self.days, self.width))
            for i, instance in enumerate(instances):
                dynamic = instance["dynamic"]
                if len(instance) != len(self.keys) or len(dynamic) != len(
                    self.dynamic
                ):  # (repeated names count)
                    return None
                for j, name in enumerate(self.dynamic):
                    series = np.frombuffer(dynamic[name].as_buffer(of_type="d"))
                    if len(series) != self.days:
                        return None
                    windows[i, :, j] = series
                if self.static:
                    static = instance["static"]
                    values = [static[name] for name in self.static]
                    if len(static) != len(self.static) or not all(type(v) in (int, float) for v in values):
                        return None
                    windows[i, :, len(self.dynamic) : self.n_inputs] = values
                if self.sites:
                    windows[i, :, -1] = self.sites[instance["site"]]
        except (
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
        ):  # not JSON, not an object, a name missing, ...
            return None
        return windows if np.isfinite(windows).all() and self.out_of_range(windows) is None else None

    def out_of_range(self, windows: Any) -> tuple[int, int, int] | None:
        """(window, day, input) of the first value more than MAX_STANDARD_SCORE standard deviations from its
        training mean, or None."""
        import numpy as np

        row = windows[:, 0, -1].astype(int) if self.sites else np.zeros(len(windows), dtype=int)
        with np.errstate(over="ignore", invalid="ignore"):
            scores = np.abs(windows[..., : self.n_inputs] - self.mean[row][:, None]) / self.std[row][:, None]
        beyond = np.argwhere(~(scores <= MAX_STANDARD_SCORE))
        return None if not len(beyond) else cast(tuple[int, int, int], tuple(int(v) for v in beyond[0]))

    def check_range(self, windows: Any, where: Any) -> Any:
        """`windows`, or RequestError naming the first value beyond MAX_STANDARD_SCORE spreads of its mean;
        `where(i, name)` says where instance i's input `name` is in the request."""
        found = self.out_of_range(windows)
        if found is None:
            return windows
        i, day, j = found
        row = int(windows[i, 0, -1]) if self.sites else 0
        name = (self.dynamic + self.static)[j]
        at = f"{where(i, name)}[{day}]" if j < len(self.dynamic) else where(i, name)
        mean, std = self.mean[row, j], self.std[row, j]
        raise RequestError(
            f"{at}: {windows[i, day, j]:g} is outside what the model can take: more than "
            f"{MAX_STANDARD_SCORE:g} standard deviations from the training data's mean "
            f"({mean:.4g} ± {std:.4g})"
        )

    def rows(self, instances: list[Any]) -> Any:
        import numpy as np

        windows = np.empty((len(instances), self.days, self.width))
        for i, instance in enumerate(instances):
            where = f"instance {i}"
            check_names(instance, self.keys, where)
            check_names(instance["dynamic"], self.dynamic, f"{where}.dynamic")
            for j, name in enumerate(self.dynamic):
                windows[i, :, j] = self.window(instance["dynamic"][name], f"{where}.dynamic.{name}")
            if self.static:
                check_names(instance["static"], self.static, f"{where}.static")
                windows[i, :, len(self.dynamic) : self.n_inputs] = [
                    number(instance["static"][n], f"{where}.static.{n}") for n in self.static
                ]
            if self.sites:
                windows[i, :, -1] = self.site_row(instance["site"], f"{where}.site")
        kind = set(self.dynamic)
        return self.check_range(
            windows, lambda i, name: f"instance {i}.{'dynamic' if name in kind else 'static'}.{name}"
        )

    def oip_inputs(self) -> list[TensorSpec]:
        return self.tensors

    def oip_outputs(self) -> list[TensorSpec]:
        return [self.output]

    def oip_rows(self, inputs: dict[str, dict[str, Any]]) -> Any:
        import numpy as np

        takes = ", ".join(spec.describe() for spec in self.tensors)
        values, n = check_tensors(inputs, self.tensors, f"{takes} (n: the windows)")
        windows = np.empty((n, self.days, self.width))
        for j, name in enumerate(self.dynamic):
            windows[:, :, j] = values[name]
        for k, name in enumerate(self.static):
            windows[:, :, len(self.dynamic) + k] = values[name][:, None]
        if self.sites:
            rows = [self.site_row(site, f"input 'site'[{i}]") for i, site in enumerate(values["site"])]
            windows[:, :, -1] = np.array(rows, dtype=float)[:, None]
        return self.check_range(windows, lambda i, name: f"input {name!r}[{i}]")

    def oip_answer(self, outputs: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.output.name,
                "datatype": "FP64",
                "shape": [len(outputs)],
                "data": outputs.tolist(),
                "parameters": {"horizon": self.fields["horizon"]},
            }
        ]

    def window(self, series: Any, where: str) -> Any:
        if not isinstance(series, list) or len(series) != self.days:
            got = f"{len(series)} values" if isinstance(series, list) else json_type(series)
            raise RequestError(
                f"{where}: the window must be a list of sequence_length = {self.days} daily values, got {got}"
            )
        return numbers(series, where)

    def predict(self, batch: Any) -> Any:
        import numpy as np
        import torch

        row = batch[:, 0, -1].astype(int) if self.sites else np.zeros(len(batch), dtype=int)
        inputs = batch[..., : self.n_inputs]
        x = torch.from_numpy((inputs - self.mean[row][:, None]) / self.std[row][:, None]).float()
        first, *others = torch.tensor_split(x, min(self.shards, len(x)))
        running: list[Future[Any]] = []
        if others:
            assert self.pool is not None  # more than one shard: self.shards > 1, so `load` made the pool
            running = [self.pool.submit(self.last_day, shard) for shard in others]
        # [members, windows]; the ensemble's answer is its members' mean in the target's units
        last_day = torch.cat([self.last_day(first), *(s.result() for s in running)], dim=1).double().numpy()
        y = last_day * self.target_std[row] + self.target_mean[row]
        return self.transform.inverse(y).mean(axis=0)

    def last_day(self, x: Any) -> Any:
        """Each member's standardised output on the windows' last day: [members, windows]."""
        import torch

        with torch.inference_mode():  # per thread
            return torch.stack([member.last_day(x) for member in self.members])

    def answer(self, outputs: Any) -> dict[str, Any]:
        return {**self.fields, "predictions": outputs.tolist()}

    @staticmethod
    def example(card: LstmCard) -> dict[str, Any]:
        """One window at the training means (of the first site, under per-site statistics)."""
        p = card.preprocessing
        per_site = p.normalization == "per_site"
        # the card checked the shapes: one row of means per site under per_site, else one row
        means = cast("list[float]", p.dynamic_mean[0] if per_site else p.dynamic_mean)
        days = p.sequence_length
        instance: dict[str, Any] = {
            "dynamic": {n: [m] * days for n, m in zip(p.dynamic_inputs, means, strict=True)}
        }
        if p.static_inputs:
            instance["static"] = dict(zip(p.static_inputs, p.static_mean, strict=True))
        if per_site:
            instance["site"] = _sites(p)[0]
        return {"instances": [instance]}


def _sites(p: Preprocessing) -> list[str]:
    """The site ids of per-site statistics (the card refuses per_site without them)."""
    if p.sites is None:
        raise ValueError("normalization per_site needs `sites`, the site ids of the statistics' rows")
    return p.sites
