"""Benchmark: lazy (dask) volumes against today's eager load, and a cohort on a 2-worker LocalCluster.

The same 300 x 512x512 CT series as ``client_volume.py``, in our server and in Orthanc (Debian
orthanc + orthanc-dicomweb), measured in one run:

* time to first slice: ``pacs.volume(..., lazy=True)`` then ``vol.array[150].compute()`` on a cold
  frame cache, against the eager ``pacs.volume(...)``  [target: under 5% of eager, never above 10%];
  the geometry read two ways (series metadata, QIDO-RS with includefield) to justify the default;
* full ``vol.array.compute()`` against eager  [target: within 1.2x], with the cache off and on;
* a cached re-read of the whole volume against the first read  [target: at least 5x faster];
* a cohort of 20 series (``--cohort-slices`` x 256x256 each) reduced to one number per series:
  ``pacs.cohort(...)`` on a 2-worker ``dask.distributed.LocalCluster`` against one process.

Prints medians and ratios and writes benchmarks/results/lazy_volume.json. Run by hand:
``python benchmarks/lazy_volume.py``. Not a test: timings depend on the machine (2 cores here,
shared by the client, the servers and the cluster's workers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dicomweb_nb as dw  # noqa: E402
from dicomweb_nb import samples  # noqa: E402
from dicomweb_nb.client.cache import frame_cache  # noqa: E402
from dicomweb_nb.client.lazy import series_metadata_for_geometry  # noqa: E402


def median_s(function, repeats: int, before=None) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def paired(reference, contender, repeats: int, before=None, prepare=None) -> tuple[float, float, float, object]:
    """Medians of ``reference()`` and ``contender()`` run alternately (so both see the same load on a
    shared machine), and the median of their per-round ratios; ``prepare`` and ``before`` run untimed
    before each, respectively."""
    ref_times, times, ratios, result = [], [], [], None
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        start = time.perf_counter()
        reference()
        ref_times.append(time.perf_counter() - start)
        if before is not None:
            before()
        start = time.perf_counter()
        result = contender()
        times.append(time.perf_counter() - start)
        ratios.append(times[-1] / ref_times[-1])
    return statistics.median(ref_times), statistics.median(times), statistics.median(ratios), result


def measure(name: str, url: str, study: str, series: str, args: argparse.Namespace) -> list[dict]:
    import dask.array  # noqa: F401 - imported once, as in a notebook that has used dask before

    rows: list[dict] = []

    def row(path: str, seconds: float, note: str = "") -> None:
        rows.append({"server": name, "path": path, "ms": seconds * 1000, "note": note, "load": os.getloadavg()[0]})

    with dw.connect(url, progress=False) as pacs:
        pacs.volume(study, series)  # warm the server's caches for every contender alike
        dw.cache.clear()
        pacs.volume(study, series, lazy=True).array[0].compute()  # and this process's thread pools
        eager = pacs.volume(study, series)
        middle = eager.shape[0] // 2

        def load_eager() -> object:
            return pacs.volume(study, series)

        def first_slice(geometry: str) -> np.ndarray:
            volume = pacs.volume(study, series, lazy=True, geometry=geometry)
            return volume.array[middle].compute()

        t_eager, _ = median_s(load_eager, args.repeats)
        row("eager volume()", t_eager)
        for geometry in ("metadata", "qido"):
            t_geometry, _ = median_s(lambda g=geometry: series_metadata_for_geometry(pacs.source, study, series, method=g),
                                     args.repeats)
            row(f"geometry request ({geometry})", t_geometry)
            _, t_first, ratio, got = paired(load_eager, lambda g=geometry: first_slice(g), args.repeats,
                                            before=dw.cache.clear)
            assert np.array_equal(got, eager.array[middle])
            row(f"first slice, cold cache (geometry={geometry})", t_first,
                f"{100 * ratio:.1f}% of eager [target < 5%, never > 10%]")
        fresh, imports = fresh_process_first_slice(url, study, series, middle, args.repeats)
        row("first slice in a fresh process (dask not imported yet)", fresh,
            f"{100 * fresh / t_eager:.0f}% of eager; of which importing dask.array {1000 * imports:.0f} ms")
        _, t_full_off, ratio, full = paired(
            load_eager, lambda: pacs.volume(study, series, lazy=True, cache=False).array.compute(), args.repeats
        )
        assert np.array_equal(full, eager.array)
        row("full compute, cache off", t_full_off, f"{ratio:.2f}x eager [target <= 1.2x]")
        _, t_mean, ratio, _ = paired(load_eager, lambda: float(pacs.volume(study, series, lazy=True, cache=False)
                                                              .array.mean().compute()), args.repeats)
        row("lazy mean(), cache off", t_mean, f"{ratio:.2f}x eager (no result array to copy)")

        # The cache alone: the same lazy volume (its geometry already read), cold then warm, each written
        # frame flushed to disk before the warm read (they are written behind).
        volume = pacs.volume(study, series, lazy=True)
        cache = frame_cache()

        def flush() -> None:
            if cache is not None:
                cache.flush()

        t_cold, t_warm, ratio, full = paired(volume.array.compute, volume.array.compute, args.repeats,
                                             prepare=dw.cache.clear, before=flush)
        assert np.array_equal(full, eager.array)
        row("full compute, cold cache (fetches, writes behind)", t_cold)
        row("full compute, warm cache (re-read)", t_warm, f"{1 / ratio:.1f}x faster than the first read [target >= 5x]")
        one_slice = volume.array[middle]
        t_cold, t_warm, ratio, _ = paired(one_slice.compute, one_slice.compute, args.repeats, prepare=dw.cache.clear,
                                          before=flush)
        row("one slice, cold cache", t_cold)
        row("one slice, warm cache (no request)", t_warm, f"{1 / ratio:.1f}x faster than the first read [target >= 5x]")
    return rows


FRESH = """
import sys, time
import dicomweb_nb as dw
with dw.connect(sys.argv[1], progress=False) as pacs:
    pacs.studies(StudyInstanceUID=sys.argv[2])  # a kernel that has used the client: connection open
    start = time.perf_counter()
    import dask.array
    imported = time.perf_counter()
    pacs.volume(sys.argv[2], sys.argv[3], lazy=True, cache=False).array[int(sys.argv[4])].compute()
    print(time.perf_counter() - start, imported - start)
"""


def fresh_process_first_slice(url: str, study: str, series: str, middle: int, repeats: int) -> tuple[float, float]:
    """Median seconds of the first ``volume(lazy=True)`` and slice of a new Python process that has imported and
    used the client but not dask (as in a new kernel), and of that, importing dask.array. The other first-slice
    figures leave both out, as in a notebook that has used dask before."""
    import subprocess

    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", FRESH, url, study, series, str(middle)], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        total, imports = map(float, out.split())
        runs.append((total, imports))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def cohort(url: str, series: list[tuple[str, str]], args: argparse.Namespace) -> list[dict]:
    from distributed import Client, LocalCluster

    def summary(volume) -> float:
        return float(volume.array.mean())

    rows = []
    with dw.connect(url, progress=False) as pacs:
        pacs.volume(*series[0])
        t_one, expected = median_s(lambda: [summary(pacs.volume(study, uid)) for study, uid in series], args.repeats)
        rows.append({"server": "ours", "path": f"cohort of {len(series)}: one process, eager loop", "ms": t_one * 1000,
                     "note": ""})
        with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster, \
                Client(cluster):
            pacs.cohort(series[:2], summary).compute()  # workers warmed up (imports)
            t_bag, got = median_s(lambda: pacs.cohort(series, summary).compute(), args.repeats)
            assert np.allclose(got, expected)
            rows.append({"server": "ours", "path": f"cohort of {len(series)}: LocalCluster 2 workers, pacs.cohort",
                         "ms": t_bag * 1000, "note": f"{t_one / t_bag:.2f}x the one process"})
            import dask

            t_lazy, got = median_s(lambda: dask.compute(*[v.array.mean() for v in pacs.volumes(series, cache=False)]),
                                   args.repeats)
            assert np.allclose([float(g) for g in got], expected, rtol=1e-5)
            rows.append({"server": "ours", "path": f"cohort of {len(series)}: LocalCluster 2 workers, lazy volumes",
                         "ms": t_lazy * 1000, "note": f"{t_one / t_lazy:.2f}x the one process"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cohort", type=int, default=20, help="series in the cohort (0: skip)")
    parser.add_argument("--cohort-slices", type=int, default=60)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()
    from client_volume import copy_series, load_series
    from common import report

    from tests.fixtures.orthanc import OrthancProcess, orthanc_available
    from tests.fixtures.ourserver import start_standalone

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as workdir:
        dw.cache.configure(directory=Path(workdir) / "frame-cache", size_limit="4 GB")
        use_orthanc = orthanc_available() and not args.no_orthanc
        orthanc = OrthancProcess(Path(workdir) / "orthanc") if use_orthanc else None
        (Path(workdir) / "ours").mkdir()
        server = start_standalone(Path(workdir) / "ours")
        try:
            print(f"loading {args.slices} slices of {args.size}x{args.size} ...", flush=True)
            if orthanc is not None:
                study, series, _ = load_series(orthanc, args.slices, args.size)
                copy_series(orthanc, server.dicomweb_url, study)
            else:
                datasets = samples.generate_ct_series(n_slices=args.slices, rows=args.size, columns=args.size, seed=7)
                with dw.connect(server.dicomweb_url, progress=False) as pacs:
                    pacs.store(datasets)
                study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
            rows += measure("ours", server.dicomweb_url, study, series, args)
            if orthanc is not None:
                rows += measure("orthanc", orthanc.dicomweb_url, study, series, args)
            if args.cohort:
                print(f"loading a cohort of {args.cohort} series of {args.cohort_slices} x 256x256 ...", flush=True)
                pairs = []
                with dw.connect(server.dicomweb_url, progress=False) as pacs:
                    for number in range(args.cohort):
                        datasets = samples.generate_ct_series(n_slices=args.cohort_slices, rows=256, columns=256,
                                                              seed=number, series_number=number + 1)
                        pacs.store(datasets)
                        pairs.append((str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)))
                rows += cohort(server.dicomweb_url, pairs, args)
        finally:
            server.stop()
            if orthanc is not None:
                orthanc.stop()
    report("lazy_volume", rows)


if __name__ == "__main__":
    main()
