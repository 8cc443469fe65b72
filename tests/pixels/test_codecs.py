"""Codec plugins called from several threads at once, as the server's worker pool and dask do."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from dicomweb_nb.pixels.codecs import serialise_openjpeg


def test_openjpeg_calls_are_serialised():
    import _openjpeg

    assert serialise_openjpeg() and serialise_openjpeg()  # idempotent
    for name in ("decode", "get_parameters", "encode_array", "encode_buffer"):
        assert getattr(getattr(_openjpeg, name), "_dicomweb_nb_serialised", False), name


def test_concurrent_jpeg_2000_transcodes_do_not_crash_the_process():
    """Without the guard, three threads transcoding this 512x512 image to JPEG 2000 end in a segfault
    within a few rounds (pylibjpeg-openjpeg's logging callback shares static objects between threads)."""
    script = textwrap.dedent("""
        import threading, warnings
        import pydicom
        from pydicom.data import get_testdata_file
        from dicomweb_nb.pixels import encode

        warnings.simplefilter("ignore")
        path = get_testdata_file("image_dfl.dcm")

        def work():
            for _ in range(12):
                encode.dataset_to_bytes(encode.transcode_dataset(pydicom.dcmread(path), "1.2.840.10008.1.2.4.90"))

        threads = [threading.Thread(target=work) for _ in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("done")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]
