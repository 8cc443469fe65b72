"""Prometheus metrics: the values move with the requests made (counts and latency per service, bytes
in and out, the store's size, the job queue); /metrics is authenticated; under Jupyter they are in
Jupyter's own /metrics; two processes sharing PROMETHEUS_MULTIPROC_DIR report their sum."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.ourserver import start_standalone

from .conftest import small_series, stow_datasets, unique_patient

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def scrape(url: str, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    answer = requests.get(url, headers=headers or {}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def value(samples_: dict, name: str, **labels: str) -> float:
    return samples_.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(url: str, name: str, expected: list[float]) -> dict[tuple[str, tuple], float]:
    """Scrape until the values of ``name`` are ``expected`` (the store's figures are cached a few seconds)."""
    deadline = time.monotonic() + 30
    while True:
        now = scrape(url)
        found = [v for (n, _labels), v in now.items() if n == name]
        if found == expected or time.monotonic() > deadline:
            assert found == expected, (name, found)
            return now
        time.sleep(0.5)


def test_metrics_move_when_requests_are_made(fresh_server):
    metrics_url = fresh_server.url + "/metrics"
    before = scrape(metrics_url)
    datasets = small_series(3, patient_id=unique_patient("MET"))
    sent = stow_datasets(fresh_server, datasets)
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    root = fresh_server.dicomweb_url
    for _ in range(2):
        assert requests.get(f"{root}/studies", timeout=30).status_code == 200
    retrieved = requests.get(f"{root}/studies/{study}", timeout=30,
                             headers={"Accept": 'multipart/related; type="application/dicom"'})
    instances = f"{root}/studies/{study}/series/{series}/instances"
    rendered = requests.get(f"{instances}/{datasets[0].SOPInstanceUID}/rendered", timeout=30)
    assert requests.get(f"{root}/studies/1.2.3/metadata", timeout=30).status_code == 404
    assert requests.delete(f"{instances}/{datasets[2].SOPInstanceUID}", timeout=30).status_code == 204
    after = scrape(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("dicomweb_requests_total", service="QIDO-RS", method="GET", status="200") == 2
    assert delta("dicomweb_requests_total", service="STOW-RS", method="POST", status="200") == 1
    assert delta("dicomweb_requests_total", service="WADO-RS", method="GET", status="200") == 1
    assert delta("dicomweb_requests_total", service="WADO-RS", method="GET", status="404") == 1
    assert delta("dicomweb_requests_total", service="rendered", method="GET", status="200") == 1
    assert delta("dicomweb_requests_total", service="delete", method="DELETE", status="204") == 1
    assert delta("dicomweb_request_duration_seconds_count", service="QIDO-RS") == 2
    assert delta("dicomweb_request_duration_seconds_sum", service="STOW-RS") > 0
    assert delta("dicomweb_request_bytes_total", service="STOW-RS") == sent
    assert delta("dicomweb_response_bytes_total", service="rendered") == len(rendered.content)
    assert delta("dicomweb_response_bytes_total", service="WADO-RS") >= len(retrieved.content)

    # The store's size and job queue (read from the store, a few seconds old at most).
    store = fresh_server.store_dir
    now = scrape_until(metrics_url, "dicomweb_store_instances", [2.0])
    labels = dict(next(labels for (name, labels) in now if name == "dicomweb_store_bytes"))
    assert str(store.name) in labels["store"] or "index" in labels["store"]
    assert [v for (name, _l), v in now.items() if name == "dicomweb_store_studies"] == [1.0]
    assert next(v for (name, _l), v in now.items() if name == "dicomweb_store_bytes") > 1000
    job_states = {dict(labels)["state"] for (name, labels) in now if name == "dicomweb_jobs"}
    assert job_states >= {"Pending", "Running", "Success", "Failure"}


def test_metrics_need_read_access(tmp_path):
    server = start_standalone(tmp_path, None, token="metrics-token")
    try:
        assert requests.get(server.url + "/metrics", timeout=30).status_code == 401
        assert "dicomweb_requests_total" in requests.get(server.url + "/metrics", headers=server.headers, timeout=30).text
    finally:
        server.stop()


def test_under_jupyter_they_are_in_jupyters_own_metrics(jupyter_dicomweb):
    metrics_url = jupyter_dicomweb.url + "/metrics"
    before = scrape(metrics_url, jupyter_dicomweb.headers)
    answer = requests.get(f"{jupyter_dicomweb.dicomweb_url}/studies", headers=jupyter_dicomweb.headers, timeout=30)
    assert answer.status_code == 200
    after = scrape(metrics_url, jupyter_dicomweb.headers)
    labels = {"service": "QIDO-RS", "method": "GET", "status": "200"}
    assert value(after, "dicomweb_requests_total", **labels) == value(before, "dicomweb_requests_total", **labels) + 1
    assert any(name == "http_request_duration_seconds_count" for name, _ in after)  # Jupyter's own are still there
    assert any(name == "dicomweb_store_instances" for name, _ in after)


def test_worker_processes_sharing_a_multiprocess_dir_report_their_sum(tmp_path, monkeypatch):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_standalone(tmp_path / "a")
    second = start_standalone(tmp_path / "b", first.store_dir)  # another worker on the same store
    try:
        labels = {"service": "QIDO-RS", "method": "GET", "status": "200"}
        before = value(scrape(first.url + "/metrics"), "dicomweb_requests_total", **labels)
        assert before == value(scrape(second.url + "/metrics"), "dicomweb_requests_total", **labels)
        for server, count in ((first, 3), (second, 2)):
            for _ in range(count):
                assert requests.get(f"{server.dicomweb_url}/studies", timeout=30).status_code == 200
        stow_datasets(second, small_series(2, patient_id=unique_patient("MP")))
        for server in (first, second):  # either worker answers with every worker's counts
            now = scrape(server.url + "/metrics")
            assert value(now, "dicomweb_requests_total", **labels) == before + 5
            assert value(now, "dicomweb_request_duration_seconds_count", service="QIDO-RS") >= 5
            assert value(now, "dicomweb_requests_total", service="STOW-RS", method="POST", status="200") == 1
            # The store's figures are read once, not added up per process.
            scrape_until(server.url + "/metrics", "dicomweb_store_instances", [2.0])
        assert list(shared.glob("*.db"))
    finally:
        second.stop()
        first.stop()


def test_a_multiprocess_folder_set_after_prometheus_client_was_imported_is_used(tmp_path):
    """A supervisor may import the server (and prometheus_client) before it sets the folder its
    workers share: the counts of a server installed after that still go to the folder."""
    script = textwrap.dedent(f"""
        import os
        from types import SimpleNamespace
        from dicomweb_nb.server import metrics
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
        store = SimpleNamespace(location="nowhere", usage=lambda: dict(studies=1, series=1, instances=2, bytes=9, jobs={{}}))
        metrics.install(SimpleNamespace(store=store, config=SimpleNamespace(enable_performance_logs=False)))
        metrics.REQUESTS.labels("QIDO-RS", "GET", "200").inc(3)
        print(metrics.exposition().decode())
    """)
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    assert answer.returncode == 0, answer.stderr
    assert list(tmp_path.glob("counter_*.db"))
    assert 'dicomweb_requests_total{method="GET",service="QIDO-RS",status="200"} 3.0' in answer.stdout
    assert 'dicomweb_store_instances{store="nowhere"} 2.0' in answer.stdout
