"""Issue 13 benchmark: what users do, ours (one worker and the default) vs a real Orthanc, one run.

    python benchmarks/bench_perf.py            # the full table (10,000 small instances, 300 x 512x512)
    python benchmarks/bench_perf.py --quick    # a fast check (1,000 small instances, 60 x 512x512)
    python benchmarks/bench_perf.py --quick --rows rendered frames   # only those rows (all data loaded)

Starts ``dicomweb-nb serve --workers 1``, ``dicomweb-nb serve`` with its default worker count, and
Orthanc 1.10 + DICOMweb 1.7, each on empty storage, loads the same generated data into each over
STOW-RS, runs the same requests against each, and prints one table: the figure for each server,
the ratio ours / Orthanc, the issue's target, and the server CPU seconds each operation cost
(user + system time of the server process and all its children, read from /proc before and after).

What each row measures (wall clock on the client side, over loopback):
- STOW small, N uploaders: 10,000 generated 32x32 CT instances (studies of 20), batches of 50 per
  request, split between N concurrent uploaders; instances per second for the whole load.
- STOW one file per request: p50 latency of a STOW-RS request holding one small instance.
- STOW volume, 2 uploaders: a 300-slice 512x512 16-bit series (batches of 10), MB/s of Part 10 bytes.
- frames/s: one single-frame WADO-RS request per instance of the 512x512 series
  (application/octet-stream), from 1 and from 4 concurrent clients.
- rendered JPEG p50: ``.../instances/{i}/rendered`` as image/jpeg, one client, p50 latency of as many
  requests as there are slices, three ways: every slice once (a slice's first render), one slice again
  and again (ours answers those from its cache of rendered images: labelled so), one slice with a new
  ``window`` each request (a window/level drag, rendered anew each time). The servers take turns
  request by request in these rows, so a burst of load on the shared machine meets them all alike.
- QIDO: p50 latency of the study searches of bench_ingest_qido.py on the 10,000-instance store.
- series metadata p50, series retrieve MB/s (multipart application/dicom, transfer-syntax=*).
- client volume: ``dw.connect(url).volume(study, series)`` of the 512x512 series against the raw
  series retrieve of the same server (ratio, target <= 2).

Every answer is checked (status, counts, byte sizes, pixel equality of the volume), so a fast
wrong answer cannot pass. Results go to benchmarks/results/perf.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from common import report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dicomweb_nb as dw
from dicomweb_nb import samples
from dicomweb_nb.dicom.multipart import encode_multipart
from tests.fixtures.orthanc import OrthancProcess, orthanc_available
from tests.fixtures.ourserver import BIN, start_standalone

FAMILY = ["SMITH", "JONES", "TAYLOR", "BROWN", "WILSON", "EVANS", "THOMAS", "JOHNSON", "ROBERTS", "WALKER"]
QUERIES = {
    "PatientName wildcard": "PatientName=JON*",
    "StudyDate range": "StudyDate=20150101-20161231",
    "PatientID": "PatientID=PID00042",
    "all studies, limit 100": "limit=100",
}
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- servers ---------------------------------------------------------------------------------------
def process_tree_cpu(root_pid: int) -> float:
    """User + system CPU seconds of a process and every live descendant (worker processes included)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


@dataclass
class Contender:
    name: str
    url: str  # DICOMweb root
    pid: int
    stop: Callable[[], None]

    def cpu(self) -> float:
        return process_tree_cpu(self.pid)


def serve_supports_workers() -> bool:
    usage = subprocess.run([str(BIN / "dicomweb-nb"), "serve", "--help"], capture_output=True, text=True).stdout
    return "--workers" in usage


def start_contenders(workdir: Path, only: list[str], baseline: str | None = None) -> list[Contender]:
    """Our server with one worker and the default, Orthanc, and with ``baseline`` (a checkout of
    dicomweb-nb, e.g. main's) our server run from that code with one worker: before and after in one run."""
    contenders = []
    workers = serve_supports_workers()
    variants = [("ours, 1 worker", ["--workers", "1"]), ("ours, default workers", [])] if workers else [("ours", [])]
    variants = [(name, extra, None) for name, extra in variants]
    if baseline:
        variants.insert(0, ("baseline, 1 worker", ["--workers", "1"], {"PYTHONPATH": str(Path(baseline).resolve())}))
    for name, extra, env in variants:
        if only and not any(o in name for o in only):
            continue
        folder = workdir / name.replace(" ", "_").replace(",", "")
        folder.mkdir()
        server = start_standalone(folder, None, *extra, env=env)
        contenders.append(Contender(name, server.dicomweb_url, server.process.pid, server.stop))
    if not only or "orthanc" in only:
        orthanc = OrthancProcess(workdir / "orthanc")
        contenders.append(Contender("orthanc", orthanc.dicomweb_url, orthanc.process.pid, orthanc.stop))
    return contenders


# -- data ------------------------------------------------------------------------------------------
def small_studies(n_instances: int, per_study: int = 20) -> list[bytes]:
    blobs = []
    for s in range(max(1, n_instances // per_study)):
        series = samples.generate_ct_series(
            per_study, rows=32, columns=32, patient_name=f"{FAMILY[s % len(FAMILY)]}^PAT{s:04d}",
            patient_id=f"PID{s:05d}", study_date=f"20{10 + s % 14:02d}{1 + s % 12:02d}{1 + s % 28:02d}", seed=s,
        )
        blobs += [samples.dataset_bytes(ds) for ds in series]
    return blobs


def stow_batches(url: str, blobs: list[bytes], batch: int, session: requests.Session | None = None) -> None:
    session = session or requests.Session()
    for i in range(0, len(blobs), batch):
        body, boundary = encode_multipart([("application/dicom", b) for b in blobs[i:i + batch]])
        answer = session.post(f"{url}/studies", data=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        if answer.status_code != 200:
            raise AssertionError(f"STOW answered {answer.status_code}: {answer.text[:300]}")
        stored = answer.json().get("00081199", {}).get("Value", [])
        if len(stored) != len(blobs[i:i + batch]):
            raise AssertionError(f"STOW stored {len(stored)} of {len(blobs[i:i + batch])}")


def parallel_stow(url: str, blobs: list[bytes], uploaders: int, batch: int) -> float:
    """Seconds to store ``blobs`` split round-robin by batch between ``uploaders`` concurrent clients."""
    batches = [blobs[i:i + batch] for i in range(0, len(blobs), batch)]
    shares = [[b for chunk in batches[k::uploaders] for b in chunk] for k in range(uploaders)]
    start = time.perf_counter()
    with ThreadPoolExecutor(uploaders) as pool:
        list(pool.map(lambda share: stow_batches(url, share, batch), shares))
    return time.perf_counter() - start


def count_instances(url: str) -> int:
    answer = requests.get(f"{url}/instances?includefield=00080018&limit=100000", headers={"Accept": "application/dicom+json"})
    answer.raise_for_status()
    return len(answer.json())


def p50(fn: Callable[[], object], repeat: int) -> float:
    fn()
    samples_ = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples_.append(time.perf_counter() - start)
    return statistics.median(samples_)


# -- the table -------------------------------------------------------------------------------------
class Table:
    """Rows of one figure per contender, each with its server CPU per operation."""

    def __init__(self, contenders: list[Contender], selected: list[str] | None = None):
        self.contenders = contenders
        self.selected = selected or []
        self.rows: list[dict] = []

    def _skipped(self, label: str) -> bool:
        return bool(self.selected) and not any(s.lower() in label.lower() for s in self.selected)

    def measure(self, label: str, unit: str, target: str,
                run: Callable[[Contender], tuple[float, int]], *, loads_data: bool = False) -> None:
        """``run(contender)`` returns (figure, operations); CPU is taken around it. A row not selected
        is skipped, or run unmeasured when later rows need the data it ``loads_data``."""
        if self._skipped(label):
            if loads_data:
                for contender in self.contenders:
                    run(contender)
            return
        figures, cpu = {}, {}
        for contender in self.contenders:
            before = contender.cpu()
            figure, operations = run(contender)
            cpu[contender.name] = (contender.cpu() - before) / max(1, operations) * 1000
            figures[contender.name] = figure
        self._record(label, unit, target, figures, cpu)

    def measure_interleaved(self, label: str, target: str, request: Callable[[Contender, int], None], count: int) -> None:
        """p50 latency (ms) of ``request(contender, i)`` for i in 1..count-1 (0 is a warm-up), the
        contenders taking turns request by request: on a shared machine each then meets the same load."""
        if self._skipped(label):
            return
        seconds: dict[str, list[float]] = {c.name: [] for c in self.contenders}
        before = {c.name: c.cpu() for c in self.contenders}
        for i in range(count):
            for contender in self.contenders:
                start = time.perf_counter()
                request(contender, i)
                if i:
                    seconds[contender.name].append(time.perf_counter() - start)
        cpu = {c.name: (c.cpu() - before[c.name]) / count * 1000 for c in self.contenders}
        self._record(label, "ms", target, {name: statistics.median(s) * 1000 for name, s in seconds.items()}, cpu)

    def _record(self, label: str, unit: str, target: str, figures: dict[str, float], cpu: dict[str, float]) -> None:
        row: dict = {"measure": f"{label} ({unit})", "target": target}
        for name, figure in figures.items():
            row[name] = figure
            row[f"cpu ms/op {name}"] = cpu[name]
        orthanc = figures.get("orthanc")
        for name, figure in figures.items():
            if name != "orthanc" and orthanc:
                row[f"{name} / orthanc"] = figure / orthanc
        self.rows.append(row)
        ratio_text = ", ".join(f"{k}={v:.3g}" for k, v in row.items() if k.endswith("/ orthanc"))
        print(f"{row['measure']}: " + ", ".join(f"{n}={f:.4g}" for n, f in figures.items()) + f"  [{ratio_text}] target {target}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 small instances and 60 large slices")
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=[], help="contenders to run (substrings: 1, default, orthanc)")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="also run our server from this checkout's code "
                        "(one worker), e.g. /work/main: before and after in one run")
    parser.add_argument("--rows", nargs="*", default=[],
                        help="rows to measure (substrings of their labels, e.g. rendered frames); the data the "
                             "others would load (STOW rows) is still loaded, unmeasured")
    args = parser.parse_args()
    n_small = args.instances or (1_000 if args.quick else 10_000)
    n_slices = args.slices or (60 if args.quick else 300)
    repeat = args.repeat or (10 if args.quick else 30)
    if not orthanc_available():
        raise SystemExit("Orthanc with the DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")

    print(f"generating {n_small} small instances and {n_slices} x {args.size}x{args.size} ...", flush=True)
    small = small_studies(n_small)
    half = len(small) // 2
    big = samples.generate_ct_series(n_slices, rows=args.size, columns=args.size, seed=11)
    big_blobs = [samples.dataset_bytes(ds) for ds in big]
    study, series = big[0].StudyInstanceUID, big[0].SeriesInstanceUID
    sops = [ds.SOPInstanceUID for ds in big]
    frame_bytes = args.size * args.size * 2
    single = [samples.dataset_bytes(ds) for ds in samples.generate_ct_series(  # for the one-per-request latency
        repeat + 1, rows=32, columns=32, patient_name="SINGLE^UPLOAD", patient_id="SINGLE", seed=99)]

    with tempfile.TemporaryDirectory() as tmp:
        contenders = start_contenders(Path(tmp), args.only, args.baseline)
        table = Table(contenders, args.rows)
        try:
            # Small instances: first half by one uploader, second half by two (a fresh SOP set each).
            def stow_one_uploader(c: Contender) -> tuple[float, int]:
                return half / parallel_stow(c.url, small[:half], 1, 50), half

            def stow_two_uploaders(c: Contender) -> tuple[float, int]:
                return (len(small) - half) / parallel_stow(c.url, small[half:], 2, 50), len(small) - half

            table.measure("STOW-RS small instances, 1 uploader", "instances/s", ">= 1.5x", stow_one_uploader, loads_data=True)
            table.measure("STOW-RS small instances, 2 uploaders", "instances/s", ">= 1.5x; >= 1.6x our 1", stow_two_uploaders,
                          loads_data=True)
            for c in contenders:
                stored = count_instances(c.url)
                if stored != len(small):
                    raise AssertionError(f"{c.name} holds {stored} instances, {len(small)} were stored")

            def stow_single(c: Contender) -> tuple[float, int]:
                session = requests.Session()
                it = iter(single)
                return p50(lambda: stow_batches(c.url, [next(it)], 1, session), repeat) * 1000, repeat + 1

            table.measure("STOW-RS one file per request, p50", "ms", "<= 0.8x", stow_single)

            def stow_volume(c: Contender) -> tuple[float, int]:
                seconds = parallel_stow(c.url, big_blobs, 2, 10)
                return sum(map(len, big_blobs)) / seconds / 1e6, len(big_blobs)

            table.measure(f"STOW-RS {args.size}x{args.size} volume, 2 uploaders", "MB/s", ">= 1.5x", stow_volume,
                          loads_data=True)

            for clients in (1, 4):
                def frames(c: Contender, clients: int = clients) -> tuple[float, int]:
                    session = requests.Session()
                    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=clients, pool_maxsize=clients))

                    def one(sop: str) -> None:
                        r = session.get(f"{c.url}/studies/{study}/series/{series}/instances/{sop}/frames/1",
                                        headers={"Accept": FRAME_OCTETS})
                        r.raise_for_status()
                        if len(r.content) < frame_bytes:
                            raise AssertionError(f"frame answer of {len(r.content)} bytes")

                    one(sops[0])
                    start = time.perf_counter()
                    with ThreadPoolExecutor(clients) as pool:
                        list(pool.map(one, sops))
                    return len(sops) / (time.perf_counter() - start), len(sops)

                table.measure(f"frames, {len(sops)} single-frame requests, {clients} client(s)", "frames/s",
                              ">= 4x" if clients == 1 else ">= 5x", frames)

            # Rendered JPEGs, one client, as many requests as there are slices: every slice once (none
            # rendered before by that server), one slice again and again (a viewer scrolling back and
            # forth: ours answers from its cache of rendered images), and one slice with a new window
            # each time (a window/level drag: rendered anew). The contenders take turns request by request.
            sessions = {c.name: requests.Session() for c in contenders}
            answers: dict[str, set[bytes]] = {}

            def rendered(c: Contender, sop: str, query: str = "") -> None:
                r = sessions[c.name].get(f"{c.url}/studies/{study}/series/{series}/instances/{sop}/rendered{query}",
                                         headers={"Accept": "image/jpeg"})
                r.raise_for_status()
                if r.content[:2] != b"\xff\xd8":
                    raise AssertionError("rendered answer is not a JPEG")
                answers.setdefault(c.name, set()).add(r.content)

            def different_images(label: str) -> None:
                for name, images in answers.items():
                    if len(images) < 2:
                        raise AssertionError(f"{name} answered one image to different rendered requests ({label})")
                answers.clear()

            table.measure_interleaved("rendered image/jpeg, a new slice each request, p50", "<= 0.4x",
                                      lambda c, i: rendered(c, sops[i]), len(sops))
            different_images("slices")
            table.measure_interleaved("rendered image/jpeg, one slice again and again (ours: from its cache), p50",
                                      "<= 0.4x", lambda c, i: rendered(c, sops[0]), len(sops))
            answers.clear()
            table.measure_interleaved("rendered image/jpeg, one slice, a new window each request, p50", "<= 0.4x",
                                      lambda c, i: rendered(c, sops[0], f"?window={-1000 + i * 1000 // len(sops)},400,linear"),
                                      len(sops))
            different_images("windows")

            for name, query in QUERIES.items():
                def qido(c: Contender, query: str = query) -> tuple[float, int]:
                    session = requests.Session()
                    counts = set()

                    def one() -> None:
                        r = session.get(f"{c.url}/studies?{query}", headers={"Accept": "application/dicom+json"})
                        r.raise_for_status()
                        counts.add(len(r.json()))

                    seconds = p50(one, repeat)
                    if len(counts) != 1 or not counts.pop():
                        raise AssertionError(f"QIDO {query} answered varying or no matches")
                    return seconds * 1000, repeat + 1

                table.measure(f"QIDO {name}, p50", "ms", "keep <= 0.5x", qido)

            def metadata(c: Contender) -> tuple[float, int]:
                session = requests.Session()

                def one() -> None:
                    r = session.get(
                        f"{c.url}/studies/{study}/series/{series}/metadata", headers={"Accept": "application/dicom+json"}
                    )
                    r.raise_for_status()
                    if len(r.json()) != len(sops):
                        raise AssertionError("series metadata misses instances")

                return p50(one, max(3, repeat // 3)) * 1000, max(3, repeat // 3) + 1

            table.measure("series metadata, p50", "ms", "keep <= 0.25x", metadata)

            def download_series(c: Contender) -> int:
                total = 0
                with requests.get(f"{c.url}/studies/{study}/series/{series}", headers={"Accept": DICOM_ANY}, stream=True) as r:
                    r.raise_for_status()
                    for chunk in r.iter_content(1 << 20):
                        total += len(chunk)
                if total < sum(map(len, big_blobs)):
                    raise AssertionError("series retrieve is shorter than the stored files")
                return total

            def retrieve_mb_s(c: Contender) -> tuple[float, int]:
                size = download_series(c)
                return size / p50(lambda: download_series(c), 3) / 1e6, 4

            table.measure("series retrieve", "MB/s", "keep >= 1x", retrieve_mb_s)

            reference = np.stack([ds.pixel_array for ds in big])

            def client_volume(c: Contender) -> tuple[float, int]:
                loaded: list[np.ndarray] = []

                def load() -> None:
                    with dw.connect(c.url, progress=False) as client:
                        loaded[:] = [client.volume(study, series, rescale=False).array]

                def check() -> None:  # outside the timing: comparing 157 MB is not part of loading it
                    if not np.array_equal(loaded[0], reference):
                        raise AssertionError("the volume's pixels differ from the stored ones")

                load()
                check()
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    load()
                    times.append(time.perf_counter() - start)
                    check()
                seconds = statistics.median(times)
                raw = p50(lambda: download_series(c), 3)
                return seconds / raw, 8

            table.measure("client volume() / raw series retrieve (same server)", "x", "<= 2", client_volume)
        finally:
            for c in contenders:
                c.stop()
    report("perf" if not args.rows else "perf-rows", table.rows)  # a partial run leaves the full table


if __name__ == "__main__":
    main()
