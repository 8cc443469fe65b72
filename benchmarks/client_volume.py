"""Benchmark: load a 300-slice 512x512 CT series into a numpy volume.

Compares, in one run against the same Orthanc (Debian orthanc + orthanc-dicomweb):

* ours: ``dw.connect(url).volume(study, series)`` (metadata once, frames fetched concurrently);
* sequential: the plain ``dicomweb-client`` path - series metadata, then ``retrieve_instance_frames``
  for each instance one after the other, decoded with numpy and sorted by position;
* raw: the series retrieve (``GET /studies/{s}/series/{s}``, multipart/related application/dicom),
  bytes counted and thrown away - the server's raw delivery rate, no parsing at all.

Prints medians and ratios (targets: ours >= 3x faster than sequential, within 2x of raw), and
writes a JSON report next to this file. Run by hand: ``python benchmarks/client_volume.py``.
Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    if not orthanc_available():
        sys.exit("needs Orthanc with the DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb)")
    with tempfile.TemporaryDirectory() as workdir:
        orthanc = OrthancProcess(Path(workdir))
        try:
            print(f"loading {args.slices} slices of {args.size}x{args.size} into Orthanc ...", flush=True)
            study, series, pixel_bytes = load_series(orthanc, args.slices, args.size)
            url = orthanc.dicomweb_url
            ours(url, study, series, args.workers, "series")  # warm Orthanc's caches for every contender alike
            t_ours, volume = timed(lambda: ours(url, study, series, args.workers, "series"), args.repeats)
            t_frames, volume_frames = timed(lambda: ours(url, study, series, args.workers, "frames"), args.repeats)
            t_seq_id, reference = timed(lambda: sequential_dicomweb_client(url, study, series, identity=True), args.repeats)
            t_seq, _ = timed(lambda: sequential_dicomweb_client(url, study, series, identity=False), 1)
            assert np.array_equal(volume, reference), "our volume and the sequential path disagree on the pixels"
            assert np.array_equal(volume_frames, reference), "our frames volume and the sequential path disagree"
            t_raw, raw_bytes = timed(lambda: raw_series_retrieve(url, study, series, identity=True), args.repeats)
            t_raw_gzip, _ = timed(lambda: raw_series_retrieve(url, study, series, identity=False), args.repeats)
        finally:
            orthanc.stop()
    mib = 1 << 20
    report = {
        "series": {"slices": args.slices, "rows": args.size, "columns": args.size, "pixel_bytes": pixel_bytes},
        "workers": args.workers,
        "repeats": args.repeats,
        "seconds": {"ours_volume_series": t_ours, "ours_volume_frames": t_frames,
                    "dicomweb_client_sequential_default": t_seq, "dicomweb_client_sequential_identity": t_seq_id,
                    "raw_series_retrieve": t_raw, "raw_series_retrieve_gzip_accepted": t_raw_gzip},
        "MiB_per_s": {"ours_volume_series": pixel_bytes / mib / t_ours, "ours_volume_frames": pixel_bytes / mib / t_frames,
                      "raw_series_retrieve": raw_bytes / mib / t_raw},
        "ratios": {"sequential_default_over_ours": t_seq / t_ours, "sequential_identity_over_ours": t_seq_id / t_ours,
                   "sequential_identity_over_ours_frames": t_seq_id / t_frames, "ours_over_raw": t_ours / t_raw},
        "targets_met": {"3x_faster_than_sequential": t_seq_id / t_ours >= 3.0, "within_2x_of_raw": t_ours / t_raw <= 2.0},
    }
    print(f"pixels: {pixel_bytes / mib:.1f} MiB; raw series retrieve: {raw_bytes / mib:.1f} MiB")
    rows = [
        (f"ours: volume(method='series'), {args.workers} workers", t_ours, pixel_bytes),
        (f"ours: volume(method='frames'), {args.workers} workers", t_frames, pixel_bytes),
        ("dicomweb-client sequential frames, identity", t_seq_id, pixel_bytes),
        ("dicomweb-client sequential frames, as shipped (gzip)", t_seq, pixel_bytes),
        ("raw series retrieve, identity", t_raw, raw_bytes),
        ("raw series retrieve, gzip accepted", t_raw_gzip, raw_bytes),
    ]
    for name, seconds, size in rows:
        print(f"{name:<52} median {seconds:8.3f} s {size / mib / seconds:9.1f} MiB/s")
    print(f"sequential (identity) / ours = {t_seq_id / t_ours:.2f}x; sequential (as shipped) / ours = {t_seq / t_ours:.1f}x "
          f"(target >= 3)")
    print(f"ours / raw series retrieve = {t_ours / t_raw:.2f}x (target <= 2)")
    out = Path(__file__).with_name("client_volume.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
