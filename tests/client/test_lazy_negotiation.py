"""Content negotiation of frames with servers that refuse the client's first choices, scripted with tornado:
one serving only HTJ2K (as AWS HealthImaging does, listing it in AvailableTransferSyntaxUID), one
refusing the default media type (as Azure does: it wants ``transfer-syntax=*``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import tornado.web
from tornado.httpserver import HTTPServer

import dicomweb_nb as dw
from dicomweb_nb import errors, samples
from dicomweb_nb.client import web as web_module
from dicomweb_nb.dicom.mediatypes import parse_accept
from dicomweb_nb.dicom.multipart import encode_multipart
from tests.fixtures.peers import free_port, require_peer

from .lazy_helpers import shuffled

pytestmark = pytest.mark.usefixtures("private_frame_cache")
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def htj2k(frame: np.ndarray, workdir: Path) -> bytes:
    """A lossless HTJ2K codestream of a 12-bit frame, by OpenJPH's ojph_compress (Debian openjph-tools)."""
    rows, columns = frame.shape
    source, target = workdir / "frame.pgm", workdir / "frame.j2c"
    source.write_bytes(f"P5\n{columns} {rows}\n4095\n".encode() + frame.astype(">u2").tobytes())
    subprocess.run(["ojph_compress", "-i", str(source), "-o", str(target), "-reversible", "true"], check=True,
                   capture_output=True)
    return target.read_bytes()


class ScriptedPacs:
    """A DICOMweb server with one series, serving frames only in ``syntaxes`` (an Accept naming another
    transfer syntax is answered 406), refusing Accepts without a transfer syntax when ``refuse_default`` and
    ``transfer-syntax=*`` unless ``wildcard``; ``advertise`` lists ``syntaxes`` in AvailableTransferSyntaxUID."""

    def __init__(self, datasets, frames: dict, syntaxes: list[str], *, refuse_default: bool, advertise: bool,
                 wildcard: bool = True):
        self.datasets = {str(ds.SOPInstanceUID): ds for ds in datasets}
        self.frames = frames  # sop -> encoded frame bytes
        self.syntaxes = syntaxes
        self.refuse_default = refuse_default
        self.advertise = advertise
        self.wildcard = wildcard
        self.log: list[tuple[str, str, int]] = []  # (path, Accept, status)
        self.delay = 0.0  # seconds each frames answer waits
        self.in_flight = 0
        self.most_in_flight = 0

    def metadata(self, sop: str) -> dict:
        obj = self.datasets[sop].to_json_dict(bulk_data_threshold=1 << 30, bulk_data_element_handler=lambda e: "")
        obj.pop("7FE00010", None)
        if self.advertise:
            obj["00083002"] = {"vr": "UI", "Value": list(self.syntaxes)}
        return obj

    def frames_answer(self, accept: str) -> tuple[int, str | None, str | None]:
        """(status, part media type, syntax) for an Accept header."""
        for media in parse_accept(accept):
            syntax = media.params.get("transfer-syntax")
            if syntax is None:
                if self.refuse_default:
                    continue
                syntax = EXPLICIT_LE
            if syntax == "*":
                if not self.wildcard:
                    continue
                syntax = self.syntaxes[0]
            if syntax in self.syntaxes:
                part_type = "application/octet-stream" if syntax == EXPLICIT_LE else "image/jphc"
                return 200, part_type, syntax
        return 406, None, None

    def start(self) -> str:
        pacs = self

        class Handler(tornado.web.RequestHandler):
            async def get(self, path: str) -> None:
                if "frames" in path:
                    pacs.in_flight += 1
                    pacs.most_in_flight = max(pacs.most_in_flight, pacs.in_flight)
                    try:
                        await asyncio.sleep(pacs.delay)
                        self.answer(path)
                    finally:
                        pacs.in_flight -= 1
                else:
                    self.answer(path)

            def answer(self, path: str) -> None:
                accept = self.request.headers.get("Accept", "")
                parts = path.strip("/").split("/")
                status = 200
                if parts[-1] == "metadata":
                    sops = [parts[5]] if "instances" in parts else list(pacs.datasets)
                    self.set_header("Content-Type", "application/dicom+json")
                    self.write(json.dumps([pacs.metadata(s) for s in sops]))
                elif "frames" in parts:
                    status, part_type, syntax = pacs.frames_answer(accept)
                    if status == 200:
                        numbers = [int(n) for n in parts[-1].split(",")]
                        data = pacs.frames[parts[5]] if syntax != EXPLICIT_LE else pacs.datasets[parts[5]].PixelData
                        body, boundary = encode_multipart([(f"{part_type}; transfer-syntax={syntax}", data)
                                                           for _ in numbers])
                        self.set_header("Content-Type", f'multipart/related; type="{part_type}"; boundary={boundary}')
                        self.write(body)
                    else:
                        self.set_status(406)
                        self.write({"message": "frames are only available as " + ", ".join(pacs.syntaxes)})
                else:
                    status = 404
                    self.set_status(404)
                pacs.log.append((path, accept, status))

        self.port = free_port()
        ready = threading.Event()

        def serve() -> None:
            async def main() -> None:
                server = HTTPServer(tornado.web.Application([(r"/dicom-web(/.*)", Handler)]))
                server.listen(self.port, "127.0.0.1")
                self.stop_event = asyncio.Event()
                ready.set()
                await self.stop_event.wait()
                server.stop()

            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(main())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(10)
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture()
def series():
    return samples.generate_ct_series(n_slices=5, rows=24, columns=20, seed=8)


@pytest.fixture(autouse=True)
def forget_negotiations():
    web_module._frame_accepts.clear()
    yield
    web_module._frame_accepts.clear()


@pytest.fixture()
def htj2k_only(series, tmp_path):
    """An AWS HealthImaging-like server: frames in HTJ2K only, as AvailableTransferSyntaxUID says."""
    require_peer(shutil.which("ojph_compress") is not None, "OpenJPH's ojph_compress (Debian openjph-tools)")
    frames = {str(ds.SOPInstanceUID): htj2k(ds.pixel_array, tmp_path) for ds in series}
    pacs = ScriptedPacs(shuffled(series), frames, [HTJ2K_LOSSLESS], refuse_default=True, advertise=True, wildcard=False)
    url = pacs.start()
    yield pacs, url
    pacs.stop()


def test_htj2k_only_server_is_negotiated_decoded_and_remembered(htj2k_only, series):
    server, url = htj2k_only
    study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    expected = np.stack([ds.pixel_array.astype(np.float32) - 1024 for ds in series])
    with dw.connect(url, progress=False) as pacs:
        lazy = pacs.volume(study, series_uid, lazy=True, cache=False)
        assert np.array_equal(lazy.array[2].compute(), expected[2])
        refused = [accept for path, accept, status in server.log if "frames" in path and status == 406]
        served = [accept for path, accept, status in server.log if "frames" in path and status == 200]
        # Tried as stored, then the default, then what the metadata offers: HTJ2K.
        assert refused[:2] == [web_module.FRAMES_ACCEPT, web_module.FRAMES_ACCEPT_FALLBACK]
        assert served == [f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K_LOSSLESS}']
        assert pacs.source.frames_transfer_syntax == HTJ2K_LOSSLESS
        server.log.clear()
        assert np.array_equal(lazy.array.compute(), expected)  # no bulk data here: a frames request each
        assert np.array_equal(pacs.volume(study, series_uid, method="frames").array, expected)
    # Remembered for the server, by a new connection too: no refusal any more.
    with dw.connect(url, progress=False) as again:
        assert np.array_equal(again.frames(study, series_uid, str(series[3].SOPInstanceUID)), series[3].pixel_array[None])
    assert all(status == 200 for path, _, status in server.log if "frames" in path)


def test_negotiated_frames_are_cached_under_their_syntax(htj2k_only, series, private_frame_cache):
    server, url = htj2k_only
    study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
    with dw.connect(url, progress=False) as pacs:
        lazy = pacs.volume(study, series_uid, lazy=True)
        first = lazy.array[1].compute()
        server.log.clear()
        assert np.array_equal(pacs.volume(study, series_uid, lazy=True).array[1].compute(), first)
    assert not [path for path, _, _ in server.log if "frames" in path]
    from dicomweb_nb.client.cache import frame_cache

    assert frame_cache().flush(timeout=30)  # written behind: wait for the write before looking on disk
    entries = list(frame_cache()._store.iterkeys())
    assert len(entries) == 1 and entries[0].endswith(f"|{HTJ2K_LOSSLESS}")


def test_server_refusing_the_default_media_type_gets_frames_as_stored(series):
    """Azure's DICOM service answers 406 to frames without ``transfer-syntax=*``: the client asks with it first."""
    server = ScriptedPacs(shuffled(series), {}, [EXPLICIT_LE], refuse_default=True, advertise=False)
    url = server.start()
    try:
        study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        with dw.connect(url, progress=False) as pacs:
            lazy = pacs.volume(study, series_uid, lazy=True, rescale=False, cache=False)
            assert np.array_equal(lazy.array.compute(), np.stack([ds.pixel_array for ds in series]))
        assert {status for path, _, status in server.log if "frames" in path} == {200}
        assert {accept for path, accept, _ in server.log if "frames" in path} == {web_module.FRAMES_ACCEPT}
    finally:
        server.stop()


def test_server_refusing_everything_names_what_was_tried(series):
    server = ScriptedPacs(series, {}, [HTJ2K_LOSSLESS], refuse_default=True, advertise=False, wildcard=False)
    url = server.start()
    try:
        with dw.connect(url, progress=False) as pacs:
            lazy = pacs.volume(str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID), lazy=True, cache=False)
            with pytest.raises(errors.FrameError) as caught:
                lazy.array[0].compute()
        assert caught.value.status == 406 and "refused every media type" in str(caught.value)
        assert "transfer-syntax=*" in str(caught.value)
        assert "frames are only available as" in str(caught.value)  # the server's own explanation
    finally:
        server.stop()


def test_concurrency_is_bounded_per_host(series):
    server = ScriptedPacs(series, {}, [EXPLICIT_LE], refuse_default=False, advertise=False)
    server.delay = 0.05
    url = server.start()
    try:
        study, series_uid = str(series[0].StudyInstanceUID), str(series[0].SeriesInstanceUID)
        with dw.connect(url, progress=False, max_workers=2) as pacs:
            volumes = [pacs.volume(study, series_uid, lazy=True, cache=False) for _ in range(2)]
            threads = [threading.Thread(target=v.array.compute) for v in volumes]  # two computations at once
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert len([p for p, _, status in server.log if "frames" in p and status == 200]) == 2 * len(series)
        assert server.most_in_flight == 2  # never more than max_workers requests to this host
    finally:
        server.stop()
