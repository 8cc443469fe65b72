"""Benchmark: load a 300-slice 512x512 CT series into a numpy volume.

Compares, in one run against the same Orthanc (Debian orthanc + orthanc-dicomweb):

* ours: ``dw.connect(url).volume(study, series)`` (metadata once, frames fetched concurrently);
* sequential: the plain ``dicomweb-client`` path - series metadata, then ``retrieve_instance_frames``
  for each instance one after the other, decoded with numpy and sorted by position;
* raw: the series retrieve (``GET /studies/{s}/series/{s}``, multipart/related application/dicom),
  bytes counted and thrown away - the server's raw delivery rate, no parsing at all.

Prints medians and ratios (targets: ours >= 3x faster than sequential, within 2x of raw), and
writes benchmarks/results/client_volume.json. Run by hand: ``python benchmarks/client_volume.py``.
Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dicomweb_nb as dw  # noqa: E402
from dicomweb_nb import samples  # noqa: E402
from tests.fixtures.orthanc import OrthancProcess, orthanc_available  # noqa: E402


def load_series(orthanc: OrthancProcess, n_slices: int, size: int) -> tuple[str, str, int]:
    datasets = samples.generate_ct_series(n_slices=n_slices, rows=size, columns=size, seed=7)
    pixel_bytes = sum(len(ds.PixelData) for ds in datasets)
    with requests.Session() as session:
        for ds in datasets:  # Orthanc's REST upload: fastest way in, not what is measured
            session.post(f"{orthanc.url}/instances", data=samples.dataset_bytes(ds), timeout=60).raise_for_status()
    return datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, pixel_bytes


def ours(url: str, study: str, series: str, workers: int, method: str) -> np.ndarray:
    with dw.connect(url, max_workers=workers, progress=False) as client:
        return client.volume(study, series, rescale=False, method=method).array


def sequential_dicomweb_client(url: str, study: str, series: str, *, identity: bool) -> np.ndarray:
    """dicomweb-client as documented; ``identity`` asks for uncompressed answers (its default session
    accepts gzip, which Orthanc then applies to every frame)."""
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if identity:
        session.headers["Accept-Encoding"] = "identity"
    client = DICOMwebClient(url, session=session)
    metadata = client.retrieve_series_metadata(study, series)
    slices = []
    for meta in metadata:
        sop = meta["00080018"]["Value"][0]
        rows, columns = meta["00280010"]["Value"][0], meta["00280011"]["Value"][0]
        dtype = np.int16 if meta.get("00280103", {}).get("Value", [0])[0] else np.uint16
        frame = client.retrieve_instance_frames(study, series, sop, [1], media_types=("application/octet-stream",))[0]
        position = np.array(meta["00200032"]["Value"], dtype=float)
        slices.append((position[2], np.frombuffer(frame, dtype=dtype)[: rows * columns].reshape(rows, columns)))
    slices.sort(key=lambda item: item[0])
    return np.stack([array for _, array in slices])


def raw_series_retrieve(url: str, study: str, series: str, *, identity: bool) -> int:
    headers = {"Accept": 'multipart/related; type="application/dicom"'}
    if identity:
        headers["Accept-Encoding"] = "identity"
    total = 0
    with requests.get(f"{url}/studies/{study}/series/{series}", headers=headers, stream=True, timeout=300) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_content(1 << 20):
            total += len(chunk)
    return total


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(name: str, url: str, study: str, series: str, pixel_bytes: int, args: argparse.Namespace) -> list[dict]:
    ours(url, study, series, args.workers, "auto")  # warm the server's caches for every contender alike
    t_auto, volume = timed(lambda: ours(url, study, series, args.workers, "auto"), args.repeats)
    t_series, volume_series = timed(lambda: ours(url, study, series, args.workers, "series"), args.repeats)
    t_frames, volume_frames = timed(lambda: ours(url, study, series, args.workers, "frames"), args.repeats)
    t_seq_id, reference = timed(lambda: sequential_dicomweb_client(url, study, series, identity=True), args.repeats)
    t_seq, _ = timed(lambda: sequential_dicomweb_client(url, study, series, identity=False), 1)
    for got in (volume, volume_series, volume_frames):
        assert np.array_equal(got, reference), "our volume and the sequential path disagree on the pixels"
    t_raw, raw_bytes = timed(lambda: raw_series_retrieve(url, study, series, identity=True), args.repeats)
    mib = 1 << 20
    rows = [
        ("ours: volume() (auto)", t_auto, pixel_bytes), ("ours: volume(method='series')", t_series, pixel_bytes),
        ("ours: volume(method='frames')", t_frames, pixel_bytes),
        ("dicomweb-client sequential frames, identity", t_seq_id, pixel_bytes),
        ("dicomweb-client sequential frames, as shipped", t_seq, pixel_bytes),
        ("raw series retrieve (bytes only)", t_raw, raw_bytes),
    ]
    out = [{"server": name, "path": label, "seconds": seconds, "MiB/s": size / mib / seconds} for label, seconds, size in rows]
    out.append({"server": name, "path": "RATIO sequential(identity) / ours(auto)  [target >= 3]", "seconds": t_seq_id / t_auto,
                "MiB/s": ""})
    out.append({"server": name, "path": "RATIO ours(auto) / raw series retrieve  [target <= 2]", "seconds": t_auto / t_raw,
                "MiB/s": ""})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    if not orthanc_available():
        sys.exit("needs Orthanc with the DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb)")
    from common import report

    from tests.fixtures.ourserver import start_standalone

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as workdir:
        orthanc = OrthancProcess(Path(workdir) / "orthanc")
        (Path(workdir) / "ours").mkdir()
        server = start_standalone(Path(workdir) / "ours")
        try:
            print(f"loading {args.slices} slices of {args.size}x{args.size} into Orthanc and our server ...", flush=True)
            study, series, pixel_bytes = load_series(orthanc, args.slices, args.size)
            copy_series(orthanc, server.dicomweb_url, study)
            rows += measure("orthanc", orthanc.dicomweb_url, study, series, pixel_bytes, args)
            rows += measure("ours", server.dicomweb_url, study, series, pixel_bytes, args)
        finally:
            orthanc.stop()
            server.stop()
    report("client_volume", rows)


def copy_series(orthanc: OrthancProcess, target_url: str, study: str) -> None:
    """Our server gets the exact files Orthanc holds (retrieved from it, stored by STOW)."""
    with dw.connect(orthanc.dicomweb_url, progress=False) as source, dw.connect(target_url, progress=False) as target:
        source.retrieve(study, to=target)


if __name__ == "__main__":
    main()
