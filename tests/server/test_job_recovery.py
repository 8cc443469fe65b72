"""A job whose process died is reported "interrupted" by one process, in one write: a sibling
process (another worker of ``serve --workers``) reading the job at any moment sees either the old
record or the whole report, never the new state beside the old record's error fields."""

from __future__ import annotations

from dicomweb_nb.server.jobs import FAILURE, INTERRUPTED, RUNNING, Job, JobManager


def test_the_interrupted_report_is_written_with_the_claim(make_store):
    store = make_store()
    dead = Job(id="job-dead", type="RetrieveJob", priority=0, request={}, state=RUNNING,
               owner={"session": "gone-host-1-0", "pid": 1, "host": "gone-host"})
    store.save_job(dead.id, dead.record())
    writes: list[str] = []
    store.save_job = lambda job_id, record: writes.append(job_id)  # only the claim may write the report

    reporter = JobManager(store, workers=1)
    try:
        [record] = store.load_jobs().values()  # what another process reads from the index after the claim
        assert (record["state"], record["error_description"]) == (FAILURE, INTERRUPTED)
        assert "stopped while this job was running" in record["error_details"]
        assert writes == []
        assert reporter.get(dead.id).error_description == INTERRUPTED
    finally:
        reporter.shutdown()
