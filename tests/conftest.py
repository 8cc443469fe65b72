"""Shared fixtures: sample data, our server (standalone and as a Jupyter extension), a real Orthanc."""

import os

import pytest

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.backends",
    "tests.fixtures.orthanc",
    "tests.fixtures.ourserver",
    "tests.fixtures.browser",
    "tests.client.lazy_fixtures",
]

# The fixtures that start a peer program; a test using any of them (directly or through another
# fixture) is marked, so ``-m "not orthanc"`` or ``-m "not browser"`` leaves out exactly the tests
# that need it. A fixture that starts one without these (tests/client/test_same_answers.py) marks
# its module itself.
PEER_FIXTURES = {
    "orthanc": {"orthanc", "authenticated_orthanc"},
    "browser": {"chromium", "voila_browser"},
}


@pytest.fixture(autouse=True)
def _kernel_environment_restored(monkeypatch):
    """The extension tells kernels where the workspace store is through the environment
    (``jupyter_server_ext.extension``); tests that run it in this process (pytest-jupyter) must not
    leave that to later tests, whose ``dw.connect()`` would then find another test's store and servers."""
    from dicomweb_nb.workspace import DATABASE_ENV, LOCAL_URL_ENV, SERVERS_ENV, STORAGE_ENV, STORE_ENV

    for name in (STORE_ENV, LOCAL_URL_ENV, SERVERS_ENV, DATABASE_ENV, STORAGE_ENV):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])  # restored to this value afterwards
        else:  # set, then removed: monkeypatch records it as absent and removes it afterwards
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in PEER_FIXTURES.items():
            if used & fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))
    # A test parametrized over servers ("ours" / "orthanc") and over our store backends runs its
    # Orthanc case once: Orthanc does not depend on our store backend.
    from tests.fixtures.backends import BACKENDS

    repeated = [item for item in items if _orthanc_on_another_backend(item, BACKENDS[0])]
    if repeated:
        config.hook.pytest_deselected(items=repeated)
        items[:] = [item for item in items if item not in repeated]


def _orthanc_on_another_backend(item, default_backend: str) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend = params.get("store_backend")
    return backend not in (None, default_backend) and "orthanc" in params.values()
