"""TorchServe vs the same handler called in this process: latency p50/p99 and throughput of the scikit-learn and LSTM
endpoints at concurrency 1 and 8, unbatched (batch_size 1) and with dynamic batching (the spec's batch_size, delay).

    python benchmarks/serving.py [--run RUN] [--requests 400] [--batch-size 8] [--max-batch-delay-ms 5]

Without --run it builds a run like the tests' (iris LDA pipeline; an LSTM of 64 hidden units on 365-day windows, the
spec's defaults). Every request is the model's example request (one instance), sent over a keep-alive connection by
each of 1 or 8 client processes on this machine (the clients share its CPUs with TorchServe).
Goals: TorchServe adds ≤ 3 ms p50 per request (unbatched, concurrency 1), and dynamic batching gives ≥ 3× the
unbatched throughput at concurrency 8.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONCURRENCY = (1, 8)
WARMUP = 20


def summary(latencies_ms: np.ndarray, wall_s: float) -> dict[str, float]:
    return {"p50": float(np.percentile(latencies_ms, 50)), "p99": float(np.percentile(latencies_ms, 99)),
            "rps": len(latencies_ms) / wall_s}


def timed(call, calls: int) -> dict[str, float]:
    """Latency of `call`, called `calls` times in this thread (torch runs an LSTM ~10× slower in other threads)."""
    latencies = []
    start = time.perf_counter()
    for _ in range(calls):
        began = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - began) * 1000)
    return summary(np.array(latencies), time.perf_counter() - start)


def client(job: tuple) -> list[float]:
    """One client process: `count` keep-alive POSTs of `body`; latencies in ms."""
    host, port, path, body, headers, count = job
    connection = http.client.HTTPConnection(host, port, timeout=60)
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        connection.request("POST", path, body, headers)
        answer = connection.getresponse()
        answer.read()
        latencies.append((time.perf_counter() - began) * 1000)
        if answer.status != 200:
            raise RuntimeError(f"{path}: HTTP {answer.status}")
    return latencies


def load(pool, server, model: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    """`concurrency` client processes (one connection each; processes, so that the clients' Python is not the
    bottleneck) sharing `requests` requests."""
    from serving.client import auth_header

    headers = {"Content-Type": "application/json", **auth_header(server.token_file)}
    job = (server.host, server.ports["inference"], f"/predictions/{model}", body, headers, requests // concurrency)
    start = time.perf_counter()
    latencies = np.concatenate(pool.map(client, [job] * concurrency))
    return summary(latencies, time.perf_counter() - start)


def in_process(run_path: Path, model: str, body: bytes, requests: int) -> dict[str, dict]:
    """The handler without TorchServe: one request per call, and eight per call (what batching hands it)."""
    from serving.handlers import InProcess

    handler = InProcess(run_path / "models" / model)
    timed(lambda: handler([body]), WARMUP)
    one = timed(lambda: handler([body]), requests)
    eight = timed(lambda: handler([body] * 8), requests // 8)
    return {"in-process, 1 per call": one, "in-process, 8 per call": {**eight, "rps": eight["rps"] * 8}}


def served(run_path: Path, bodies: dict[str, bytes], requests: int, batch_size: int, delay_ms: int) -> dict:
    """Start TorchServe with `batch_size`, measure every model at each concurrency, stop it."""
    from serving.server import serve_run
    from tests.serving_fixtures import serve_spec
    from trainer.run import Run

    server = serve_run(Run.open(run_path), serve_spec(batch_size=batch_size, max_batch_delay_ms=delay_ms))
    label = "TorchServe, unbatched" if batch_size == 1 else f"TorchServe, batch {batch_size} / {delay_ms} ms"
    try:
        results = {}
        with multiprocessing.Pool(max(CONCURRENCY)) as pool:
            for model, body in bodies.items():
                load(pool, server, model, body, WARMUP * 8, 8)
                for concurrency in CONCURRENCY:
                    results[(model, label, concurrency)] = load(pool, server, model, body, requests, concurrency)
        return results
    finally:
        server.stop()


def example_bodies(run_path: Path) -> dict[str, bytes]:
    from serving.handlers import handler_for
    from trainer.artifacts import read_model_json

    bodies = {}
    for folder in sorted((run_path / "models").glob("*/model.json")):
        meta = read_model_json(folder.parent)
        bodies[meta["name"]] = json.dumps(handler_for(meta["framework"])[1].example(meta)).encode()
    return bodies


def report(results: dict, bodies: dict, batch_label: str) -> None:
    print(f"{'model':10} {'how':32} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for (model, how, concurrency), r in results.items():
        print(f"{model:10} {how:32} {concurrency:7d} {r['p50']:8.2f} {r['p99']:8.2f} {r['rps']:8.0f}")
    print()
    for model in bodies:
        base = results[(model, "in-process, 1 per call", 1)]
        plain = results[(model, "TorchServe, unbatched", 1)]
        overhead = plain["p50"] - base["p50"]
        gain = results[(model, batch_label, 8)]["rps"] / results[(model, "TorchServe, unbatched", 8)]["rps"]
        print(f"{model}: TorchServe p50 {plain['p50']:.2f} ms = in-process {base['p50']:.2f} ms + {overhead:.2f} ms "
              f"({plain['p50'] / base['p50']:.1f}×; goal overhead ≤ 3 ms: {'met' if overhead <= 3 else 'NOT met'}); "
              f"batching at 8 clients: {gain:.2f}× unbatched throughput (goal ≥ 3×: {'met' if gain >= 3 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run folder with models/ (default: a synthetic run)")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement (default 400)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batch-delay-ms", type=int, default=5)
    args = parser.parse_args()
    from serving.server import worker_threads

    # The in-process baseline gets the intra-op threads a TorchServe worker gets (set before torch is imported).
    os.environ.setdefault("OMP_NUM_THREADS", str(worker_threads(2)))
    from tests.serving_fixtures import make_run

    with tempfile.TemporaryDirectory(prefix="mlkube-bench-") as tmp:
        run_path = args.run or make_run(Path(tmp), hidden_size=64, days=365)
        bodies = example_bodies(run_path)
        print(f"{os.cpu_count()} CPUs; models {list(bodies)}; {args.requests} requests per line")
        results = {}
        for model, body in bodies.items():
            results.update({(model, how, 1 if "1 per" in how else 8): r
                            for how, r in in_process(run_path, model, body, args.requests).items()})
        results.update(served(run_path, bodies, args.requests, 1, 0))
        results.update(served(run_path, bodies, args.requests, args.batch_size, args.max_batch_delay_ms))
        report(results, bodies, f"TorchServe, batch {args.batch_size} / {args.max_batch_delay_ms} ms")


if __name__ == "__main__":
    main()
