"""Issue 12 benchmark: the scale curve. How ingest and search costs grow with the store's size.

    python benchmarks/bench_scale.py                         # 10k, 100k, 1M on SQLite and PostgreSQL, S3 at 100k
    python benchmarks/bench_scale.py --sizes 2k,10k          # a quick run
    python benchmarks/bench_scale.py --backends pg-local --sizes 10k,100k

Data: studies of 20 small CT instances (32x32, ~3.3 KB each) made by the generator of
bench_ingest_qido.py (``samples.generate_ct_series``, a patient name, ID and date per study), with
the match counts kept constant as the store grows: 20 *probe* studies, all among the first 10,000
instances, are the only ones whose PatientName matches ``JON*`` (family JONES), whose StudyDate lies
in 2015-2016 and whose PatientComments (an attribute without a column: any-attribute matching) holds
"probe"; every other study has another family name, another year and other comments. Generated once
into packs of 10,000 instances under ``--cache`` (reused by later runs and by every backend);
generation time is printed.

For each backend (``sqlite-local``: SQLite + a folder; ``pg-local``: PostgreSQL + a folder;
``pg-s3``: PostgreSQL + S3 on moto's server, an emulator on 127.0.0.1, not AWS) one store grows
through the sizes; ``dicomweb-nb serve`` runs on it, and everything goes over HTTP:

- ingest: STOW-RS in batches of ``--batch`` instances. Up to the last 2,000 instances of each size, 4
  uploader processes at once (instances/s of that part); the last 2,000 with 1 uploader. For the
  largest size, also the 4-uploader rate over the first and the last 10% of the whole load.
- QIDO p50 (``--repeat`` requests after one warm-up) of the study searches of bench_ingest_qido.py,
  each with ``limit=100``, plus an any-attribute wildcard; match counts printed (constant by design).
- series metadata p50 (a series of 20), frames/s (frame 1 of 200 instances, one client).

Then the growth ratio largest / smallest size of each measure, and the PostgreSQL cluster's plans.
The PostgreSQL server is started with its default durability (fsync on) and shared_buffers=512MB.
Results go to benchmarks/results/scale.json. Run it on an idle machine: the uploaders, the server
and the database share its cores (the load average is printed with each size).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import RESULTS, report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ingest_qido import FAMILY

from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import encode_multipart
from tests.fixtures.backends import Backend, Services
from tests.fixtures.ourserver import start_standalone

PER_STUDY = 20
PACK_STUDIES = 500  # 10,000 instances per pack file
PROBE_STRIDE = 25  # study s < 500 with s % 25 == 0: 20 probe studies
OTHER_FAMILIES = [f for f in FAMILY if not f.startswith("JON")]
OTHER_YEARS = [y for y in range(2010, 2024) if y not in (2015, 2016)]
SINGLE_UPLOADER_TAIL = 2000
PG_SETTINGS = "-c max_connections=200 -c shared_buffers=512MB"

QUERIES = {
    "PatientName wildcard": "PatientName=JON*",
    "StudyDate range": "StudyDate=20150101-20161231",
    "PatientID": "PatientID=PID00050",
    "all studies": "",
    "any-attribute wildcard": "PatientComments=*probe*",
}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    value = int(float(text.rstrip("km")) * factor)
    if value % PER_STUDY or value < SINGLE_UPLOADER_TAIL * 2:
        raise argparse.ArgumentTypeError(f"a size is a multiple of {PER_STUDY}, at least {SINGLE_UPLOADER_TAIL * 2}: {text!r}")
    return value


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)


# -- data --------------------------------------------------------------------------------------------

def study_parts(s: int) -> list[bytes]:
    """The Part 10 bytes of study ``s`` (the generator of bench_ingest_qido.py, match counts kept constant)."""
    probe = s < PACK_STUDIES and s % PROBE_STRIDE == 0
    family = "JONES" if probe else OTHER_FAMILIES[s % len(OTHER_FAMILIES)]
    year = 2015 + (s // PROBE_STRIDE) % 2 if probe else OTHER_YEARS[s % len(OTHER_YEARS)]
    series = samples.generate_ct_series(
        PER_STUDY, rows=32, columns=32, patient_name=f"{family}^PAT{s:05d}", patient_id=f"PID{s:05d}",
        study_date=f"{year}{1 + s % 12:02d}{1 + s % 28:02d}", seed=s,
    )
    for ds in series:
        ds.PatientComments = "probe cohort" if probe else f"cohort {s % 97}"
    return [samples.dataset_bytes(ds) for ds in series]


def make_pack(args: tuple[int, str]) -> float:
    """Generate pack ``index`` (10,000 instances); returns the CPU seconds it took."""
    index, folder = args
    start = time.process_time()
    path = Path(folder) / f"pack-{index:03d}.bin"
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as out:
        for s in range(index * PACK_STUDIES, (index + 1) * PACK_STUDIES):
            for part in study_parts(s):
                out.write(struct.pack("<I", len(part)))
                out.write(part)
    os.replace(temp, path)
    return time.process_time() - start


def ensure_packs(cache: Path, count: int, workers: int) -> dict[str, float]:
    """The packs of the first ``count`` * 10,000 instances, generated where missing; what it took
    (wall seconds, and CPU seconds per 10,000 instances: the figure to estimate other sizes by)."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (cache / f"pack-{i:03d}.bin").exists()]
    if not missing:
        return {}
    count = len(missing) * PACK_STUDIES * PER_STUDY
    print(f"generating {count} instances into {cache} with {workers} process(es) ...", flush=True)
    start = time.perf_counter()
    cpu = 0.0
    with multiprocessing.Pool(workers) as pool:
        for done, seconds in enumerate(pool.imap_unordered(make_pack, [(i, str(cache)) for i in missing]), 1):
            cpu += seconds
            print(f"  {done}/{len(missing)} packs, {time.perf_counter() - start:.0f} s", flush=True)
    elapsed = time.perf_counter() - start
    print(f"generated {count} instances in {elapsed:.0f} s ({count / elapsed:.0f}/s with {workers} process(es); "
          f"{cpu / len(missing):.1f} CPU s per 10k)", flush=True)
    return {"instances": count, "wall s": elapsed, "workers": workers, "CPU s per 10k": cpu / len(missing)}


def read_pack(cache: Path, index: int) -> list[bytes]:
    data = (cache / f"pack-{index:03d}.bin").read_bytes()
    parts, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        parts.append(data[offset + 4:offset + 4 + length])
        offset += 4 + length
    return parts


# -- ingest ------------------------------------------------------------------------------------------

def upload(args: tuple[str, str, int, int, int, int, int]) -> list[tuple[float, int]]:
    """One uploader: batches ``k, k + n, ...`` of instances [start, end); (time, count) per batch."""
    url, cache, start, end, batch, k, n = args
    session = requests.Session()
    done: list[tuple[float, int]] = []
    pack_index, parts = -1, []
    first_batch = start // batch
    for b in range(first_batch, -(-end // batch)):
        if (b - first_batch) % n != k:
            continue
        lo, hi = max(start, b * batch), min(end, (b + 1) * batch)
        items = []
        for i in range(lo, hi):
            if i // (PACK_STUDIES * PER_STUDY) != pack_index:
                pack_index = i // (PACK_STUDIES * PER_STUDY)
                parts = read_pack(Path(cache), pack_index)
            items.append(parts[i % (PACK_STUDIES * PER_STUDY)])
        body, boundary = encode_multipart([("application/dicom", p) for p in items])
        answer = session.post(f"{url}/studies", data=body, timeout=600, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        if answer.status_code != 200:
            raise RuntimeError(f"STOW-RS of instances {lo}-{hi} answered {answer.status_code}: {answer.text[:500]}")
        done.append((time.monotonic(), hi - lo))
    return done


def ingest(url: str, cache: Path, start: int, end: int, batch: int, uploaders: int) -> tuple[float, list[tuple[float, int]]]:
    """Instances [start, end) by ``uploaders`` processes; (instances/s, per-batch log)."""
    t0 = time.monotonic()
    with multiprocessing.Pool(uploaders) as pool:
        logs = pool.map(upload, [(url, str(cache), start, end, batch, k, uploaders) for k in range(uploaders)])
    elapsed = time.monotonic() - t0
    merged = sorted([(t0, 0)] + [item for log in logs for item in log])
    return (end - start) / elapsed, merged


def window_rate(log: list[tuple[float, int]], lo: int, hi: int) -> float:
    """Instances/s while the count of stored instances went from ``lo`` to ``hi`` (counting from the log's start)."""
    count, t_lo, t_hi = 0, None, None
    for t, n in log:
        count += n
        if t_lo is None and count >= lo:
            t_lo, c_lo = t, count
        if count >= hi:
            t_hi, c_hi = t, count
            break
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return float("nan")
    return (c_hi - c_lo) / (t_hi - t_lo)


# -- reads -------------------------------------------------------------------------------------------

def p50_ms(session: requests.Session, url: str, repeat: int, accept: str = "application/dicom+json") -> tuple[float, int]:
    def once() -> int:
        answer = session.get(url, headers={"Accept": accept}, timeout=600)
        answer.raise_for_status()
        return len(answer.json())
    count = once()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, count


def measure_reads(url: str, repeat: int) -> dict[str, float | int]:
    session = requests.Session()
    out: dict[str, float | int] = {}
    for name, params in QUERIES.items():
        query = "&".join(p for p in (params, "limit=100") if p)  # '*' sent literally, as clients do
        out[f"QIDO {name} p50 ms"], out[f"QIDO {name} matches"] = p50_ms(session, f"{url}/studies?{query}", repeat)
    study = session.get(f"{url}/studies?PatientID=PID00000", headers={"Accept": "application/dicom+json"}).json()[0]
    study_uid = study["0020000D"]["Value"][0]
    series_uid = session.get(f"{url}/studies/{study_uid}/series").json()[0]["0020000E"]["Value"][0]
    out["series metadata p50 ms"], count = p50_ms(session, f"{url}/studies/{study_uid}/series/{series_uid}/metadata", repeat)
    assert count == PER_STUDY, count
    instances = session.get(f"{url}/instances?limit=200", headers={"Accept": "application/dicom+json"}).json()
    urls = [f"{url}/studies/{i['0020000D']['Value'][0]}/series/{i['0020000E']['Value'][0]}/instances/"
            f"{i['00080018']['Value'][0]}/frames/1" for i in instances]
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    session.get(urls[0], headers=accept).raise_for_status()
    start = time.perf_counter()
    for frame_url in urls:
        answer = session.get(frame_url, headers=accept, timeout=600)
        answer.raise_for_status()
        assert len(answer.content) > 32 * 32 * 2, len(answer.content)
    out["frames/s"] = len(urls) / (time.perf_counter() - start)
    return out


def pg_plans(database: str) -> dict[str, str]:
    """Which index PostgreSQL's plan uses for each search, and its execution time (EXPLAIN ANALYZE)."""
    import psycopg

    from dicomweb_nb.dicom.query import parse_query
    from dicomweb_nb.store.index.postgres import PostgresIndex

    index = PostgresIndex(database, pool_size=2)
    plans = {}
    try:
        for name, params in QUERIES.items():
            pairs = [tuple(p.split("=", 1)) for p in params.split("&") if p] + [("limit", "100")]
            query = parse_query(pairs, "study")
            sql, values = index.search_statement(query, limit=100)
            with psycopg.connect(index.conninfo) as conn:
                lines = [r[0] for r in conn.execute("EXPLAIN ANALYZE " + sql.replace("?", "%s"), values)]
            scans = sorted({line.strip().split(" on ")[1].split()[0] for line in lines if " Scan " in line and " on " in line})
            plans[name] = f"{', '.join(scans)}; {lines[-1].strip()}"
    finally:
        index.close()
    return plans


# -- one backend ---------------------------------------------------------------------------------------

def run_backend(name: str, sizes: list[int], args: argparse.Namespace, workdir: Path, services: Services) -> dict:
    backend = Backend(name, services)
    folder = workdir / name
    folder.mkdir()
    server = start_standalone(folder, folder / "store", backend=backend)
    results: dict = {"sizes": {}}
    loaded = 0
    # The 4-uploader batches of every size, end to end: the time spent between sizes (1 uploader,
    # reads) left out, so that the rate over the first and the last 10% of the load compare.
    full_log: list[tuple[float, int]] = []
    try:
        for size in sizes:
            print(f"[{name}] growing to {label(size)} ...", flush=True)
            bulk_end = size - SINGLE_UPLOADER_TAIL
            rate4, log = ingest(server.dicomweb_url, args.cache, loaded, bulk_end, args.batch, 4)
            shift = (full_log[-1][0] - log[0][0]) if full_log else 0.0
            full_log += [(t + shift, n) for t, n in log]
            rate1, _ = ingest(server.dicomweb_url, args.cache, bulk_end, size, args.batch, 1)
            loaded = size
            reads = measure_reads(server.dicomweb_url, args.repeat)
            row = {"ingest 4 uploaders /s": rate4, "ingest 1 uploader /s": rate1, **reads,
                   "load average": os.getloadavg()[0]}
            if name.startswith("pg") and args.plans:
                row["plans"] = pg_plans(backend_database(server))
            results["sizes"][label(size)] = row
            rounded = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
            print(f"[{name}] {label(size)}: " + json.dumps(rounded), flush=True)
            (RESULTS / f"scale-{name}.partial.json").write_text(json.dumps(results, indent=2))
        total = sum(n for _, n in full_log)
        results["first 10% /s"] = window_rate(full_log, 0, total // 10)
        results["last 10% /s"] = window_rate(full_log, total - total // 10, total)
    finally:
        server.stop()
    return results


def backend_database(server) -> str:
    return server.store_kwargs["database"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10k,100k,1M", help="store sizes in instances, growing (default 10k,100k,1M)")
    parser.add_argument("--backends", default="sqlite-local,pg-local,pg-s3")
    parser.add_argument("--s3-max", type=parse_size, default=100_000, help="largest size on pg-s3 (default 100k)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dicomweb-nb-bench-scale",
                        help="where the generated instances are kept between runs")
    parser.add_argument("--gen-workers", type=int, default=2)
    parser.add_argument("--generate-only", action="store_true", help="only make the packs of the largest size (timed)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-plans", dest="plans", action="store_false", help="skip EXPLAIN ANALYZE on PostgreSQL")
    parser.add_argument("--workdir", type=Path, default=None, help="where stores and servers live (default: a temporary folder)")
    args = parser.parse_args()
    try:
        sizes = sorted({parse_size(s) for s in args.sizes.split(",")})
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite-local", "pg-local", "pg-s3"}
    if unknown:
        parser.error(f"unknown backend(s) {sorted(unknown)}: use sqlite-local, pg-local, pg-s3")
    generation = ensure_packs(args.cache, -(-sizes[-1] // (PACK_STUDIES * PER_STUDY)), args.gen_workers)
    if args.generate_only:
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dicomweb-nb-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    services = Services(workdir, PG_SETTINGS)
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_results = {}
    started = time.time()
    try:
        for name in backends:
            chosen = [s for s in sizes if name != "pg-s3" or s <= args.s3_max]
            if not chosen:
                continue
            all_results[name] = run_backend(name, chosen, args, workdir, services)
    finally:
        services.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    all_results["elapsed s"] = time.time() - started
    if generation:
        all_results["generation"] = generation
    (RESULTS / "scale.json").write_text(json.dumps(all_results, indent=2))
    print_table(all_results)


def print_table(results: dict) -> None:
    rows = []
    for name, res in results.items():
        if not isinstance(res, dict) or "sizes" not in res:
            continue
        labels = list(res["sizes"])
        measures = [k for k in res["sizes"][labels[0]] if k not in ("plans",)]
        for measure in measures:
            values = [res["sizes"][lab][measure] for lab in labels]
            row = {"backend": name, "measure": measure}
            row.update({lab: v for lab, v in zip(labels, values)})
            if len(labels) > 1 and not measure.endswith("matches") and measure != "load average" and values[0]:
                row[f"{labels[-1]}/{labels[0]}"] = values[-1] / values[0]
            rows.append(row)
        rows.append({"backend": name, "measure": f"ingest 4 uploaders, first / last 10% of the {labels[-1]} load /s",
                     labels[-1]: f"{res['first 10% /s']:.0f} / {res['last 10% /s']:.0f}"})
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    report("scale-table", [{k: row.get(k, "") for k in keys} for row in rows])
    for name, res in results.items():
        if isinstance(res, dict) and "sizes" in res:
            for lab, row in res["sizes"].items():
                for query, plan in row.get("plans", {}).items():
                    print(f"{name} {lab} {query}: {plan}")


if __name__ == "__main__":
    main()
