"""Issue 3 benchmark: WADO-RS metadata, retrieve, frames and rendered, ours vs Orthanc.

    python benchmarks/bench_wado.py [--slices 300] [--size 512]

One generated CT series (default 300 slices of 512x512, 16-bit) is stored in both servers; then
the same WADO-RS requests run against each. The loopback ceiling is measured with the same HTTP
client against a trivial server streaming from memory.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from common import median_ms, report, start_both, stow, timed

from dicomweb_nb import samples

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def download(url: str, accept: str, session: requests.Session | None = None) -> int:
    session = session or requests.Session()
    total = 0
    with session.get(url, headers={"Accept": accept}, stream=True) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_content(1 << 20):
            total += len(chunk)
    return total


def loopback_ceiling(megabytes: int = 512) -> float:
    """MB/s the same client reads from a server that writes a prepared buffer as fast as it can."""
    payload = b"\0" * (1 << 20)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (megabytes << 20))
        for _ in range(megabytes):
            conn.sendall(payload)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    start = time.perf_counter()
    size = download(f"http://127.0.0.1:{port}/", "*/*")
    elapsed = time.perf_counter() - start
    listener.close()
    return size / elapsed / 1e6


def frames_per_second(base: str, study: str, series: str, sops: list[str], workers: int) -> float:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=workers, pool_maxsize=workers)
    session.mount("http://", adapter)

    def one(sop: str) -> None:
        r = session.get(f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1", headers={"Accept": FRAME_OCTETS})
        r.raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, sops))
    return len(sops) / (time.perf_counter() - start)


def rendered_per_second(base: str, study: str, series: str, sops: list[str], media_type: str) -> float:
    session = requests.Session()
    start = time.perf_counter()
    for sop in sops:
        r = session.get(f"{base}/studies/{study}/series/{series}/instances/{sop}/rendered", headers={"Accept": media_type})
        r.raise_for_status()
    return len(sops) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"generating {args.slices} slices of {args.size}x{args.size} ...", flush=True)
    datasets = samples.generate_ct_series(args.slices, rows=args.size, columns=args.size)
    blobs = [samples.dataset_bytes(ds) for ds in datasets]
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    sops = [ds.SOPInstanceUID for ds in datasets]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ours, orthanc = start_both(Path(tmp))
        try:
            for server in (ours, orthanc):
                stow(server.dicomweb_url, blobs, batch=25)
            servers = {"ours": ours.dicomweb_url, "orthanc": orthanc.dicomweb_url}

            meta = {}
            for name, base in servers.items():
                session = requests.Session()
                url = f"{base}/studies/{study}/series/{series}/metadata"
                meta[name] = median_ms(
                    timed(
                        lambda session=session, url=url: session.get(
                            url, headers={"Accept": "application/dicom+json"}
                        ).raise_for_status(),
                        args.repeat,
                    )
                )
            rows.append({"measure": f"series metadata, {args.slices} instances (ms p50)", "ours": meta["ours"],
                         "orthanc": meta["orthanc"], "ratio": meta["ours"] / meta["orthanc"], "target": "<= 0.25"})

            rate = {}
            for name, base in servers.items():
                url = f"{base}/studies/{study}/series/{series}"
                size = download(url, DICOM_ANY)
                best = min(timed(lambda url=url: download(url, DICOM_ANY), max(3, args.repeat // 3)))
                rate[name] = size / best / 1e6
            ceiling = loopback_ceiling()
            rows.append({"measure": "series retrieve (MB/s)", "ours": rate["ours"], "orthanc": rate["orthanc"],
                         "ratio": rate["ours"] / rate["orthanc"], "target": ">= 1"})
            rows.append({"measure": "series retrieve / loopback ceiling", "ours": rate["ours"] / ceiling,
                         "orthanc": rate["orthanc"] / ceiling, "ratio": ceiling, "target": ">= 0.5 (ratio col: ceiling MB/s)"})

            for workers in (1, 4):
                fps = {name: frames_per_second(base, study, series, sops, workers) for name, base in servers.items()}
                rows.append({"measure": f"frames/s, {workers} client(s)", "ours": fps["ours"], "orthanc": fps["orthanc"],
                             "ratio": fps["ours"] / fps["orthanc"], "target": ">= 2"})

            subset = sops[:: max(1, len(sops) // 50)]
            for media_type in ("image/png", "image/jpeg"):
                try:
                    rps = {name: rendered_per_second(base, study, series, subset, media_type) for name, base in servers.items()}
                except requests.HTTPError as exc:
                    rows.append(
                        {
                            "measure": f"rendered {media_type}/s",
                            "ours": f"error {exc.response.status_code}",
                            "orthanc": "",
                            "ratio": "",
                            "target": ">= 1",
                        }
                    )
                    continue
                rows.append({"measure": f"rendered {media_type} per s", "ours": rps["ours"], "orthanc": rps["orthanc"],
                             "ratio": rps["ours"] / rps["orthanc"], "target": ">= 1"})
            report("wado", rows)
        finally:
            ours.stop()
            orthanc.stop()


if __name__ == "__main__":
    main()
