"""Where pydicom already does what a hand-written path here does: same bytes, and how fast.

    python benchmarks/pydicom_equivalence.py

1. Transcoding whole instances: ``pixels.encode.transcode_dataset`` against pydicom's
   ``Dataset.decompress`` (compressed -> Explicit VR Little Endian) and ``Dataset.compress``
   (uncompressed -> RLE, JPEG-LS, JPEG 2000 lossless), both keeping the SOP Instance UID, on every
   bundled pydicom image: are the written Part 10 files the same bytes, and if not, which elements
   differ.
2. Locating encapsulated frames at ingest: ``store.ingest``'s walk over the fragment item headers
   against ``pydicom.encaps.parse_basic_offsets`` + ``parse_fragments`` on the same file positions,
   on every bundled encapsulated file and on a generated 2,000-frame instance: the same byte ranges,
   and the time per instance.
"""

from __future__ import annotations

import copy
import io
import statistics
import warnings
from collections import Counter

import numpy as np
import pydicom
from common import report, timed
from pydicom.encaps import encapsulate, parse_basic_offsets, parse_fragments
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicomweb_nb import samples
from dicomweb_nb.pixels.encode import dataset_to_bytes, transcode_dataset
from dicomweb_nb.store import ingest
from dicomweb_nb.store.ingest import read_instance


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _differing(ours: bytes, theirs: bytes) -> list[str]:
    a, b = pydicom.dcmread(io.BytesIO(ours)), pydicom.dcmread(io.BytesIO(theirs))
    names = []
    for tag in sorted(set(a.keys()) | set(b.keys())):
        if tag not in a or tag not in b or a[tag].value != b[tag].value or a[tag].VR != b[tag].VR:
            names.append(pydicom.datadict.keyword_for_tag(tag) or str(tag))
    for tag in sorted(set(a.file_meta.keys()) | set(b.file_meta.keys())):
        if tag not in a.file_meta or tag not in b.file_meta or a.file_meta[tag].value != b.file_meta[tag].value:
            names.append("meta " + (pydicom.datadict.keyword_for_tag(tag) or str(tag)))
    return names


def transcoding() -> list[dict]:
    outcomes: Counter[str] = Counter()
    differences: Counter[str] = Counter()
    for path in samples.pydicom_test_files(with_pixels=True, distinct_sops=False):
        source = _read(path)
        syntax = source.file_meta.TransferSyntaxUID
        targets = [ExplicitVRLittleEndian] if syntax.is_compressed else [RLELossless, JPEGLSLossless, JPEG2000Lossless]
        for target in targets:
            kind = f"{'decompress' if target == ExplicitVRLittleEndian else 'compress'} -> {target.name}"
            try:
                ours = dataset_to_bytes(transcode_dataset(source, target))
            except Exception:  # noqa: BLE001 - refused here (a profile, a codec)
                ours = None
            theirs_ds = copy.deepcopy(source)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if target == ExplicitVRLittleEndian:
                        theirs_ds.decompress(generate_instance_uid=False)
                    else:
                        theirs_ds.compress(target, generate_instance_uid=False)
                theirs = dataset_to_bytes(theirs_ds)
            except Exception as exc:  # noqa: BLE001
                outcomes[f"{kind}: {'both refuse' if ours is None else f'pydicom fails ({type(exc).__name__})'}"] += 1
                continue
            if ours is None:
                outcomes[f"{kind}: ours refuses, pydicom writes"] += 1
                continue
            if ours == theirs:
                outcomes[f"{kind}: same bytes"] += 1
                continue
            names = _differing(ours, theirs)
            outcomes[f"{kind}: differ"] += 1
            for name in names:
                differences[f"{kind}: {name}"] += 1
    rows = [{"part": "transcode", "what": k, "files": v} for k, v in sorted(outcomes.items())]
    rows += [{"part": "transcode", "what": f"  element differing: {k}", "files": v}
             for k, v in sorted(differences.items())]
    return rows


def _pydicom_layout(path, value_offset: int) -> list[tuple[int, int]]:
    """(data offset, length) of each fragment, from pydicom's parsers at the same file position."""
    with open(path, "rb") as fp:
        fp.seek(value_offset)
        parse_basic_offsets(fp)  # leaves the file after the Basic Offset Table item
        _count, positions = parse_fragments(fp)
        out = []
        for position in positions:
            fp.seek(position + 4)
            length = int.from_bytes(fp.read(4), "little")
            out.append((position + 8, length))
        return out


def fragments(tmp_dir) -> list[dict]:
    same = differ = 0
    for path in samples.pydicom_test_files(with_pixels=True, distinct_sops=False):
        try:
            layout = read_instance(path).layout
        except ValueError:  # pydicom's deliberately truncated files: refused at ingest
            continue
        if not layout.encapsulated or layout.value_offset is None or not layout.frames:
            continue
        ours = [rng for frame in layout.frames for rng in frame]
        if ours == _pydicom_layout(path, layout.value_offset):
            same += 1
        else:
            differ += 1
    ds = samples.generate_ct_series(1, rows=8, columns=8)[0]
    frames = 2000
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([bytes([i % 256]) * 64 for i in range(frames)], has_bot=False)
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = RLELossless
    path = tmp_dir / "many_fragments.dcm"
    ds.save_as(path, enforce_file_format=True)
    offset = read_instance(path).layout.value_offset
    header = pydicom.dcmread(path, stop_before_pixels=True)

    def walk() -> object:  # store.ingest's own walk, alone
        with open(path, "rb") as fp:
            return ingest._encapsulated_frames(fp, offset, header)

    ours_s = statistics.median(timed(walk, 30))
    theirs_s = statistics.median(timed(lambda: _pydicom_layout(path, offset), 30))
    read_s = statistics.median(timed(lambda: pydicom.dcmread(path, stop_before_pixels=True), 30))
    return [
        {"part": "fragments", "what": "bundled encapsulated files, same byte ranges", "files": same},
        {"part": "fragments", "what": "bundled encapsulated files, different byte ranges", "files": differ},
        {"part": "fragments", "what": f"{frames}-fragment instance: store.ingest's walk, ms",
         "files": round(ours_s * 1000, 2)},
        {"part": "fragments", "what": f"{frames}-fragment instance: pydicom parse_fragments + lengths, ms",
         "files": round(theirs_s * 1000, 2)},
        {"part": "fragments", "what": f"{frames}-fragment instance: dcmread of the header alone, ms",
         "files": round(read_s * 1000, 2)},
    ]


def main() -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        rows = transcoding() + fragments(Path(tmp))
    np.set_printoptions(linewidth=200)
    report("pydicom_equivalence", rows)


if __name__ == "__main__":
    main()
