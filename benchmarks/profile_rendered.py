"""Where a rendered request's server CPU goes: ``dicomweb-nb serve --workers 1`` under cProfile.

    python benchmarks/profile_rendered.py                    # each slice rendered once (200 slices)
    python benchmarks/profile_rendered.py --repeated         # the same slice again and again
    python benchmarks/profile_rendered.py --url-suffix '?window=40,400,linear' --top 40

Stores a generated 512x512 16-bit CT series over STOW-RS, asks for one frame of each slice (the
server then holds their rows), then for ``.../rendered`` as image/jpeg, one request at a time,
while the server runs with cProfile on its event-loop thread and on every worker thread (each work
item profiled and merged). Prints the server CPU per request (from /proc) and the functions that
took it, by cumulative and by own time (``--filter`` a regex of file:line(function)).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve_profiled(out: str, argv: list[str]) -> int:
    """Run ``dicomweb-nb <argv>`` with every thread profiled; the stats go to ``out`` at exit."""
    import concurrent.futures.thread as cft

    from dicomweb_nb import cli

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    local = threading.local()
    original_run = cft._WorkItem.run
    on = threading.Event()

    def profiled_run(self):  # type: ignore[no-untyped-def]
        if not on.is_set():
            return original_run(self)
        profile = getattr(local, "profile", None)
        if profile is None:
            profile = local.profile = cProfile.Profile()
            with lock:
                profiles.append(profile)
        profile.enable()
        try:
            return original_run(self)
        finally:
            profile.disable()

    cft._WorkItem.run = profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile()

    def start(*_: object) -> None:  # once the data is in
        on.set()
        main_profile.enable()

    def stop(*_: object) -> None:
        on.clear()
        main_profile.disable()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    try:
        return cli.main(argv)
    finally:
        main_profile.disable()
        stats = pstats.Stats(main_profile)
        for profile in profiles:
            stats.add(profile)
        stats.dump_stats(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="at most one per slice unless --repeated")
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeated", action="store_true", help="ask for one slice every time")
    parser.add_argument("--url-suffix", default="", help="appended to .../rendered (a query)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--filter", default="", help="only functions whose file:line(name) matches this regex")
    parser.add_argument("--serve-profiled", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_profiled:
        sys.exit(serve_profiled(args.serve_profiled[0], args.serve_profiled[1:]))

    import requests

    from benchmarks.bench_perf import process_tree_cpu, stow_batches
    from dicomweb_nb import samples
    from tests.fixtures.ourserver import ServerProcess
    from tests.fixtures.peers import free_port

    series = samples.generate_ct_series(args.slices, rows=512, columns=512, seed=11)
    blobs = [samples.dataset_bytes(ds) for ds in series]
    study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    sops = [ds.SOPInstanceUID for ds in series]
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        stats_file = f"{tmp}/rendered.prof"
        argv = [sys.executable, __file__, "--serve-profiled", stats_file, "serve", "--store", f"{tmp}/store",
                "--port", str(port), "--quiet", "--workers", "1"]
        base = f"http://127.0.0.1:{port}/dicom-web"
        server = ServerProcess(argv, url=base, dicomweb_url=base, ready_url=f"{base}/studies?limit=1", workdir=Path(tmp))
        assert server.process is not None
        try:
            stow_batches(base, blobs, 10)
            session = requests.Session()

            def one(i: int) -> None:
                sop = sops[0] if args.repeated else sops[i % len(sops)]
                r = session.get(f"{base}/studies/{study}/series/{series_uid}/instances/{sop}/rendered{args.url_suffix}",
                                headers={"Accept": "image/jpeg"})
                r.raise_for_status()
                if r.content[:2] != b"\xff\xd8":
                    raise AssertionError("not a JPEG")

            for sop in sops:  # the server's row cache holds every slice; none is rendered yet
                session.get(f"{base}/studies/{study}/series/{series_uid}/instances/{sop}/frames/1",
                            headers={"Accept": "application/octet-stream"}).raise_for_status()
            count = args.requests if args.repeated else min(args.requests, len(sops))
            os.kill(server.process.pid, signal.SIGUSR1)
            time.sleep(0.2)
            before, start = process_tree_cpu(server.process.pid), time.perf_counter()
            for i in range(count):
                one(i)
            cpu, wall = process_tree_cpu(server.process.pid) - before, time.perf_counter() - start
            os.kill(server.process.pid, signal.SIGUSR2)
        finally:
            server.stop()
        print(f"{count} requests: {wall / count * 1000:.2f} ms each (client wall), "
              f"server CPU {cpu / count * 1000:.2f} ms each (profiled: slower than unprofiled)")
        stats = pstats.Stats(stats_file)
        stats.sort_stats("cumulative").print_stats(args.filter, args.top)
        stats.sort_stats("tottime").print_stats(args.filter, args.top)


if __name__ == "__main__":
    main()
