"""Benchmark: building and decoding a large DICOM SEG - highdicom against pydicom's frame decoding.

A 4-segment mask on a 200 x 512 x 512 CT grid (ellipsoids, 532 non-empty frames) is written by
highdicom in each transfer syntax the client may choose, then decoded two ways:

* highdicom: ``Segmentation.from_dataset`` + ``get_pixels_by_source_instance`` (its documented path);
* pydicom: ``Dataset.pixel_array`` of all frames at once, as ``client/segmentation.py`` does.

Prints sizes, encode times and both decode times. The numbers quoted in client/segmentation.py
come from this script (2-core machine: binary 0.18 s vs 0.55 s; fractional 0.41 s vs 3.4 s; binary
JPEG 2000 lossless 0.7 MB vs 17.7 MB bit-packed; fractional JPEG-LS lossless 0.7 MB). Run by hand:
``python benchmarks/seg_decode.py``. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import sys
import time
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicomweb_nb import samples

SLICES, SIZE, SEGMENTS = 200, 512, 4


def main() -> None:
    sources = samples.generate_ct_series(n_slices=SLICES, rows=SIZE, columns=SIZE)
    zz, yy, xx = np.mgrid[0:SLICES, 0:SIZE, 0:SIZE]
    masks = np.stack([((zz - SLICES / 2) ** 2 / (SLICES / 3) ** 2 + (yy - SIZE / 2 - 20 * i) ** 2 / (SIZE / 4) ** 2
                       + (xx - SIZE / 2) ** 2 / (SIZE / 4) ** 2) < 1 for i in range(SEGMENTS)], axis=-1).astype(np.uint8)
    descriptions = [hd.seg.SegmentDescription(segment_number=i + 1, segment_label=f"s{i}",
                                              segmented_property_category=codes.SCT.Tissue,
                                              segmented_property_type=codes.SCT.Organ,
                                              algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                    for i in range(SEGMENTS)]
    uids = [ds.SOPInstanceUID for ds in sources]
    for kind, syntax in (("BINARY", ExplicitVRLittleEndian), ("BINARY", JPEG2000Lossless),
                         ("FRACTIONAL", ExplicitVRLittleEndian), ("FRACTIONAL", RLELossless),
                         ("FRACTIONAL", JPEGLSLossless)):
        pixels = masks if kind == "BINARY" else masks.astype(np.float32) * 0.5
        start = time.perf_counter()
        seg = hd.seg.Segmentation(source_images=sources, pixel_array=pixels, segmentation_type=kind,
                                  segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
                                  sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench",
                                  manufacturer_model_name="bench", software_versions="1", device_serial_number="1",
                                  transfer_syntax_uid=syntax, fractional_type="PROBABILITY" if kind == "FRACTIONAL" else None)
        encode = time.perf_counter() - start
        buffer = BytesIO()
        seg.save_as(buffer)
        data = buffer.getvalue()
        start = time.perf_counter()
        parsed = hd.seg.Segmentation.from_dataset(pydicom.dcmread(BytesIO(data)), copy=False)
        parsed.get_pixels_by_source_instance(uids)
        highdicom_decode = time.perf_counter() - start
        start = time.perf_counter()
        _ = pydicom.dcmread(BytesIO(data)).pixel_array
        pydicom_decode = time.perf_counter() - start
        print(f"{kind:10} {syntax.name:45} {int(seg.NumberOfFrames):4} frames {len(data) / 1e6:7.2f} MB  "
              f"encode {encode:5.2f} s  decode: highdicom {highdicom_decode:5.2f} s, pydicom {pydicom_decode:5.2f} s")


if __name__ == "__main__":
    main()
