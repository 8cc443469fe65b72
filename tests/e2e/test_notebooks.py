"""Every example notebook runs top to bottom: on the embedded default (a store preloaded with the samples),
and copied alone into an empty folder (the workspace store starts empty there)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("notebooks") / ".dicomweb"
    subprocess.run([str(Path(sys.executable).parent / "dicomweb-nb"), "samples", "--quiet", "--store", str(store)],
                   check=True, capture_output=True)
    return store


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    book = json.loads(path.read_text())
    assert all(
        not cell.get("outputs") and not cell.get("execution_count") for cell in book["cells"] if cell["cell_type"] == "code"
    )


def run(path: Path, folder: Path) -> str:
    """Execute a notebook in ``folder``; returns the text it printed. Fails on any error."""
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, sample_store, monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMWEB_NB_STORE", str(sample_store))
    monkeypatch.delenv("DICOMWEB_NB_URL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    printed = run(path, tmp_path)
    assert "loading the sample studies" not in printed  # the store has them


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_alone_in_an_empty_folder(path, monkeypatch, tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    copy = Path(shutil.copy(path, folder))
    monkeypatch.delenv("DICOMWEB_NB_STORE", raising=False)
    monkeypatch.delenv("DICOMWEB_NB_URL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    printed = run(copy, folder)
    if (folder / ".dicomweb").exists():  # the notebook used the workspace store: it said it was empty and filled it
        assert "is empty: loading the sample studies" in printed
        assert "instances stored" in printed
    else:
        assert path.name in ("04-serving.ipynb", "05-remote-servers.ipynb")  # these start servers of their own
