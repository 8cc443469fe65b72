"""``-m "not orthanc"`` / ``-m "not browser"`` leave out every test that needs the peer program."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collected(marker_expression: str, *paths: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-m", marker_expression,
         *paths],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_tests_that_start_orthanc_through_a_fixture_are_marked():
    # Every test of these modules needs an Orthanc: through module fixtures (proxy_get), a fixture of
    # its own (same_answers), or the session's (orthanc_peer).
    modules = ["tests/server/test_proxy_get.py", "tests/client/test_same_answers.py", "tests/test_orthanc_peer.py"]
    assert collected("orthanc", *modules)
    assert collected("not orthanc", *modules) == []


def test_tests_that_start_chromium_are_marked():
    modules = ["tests/e2e/test_browser_voila.py", "tests/e2e/test_client_page.py"]
    assert collected("browser", *modules)
    assert collected("not browser", *modules) == []
