"""The package's house rules, read from the source (AST), not by importing it.

- The package's nodes (each subpackage, each top-level module) import one another without a
  cycle, and no module anywhere does either.
- The top level holds only the package face (``__init__``, ``__main__``), the command line
  (``cli``) and ground-floor helpers, which import no subpackage.
- Each wing imports only what its ``__init__`` docstring allows: the ``distlg.*`` names in its
  "It may import:" sentence, plus "the ground-floor helpers" where it says so.
- No module is longer than 400 lines.
- ``distlg --help`` and the store side load no torch (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "distlg"
MAX_LINES = 400
FACE = {"distlg", "distlg.__main__", "distlg.cli"}
WINGS = ("data", "nn", "kernels", "modeldir", "rendering", "training", "viewer", "commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GROUND = sorted(m for m in MODULES if m.count(".") == 1 and m not in FACE
                and not MODULES[m].name == "__init__.py")
"""Top-level modules other than the face and the CLI: the ground floor."""


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


def node(module: str) -> str:
    """The package-level node of ``module``: its subpackage, or itself at the top level."""
    parts = module.split(".")
    if len(parts) > 1 and (ROOT / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def package_graph() -> dict[str, set[str]]:
    """Subpackages and top-level modules, and which of them each imports (the face left out:
    it imports what it offers lazily, by name)."""
    edges: dict[str, set[str]] = {}
    for name, targets in graph().items():
        if name in FACE:
            continue
        edges.setdefault(node(name), set()).update(node(t) for t in targets if t not in FACE)
    return {n: {t for t in ts if t != n} for n, ts in edges.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for nxt in sorted(edges.get(n, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_module_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_level_cycles():
    cycle = find_cycle(package_graph())
    assert cycle is None, "cycle between wings: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_top_level_is_face_cli_and_ground_floor():
    assert GROUND, "no ground floor found"
    for name in GROUND:
        wings = sorted({node(m) for m in graph()[name]} - set(GROUND))
        assert not wings, f"{name} sits at the top level but imports {wings}: move it into a wing"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_short(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by what it does"


def allowed(wing: str) -> tuple[set[str], str]:
    """What ``wing``'s docstring allows it to import (distlg modules and packages), and the
    docstring's sentence."""
    doc = ast.get_docstring(ast.parse((ROOT / wing / "__init__.py").read_text())) or ""
    match = re.search(r"It may import:(.*?)(?:\n\n|It never|\Z)", doc, re.S)
    assert match, f"distlg.{wing}'s docstring does not say what it may import"
    sentence = " ".join(match.group(1).split())
    names = set(re.findall(r"``(distlg(?:\.\w+)+)``", sentence))
    if "ground-floor helpers" in sentence:
        names |= set(GROUND)
    return names, sentence


@pytest.mark.parametrize("wing", WINGS)
def test_every_wing_imports_only_what_its_docstring_allows(wing):
    names, sentence = allowed(wing)
    own = f"distlg.{wing}"
    for name in (m for m in MODULES if m == own or m.startswith(own + ".")):
        for target in graph()[name]:
            if target == own or target.startswith(own + "."):
                continue
            ok = any(target == a or target.startswith(a + ".") for a in names)
            assert ok, f"{name} imports {target}; distlg.{wing} may import: {sentence}"


def test_the_docstring_reader_refuses_what_is_not_listed(monkeypatch, tmp_path):
    """A wing that lists only distlg.errors and imports distlg.training is caught."""
    fake = tmp_path / "fake.py"
    fake.write_text("from distlg.training import trainer\n")
    monkeypatch.setitem(MODULES, "distlg.nn.fake", fake)
    names, _ = allowed("nn")
    assert not any("distlg.training.trainer".startswith(a) for a in names)
    assert "distlg.training.trainer" in graph()["distlg.nn.fake"]


def _reaches(name: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imports(name) if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("wing", ["distlg.nn", "distlg.data", "distlg.modeldir", "distlg.rendering",
                                  "distlg.viewer"])
def test_only_training_talks_to_the_process_group(wing):
    for name in (m for m in MODULES if m == wing or m.startswith(wing + ".")):
        assert not _reaches(name, ("torch.distributed", "accelerate", "distlg.training")), name


def test_the_import_reader_sees_every_spelling(tmp_path, monkeypatch):
    """``from torch import distributed`` is torch.distributed too (a text search misses it)."""
    monkeypatch.setitem(MODULES, "distlg.nn.fake", tmp_path / "fake.py")
    (tmp_path / "fake.py").write_text("def f():\n    from torch import distributed\n")
    assert _reaches("distlg.nn.fake", ("torch.distributed",)) == ["torch.distributed"]


def _loads_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_help_and_the_store_side_load_no_torch():
    assert not _loads_torch("import distlg.data.store, distlg.data.ingest, distlg.config")
    assert not _loads_torch("import distlg\nprint(distlg.__version__, distlg.__all__)")
    assert not _loads_torch(
        "import contextlib, io\nfrom distlg.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['train', '--help'], ['render', '--help']):\n"
        "        try:\n            main(argv)\n        except SystemExit:\n            pass")
    assert _loads_torch("import distlg\ndistlg.INR")  # the probe can tell
