"""Progress for long work: one timestamped line per event on stderr, nothing with `quiet`."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream  # None: sys.stderr at print time (keeps Progress picklable for Tune callbacks)
        self.start = time.perf_counter()

    def say(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"[{elapsed:7.1f}s] {message}", file=self.stream or sys.stderr, flush=True)
