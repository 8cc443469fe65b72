"""``dicomweb-nb migrate`` and ``store.migrate.migrate``: a workspace folder into a team store (each
backend: SQLite + folder, PostgreSQL + folder, PostgreSQL + moto S3) and back, byte for byte and
with the same QIDO answers; a copy killed mid-way resumed; a difference named; bad input refused."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dicomweb_nb import samples
from dicomweb_nb.dicom.query import parse_query
from dicomweb_nb.store import Store
from dicomweb_nb.store.migrate import MigrationError, MigrationFailed, migrate
from tests.fixtures.consistency import check_store_consistent
from tests.fixtures.ourserver import BIN

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

QUERIES = [
    ("study", {}), ("study", {"PatientName": "*a*"}), ("study", {"StudyDate": "20000101-20301231"}),
    ("study", {"ModalitiesInStudy": "CT"}), ("study", {"limit": "5", "offset": "3"}),
    ("series", {}), ("series", {"Modality": "MR"}), ("instance", {}), ("instance", {"includefield": "all"}),
]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dicomweb-nb"), *args], capture_output=True, text=True, timeout=timeout)


def qido(store: Store) -> list[list[dict]]:
    return [store.search(parse_query(list(params.items()), level)).items for level, params in QUERIES]


def blob_digests(store: Store) -> dict[str, str]:
    """sha256 of every stored instance's blob, by SOP Instance UID."""
    digests = {}
    with store.index._read() as ex:
        sops = [r[0] for r in ex("SELECT sop_uid FROM instances")]
    for sop in sops:
        row = store.instances(None, None, sop)[0]
        digests[sop] = hashlib.sha256(b"".join(row.blob.chunks())).hexdigest()
    return digests


@pytest.fixture(scope="module")
def folder_files(tmp_path_factory) -> list[Path]:
    """pydicom's bundled instances plus a generated CT series (several studies, series, transfer syntaxes)."""
    files = samples.pydicom_test_files()
    ct = samples.write_series(samples.generate_ct_series(30, rows=8, columns=8, patient_id="MIG-1"),
                              tmp_path_factory.mktemp("ct"))
    return [*files, *ct]


@pytest.fixture
def folder_store(tmp_path, folder_files) -> Store:
    store = Store(tmp_path / "workspace" / ".dicomweb")
    outcomes = store.store_files(folder_files, move=False)
    assert sum(o.stored for o in outcomes) > 100
    (store.root / "servers.json").write_text(json.dumps({"pacs": {"Url": "http://pacs.example/dicom-web",
                                                                  "Password": "secret"}}))
    store.save_job("job-done", {"id": "job-done", "type": "retrieve", "state": "Success", "request": {}})
    store.save_job("job-running", {"id": "job-running", "type": "retrieve", "state": "Running", "request": {}})
    yield store
    store.close()


def test_round_trip_folder_team_folder(folder_store, make_store, tmp_path):
    team = make_store("team")
    report = migrate(folder_store, team, progress=False)
    assert report.ok and report.already_there == 0
    assert report.copied == folder_store.counts()["instances"] == report.verified
    assert report.target_counts == report.source_counts == folder_store.counts()
    assert (report.servers, report.jobs, report.active_jobs_left) == (1, 1, 1)
    assert blob_digests(team) == blob_digests(folder_store)
    answers = qido(folder_store)
    assert all(answers)  # every query finds something
    assert qido(team) == answers
    if not team.is_folder_store:
        assert team.load_servers()["pacs"]["Password"] == "secret"
    assert set(team.load_jobs()) == {"job-done"}
    check_store_consistent(team)

    back_dir = tmp_path / "back" / ".dicomweb"
    back_report = migrate(team, back_dir, progress=False)  # a folder that does not exist yet
    assert back_report.ok and back_report.copied == report.copied
    back = Store(back_dir)
    try:
        assert blob_digests(back) == blob_digests(folder_store)  # files byte-identical
        assert qido(back) == qido(folder_store)  # same answers, same order
        assert json.loads((back_dir / "servers.json").read_text())["pacs"]["Password"] == "secret"
        assert oct((back_dir / "servers.json").stat().st_mode & 0o777) == "0o600"
        check_store_consistent(back)
    finally:
        back.close()
    again = migrate(folder_store, team, progress=False)  # nothing left to copy
    assert (again.copied, again.already_there) == (0, report.copied) and again.ok


KILLED_COPY = textwrap.dedent('''
    import json, sys, time
    from dicomweb_nb.store import Store, migrate as module
    source, target = sys.argv[1], json.loads(sys.argv[2])
    module.BATCH_INSTANCES = 5
    store_parsed = Store.store_parsed
    def committing(self, files, **kw):
        outcomes = store_parsed(self, files, **kw)
        print("committed", len(outcomes), flush=True)
        time.sleep(0.3)
        return outcomes
    Store.store_parsed = committing
    module.migrate(source, Store(target.pop("root"), **target), progress=False)
''')


def test_killed_copy_resumes_with_what_is_missing(folder_store, make_store, store_backend):
    team = make_store("team")
    kwargs = {"root": str(team.root), **team.backend_kwargs}
    team.close()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_COPY, str(folder_store.root), json.dumps(kwargs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = 0
    for _ in range(3):
        line = proc.stdout.readline()
        assert line.startswith("committed"), proc.stderr.read()
        committed += int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)  # mid-copy: a batch may be staged or half put
    proc.wait(timeout=30)
    total = folder_store.counts()["instances"]

    team = make_store("team")  # opening it again cleans what the killed copy left (crash recovery)
    if store_backend.team:
        # The killed process's intents and staging folder go when another process's sweep sees it dead.
        deadline = time.monotonic() + 60
        while team.index.dead_intents() or team.index.intent_keys():
            assert time.monotonic() < deadline, "the killed copy's write intents were never swept"
            team.sweep()
            time.sleep(0.2)
    before = team.counts()["instances"]
    assert committed <= before < total
    check_store_consistent(team)

    report = migrate(folder_store, team, progress=False)
    assert report.ok
    assert report.already_there == before and report.copied == total - before  # only what was missing
    assert blob_digests(team) == blob_digests(folder_store)
    assert qido(team) == qido(folder_store)
    check_store_consistent(team)


def test_a_difference_is_named(folder_store, make_store, tmp_path):
    team = make_store("team")
    migrate(folder_store, team, progress=False)
    victim = team.instances(None, None, _some_sop(team))[0]
    data = bytearray(b"".join(victim.blob.chunks()))
    data[-1] ^= 0xFF  # same size: only the checksum can tell
    altered = tmp_path / "altered.dcm"
    altered.write_bytes(bytes(data))
    team.blobs.put(victim.blob.key, altered, move=False)

    with pytest.raises(MigrationFailed) as failed:
        migrate(folder_store, team, progress=False)
    assert victim.sop_uid in str(failed.value) and "sha256" in str(failed.value)
    assert [sop for sop, _ in failed.value.report.mismatches] == [victim.sop_uid]
    assert not migrate(folder_store, team, progress=False, check=False).ok

    args = ["--from-store", str(folder_store.root), "--quiet"]
    if team.is_folder_store:
        args += ["--to-store", str(team.root)]
    else:
        args += ["--database", team.backend_kwargs["database"],
                 "--storage", str(team.backend_kwargs.get("storage") or team.root / "files")]
    team.close()
    result = cli("migrate", *args)
    assert result.returncode == 1, result.stderr
    assert victim.sop_uid in result.stderr and "Traceback" not in result.stderr


def _some_sop(store: Store) -> str:
    with store.index._read() as ex:
        return ex("SELECT sop_uid FROM instances ORDER BY sop_uid").fetchone()[0]


def test_cli_to_a_team_store_and_back(folder_store, store_backend, make_store, tmp_path):
    team = make_store("team")  # made (and its database) on this backend, then left to the command
    database = team.backend_kwargs.get("database") or f"sqlite:///{tmp_path / 'team.sqlite'}"
    storage = str(team.backend_kwargs.get("storage") or tmp_path / "team-files")
    team.close()
    folder = str(folder_store.root)
    expected = qido(folder_store)
    digests = blob_digests(folder_store)
    folder_store.close()

    there = cli("migrate", "--from-store", folder, "--database", database, "--storage", storage)
    assert there.returncode == 0, there.stderr
    assert "verified:" in there.stdout and "copy" in there.stderr  # the report, and tqdm's bar on stderr
    back_dir = tmp_path / "back"
    back = cli("migrate", "--to-store", str(back_dir), "--database", database, "--storage", storage, "--quiet")
    assert back.returncode == 0, back.stderr
    assert "already there" in back.stdout and back.stderr == ""
    copy = Store(back_dir)
    try:
        assert qido(copy) == expected and blob_digests(copy) == digests
    finally:
        copy.close()


def test_cli_refuses_bad_input(tmp_path, backend_services):
    folder = tmp_path / "store"
    Store(folder).close()
    postgres = backend_services.postgres()
    s3 = backend_services.s3()
    cases = [
        (["--from-store", str(tmp_path / "missing"), "--to-store", str(tmp_path / "out")], "there is no store in"),
        (["--from-store", str(folder), "--database", "mysql://host/db", "--storage", str(tmp_path / "b")],
         "unsupported database URL"),
        (["--from-store", str(folder), "--database", "postgresql://postgres@127.0.0.1:1/nope", "--storage", str(tmp_path / "b")],
         "cannot connect"),
        (["--from-store", str(folder), "--database", postgres.new_database(), "--storage", "s3://no-such-bucket-here/x"],
         "does not exist"),
        (["--from-store", str(folder), "--database", postgres.new_database()], "needs both a database URL and a storage"),
        (["--from-store", str(folder), "--to-store", str(folder)], "the same store"),
        (["--from-store", str(folder)], "no target"),
        (["--database", postgres.new_database(), "--storage", str(tmp_path / "b")], "say which side"),
        (["--from-store", str(folder), "--to-store", str(tmp_path / "store" / "index.sqlite")], "cannot open the target"),
        (["--from-store", str(folder), "--to-store", str(tmp_path / "o"), "--workers", "0"], "--workers"),
    ]
    assert s3.endpoint
    for args, message in cases:
        result = cli("migrate", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    with pytest.raises(MigrationError, match="there is no store in"):
        migrate(tmp_path / "missing", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
