"""The package's house rules, read from the source (AST), not by importing it: no import
cycles, no long modules, and each room imports only what its ``__init__`` docstring allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import distlg

ROOT = Path(distlg.__file__).resolve().parent
MAX_LINES = 400
ROOMS = ("data", "nn", "modeldir", "rendering")
TRAINING = ("distlg.train", "distlg.optim", "distlg.plan", "distlg.parallel", "torch.distributed",
            "accelerate")
"""What a render must never need: training, its optimiser and distribution."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in it (also inside functions), resolved to
    absolute names; ``from a import b`` counts as ``a.b`` where that is a module, else ``a``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES or not base.startswith("distlg") else base)
    return found


def graph() -> dict[str, set[str]]:
    """distlg's modules and the distlg modules each imports."""
    return {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_short(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by what it does"


def _reaches(name: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports(name) if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("room", ["distlg.nn", "distlg.data"])
def test_model_and_data_never_import_distribution(room):
    for name in (m for m in MODULES if m == room or m.startswith(room + ".")):
        assert not _reaches(name, ("torch.distributed", "accelerate", "distlg.parallel")), name


def test_rendering_never_imports_training():
    for name in (m for m in MODULES if m.startswith("distlg.rendering")):
        assert not _reaches(name, TRAINING), name


def test_store_side_never_imports_torch():
    """Stores, ingest and source readers run where torch may not be installed."""
    store_side = ["distlg.data.signal", "distlg.data.store", "distlg.data.remote", "distlg.data.ingest"]
    store_side += [m for m in MODULES if m.startswith("distlg.data.sources")]
    for name in store_side:
        assert not _reaches(name, ("torch",)), name


def test_the_import_reader_sees_every_spelling(tmp_path, monkeypatch):
    """``from torch import distributed`` is torch.distributed too (a text search misses it)."""
    monkeypatch.setitem(MODULES, "distlg.nn.fake", tmp_path / "fake.py")
    (tmp_path / "fake.py").write_text("def f():\n    from torch import distributed\n")
    assert _reaches("distlg.nn.fake", ("torch.distributed",)) == ["torch.distributed"]


@pytest.mark.parametrize("room", ROOMS)
def test_every_room_says_what_it_is_for_and_may_import(room):
    doc = ast.get_docstring(ast.parse((ROOT / room / "__init__.py").read_text())) or ""
    assert len(doc.split()) > 20 and "may import" in doc, room
