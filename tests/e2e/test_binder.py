"""The Binder postBuild script runs cleanly in a fresh virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_postbuild_in_a_fresh_virtual_environment(tmp_path):
    repo = tmp_path / "repo"
    # The repository as Binder sees it: tracked files only, no local store or virtual environment.
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "HOME": str(tmp_path / "home"), "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))}
    env.pop("PYTHONPATH", None)
    env.pop("DICOMWEB_NB_STORE", None)
    (tmp_path / "home").mkdir()
    result = subprocess.run([str(repo / "binder" / "postBuild")], cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-2000:] + "\n--- stderr ---\n" + result.stderr[-3000:]
    assert "sample studies in" in result.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import dicomweb_nb as dw; print(len(dw.connect(store='.dicomweb', progress=False).studies()))"],
                           cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert int(check.stdout.strip()) >= 20
