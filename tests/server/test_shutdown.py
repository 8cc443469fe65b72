"""Stopping a server (SIGTERM; Jupyter's shutdown calls the extension's stop hook) ends its jobs cleanly:
the running and the waiting ones are recorded as interrupted by the shutdown before the process ends,
and the store is released, on both mount points."""

from __future__ import annotations

import pytest

from tests.fixtures.ourserver import start_jupyter, start_standalone

from .proxy_helpers import Api

SHUTDOWN_DETAILS = "the server stopped while this job was running"


@pytest.fixture(params=["standalone", "jupyter"])
def one_job_at_a_time(request, tmp_path):
    if request.param == "standalone":
        server = start_standalone(tmp_path, None, "-c", "concurrent_jobs=1")
    else:
        server = start_jupyter(tmp_path, "--DicomWeb.concurrent_jobs=1")
    yield server
    server.stop()


def test_a_shutdown_records_its_jobs_as_interrupted(one_job_at_a_time, slow_remote):
    server, (remote, study) = one_job_at_a_time, slow_remote
    api = Api(server)
    api.add_server("remote", remote.dicomweb_url)
    slow = {"Resources": [{"Study": study.uid}], "Debug": True, "Synchronous": False}  # 40 x 50 ms
    running = api.post("servers/remote/retrieve", slow).json()["ID"]
    waiting = api.post("servers/remote/retrieve", slow).json()["ID"]
    api.wait_job(running, lambda job: job["State"] == "Running")
    server.stop()  # SIGTERM
    assert server.process.returncode == 0, server.log_text()[-2000:]
    server.start()
    api = Api(server)
    for job_id in (running, waiting):
        job = api.job(job_id)
        assert job["State"] == "Failure"
        assert job["ErrorDescription"] == "interrupted by a server restart"
        # Recorded by the shutdown itself, not guessed at the next start from a dead process's record.
        assert job["ErrorDetails"] == SHUTDOWN_DETAILS, job
