"""Issue 2 benchmark: STOW-RS ingest rate and QIDO-RS study search latency, ours vs Orthanc.

    python benchmarks/bench_ingest_qido.py [--instances 10000] [--batch 50]

Loads the same generated store (studies of 20 small CT instances, varied names and dates) into
both servers over STOW-RS, then runs the same QIDO-RS study searches against each.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import requests
from common import median_ms, report, start_both, stow, timed

from dicomweb_nb import samples

FAMILY = ["SMITH", "JONES", "TAYLOR", "BROWN", "WILSON", "EVANS", "THOMAS", "JOHNSON", "ROBERTS", "WALKER"]


def generate(n_instances: int, per_study: int = 20) -> list[list[bytes]]:
    """Batches of Part 10 bytes, one list per study."""
    studies = []
    for s in range(max(1, n_instances // per_study)):
        family = FAMILY[s % len(FAMILY)]
        series = samples.generate_ct_series(
            per_study, rows=32, columns=32, patient_name=f"{family}^PAT{s:04d}", patient_id=f"PID{s:05d}",
            study_date=f"20{10 + s % 14:02d}{1 + s % 12:02d}{1 + s % 28:02d}", seed=s,
        )
        studies.append([samples.dataset_bytes(ds) for ds in series])
    return studies


QUERIES = {
    "PatientName wildcard": {"PatientName": "JON*"},
    "StudyDate range": {"StudyDate": "20150101-20161231"},
    "PatientID": {"PatientID": "PID00042"},
    "all studies, limit 100": {"limit": "100"},
}


def query_latencies(url: str, repeat: int) -> dict[str, tuple[float, int]]:
    session = requests.Session()
    out = {}
    for name, params in QUERIES.items():
        query = "&".join(f"{k}={v}" for k, v in params.items())  # '*' sent literally: Orthanc 1.10 does not decode %2A

        def run(query=query):
            r = session.get(f"{url}/studies?{query}", headers={"Accept": "application/dicom+json"})
            r.raise_for_status()
            run.count = len(r.json())

        samples_ = timed(run, repeat)
        out[name] = (median_ms(samples_), run.count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(f"generating {args.instances} instances ...", flush=True)
    studies = generate(args.instances)
    with tempfile.TemporaryDirectory() as tmp:
        ours, orthanc = start_both(Path(tmp))
        try:
            rows = []
            flat = [part for study in studies for part in study]
            rate_ours = stow(ours.dicomweb_url, flat, args.batch)
            rate_orthanc = stow(orthanc.dicomweb_url, flat, args.batch)
            rows.append({"measure": "STOW-RS ingest (instances/s, higher is better)", "ours": rate_ours,
                         "orthanc": rate_orthanc, "ours/orthanc": rate_ours / rate_orthanc, "target": ">= 1"})
            lat_ours = query_latencies(ours.dicomweb_url, args.repeat)
            lat_orthanc = query_latencies(orthanc.dicomweb_url, args.repeat)
            for name in QUERIES:
                (a, na), (b, nb) = lat_ours[name], lat_orthanc[name]
                rows.append({"measure": f"QIDO {name} p50 ms (matches {na}/{nb})", "ours": a, "orthanc": b,
                             "ours/orthanc": a / b, "target": "<= 1"})
            report("ingest_qido", rows)
        finally:
            ours.stop()
            orthanc.stop()


if __name__ == "__main__":
    main()
