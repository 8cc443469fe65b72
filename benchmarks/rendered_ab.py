"""Rendered images before / after: our server from two or more checkouts, requests interleaved.

    python benchmarks/rendered_ab.py /work/main .            # main's code against this checkout's
    python benchmarks/rendered_ab.py --requests 300 --slices 150 /work/main .

Starts ``dicomweb-nb serve --workers 1`` once per checkout (its code by PYTHONPATH), stores the same
generated 512x512 16-bit CT series in each, asks each for one frame of every slice (each then
holds the rows), and sends the same requests to each in turn, one request at a time: on a shared
machine whose load changes from second to second, each figure is then taken under the same load.
Rows: every slice rendered once (the slice's first render), one slice again and again, one slice
with a new window each request (a window/level drag), and a single-frame octet-stream request for
comparison (a request's fixed cost). Prints p10 / p50 / p90 latency and the server CPU per request
(user + system time from /proc).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests
from bench_perf import FRAME_OCTETS, process_tree_cpu, stow_batches

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicomweb_nb import samples
from tests.fixtures.ourserver import start_standalone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", help="dicomweb-nb checkouts whose code to serve")
    parser.add_argument("--requests", type=int, default=200, help="requests per row (the first-render row: one per slice)")
    parser.add_argument("--slices", type=int, default=100)
    args = parser.parse_args()
    series = samples.generate_ct_series(args.slices, rows=512, columns=512, seed=11)
    blobs = [samples.dataset_bytes(ds) for ds in series]
    study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    sops = [ds.SOPInstanceUID for ds in series]
    names = [str(Path(c).resolve()) for c in args.checkouts]
    with tempfile.TemporaryDirectory() as tmp:
        servers = []
        try:
            for k, checkout in enumerate(names):
                folder = Path(tmp) / f"server{k}"
                folder.mkdir()
                servers.append(start_standalone(folder, None, "--workers", "1", env={"PYTHONPATH": checkout}))
            session = requests.Session()

            def instance(base: str, i: int) -> str:
                return f"{base}/studies/{study}/series/{series_uid}/instances/{sops[i % len(sops)]}"

            for server in servers:
                stow_batches(server.dicomweb_url, blobs, 10, session)
                for i in range(len(sops)):
                    session.get(f"{instance(server.dicomweb_url, i)}/frames/1",
                                headers={"Accept": FRAME_OCTETS}).raise_for_status()
            rows = {
                "first render of each slice": (len(sops), lambda b, i: f"{instance(b, i)}/rendered", "image/jpeg"),
                "one slice again and again": (args.requests, lambda b, i: f"{instance(b, 0)}/rendered", "image/jpeg"),
                "one slice, new window each": (args.requests, lambda b, i: f"{instance(b, 0)}/rendered"
                                               f"?window={-1000 + i * 1000 // args.requests},400,linear", "image/jpeg"),
                "one frame, octet-stream": (args.requests, lambda b, i: f"{instance(b, i)}/frames/1", FRAME_OCTETS),
            }
            print(f"load average {os.getloadavg()[0]:.1f}")
            for label, (count, url, accept) in rows.items():
                latencies: list[list[float]] = [[] for _ in servers]
                before = [process_tree_cpu(s.process.pid) for s in servers]
                for i in range(count):
                    for k, server in enumerate(servers):
                        start = time.perf_counter()
                        answer = session.get(url(server.dicomweb_url, i), headers={"Accept": accept})
                        answer.raise_for_status()
                        latencies[k].append(time.perf_counter() - start)
                for k, server in enumerate(servers):
                    cpu = (process_tree_cpu(server.process.pid) - before[k]) / count * 1000
                    q = sorted(latencies[k])
                    print(f"{label:28s} {names[k][-28:]:28s} p10 {q[count // 10] * 1000:6.2f}  p50 {q[count // 2] * 1000:6.2f}  "
                          f"p90 {q[9 * count // 10] * 1000:6.2f} ms   server CPU {cpu:5.2f} ms/request", flush=True)
            print(f"load average {os.getloadavg()[0]:.1f}")
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
