"""Patient data on a shared machine: a store is readable by its owner only (folders 0700, files 0600),
whatever the process umask; an existing store open to others is tightened when opened."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from dicomweb_nb.store import Store

# Run with umask 022, as on a JupyterHub node: every way the store writes, then the modes of
# everything in it, taken while it is still open (SQLite's -wal and -shm files exist then).
_WRITE_EVERYTHING = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from dicomweb_nb import samples
    from dicomweb_nb.client.config import save_server
    from dicomweb_nb.fileio import open_private
    from dicomweb_nb.store import Store, import_paths
    from dicomweb_nb.client.local import StoreSource

    root, inputs = Path(sys.argv[1]), Path(sys.argv[2])
    store = Store(root / "store")
    datasets = samples.generate_ct_series(3, rows=8, columns=8, patient_id="PERMS")
    files = samples.write_series(datasets, inputs)
    import_paths(store, files[:1], progress=False)                      # copies
    path = store.tmp_dir / "upload.part"                                # an upload (as STOW-RS stages it),
    with open_private(path) as fp:                                      # moved into place
        fp.write(files[1].read_bytes())
    store.store_files([path])
    class Item:
        label = "item"
        def read(self):
            return files[2].read_bytes()
    StoreSource(store.root).store_instances([Item()])                 # the notebook client's STOW
    import_paths(store, [samples.pydicom_test_files()[0]], progress=False)  # not Part 10 everywhere: rewritten
    save_server("remote", "http://127.0.0.1:8042/dicom-web", folder=store.root)  # servers.json
    modes = {str(p.relative_to(root)): oct(os.stat(p).st_mode & 0o777) for p in [root / "store", *(root / "store").rglob("*")]}
    print(json.dumps(modes))
""")


def _modes_after_writing(tmp_path: Path) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", _WRITE_EVERYTHING, str(tmp_path), str(tmp_path / "inputs")],
                            capture_output=True, text=True, timeout=120, umask=0o022,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_everything_a_store_writes_is_owner_only_under_umask_022(tmp_path):
    modes = _modes_after_writing(tmp_path)
    folders = {p: m for p, m in modes.items() if (tmp_path / p).is_dir()}
    files = {p: m for p, m in modes.items() if p not in folders}
    names = {Path(p).name for p in files}
    assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "store.lock", "servers.json"} <= names
    assert sum(p.endswith(".dcm") for p in files) == 4
    assert {"store", "store/files", "store/tmp"} <= set(folders)
    assert sum(p.count("/") == 3 for p in folders) == 2  # files/{study}/{series}: generated, and pydicom's
    assert {p: m for p, m in folders.items() if m != "0o700"} == {}
    assert {p: m for p, m in files.items() if m != "0o600"} == {}


def test_an_existing_store_open_to_others_is_tightened_and_logged(tmp_path, caplog):
    old = tmp_path / "old-store"
    Store(old).close()
    os.chmod(old, 0o755)
    with caplog.at_level(logging.WARNING, logger="dicomweb_nb.store"):
        Store(old).close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    assert any("was open to other users" in r.getMessage() and "0755" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dicomweb_nb.store"):
        Store(old).close()  # already private: nothing to say
    assert not caplog.records
