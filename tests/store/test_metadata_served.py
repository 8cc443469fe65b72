"""The metadata and bulk data the store serves (here through its in-process source, as ``dw.connect()``
does) equal pydicom's reading of every bundled file, attribute by attribute and byte for byte."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_frames

from dicomweb_nb import samples
from dicomweb_nb.client.local import StoreSource
from dicomweb_nb.store.ingest import NotDicomError, read_instance
from tests.fixtures.metadata import metadata_problems, native_layout

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _storable() -> list[Path]:
    out = []
    for path in samples.pydicom_test_files(distinct_sops=False):
        try:
            read_instance(path)
        except NotDicomError:
            continue  # the corpus's truncated files
        out.append(path)
    return out


FILES = _storable()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The bundled files in as few stores as keep each SOP Instance UID once per store."""
    stores: list[tuple[set[str], list[Path]]] = []
    for path in FILES:
        sop = read_instance(path).sop_uid
        bucket = next((b for b in stores if sop not in b[0]), None)
        if bucket is None:
            bucket = (set(), [])
            stores.append(bucket)
        bucket[0].add(sop)
        bucket[1].append(path)
    by_file = {}
    opened = []
    for i, (_, paths) in enumerate(stores):
        source = StoreSource(tmp_path_factory.mktemp(f"store{i}") / ".dicomweb")
        outcomes = source.store.store_files(paths, move=False)  # copies: never take the bundled files away
        assert all(o.stored for o in outcomes), [o for o in outcomes if not o.stored]
        opened.append(source)
        by_file.update({path: source for path in paths})
    yield by_file
    for source in opened:
        source.close()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_served_metadata_and_bulk_data_equal_pydicom(sources, path):
    source = sources[path]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    (meta,) = source.retrieve_metadata(*uids)
    parts = list(source.iter_bulkdata(*uids))
    by_location = {part.location: bytes(part.data) for part in parts}
    encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated if "TransferSyntaxUID" in ds.file_meta else False

    def resolve(uri: str, elem) -> bytes | None:
        if elem.tag == 0x7FE00010 and encapsulated:
            return None  # compressed pixel data comes as its frames: checked below
        assert uri in by_location, f"{uri} is not among the Retrieve Bulkdata parts"
        return by_location[uri]

    assert metadata_problems(ds, meta, resolve=resolve) == []
    if encapsulated and "PixelData" in ds:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        frames = [bytes(p.data) for p in parts if "/frames/" in p.location]
        assert [f.rstrip(b"\0") for f in frames] == [
            f.rstrip(b"\0") for f in generate_frames(ds.PixelData, number_of_frames=count)
        ]


def test_big_endian_pixel_data_is_served_little_endian(sources):
    """Pixel data bulk data and frames of Explicit VR Big Endian instances: little-endian native bytes."""
    checked = set()
    for path, source in sources.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        if ds.file_meta.get("TransferSyntaxUID") != "1.2.840.10008.1.2.2" or "PixelData" not in ds or ds.BitsAllocated == 1:
            continue
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        native = native_layout(ds, ds.pixel_array)
        (pixels,) = [p for p in source.iter_bulkdata(*uids) if p.location.endswith("/bulk/7FE00010")]
        assert bytes(pixels.data)[:native.nbytes] == native.tobytes(), path.name
        count = int(ds.get("NumberOfFrames", 1) or 1)
        frames = source.retrieve_frames(*uids, list(range(1, count + 1)))
        assert b"".join(f.data for f in frames) == native.tobytes(), path.name
        assert {f.transfer_syntax_uid for f in frames} == {"1.2.840.10008.1.2.1"}
        checked.add(path.name)
    assert {"ExplVR_BigEnd.dcm", "MR_small_bigendian.dcm", "rtdose_expb.dcm", "SC_rgb_small_odd_big_endian.dcm"} <= checked


def test_in_process_rendering_takes_the_servers_parameters(sources):
    from dicomweb_nb.errors import NotAcceptable

    path = next(p for p in sources if p.name == "CT_small.dcm")
    source = sources[path]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    plain = source.retrieve_rendered(*uids, params={"iccprofile": "no"})
    annotated = source.retrieve_rendered(*uids, params={"annotation": "patient,technique"})
    assert plain.data != annotated.data
    with pytest.raises(NotAcceptable, match="ICC profile"):
        source.retrieve_rendered(*uids, params={"iccprofile": "srgb"})
    with pytest.warns(UserWarning, match="windw"):
        source.retrieve_rendered(*uids, params={"windw": "40,400"})
