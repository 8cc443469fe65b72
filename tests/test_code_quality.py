"""The code-quality gate: ruff and mypy, as configured in pyproject.toml, report nothing.

Run in the test suite (so `.ci/run` fails on a lint or typing regression); `./dev.sh fix` applies
ruff's automatic fixes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["dicomweb_nb", "jupyter_server_ext", "tests", "benchmarks", "tools"]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_reports_nothing():
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", *LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_reports_nothing():
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
