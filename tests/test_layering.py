"""The package's folders are its architecture: imports flow one way, and no private name crosses a module.

Reads every module's imports (top level and inside functions) with `ast`, so a late import cannot hide a
layering break. The order is README.md "Layout": a module may import its own folder and the folders above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bot"
LAYERS = ["core", "ingest", "search", "answer", "store", "evaluation", "surfaces"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every `import bot...` / `from bot... import ...`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "bot":
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "bot":
                    found.append((node.lineno, alias.name, []))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _all_sources() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    paths += [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    return paths


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layer folders: {loose}"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert folders <= set(LAYERS) | {"static"}, folders - set(LAYERS)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_down_the_layers(path: Path):
    here = _layer(_module_name(path))
    if here is None:
        return
    bad = []
    for line, module, _ in _imports(path):
        there = _layer(module)
        if there is not None and LAYERS.index(there) > LAYERS.index(here):
            bad.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {module} ({there})")
    assert not bad, "a lower layer imports a higher one:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _all_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_a_module(path: Path):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name} from {module}"
           for line, module, names in _imports(path) for name in names
           if name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path: Path):
    """The reader above must catch an upward import, or every layering test passes vacuously."""
    fake = tmp_path / "bot" / "core" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from bot.surfaces.api import create_app\n    from bot.core.text import _private\n")
    found = _imports(fake)
    assert [(m, n) for _, m, n in found] == [("bot.surfaces.api", ["create_app"]), ("bot.core.text", ["_private"])]
    assert LAYERS.index(_layer("bot.surfaces.api")) > LAYERS.index(_layer("bot.core.x"))
