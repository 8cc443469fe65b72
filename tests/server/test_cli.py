"""The command line: ``dicomweb-nb import`` and ``dicomweb-nb samples``, run as a user runs them."""

from __future__ import annotations

import subprocess

import pytest

from dicomweb_nb import samples
from tests.fixtures.consistency import check_store_consistent
from tests.fixtures.ourserver import BIN


def cli(*args: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dicomweb-nb"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_import_with_progress_bar_and_skipped_files(tmp_path):
    src = tmp_path / "src"
    datasets = samples.generate_ct_series(4, rows=8, columns=8, patient_id="CLI-1")
    samples.write_series(datasets[:3], src)
    samples.write_series(datasets[3:], src / "sub")
    (src / "notes.txt").write_text("not DICOM\n")
    (src / "sub" / "broken.dcm").write_bytes(samples.dataset_bytes(datasets[0])[:-64])
    store = tmp_path / "store"
    result = cli("import", str(src), "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert f"imported 4 instance(s) into {store}" in result.stdout
    assert "skipped 2 file(s):" in result.stdout
    assert f"  {src / 'notes.txt'}: not a DICOM file" in result.stdout
    assert f"  {src / 'sub' / 'broken.dcm'}: the file is truncated" in result.stdout
    # tqdm draws its bar on stderr: total, unit and the finished count.
    assert "import" in result.stderr and "6/6" in result.stderr and "100%" in result.stderr
    assert check_store_consistent(store) == {"studies": 1, "series": 1, "instances": 4}


def test_import_quiet_and_repeat(tmp_path):
    src = tmp_path / "src"
    samples.write_series(samples.generate_ct_series(2, rows=8, columns=8), src)
    store = tmp_path / "store"
    first = cli("import", str(src), "--store", str(store), "--quiet")
    assert first.returncode == 0 and first.stderr == ""
    again = cli("import", str(src), "--store", str(store), "--quiet")
    assert "imported 2 instance(s)" in again.stdout  # replaced, not duplicated
    assert check_store_consistent(store)["instances"] == 2


def test_import_missing_path_fails_cleanly(tmp_path):
    result = cli("import", str(tmp_path / "missing"), "--store", str(tmp_path / "store"))
    assert result.returncode == 1
    assert "error: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_store_from_environment(tmp_path):
    src = tmp_path / "src"
    samples.write_series(samples.generate_ct_series(1, rows=8, columns=8), src)
    import os

    env = {**os.environ, "DICOMWEB_NB_STORE": str(tmp_path / "envstore")}
    result = subprocess.run(
        [str(BIN / "dicomweb-nb"), "import", str(src), "--quiet"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert check_store_consistent(tmp_path / "envstore")["instances"] == 1


def test_samples(tmp_path):
    store = tmp_path / "store"
    result = cli("samples", "--store", str(store), "--quiet")
    assert result.returncode == 0, result.stderr
    counts = check_store_consistent(store)
    expected_instances = len(samples.pydicom_test_files()) + len(list(samples.iter_sample_datasets()))
    assert counts["instances"] == expected_instances
    assert result.stdout.strip() == (f"{store.resolve()}: {counts['studies']} studies, {counts['series']} series, "
                                     f"{counts['instances']} instances (0 file(s) skipped)")
    again = cli("samples", "--store", str(store), "--quiet")
    assert "already holds studies" in again.stdout
    assert check_store_consistent(store) == counts


@pytest.mark.parametrize("args, message", [
    (["serve", "-c", "nonsense"], "-c expects NAME=VALUE"),
    (["serve", "-c", "no_such_option=1"], "unknown option 'no_such_option'"),
    (["serve", "--basic-auth", "nocolon"], "--basic-auth expects USER:PASSWORD"),
])
def test_serve_argument_errors(tmp_path, args, message):
    result = cli(*args, "--store", str(tmp_path / "s"), "--port", "1", timeout=30)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_help_options_lists_the_configuration():
    result = cli("serve", "--help-options")
    assert result.returncode == 0
    for option in ("max_upload_size", "qido_max_results", "duplicates", "cors_origins"):
        assert option in result.stdout
