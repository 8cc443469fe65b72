"""Shared pieces of the benchmarks: servers started side by side, generated data, timing, reports.

Every benchmark runs our server and a real Orthanc (Debian orthanc + orthanc-dicomweb) on the same
data in one run and prints ratios, so a noisy machine still compares like with like.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.orthanc import OrthancProcess, orthanc_available  # noqa: E402
from tests.fixtures.ourserver import start_standalone  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median_ms(samples: Iterable[float]) -> float:
    return statistics.median(samples) * 1000


def report(name: str, rows: list[dict]) -> None:
    """Print a table and write benchmarks/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
    if not rows:
        return
    keys = list(rows[0])
    widths = [max(len(str(k)), *(len(_fmt(r.get(k))) for r in rows)) for k in keys]
    print("  ".join(str(k).ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(k)).ljust(w) for k, w in zip(keys, widths)))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def stow(url: str, blobs: list[bytes], batch: int = 50) -> float:
    """STOW-RS Part 10 files in batches of ``batch``; returns instances per second."""
    import requests

    from dicomweb_nb.dicom.multipart import encode_multipart

    session = requests.Session()
    start = time.perf_counter()
    for i in range(0, len(blobs), batch):
        body, boundary = encode_multipart([("application/dicom", b) for b in blobs[i:i + batch]])
        answer = session.post(f"{url}/studies", data=body,
                              headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                                       "Accept": "application/dicom+json"})
        answer.raise_for_status()
    return len(blobs) / (time.perf_counter() - start)


def start_both(workdir: Path):
    """Our standalone server and an Orthanc, both on empty storage under ``workdir``."""
    if not orthanc_available():
        raise SystemExit("Orthanc with the DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ours").mkdir(exist_ok=True)
    ours = start_standalone(workdir / "ours")
    orthanc = OrthancProcess(workdir / "orthanc")
    return ours, orthanc
