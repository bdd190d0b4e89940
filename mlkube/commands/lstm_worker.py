"""The torchrun entry point of the LSTM:
`torchrun ... -m mlkube.commands.lstm_worker --spec SPEC --run-dir RUN_DIR`.

Each worker process trains its share (mlkube.trainer.lstm.elastic.train); without torchrun's variables it
trains alone in this process. A user error ends the worker with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    summary = " ".join(__doc__.split("\n\n")[0].split())  # the docstring's first paragraph, one line
    parser = argparse.ArgumentParser(prog="python -m mlkube.commands.lstm_worker", description=summary)
    parser.add_argument("--spec", required=True, type=Path, help="the run's resolved spec (spec.yaml)")
    parser.add_argument("--run-dir", required=True, type=Path, help="the run directory (checkpoints, models)")
    args = parser.parse_args(argv)
    # A worker's only Numba work is gathering a batch; a Numba thread pool beside torch's spins against it and
    # slowed training 20-fold here (2 cores, 1 or 2 workers). Numba's OpenMP layer would also set the OpenMP
    # runtime it shares with torch to its one thread; the workqueue layer leaves torch's threads alone (the
    # worker sets them to its share of the CPUs). Set before Numba is first imported.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    from mlkube.trainer.errors import MlkubeError
    from mlkube.trainer.lstm.elastic import train

    try:
        train(args.spec, args.run_dir)
    except MlkubeError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
