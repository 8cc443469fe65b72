"""The hand-written fast paths of the pure layers against the library route they stand beside.

    python benchmarks/bench_pure.py            # all
    python benchmarks/bench_pure.py render     # one part: render | dicomjson | multipart

No server: each part times one function in this process (median of many calls after a warm-up),
so the numbers are the cost of the code itself, which the comments in the modules quote.

- render: ``pixels.render.render`` of a generated 512x512 16-bit CT slice (rescale, stored window) as
  image/jpeg, ``pixels.voi.to_display`` alone (the display pipeline: modality LUT, VOI, MONOCHROME1),
  the display table that pipeline builds for 16-bit frames (its cache bypassed: over every 16-bit value,
  and over the values the slice holds, which is what it builds), and a render with a new window each call
  (a window dragged over one image).
- dicomjson: ``dicom.dicomjson.dataset_to_json`` of a CT header with its raw-value fast path, and
  with the fast path switched off (every element through pydicom's ``DataElement.to_json_dict``).
- multipart: a 64 MB multipart/related body of 32 parts fed in 64 KiB chunks to
  ``dicom.multipart.MultipartParser``, against the standard library's ``email`` parser (which needs the
  whole body first); throughput and peak Python memory (tracemalloc) of each. werkzeug's incremental
  decoder refuses parts without Content-Disposition (every DICOMweb part), so it is not a candidate.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import statistics
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np
from common import report, timed
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread

from dicomweb_nb import samples
from dicomweb_nb.dicom import dicomjson
from dicomweb_nb.dicom.multipart import MultipartParser, PartData, encode_multipart
from dicomweb_nb.pixels import render as rd
from dicomweb_nb.pixels import voi as voi_module
from dicomweb_nb.pixels.voi import ImageAttributes, Window, to_display


def _p50_ms(fn: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(fn, repeat)) * 1000


def bench_render(repeat: int) -> list[dict]:
    ds = samples.generate_ct_series(1, rows=512, columns=512)[0]
    ds.WindowCenter, ds.WindowWidth = 40, 400
    frame = ds.pixel_array
    attrs = ImageAttributes.from_dataset(ds)
    floats = frame.astype(np.float32) - 1024
    float_attrs = ImageAttributes(512, 512, windows=(Window(40, 400),))
    rows = []
    table = getattr(voi_module, "_display_table", None)
    if table is not None:  # the table of display values of 16-bit stored values, built anew each call
        low, high = int(frame.min()), int(frame.max())
        for what, span in (("every 16-bit value", (-32768, 32767) if frame.dtype.kind == "i" else (0, 65535)),
                           (f"the slice's {high - low + 1} values", (low, high))):
            rows.append({"part": "render", "what": f"display table of {what} (pydicom: rescale, window), p50",
                         "unit": "ms", "value": _p50_ms(lambda span=span: table(
                             frame.dtype.str, attrs.rescale_slope, attrs.rescale_intercept, None, attrs.windows[0],
                             False, *span), repeat)})
    windows = iter(range(10**9))
    rows.append({"part": "render", "what": "render 512x512 CT as JPEG, a new window each call, p50", "unit": "ms",
                 "value": _p50_ms(lambda: rd.render(frame, attrs, window=(next(windows) % 500, 400)), repeat)})
    return rows + [
        {"part": "render", "what": "render 512x512 CT as JPEG, p50", "unit": "ms",
         "value": _p50_ms(lambda: rd.render(frame, attrs), repeat)},
        {"part": "render", "what": "to_display 512x512 16-bit CT (table + take), p50", "unit": "ms",
         "value": _p50_ms(lambda: to_display(frame, attrs), repeat)},
        {"part": "render", "what": "to_display 512x512 float32 (computed per pixel), p50", "unit": "ms",
         "value": _p50_ms(lambda: to_display(floats, float_attrs), repeat)},
    ]


def _ct_header_bytes() -> bytes:
    ds = samples.generate_ct_series(1, rows=16, columns=16)[0]
    return samples.dataset_bytes(ds)


def bench_dicomjson(repeat: int) -> list[dict]:
    data = _ct_header_bytes()

    def parse():
        return dcmread(DicomBytesIO(data), stop_before_pixels=True)

    elements = len(parse())
    fast = statistics.median(timed(lambda: dicomjson.dataset_to_json(parse()), repeat))
    original = dicomjson._raw_json
    dicomjson._raw_json = lambda *args: None  # type: ignore[assignment] - every element through pydicom
    try:
        slow = statistics.median(timed(lambda: dicomjson.dataset_to_json(parse()), repeat))
    finally:
        dicomjson._raw_json = original  # type: ignore[assignment]
    read = statistics.median(timed(parse, repeat))
    return [
        {"part": "dicomjson", "what": f"dataset_to_json, fast path ({elements} elements), per element", "unit": "us",
         "value": (fast - read) / elements * 1e6},
        {"part": "dicomjson", "what": "dataset_to_json, all through pydicom, per element", "unit": "us",
         "value": (slow - read) / elements * 1e6},
        {"part": "dicomjson", "what": "speed-up of the fast path", "unit": "x", "value": (slow - read) / (fast - read)},
    ]


def _body(parts: int, part_size: int) -> tuple[bytes, str]:
    rng = np.random.default_rng(0)
    return encode_multipart([("application/dicom", rng.bytes(part_size)) for _ in range(parts)])


def _ours(body: bytes, boundary: str) -> int:
    parser = MultipartParser(boundary)
    total = 0
    for start in range(0, len(body), 1 << 16):
        for event in parser.feed(body[start:start + (1 << 16)]):
            if isinstance(event, PartData):
                total += len(event.data)
    parser.finish()
    return total


def _email(body: bytes, boundary: str) -> int:
    head = f'Content-Type: multipart/related; type="application/dicom"; boundary="{boundary}"\r\n\r\n'.encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return sum(len(part.get_payload(decode=True)) for part in message.iter_parts())


def _peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def bench_multipart(repeat: int) -> list[dict]:
    parts, part_size = 32, 2 << 20
    body, boundary = _body(parts, part_size)
    size_mb = len(body) / 1e6
    assert _ours(body, boundary) == _email(body, boundary) == parts * part_size
    rows = []
    for name, parse in (("MultipartParser (64 KiB chunks)", _ours), ("email.parser (whole body)", _email)):
        run = partial(parse, body, boundary)
        seconds = statistics.median(timed(run, max(3, repeat // 10)))
        rows.append({"part": "multipart", "what": f"{name}: {size_mb:.0f} MB body", "unit": "MB/s",
                     "value": size_mb / seconds})
        rows.append({"part": "multipart", "what": f"{name}: peak memory beyond the body", "unit": "MB",
                     "value": _peak_mb(run)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", default=["render", "dicomjson", "multipart"])
    parser.add_argument("--repeat", type=int, default=60)
    args = parser.parse_args()
    benches = {"render": bench_render, "dicomjson": bench_dicomjson, "multipart": bench_multipart}
    rows: list[dict] = []
    for part in args.parts:
        rows += benches[part](args.repeat)
    report("pure", rows)


if __name__ == "__main__":
    main()
