"""The parts depend on each other in one direction only: the flow language and the engine
know nothing of the web server, the command line or callbacks, and nothing imports upwards."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first: a module may import from its own layer and the layers before it.
LAYERS = [
    ("ivr.config", "ivr.errors", "ivr.phone", "ivr.i18n", "speech"),
    ("ivr.flows",),
    ("ivr.engine",),
    ("ivr.calllog",),
    ("ivr.runtime",),
    ("callbacks",),
    ("ivr.web",),
    ("ivr.cli",),
]
PACKAGES = ("ivr", "callbacks", "speech")


def layer_of(module: str) -> int | None:
    for level, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, those inside functions included."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]  # `from ivr import web`
    return found


def sources(root: Path) -> list[Path]:
    return [p for pkg in PACKAGES if (root / pkg).is_dir() for p in sorted((root / pkg).rglob("*.py"))
            if "migrations" not in p.parts]


def unplaced(root: Path) -> list[str]:
    names = [module_name(p, root) for p in sources(root)]
    return [n for n in names if n != "ivr" and layer_of(n) is None]


def upward_imports(root: Path) -> list[str]:
    wrong = []
    for path in sources(root):
        here = module_name(path, root)
        mine = layer_of(here)
        if mine is None:  # the `ivr` package's create_app() shortcut reaches the web app lazily
            continue
        for line, target in imports(path, root):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{path.relative_to(root)}:{line}: {here} imports {target}")
    return wrong


def test_every_module_belongs_to_a_layer():
    assert unplaced(ROOT) == []


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(ROOT) == []


def test_an_upward_import_is_found(tmp_path):
    engine = tmp_path / "ivr" / "engine"
    engine.mkdir(parents=True)
    (engine / "__init__.py").write_text("")
    (engine / "bad.py").write_text("def f():\n    from ..web import app\n    import callbacks.web\n")
    (tmp_path / "ivr" / "odd.py").write_text("")
    assert upward_imports(tmp_path) == ["ivr/engine/bad.py:2: ivr.engine.bad imports ivr.web",
                                        "ivr/engine/bad.py:2: ivr.engine.bad imports ivr.web.app",
                                        "ivr/engine/bad.py:3: ivr.engine.bad imports callbacks.web"]
    assert unplaced(tmp_path) == ["ivr.odd"]
