"""Options of the store a server opens: the PostgreSQL pool size and the grace period of replaced blobs."""

from __future__ import annotations

import copy

import pytest
from traitlets import TraitError

from dicomweb_nb import samples
from dicomweb_nb.errors import ConfigurationError
from dicomweb_nb.server.app import open_store
from dicomweb_nb.server.config import DicomWeb
from tests.server.test_cli import cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def config_for(kwargs: dict, root, **options) -> DicomWeb:
    config = DicomWeb(**options)
    if "database" in kwargs:
        config.database_url = kwargs["database"]
        config.storage_url = str(kwargs.get("storage") or root / "files")
    return config


def test_pool_size_and_grace_reach_the_store(tmp_path, store_backend):
    kwargs = store_backend.store_kwargs()
    store = open_store(config_for(kwargs, tmp_path / "s", database_pool_size=3, replaced_blob_grace=3600), tmp_path / "s")
    try:
        assert store.garbage_grace == 3600
        if store_backend.team:
            assert store.index.pool.max_size == 3
        # A replaced blob stays for the grace period, on a folder too.
        original = samples.generate_ct_series(1, rows=8, columns=8, patient_id="GRACE-OPT")[0]
        changed = copy.deepcopy(original)
        changed.StudyDescription = "changed"
        store.store_files(samples.write_series([original], tmp_path / "a"), move=False)
        old = store.instances(None, None, original.SOPInstanceUID)[0].blob
        store.store_files(samples.write_series([changed], tmp_path / "b"), move=False)
        assert store.blobs.exists(old.key)
    finally:
        store.close()


def test_default_grace_is_the_blob_storages(tmp_path, store_backend):
    kwargs = store_backend.store_kwargs()
    store = open_store(config_for(kwargs, tmp_path / "s"), tmp_path / "s")
    try:
        assert store.garbage_grace == (120 if "storage" in kwargs else 0)
        if store_backend.team:
            assert store.index.pool.max_size == 8
    finally:
        store.close()


def test_a_pool_larger_than_the_database_allows_is_refused(tmp_path, backend_services):
    database = backend_services.postgres().new_database()  # the test cluster: max_connections 300
    config = DicomWeb(database_url=database, storage_url=str(tmp_path / "files"), database_pool_size=400)
    with pytest.raises(ConfigurationError, match=r"a pool of 400 connections .* cannot fit in the 29\d connections .*"
                                                 r"max_connections 300.*c\.DicomWeb\.database_pool_size"):
        open_store(config, tmp_path / "s")


@pytest.mark.parametrize("options", [{"database_pool_size": 0}, {"replaced_blob_grace": -1}])
def test_bad_values_are_refused(options):
    with pytest.raises(TraitError, match="must be"):
        DicomWeb(**options)


@pytest.mark.parametrize("option, message", [
    ("database_pool_size=0", "database_pool_size must be at least 1, not 0"),
    ("replaced_blob_grace=-5", "replaced_blob_grace must be 0 or more seconds"),
    ("database_pool_size=many", "expected an int"),
])
def test_serve_refuses_bad_values_with_a_message(tmp_path, option, message):
    result = cli("serve", "--store", str(tmp_path / "s"), "--port", "1", "-c", option, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
