"""What a new user checks first: the license the package declares is there, `--version`
answers, the Python it asks for reads its TOML configs, and `-m slow` selects real tests."""

import re
import tomllib
from pathlib import Path

from distlg import __version__
from distlg.cli import main
from distlg.flags import load

REPO = Path(__file__).resolve().parents[2]


def test_the_declared_license_ships_with_the_code():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"distlg {__version__}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__


def test_the_python_asked_for_reads_toml_configs(tmp_path):
    """TOML configs need tomllib (3.11); the package used to accept 3.10, where a .toml config
    failed as "cannot parse"."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"].split("#")[0].strip())
    assert int(re.findall(r"3\.(\d+)", project["requires-python"])[0]) >= 11
    (tmp_path / "run.toml").write_text('[train]\nsteps = 7\n[run]\nout = "x"\n')
    assert load(tmp_path / "run.toml").train.steps == 7


def test_slow_marks_real_tests():
    """The README says `-m slow` runs the long tests; no test was marked slow."""
    marked = [path.name for path in (REPO / "tests").rglob("test_*.py")
              if path != Path(__file__) and re.search(r"^(pytestmark = \[?|@)pytest\.mark\.slow",
                                                      path.read_text(), re.M)]
    assert marked
    assert "-m slow" in (REPO / "README.md").read_text()
