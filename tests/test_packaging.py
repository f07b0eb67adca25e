"""What the repository ships besides the package: declared dependencies, launch scripts."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import distlg

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {"skimage": "scikit-image", "PIL": "pillow", "yaml": "pyyaml",
                 "google_crc32c": "google-crc32c"}
"""Import names whose distribution is named otherwise."""
OPTIONAL = {"triton": "gpu", "aiohttp": "remote", "fsspec": "remote", "s3fs": "s3", "botocore": "s3",
            "starlette": "view", "uvicorn": "view", "neuroglancer": "neuroglancer"}
"""Imports of optional features (the Triton kernels, stores read over HTTP or S3, the viewer and
its neuroglancer mode) and the extra that declares each."""


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def _third_party_imports() -> set[str]:
    names = set()
    for path in Path(distlg.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names - set(sys.stdlib_module_names) if n != "distlg"}


def test_every_import_of_the_package_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    extras = project["optional-dependencies"]
    for name, extra in OPTIONAL.items():
        assert name in _requirement_names(extras[extra]), f"{name} is not in the [{extra}] extra"
    missing = {n for n in _third_party_imports() - set(OPTIONAL)
               if DISTRIBUTIONS.get(n, n).lower() not in declared}
    assert not missing, f"imported by distlg but not declared in pyproject.toml: {sorted(missing)}"
    assert "scipy" in declared  # ingest reads .wav files with it
    assert "psutil" not in declared, "psutil is used by the tests only: declare it in [test]"
    assert "psutil" in _requirement_names(project["optional-dependencies"]["test"])


def test_slurm_script_logs_to_a_tracked_folder_and_passes_arguments_quoted(tmp_path):
    script = (REPO / "launch" / "slurm.sh").read_text()
    (log,) = re.findall(r"^#SBATCH --output=(\S+)", script, flags=re.M)
    folder = Path(log).parent
    assert (REPO / folder).is_dir(), f"SLURM does not create {folder}/: it must exist"
    if (REPO / ".git").exists():  # and in a fresh clone: git tracks a file in it
        tracked = subprocess.run(["git", "ls-files", str(folder)], cwd=REPO, capture_output=True,
                                 text=True).stdout.split()
        assert tracked, f"{folder}/ is not tracked: a fresh clone would not have it"
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in {"scontrol": 'echo node-a; echo node-b', "srun": 'exec "$@"',
                       "accelerate": 'printf "%s\\n" "$@"'}.items():
        (fake / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]",
           "SLURM_NNODES": "2", "SLURM_NODEID": "1", "GPUS_PER_NODE": "4"}
    out = subprocess.run(["bash", str(REPO / "launch" / "slurm.sh"), "my run.yaml", "--steps", "5"],
                         env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-5:] == ["train", "my run.yaml", "--steps", "5", "--resume"]
    assert out[out.index("--num_processes") + 1] == "8"
    assert out[out.index("--machine_rank") + 1] == "1"
    assert out[out.index("--main_process_ip") + 1] == "node-a"
