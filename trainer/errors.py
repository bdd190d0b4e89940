"""The one exception type for user mistakes: it carries the fix, and the CLI prints it without a traceback."""

from __future__ import annotations


class MlkubeError(Exception):
    """A problem the user can fix (bad spec, missing file, wrong value). The CLI prints it and exits 2."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class SpecError(MlkubeError):
    """One or more problems in an experiment spec, one readable line each."""

    def __init__(self, problems: list[str], source: str | None = None, fix: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} problem{'s' if len(problems) != 1 else ''}{where}:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines), fix)
