"""The project's errors: one base, `IvrError`, and the problems found in operators' files,
each pointing at a file, a line and a column.

Every exception this project raises on purpose derives from `IvrError` (speech/errors.py
too, though speech sits below the flow language): a flow that cannot load, a callback that
is no longer pending, a lock held by another request. Handlers catch those by their class
and say what happened in a sentence. Anything else reaching a catch-all is a bug or an
outage nobody planned for, and is logged with its traceback; with
IVR_PROPAGATE_EXCEPTIONS (what the test suite runs with) a bug is raised instead of being
answered politely, as Flask's PROPAGATE_EXCEPTIONS does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class IvrError(Exception):
    """The base of every error this project raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One error or warning about a file, in the form editors and CI logs understand."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    message: str
    severity: str = "error"  # "error" or "warning"
    code: str = ""  # short machine-readable kind, e.g. "unknown-key", "unreachable"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.severity}: {self.message}"

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


class FlowError(IvrError):
    """Raised when a file cannot be used; carries every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = [p for p in problems]
        super().__init__("\n".join(str(p) for p in self.problems if p.severity == "error"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


class FlowRuntimeError(IvrError):
    """A flow did something impossible at run time (a runaway loop, a missing flow)."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for a likely misspelling, or an empty string."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
