"""Does a process pool pay off for the CPU-heavy work of a request? (issue 13, ``server/cpu.py``)

For each kind of work the server hands to its CPU pool, measured on the same inputs:

- ``direct``: the call itself, in this thread (what the work costs);
- ``thread``: submitted to a one-thread pool (the hand-over of ``run_blocking``);
- ``process``: submitted to a one-process pool (arguments and answer pickled through a pipe);
- ``throughput, N threads`` / ``N processes``: N submitters at once, operations per second: what
  a server of one process gets from its cores either way (threads share one interpreter).

Kinds: parsing a small CT upload (``parse_file``), rendering a 512x512 CT slice as JPEG
(``render_task``), building the DICOM JSON of a 300-instance series metadata answer (string joins,
the ``Full`` mode). Run by hand: ``python benchmarks/bench_cpu_pool.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import multiprocessing  # noqa: E402

from dicomweb_nb import samples  # noqa: E402
from dicomweb_nb.dicom.dicomjson import absolutize_bulk_uris  # noqa: E402
from dicomweb_nb.pixels.render import RenderOptions  # noqa: E402
from dicomweb_nb.server.rendered import render_task  # noqa: E402
from dicomweb_nb.store import Store, import_paths, parse_file  # noqa: E402


def metadata_json(texts: list[str]) -> int:
    url = "http://host/dicom-web/studies/1/series/2/instances/3"
    return len("[" + ",".join(absolutize_bulk_uris(t, url) for t in texts) + "]")


def per_call(submit, args_list, repeat: int = 3) -> float:
    """Median seconds of one call through ``submit`` (one at a time)."""
    times = []
    for _ in range(repeat):
        for args in args_list:
            start = time.perf_counter()
            submit(*args)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(executor, fn, args_list, rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for future in [executor.submit(fn, *a) for a in args_list]:
            future.result()
        best = max(best, len(args_list) / (time.perf_counter() - start))
    return best


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        small = samples.generate_ct_series(40, rows=32, columns=32, seed=1)
        small_files = samples.write_series(small, tmp_path / "small")
        big = samples.generate_ct_series(20, rows=512, columns=512, seed=2)
        store = Store(tmp_path / "store")
        import_paths(store, samples.write_series(big, tmp_path / "big"), progress=False)
        rows = [store.instances(None, None, ds.SOPInstanceUID)[0] for ds in big]
        series_texts = [rows[i % len(rows)].metadata_text for i in range(300)]
        kinds = {
            "parse a small CT upload": (parse_file, [(p, tmp_path, None) for p in small_files], {"owned": False}),
            "render a 512x512 slice (JPEG)": (render_task, [(r, 0, "image/jpeg", RenderOptions(), False) for r in rows], {}),
            "series metadata JSON, 300 instances": (metadata_json, [(series_texts,)] * 10, {}),
        }
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        print(f"{'work':38} {'direct':>9} {'thread':>9} {'process':>9}   ops/s: {cores} threads  {cores} processes")
        for name, (fn, args_list, kwargs) in kinds.items():
            measure(name, fn, args_list, kwargs, cores, context)
        store.close()


def measure(name: str, fn, args_list: list[tuple], kwargs: dict, cores: int, context) -> None:
    """One row: a call direct, through a one-thread and a one-process pool, and the throughput of
    ``cores`` threads against ``cores`` processes."""
    call = _Call(fn, kwargs)
    with ThreadPoolExecutor(1) as one_thread, ProcessPoolExecutor(1, mp_context=context) as one_process, \
            ThreadPoolExecutor(cores) as threads, ProcessPoolExecutor(cores, mp_context=context) as processes:
        for pool in (one_process, processes):
            [f.result() for f in [pool.submit(fn, *a, **kwargs) for a in args_list[:cores * 2]]]  # warm
        direct = per_call(call, args_list)
        thread = per_call(lambda *a: one_thread.submit(fn, *a, **kwargs).result(), args_list)
        process = per_call(lambda *a: one_process.submit(fn, *a, **kwargs).result(), args_list)
        many = args_list * max(1, 200 // len(args_list))
        rate_threads = throughput(threads, call, many)
        rate_processes = throughput(processes, call, many)
    print(f"{name:38} {direct * 1e3:8.3f}ms {thread * 1e3:8.3f}ms {process * 1e3:8.3f}ms   "
          f"{rate_threads:10.0f}  {rate_processes:10.0f}", flush=True)


class _Call:
    """A picklable fn(*args, **kwargs) for the process pool."""

    def __init__(self, fn, kwargs):
        self.fn, self.kwargs = fn, kwargs

    def __call__(self, *args):
        return self.fn(*args, **self.kwargs)


if __name__ == "__main__":
    main()
