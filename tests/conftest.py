"""Shared fixtures: sample data, our server (standalone and as a Jupyter extension), a real Orthanc."""

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.backends",
    "tests.fixtures.orthanc",
    "tests.fixtures.ourserver",
    "tests.fixtures.browser",
]
