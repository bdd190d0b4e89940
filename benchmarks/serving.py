"""TorchServe vs the same handler called in this process: latency p50/p99 and throughput of the scikit-learn
and LSTM endpoints at concurrency 1 and 8, unbatched (batch_size 1) and with dynamic batching (the spec's
batch_size, delay).

    python benchmarks/serving.py [--run RUN] [--requests 3000] [--rounds 6] [--batch-size 8]
        [--max-batch-delay-ms 5]

Without --run it builds a run like the tests' (iris LDA pipeline; an LSTM of 64 hidden units on 365-day
windows, the spec's defaults). A classical request is the model's example (one row); an LSTM request is one
365-day window of forcings drawn around the training statistics (3 decimals, as a client would send them). The
load generator is one process with 1 or 8 keep-alive connections, each sending its next request as soon as its
answer is complete (a closed loop, like wrk); it shares this machine's CPUs with TorchServe, so it is kept
lean: a multi-process http.client load took a fifth of the CPUs and ran the batched LSTM ~30 % slower.
The unbatched and the batched TorchServe run side by side (one idles while the other is measured) and each
line is measured in alternating rounds, because this VM's speed drifts by ±20 % over minutes: one server after
the other measured the drift as much as the batching. Throughput is the median round; batching's gain is the
median of the rounds' batched/unbatched ratios. Each server first gets 2000 warm-up requests per model (the
JVM compiles its hot paths). `batch` is the mean number of requests per handler call (from the handler's own
metrics). Goals: TorchServe adds ≤ 3 ms p50 per request (unbatched, concurrency 1), and dynamic batching gives
≥ 3× the unbatched throughput at concurrency 8.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONCURRENCY = (1, 8)
WARMUP = 20  # in-process calls
SERVER_WARMUP = 2000  # requests per model and server, at concurrency 8


def summary(latencies_ms: np.ndarray, wall_s: float) -> dict[str, float]:
    return {
        "p50": float(np.percentile(latencies_ms, 50)),
        "p99": float(np.percentile(latencies_ms, 99)),
        "rps": len(latencies_ms) / wall_s,
    }


def timed(call, calls: int) -> dict[str, float]:
    """Latency of `call`, called `calls` times in this thread (torch runs an LSTM ~10× slower in other
    threads)."""
    latencies = []
    start = time.perf_counter()
    for _ in range(calls):
        began = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - began) * 1000)
    return summary(np.array(latencies), time.perf_counter() - start)


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a prepared request and reads answers as bytes arrive."""

    def __init__(self, host: str, port: int, message: bytes):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.message = message
        self.buffer = bytearray()
        self.sent_at = 0.0

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.sock.setblocking(True)
        self.sock.sendall(self.message)
        self.sock.setblocking(False)

    def answer(self) -> float | None:
        """Read what arrived; the latency in ms once a whole answer is in, else None."""
        data = self.sock.recv(1 << 16)
        if not data:
            raise RuntimeError("the server closed the connection")
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        header = bytes(self.buffer[:end]).lower()
        length = int(header.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        if len(self.buffer) < end + 4 + length:
            return None
        if header[9:12] != b"200":
            raise RuntimeError(
                f"HTTP {header[9:12].decode()}: {bytes(self.buffer[end + 4 : end + 4 + length])[:300]!r}"
            )
        del self.buffer[: end + 4 + length]
        return (time.perf_counter() - self.sent_at) * 1000


def load(server, model: str, body: bytes, requests: int, concurrency: int) -> tuple[list[float], float]:
    """`requests` POSTs over `concurrency` connections, each sending again as soon as its answer is complete:
    (latencies in ms, wall seconds)."""
    from mlkube.serving.client import auth_header

    headers = {
        "Host": f"{server.host}:{server.ports['inference']}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **auth_header(server.token_file),
    }
    message = (
        f"POST /predictions/{model} HTTP/1.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode() + body
    connections = [Connection(server.host, server.ports["inference"], message) for _ in range(concurrency)]
    latencies: list[float] = []
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        start = time.perf_counter()
        pending = min(requests, concurrency)
        for connection in connections[:pending]:
            connection.send()
        while pending:
            events = selector.select(timeout=60)
            if not events:
                raise RuntimeError(f"/predictions/{model}: no answer within 60 s")
            for key, _ in events:
                latency = key.data.answer()
                if latency is None:
                    continue
                latencies.append(latency)
                pending -= 1
                if len(latencies) + pending < requests:
                    key.data.send()
                    pending += 1
        wall = time.perf_counter() - start
    for connection in connections:
        connection.sock.close()
    return latencies, wall


def in_process(run_path: Path, model: str, body: bytes, requests: int) -> dict[str, dict]:
    """The handler without TorchServe: one request per call, and eight per call (what batching hands it)."""
    from mlkube.serving.handlers import InProcess

    handler = InProcess(run_path / "models" / model)
    timed(lambda: handler([body]), WARMUP)
    one = timed(lambda: handler([body]), requests)
    eight = timed(lambda: handler([body] * 8), requests // 8)
    return {"in-process, 1 per call": one, "in-process, 8 per call": {**eight, "rps": eight["rps"] * 8}}


def served(
    run_path: Path,
    bodies: dict[str, bytes],
    requests: int,
    batch_size: int,
    delay_ms: int,
    rounds: int,
    scratch: Path,
) -> tuple[dict, dict]:
    """Two TorchServes at once, unbatched and with `batch_size`, each on its own copy of the run; every model
    and concurrency is measured in `rounds` alternating rounds (unbatched, batched, then batched, unbatched,
    ...), so that this machine's speed, which drifts by ±20 % over minutes, weighs on both alike.
    Returns the results (pooled latencies, median round throughput) and, per model, each round's batching
    gain."""
    from mlkube.serving.server import serve_run
    from mlkube.trainer.run import Run
    from tests.serving_fixtures import serve_spec

    labels = {
        "TorchServe, unbatched": (1, 0),
        f"TorchServe, batch {batch_size} / {delay_ms} ms": (batch_size, delay_ms),
    }
    servers = {}
    try:
        for i, (label, (size, delay)) in enumerate(labels.items()):
            path = run_path if i == 0 else twin_run(run_path, scratch)
            servers[label] = serve_run(Run.open(path), serve_spec(batch_size=size, max_batch_delay_ms=delay))
        for server in servers.values():
            for model, body in bodies.items():
                load(server, model, body, SERVER_WARMUP, 8)
        results, gains = {}, {}
        for model, body in bodies.items():
            for concurrency in CONCURRENCY:
                measured = alternating(servers, model, body, requests, concurrency, rounds)
                results.update({(model, label, concurrency): m for label, m in measured.items()})
                if concurrency == 8:
                    plain, batched = (m["rounds"] for m in measured.values())
                    gains[model] = [b / p for p, b in zip(plain, batched, strict=False)]
        return results, gains
    finally:
        for server in servers.values():
            server.stop()


def alternating(servers: dict, model: str, body: bytes, requests: int, concurrency: int, rounds: int) -> dict:
    """Each server's `requests` in `rounds` rounds, the servers taking turns (A B, B A, ...): per server,
    p50/p99 of all latencies, the median round's throughput, each round's throughput and the mean requests per
    handler call."""
    before = {label: handler_counts(server, model) for label, server in servers.items()}
    latencies = {label: [] for label in servers}
    rounds_rps = {label: [] for label in servers}
    for r in range(rounds):
        for label in list(servers) if r % 2 == 0 else list(servers)[::-1]:
            lat, wall = load(servers[label], model, body, max(requests // rounds, concurrency), concurrency)
            rounds_rps[label].append(len(lat) / wall)
            latencies[label] += lat
    time.sleep(0.2)  # the worker's metrics reach the frontend just after its answers
    measured = {}
    for label, server in servers.items():
        answered, calls = (a - b for a, b in zip(handler_counts(server, model), before[label], strict=False))
        pooled = np.array(latencies[label])
        measured[label] = {
            "p50": float(np.percentile(pooled, 50)),
            "p99": float(np.percentile(pooled, 99)),
            "rps": float(np.median(rounds_rps[label])),
            "rounds": rounds_rps[label],
            "batch": answered / max(calls, 1),
        }
    return measured


def twin_run(run_path: Path, scratch: Path) -> Path:
    """A copy of the run's spec, records and models (not its serving folder) under `scratch`: TorchServe
    serves one run folder once."""
    import shutil

    twin = scratch / "twin" / run_path.name
    twin.mkdir(parents=True)
    for item in run_path.iterdir():
        if item.is_file():
            shutil.copy2(item, twin / item.name)
    shutil.copytree(run_path / "models", twin / "models")
    return twin


def handler_counts(server, model: str) -> tuple[float, float]:
    """(requests answered, handler calls) so far, from the server's Prometheus metrics."""
    from tests.serving_fixtures import scrape

    values = scrape(server)
    return values.get(("mlkube_predictions_total", model), 0.0), values.get(
        ("mlkube_handler_latency_ms_count", model), 0.0
    )


def request_bodies(run_path: Path, seed: int = 0) -> dict[str, bytes]:
    """One request per model: the handler's example; for an LSTM, with forcings drawn around the training
    statistics (the example repeats the means, which makes a short body that parses unrealistically fast)."""
    from mlkube.serving.handlers import handler_for
    from mlkube.trainer.artifacts import read_model_card

    rng = np.random.default_rng(seed)
    bodies = {}
    for folder in sorted((run_path / "models").glob("*/model.json")):
        card = read_model_card(folder.parent)
        request = handler_for(card.framework)[1].example(card)
        if card.framework == "torch":
            p = card.preprocessing
            # the first site's
            means, stds = (np.atleast_2d(v)[0] for v in (p.dynamic_mean, p.dynamic_std))
            for instance in request["instances"]:
                instance["dynamic"] = {
                    name: rng.normal(mean, std, p.sequence_length).round(3).tolist()
                    for name, mean, std in zip(p.dynamic_inputs, means, stds, strict=False)
                }
        bodies[card.name] = json.dumps(request).encode()
    return bodies


def report(results: dict, gains: dict, bodies: dict) -> None:
    print(f"{'model':10} {'how':32} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'batch':>6}")
    for (model, how, concurrency), r in results.items():
        batch = f"{r['batch']:6.1f}" if "batch" in r else f"{8 if '8 per' in how else 1:6d}"
        print(f"{model:10} {how:32} {concurrency:7d} {r['p50']:8.2f} {r['p99']:8.2f} {r['rps']:8.0f} {batch}")
    print()
    for model in bodies:
        base = results[(model, "in-process, 1 per call", 1)]
        plain = results[(model, "TorchServe, unbatched", 1)]
        overhead = plain["p50"] - base["p50"]
        gain = float(np.median(gains[model]))
        print(
            f"{model}: TorchServe p50 {plain['p50']:.2f} ms = in-process {base['p50']:.2f} ms "
            f"+ {overhead:.2f} ms ({plain['p50'] / base['p50']:.1f}×; "
            f"goal overhead ≤ 3 ms: {'met' if overhead <= 3 else 'NOT met'}); "
            f"batching at 8 clients: {gain:.2f}× unbatched throughput, median of {len(gains[model])} rounds "
            f"({min(gains[model]):.2f}–{max(gains[model]):.2f}×; "
            f"goal ≥ 3×: {'met' if gain >= 3 else 'NOT met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a run folder with models/ (default: a synthetic run)")
    parser.add_argument("--requests", type=int, default=800, help="requests per measurement (default 800)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay-ms", type=int, default=5)
    parser.add_argument(
        "--rounds", type=int, default=6, help="alternating rounds per measurement (default 6)"
    )
    args = parser.parse_args()
    from mlkube.serving.handlers.base import WORKER_CPUS_ENV
    from mlkube.serving.server import worker_threads

    # The in-process baseline gets the threads a TorchServe worker gets (set before torch is imported): 2
    # models, 1 worker each.
    os.environ.setdefault("OMP_NUM_THREADS", str(worker_threads(2)))
    os.environ.setdefault(WORKER_CPUS_ENV, str(worker_threads(1)))
    from tests.serving_fixtures import make_run

    with tempfile.TemporaryDirectory(prefix="mlkube-bench-") as tmp:
        run_path = args.run or make_run(Path(tmp), hidden_size=64, days=365)
        bodies = request_bodies(run_path)
        print(f"{os.cpu_count()} CPUs; models {list(bodies)}; {args.requests} requests per line")
        results = {}
        for model, body in bodies.items():
            results.update(
                {
                    (model, how, 1 if "1 per" in how else 8): r
                    for how, r in in_process(run_path, model, body, args.requests).items()
                }
            )
        served_results, gains = served(
            run_path, bodies, args.requests, args.batch_size, args.max_batch_delay_ms, args.rounds, Path(tmp)
        )
        results.update(served_results)
        report(results, gains, bodies)


if __name__ == "__main__":
    main()
