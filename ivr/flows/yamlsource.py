"""YAML loading that remembers where every key and value came from.

Flows are validated as plain Python data, but every error must point at the line an operator
wrote. The loader keeps a map from each value's path (a tuple of keys and indexes) to its
position, so any later stage can turn a path back into a line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from ivr.errors import FlowError, Problem

Path = tuple[str | int, ...]


@dataclass
class Source:
    """A parsed YAML document with positions (1-based line, column) for its paths."""

    file: str
    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path, key: bool = False) -> tuple[int | None, int | None]:
        """The position of the value at `path` (or of its key), or of its nearest parent."""
        path = tuple(path)
        while True:
            table = self.keys if key else self.values
            if path in table:
                return table[path]
            if key and path in self.values:
                return self.values[path]
            if not path:
                return (1, 1)
            path = path[:-1]
            key = False

    def problem(
        self, path: Path, message: str, *, key: bool = False, severity: str = "error", code: str = ""
    ) -> Problem:
        line, column = self.where(path, key=key)
        return Problem(self.file, line, column, message, severity, code)


def _plain(node: Any, path: Path, src: Source) -> Any:
    # Convert ruamel's round-trip types to plain ones while recording positions.
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for k, v in node.items():
            key = str(k) if not isinstance(k, str) else k
            sub = path + (key,)
            kl, kc = node.lc.key(k)
            src.keys[sub] = (kl + 1, kc + 1)
            vl, vc = node.lc.value(k)
            src.values[sub] = (vl + 1, vc + 1)
            out[key] = _plain(v, sub, src)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, v in enumerate(node):
            sub = path + (i,)
            il, ic = node.lc.item(i)
            src.values[sub] = (il + 1, ic + 1)
            items.append(_plain(v, sub, src))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node  # dates and timestamps stay as datetime objects


def parse(text: str, file: str) -> Source:
    """Parse YAML text; raise FlowError naming file, line and column on a syntax error."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        text_exc = str(exc)
        if "duplicate key" in text_exc:
            key = text_exc.split('duplicate key "', 1)[1].split('"', 1)[0]
            what = f"duplicate key '{key}'"
            first = _first_line_of(text, key, mark.line if mark else None)
            if first:
                what += f" (first defined on line {first})"
        elif exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            what += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        if "'\\t'" in what or "\t" in what:
            what += "; indent with spaces, not tabs"
        raise FlowError([Problem(file, line, col, f"YAML syntax: {what}", code="yaml")]) from None
    except Exception as exc:  # noqa: BLE001 - however the parser fails, the file cannot be read
        # (ReaderError for a control character, ValueError for an impossible date...)
        raise FlowError([Problem(file, None, None, f"YAML syntax: {exc}", code="yaml")]) from None
    src = Source(file=file, data=None)
    src.data = _plain(raw, (), src)
    return src


def _first_line_of(text: str, key: str, dup_line: int | None) -> int | None:
    """The line (1-based) where a duplicated key first appears, at the same indentation."""
    lines = text.splitlines()
    if dup_line is None or dup_line >= len(lines):
        return None
    indent = len(lines[dup_line]) - len(lines[dup_line].lstrip())
    for i, raw in enumerate(lines[:dup_line]):
        stripped = raw.lstrip()
        if len(raw) - len(stripped) == indent and stripped.split(":", 1)[0].strip("'\" ") == key:
            return i + 1
    return None
