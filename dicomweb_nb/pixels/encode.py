"""Transcoding for WADO-RS: frames and whole instances into another transfer syntax.

Decoding is pydicom's job (with the pylibjpeg plugins and pyjpegls); encoding uses pydicom's
encoders where they exist:

==========================  ========================  ===============================
Target                      UID                       Encoder
==========================  ========================  ===============================
Explicit VR Little Endian   1.2.840.10008.1.2.1       (uncompressed)
Implicit VR Little Endian   1.2.840.10008.1.2         (uncompressed)
Deflated Explicit VR LE     1.2.840.10008.1.2.1.99    (uncompressed, deflated by pydicom on write)
RLE Lossless                1.2.840.10008.1.2.5       pydicom / pylibjpeg-rle
JPEG-LS Lossless            1.2.840.10008.1.2.4.80    pyjpegls
JPEG-LS Near-Lossless       1.2.840.10008.1.2.4.81    pyjpegls (``jls_error``, default 2)
JPEG 2000 Lossless          1.2.840.10008.1.2.4.90    pylibjpeg-openjpeg
JPEG 2000                   1.2.840.10008.1.2.4.91    pylibjpeg-openjpeg (``j2k_cr``, default [10])
JPEG Baseline (8-bit)       1.2.840.10008.1.2.4.50    Pillow (``quality``, default 90)
==========================  ========================  ===============================

pydicom has no JPEG Baseline encoder, but Pillow's libjpeg writes exactly that process for 8-bit
samples, so it is used for 4.50 (RGB is written as YBR_FULL_422, 4:2:2 subsampled, as PS3.5 8.2.1
expects). Every other target (JPEG Lossless 4.57/4.70, JPEG Extended 4.51, HTJ2K, video, the
retired Explicit VR Big Endian, which pydicom cannot write with byte-swapped pixel data) raises
:class:`TranscodeError`, as does a bit depth or photometric interpretation an encoder's profile
(PS3.5 8.2, pydicom's ``ENCODING_PROFILES``) refuses: the server answers 406 then.

Decoded frames are taken as pydicom gives them by default (``as_rgb=True``: YCbCr as RGB), so
their photometric interpretation is the one :class:`~dicomweb_nb.pixels.attributes.ImageAttributes`
records; uncompressed output is little endian and colour-by-pixel (Planar Configuration 0).

Transcoded instances keep their SOP Instance UID (a retrieve must return the instance asked for);
lossy targets set Lossy Image Compression "01" with its method and ratio (PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from ..dicom.uids import is_valid_uid
from ..errors import PixelDecodeError, TranscodeError
from .attributes import ImageAttributes

__all__ = [
    "LOSSY_TRANSFER_SYNTAXES",
    "TARGET_TRANSFER_SYNTAXES",
    "TranscodeError",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "can_encode",
    "dataset_to_bytes",
    "encodable_transfer_syntaxes",
    "encode_frames",
    "encode_problem",
    "encoded_photometric_interpretation",
    "transcode_dataset",
]


UNCOMPRESSED_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
# Lossy targets and their Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1).
LOSSY_TRANSFER_SYNTAXES = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}
_PYDICOM_ENCODED = (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000)
_CANDIDATES = UNCOMPRESSED_TRANSFER_SYNTAXES + (JPEGBaseline8Bit,) + _PYDICOM_ENCODED
# Every transfer syntax some image can be encoded in here (can_encode decides for a given image).
TARGET_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in _CANDIDATES)

DEFAULT_JPEG_QUALITY = 90
DEFAULT_JLS_ERROR = 2
DEFAULT_J2K_COMPRESSION_RATIO = 10.0

_PIXEL_DATA = 0x7FE00010
_NON_INTEGER_PIXEL_DATA = (0x7FE00008, 0x7FE00009)  # Float / Double Float Pixel Data
_OFFSET_TABLES = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (Lengths): they describe old fragments


def _attributes(attrs: ImageAttributes | Dataset) -> ImageAttributes:
    return attrs if isinstance(attrs, ImageAttributes) else ImageAttributes.from_dataset(attrs)


def _uid(transfer_syntax_uid: str) -> UID:
    text = str(transfer_syntax_uid).strip()
    if not is_valid_uid(text, strict=True):
        raise TranscodeError(f"{transfer_syntax_uid!r} is not a UID")
    return UID(text)


def _refusal(uid: UID, attrs: ImageAttributes) -> str | None:
    """Why frames with ``attrs`` cannot be encoded as ``uid``, or None when they can."""
    if uid == ExplicitVRBigEndian:
        return "Explicit VR Big Endian is retired and pydicom cannot byte-swap pixel data to write it"
    if uid in UNCOMPRESSED_TRANSFER_SYNTAXES:
        return None
    if not uid.is_transfer_syntax:
        return f"{uid} is not a transfer syntax this server knows"
    name = uid.name
    pi, spp = attrs.photometric_interpretation, attrs.samples_per_pixel
    ba, bs, pr = attrs.bits_allocated, attrs.bits_stored, attrs.pixel_representation
    described = f"{pi}, {spp} sample(s), {bs} of {ba} bits, pixel representation {pr}"
    if uid == JPEGBaseline8Bit:
        ok = ba == 8 and bs == 8 and pr == 0 and (
            (spp == 1 and pi in ("MONOCHROME1", "MONOCHROME2"))
            or (spp == 3 and pi in ("RGB", "YBR_FULL", "YBR_FULL_422"))
        )
        return None if ok else f"{name} holds 8-bit unsigned grayscale or colour samples, not {described}"
    if uid not in _PYDICOM_ENCODED:
        return f"no encoder is available for {name}"
    from pydicom.pixels.encoders.base import ENCODING_PROFILES, get_encoder

    encoder = get_encoder(uid)
    if not encoder.is_available:
        return f"the {name} encoder is missing: {'; '.join(encoder.missing_dependencies)}"
    for profile_pi, profile_spp, representations, allocated, stored in ENCODING_PROFILES.get(uid, []):
        if (pi, spp) == (profile_pi, profile_spp) and pr in representations and ba in allocated and bs in stored:
            break
    else:
        return f"{name} cannot hold {described} (PS3.5 8.2)"
    if uid in (JPEGLSLossless, JPEGLSNearLossless) and attrs.rows * attrs.columns * spp * max(ba // 8, 1) < 256:
        # pyjpegls gives CharLS an output buffer of twice the raw frame; on images this small the
        # codestream's headers alone can overflow it (measured: noise images up to 9x9 fail).
        return f"the JPEG-LS encoder (pyjpegls) cannot encode images this small ({attrs.columns}x{attrs.rows})"
    if uid in (JPEG2000Lossless, JPEG2000):
        if bs > 24:
            return f"the JPEG 2000 encoder (OpenJPEG) takes at most 24 bits stored, not {bs}"
        # pylibjpeg-openjpeg always uses 6 wavelet resolutions, which need 2**5 pixels each way.
        if 0 < min(attrs.rows, attrs.columns) < 32:
            return f"the JPEG 2000 encoder needs images of at least 32x32 pixels, not {attrs.columns}x{attrs.rows}"
    return None


def encode_problem(transfer_syntax_uid: str, attrs: ImageAttributes | Dataset) -> str | None:
    """Why frames described by ``attrs`` cannot be encoded as the target, or None when they can."""
    try:
        uid = _uid(transfer_syntax_uid)
    except TranscodeError as exc:
        return str(exc)
    return _refusal(uid, _attributes(attrs))


def can_encode(transfer_syntax_uid: str, attrs: ImageAttributes | Dataset) -> bool:
    """Whether frames described by ``attrs`` (or a Dataset's decoded frames) can be encoded as the target.

    Uncompressed targets are always possible. Data-dependent failures (values beyond Bits Stored)
    can still make :func:`encode_frames` raise.
    """
    try:
        uid = _uid(transfer_syntax_uid)
    except TranscodeError:
        return False
    return _refusal(uid, _attributes(attrs)) is None


def encodable_transfer_syntaxes(attrs: ImageAttributes | Dataset) -> list[str]:
    """The transfer syntaxes :func:`encode_frames` can produce for these frames, uncompressed first."""
    image = _attributes(attrs)
    return [str(uid) for uid in _CANDIDATES if _refusal(uid, image) is None]


def encoded_photometric_interpretation(transfer_syntax_uid: str, attrs: ImageAttributes | Dataset) -> str:
    """The Photometric Interpretation of frames after :func:`encode_frames` into the target."""
    image = _attributes(attrs)
    if _uid(transfer_syntax_uid) == JPEGBaseline8Bit and image.samples_per_pixel == 3:
        return "YBR_FULL_422"
    return image.photometric_interpretation


def _frame_list(frames: Sequence[np.ndarray] | np.ndarray, attrs: ImageAttributes) -> list[np.ndarray]:
    """Split an array of frames, or check a list of them, against the attributes' frame shape."""
    single_ndim = 2 if attrs.samples_per_pixel == 1 else 3
    if isinstance(frames, np.ndarray):
        if frames.ndim == single_ndim:
            frames = [frames]
        elif frames.ndim == single_ndim + 1:
            frames = list(frames)
        else:
            raise TranscodeError(f"an array of shape {frames.shape} is neither one frame nor a stack of frames")
    result = []
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != single_ndim:
            raise TranscodeError(f"frame {i} has shape {frame.shape}; expected {single_ndim} dimensions")
        if attrs.rows and attrs.columns and frame.shape[:2] != (attrs.rows, attrs.columns):
            raise TranscodeError(
                f"frame {i} is {frame.shape[0]}x{frame.shape[1]}, the attributes say {attrs.rows}x{attrs.columns}")
        if frame.dtype.kind not in "uib":
            raise TranscodeError(f"frame {i} has dtype {frame.dtype}; only integer pixel data can be encoded")
        result.append(frame)
    if not result:
        raise TranscodeError("no frames to encode")
    return result


def _decode(ds: Dataset) -> tuple[np.ndarray, ImageAttributes]:
    """All frames of a dataset, decoded by pydicom, with attributes describing the decoded array."""
    from pydicom.pixels.decoders.base import get_decoder

    tsyntax = _source_syntax(ds)
    try:
        decoder = get_decoder(tsyntax)
        rgb: dict[str, Any] = {"as_rgb": True}  # pydicom annotates its **kwargs as one DecodeOptions
        array, meta = decoder.as_array(ds, **rgb)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError) as exc:
        array, meta = _decode_frame_by_frame(ds, tsyntax, exc)
    base = ImageAttributes.from_dataset(ds, as_rgb=True)
    attrs = ImageAttributes(
        rows=int(meta.get("rows", base.rows)),
        columns=int(meta.get("columns", base.columns)),
        photometric_interpretation=str(meta.get("photometric_interpretation", base.photometric_interpretation)),
        samples_per_pixel=int(meta.get("samples_per_pixel", base.samples_per_pixel)),
        bits_allocated=int(meta.get("bits_allocated", base.bits_allocated)),
        bits_stored=int(meta.get("bits_stored", base.bits_stored)),
        pixel_representation=int(meta.get("pixel_representation", base.pixel_representation)),
        planar_configuration=0,
        number_of_frames=int(meta.get("number_of_frames", base.number_of_frames)),
    )
    if attrs.number_of_frames == 1 or array.ndim == (2 if attrs.samples_per_pixel == 1 else 3):
        array = array[np.newaxis]
    return array, attrs


def _decode_frame_by_frame(ds: Dataset, tsyntax: UID, failure: Exception) -> tuple[np.ndarray, dict[str, Any]]:
    """Compressed pixel data pydicom could not decode as a whole, decoded one frame at a time by
    ``decode.decode_frame``, which repairs what it knows how to (JPEG scan headers)."""
    from pydicom.encaps import generate_frames

    from .decode import decode_frame

    if not tsyntax.is_encapsulated or "PixelData" not in ds:
        raise TranscodeError(f"cannot decode the {tsyntax.name} pixel data: {failure}") from failure
    try:
        attrs = ImageAttributes.from_dataset(ds)
        frames = [decode_frame(frame, attrs, tsyntax)
                  for frame in generate_frames(ds.PixelData, number_of_frames=attrs.number_of_frames)]
    except (PixelDecodeError, ValueError) as exc:
        raise TranscodeError(f"cannot decode the {tsyntax.name} pixel data: {exc}") from exc
    if len(frames) != attrs.number_of_frames:
        raise TranscodeError(f"cannot decode the {tsyntax.name} pixel data: {failure}") from failure
    return np.stack(frames), {}


def _source_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise TranscodeError("the dataset has no file meta Transfer Syntax UID, so its encoding is unknown")
    return UID(meta.TransferSyntaxUID)


def _native(frame: np.ndarray, attrs: ImageAttributes) -> bytes:
    """Uncompressed little-endian bytes of one frame (bit-packed when Bits Allocated is 1)."""
    if attrs.bits_allocated == 1:
        from pydicom.pixels.utils import pack_bits

        return pack_bits(frame.astype(np.uint8), pad=False)
    if attrs.bits_allocated % 8:
        raise TranscodeError(f"Bits Allocated {attrs.bits_allocated} is not a whole number of bytes")
    signed = attrs.pixel_representation == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{attrs.bits_allocated // 8}")
    if frame.dtype != dtype:
        cast = frame.astype(dtype)
        if not np.array_equal(cast, frame):
            kind = "signed" if signed else "unsigned"
            raise TranscodeError(f"pixel values do not fit {attrs.bits_allocated}-bit {kind} samples")
        frame = cast
    return np.ascontiguousarray(frame).tobytes()


def _pillow_jpeg(frame: np.ndarray, attrs: ImageAttributes, quality: int) -> bytes:
    from PIL import Image
    from pydicom.pixels.processing import convert_color_space

    pixels = frame.astype(np.uint8, copy=False)
    if attrs.samples_per_pixel == 3 and attrs.photometric_interpretation != "RGB":
        pixels = convert_color_space(np.ascontiguousarray(pixels), "YBR_FULL", "RGB")
    out = io.BytesIO()
    # subsampling=1 is 4:2:2 (chroma halved horizontally): exactly DICOM's YBR_FULL_422.
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "JPEG", quality=quality, subsampling=1)
    return out.getvalue()


def _lossy_options(uid: UID, quality: int | None, jls_error: int | None,
                   j2k_cr: Sequence[float] | None, j2k_psnr: Sequence[float] | None) -> dict[str, Any]:
    if uid == JPEGLSNearLossless:
        return {"jls_error": DEFAULT_JLS_ERROR if jls_error is None else int(jls_error)}
    if uid == JPEG2000:
        if j2k_psnr:
            return {"j2k_psnr": [float(v) for v in j2k_psnr]}
        return {"j2k_cr": [float(v) for v in (j2k_cr or [DEFAULT_J2K_COMPRESSION_RATIO])]}
    if uid == JPEGBaseline8Bit:
        value = DEFAULT_JPEG_QUALITY if quality is None else int(quality)
        if not 1 <= value <= 100:
            raise TranscodeError(f"JPEG quality must be between 1 and 100, got {value}")
        return {"quality": value}
    return {}


def encode_frames(
    frames: Sequence[np.ndarray] | np.ndarray | Dataset,
    attrs: ImageAttributes | Dataset | None,
    transfer_syntax_uid: str,
    *,
    quality: int | None = None,
    jls_error: int | None = None,
    j2k_cr: Sequence[float] | None = None,
    j2k_psnr: Sequence[float] | None = None,
) -> list[bytes]:
    """Each frame encoded as one bitstream of the target transfer syntax (uncompressed: raw LE bytes).

    ``frames`` are decoded frames (a list, or an array of one frame or a stack), or a Dataset whose
    frames pydicom decodes (then ``attrs`` may be None). ``attrs`` describes the frames as given.
    Lossy settings: ``quality`` (JPEG Baseline), ``jls_error`` (JPEG-LS near-lossless), ``j2k_cr`` or
    ``j2k_psnr`` (JPEG 2000). Raises :class:`TranscodeError` when the target is impossible.
    """
    uid = _uid(transfer_syntax_uid)
    if isinstance(frames, Dataset):
        stack, decoded_attrs = _decode(frames)
        image, frame_list = decoded_attrs, list(stack)
    else:
        if attrs is None:
            raise TranscodeError("attrs are required with frames given as arrays")
        image = _attributes(attrs)
        frame_list = _frame_list(frames, image)
    if (reason := _refusal(uid, image)) is not None:
        raise TranscodeError(reason)
    options = _lossy_options(uid, quality, jls_error, j2k_cr, j2k_psnr)
    if uid in UNCOMPRESSED_TRANSFER_SYNTAXES:
        return [_native(frame, image) for frame in frame_list]
    if uid == JPEGBaseline8Bit:
        return [_pillow_jpeg(frame, image, options["quality"]) for frame in frame_list]

    from pydicom.pixels.encoders.base import get_encoder

    encoder = get_encoder(uid)
    kwargs = {
        "rows": frame_list[0].shape[0],
        "columns": frame_list[0].shape[1],
        "samples_per_pixel": image.samples_per_pixel,
        "bits_allocated": image.bits_allocated,
        "bits_stored": image.bits_stored,
        "pixel_representation": image.pixel_representation,
        "photometric_interpretation": image.photometric_interpretation,
        "planar_configuration": 0,
        "number_of_frames": 1,
        **options,
    }
    encoded = []
    for i, frame in enumerate(frame_list):
        try:
            encoded.append(bytes(encoder.encode(np.ascontiguousarray(frame), **kwargs)))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise TranscodeError(f"frame {i} cannot be encoded as {uid.name}: {exc}") from exc
    return encoded


def _copy(ds: Dataset) -> Dataset:
    """A copy whose top-level elements are new objects, so changing it leaves ``ds`` alone.

    Values are shared (pixel data is not duplicated); nested sequences are not modified here.
    """
    new = Dataset()
    for tag in ds.keys():
        element = ds[tag]
        new[tag] = DataElement(element.tag, element.VR, element.value,
                               is_undefined_length=element.is_undefined_length, already_converted=True)
    meta = FileMetaDataset()
    for element in getattr(ds, "file_meta", Dataset()):
        meta[element.tag] = DataElement(element.tag, element.VR, element.value, already_converted=True)
    new.file_meta = meta
    if hasattr(ds, "preamble"):
        new.preamble = ds.preamble
    return new


def _set(ds: Dataset, keyword: str, vr: str, value: Any) -> None:
    ds.add_new(keyword, vr, value)


def _set_image_pixel(ds: Dataset, attrs: ImageAttributes, photometric: str) -> None:
    _set(ds, "PhotometricInterpretation", "CS", photometric)
    _set(ds, "SamplesPerPixel", "US", attrs.samples_per_pixel)
    _set(ds, "BitsAllocated", "US", attrs.bits_allocated)
    _set(ds, "BitsStored", "US", attrs.bits_stored)
    _set(ds, "HighBit", "US", attrs.bits_stored - 1)
    _set(ds, "PixelRepresentation", "US", attrs.pixel_representation)
    if attrs.samples_per_pixel > 1:
        _set(ds, "PlanarConfiguration", "US", 0)
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _mark_lossy(ds: Dataset, uid: UID, uncompressed_size: int, compressed_size: int) -> None:
    method = LOSSY_TRANSFER_SYNTAXES[uid]
    ratio = uncompressed_size / max(compressed_size, 1)
    methods = [str(v) for v in _values(ds.get("LossyImageCompressionMethod"))]
    ratios = [str(v) for v in _values(ds.get("LossyImageCompressionRatio"))]
    _set(ds, "LossyImageCompression", "CS", "01")
    _set(ds, "LossyImageCompressionMethod", "CS", methods + [method])
    _set(ds, "LossyImageCompressionRatio", "DS", ratios + [f"{ratio:.4g}"[:16]])


# pydicom's Dataset.decompress and Dataset.compress, where measured to write the same file as the
# decode-and-encode path of transcode_dataset (benchmarks/pydicom_equivalence.py, every bundled
# pydicom image): decompress to Explicit VR Little Endian gives the same bytes for 33 of the 34
# compressed images ours decodes (it fails on JPEG-lossy.dcm, whose scan header only decode_frame
# repairs); lossless compress (RLE, JPEG-LS, JPEG 2000) gives the same bytes for 90 of the 103 images
# ours encodes, and differs on big-endian sources (it encodes their bytes as if little endian: other
# pixels), on Planar Configuration 1 (kept, where PS3.5 8.2 asks 0 of these syntaxes), and fails on
# uncompressed YBR_FULL_422. Those stay on the path below, as do lossy targets (pydicom records no
# Lossy Image Compression, PS3.3 C.7.6.1.1.5), other uncompressed targets, compressed-to-compressed
# (compress takes uncompressed data only) and 1-bit data (decompress would not pack it).
_PYDICOM_LOSSLESS = (RLELossless, JPEGLSLossless, JPEG2000Lossless)


def _by_pydicom(ds: Dataset, source: UID, target: UID) -> Dataset | None:
    """``ds`` transcoded by pydicom's own Dataset methods where they write what ours would, else None."""
    if int(ds.get("BitsAllocated", 0) or 0) % 8:
        return None
    if source.is_compressed and target == ExplicitVRLittleEndian:
        new = _copy(ds)
        try:
            new.decompress(generate_instance_uid=False)
        except Exception:  # noqa: BLE001 - a codec plugin failed: the frame-by-frame path may repair it
            return None
        for tag in _OFFSET_TABLES:  # they described the compressed fragments
            if tag in new:
                del new[tag]
        return new
    if (target in _PYDICOM_LOSSLESS and not source.is_compressed and source.is_little_endian
            and int(ds.get("PlanarConfiguration", 0) or 0) == 0 and encode_problem(target, ds) is None):
        new = _copy(ds)
        try:
            new.compress(target, generate_instance_uid=False)
        except Exception:  # noqa: BLE001 - refused by an encoder's checks: the path below names why
            return None
        return new
    return None


def transcode_dataset(
    ds: Dataset,
    transfer_syntax_uid: str,
    *,
    quality: int | None = None,
    jls_error: int | None = None,
    j2k_cr: Sequence[float] | None = None,
    j2k_psnr: Sequence[float] | None = None,
) -> Dataset:
    """A new Dataset holding ``ds`` in the target transfer syntax (``ds`` itself is not changed).

    Write it with :func:`dataset_to_bytes` or ``pydicom.dcmwrite(..., enforce_file_format=True)``.
    Uncompressed to uncompressed only relabels the encoding; anything else decodes the pixel data with
    pydicom and encodes it again (see :func:`encode_frames` for the lossy settings). Instances
    without pixel data go to uncompressed targets only. Raises :class:`TranscodeError`.
    """
    target = _uid(transfer_syntax_uid)
    source = _source_syntax(ds)
    if target == source:
        return _copy(ds)
    if target == ExplicitVRBigEndian or (target not in UNCOMPRESSED_TRANSFER_SYNTAXES and not target.is_transfer_syntax):
        raise TranscodeError(_refusal(target, ImageAttributes(1, 1)) or f"{target} is not a transfer syntax")
    has_pixels = _PIXEL_DATA in ds
    target_compressed = target not in UNCOMPRESSED_TRANSFER_SYNTAXES
    if not has_pixels:
        if target_compressed and any(t in ds for t in _NON_INTEGER_PIXEL_DATA):
            raise TranscodeError(f"float pixel data is never compressed, so the instance cannot be put into {target.name}")
        # A compressed syntax encodes only Pixel Data; the rest of any dataset is Explicit VR Little
        # Endian (PS3.5 A.4), so an instance without pixels is the same bytes under the new label.
        new = _copy(ds)
        new.file_meta.TransferSyntaxUID = target
        return new

    new = _copy(ds)
    if not target_compressed and not source.is_compressed and source.is_little_endian:
        new.file_meta.TransferSyntaxUID = target  # same pixel bytes, only the encoding of the rest changes
        return new
    if (done := _by_pydicom(ds, source, target)) is not None:
        return done

    stack, attrs = _decode(ds)
    if (reason := _refusal(target, attrs)) is not None:
        raise TranscodeError(reason)
    photometric = encoded_photometric_interpretation(target, attrs)
    for tag in _OFFSET_TABLES:
        if tag in new:
            del new[tag]
    del new[_PIXEL_DATA]
    _set_image_pixel(new, attrs, photometric)
    if not target_compressed:
        data = b"".join(_native(frame, attrs) for frame in stack)
        if len(data) % 2:
            data += b"\0"
        _set(new, "PixelData", "OB" if attrs.bits_allocated <= 8 else "OW", data)
        new.file_meta.TransferSyntaxUID = target
        return new

    frames = encode_frames(list(stack), attrs, target, quality=quality, jls_error=jls_error,
                           j2k_cr=j2k_cr, j2k_psnr=j2k_psnr)
    from pydicom.encaps import encapsulate, encapsulate_extended

    total = sum(len(f) + 8 for f in frames)
    if total > 2**32 - 2:
        data, offsets, lengths = encapsulate_extended(frames)
        _set(new, "ExtendedOffsetTable", "OV", offsets)
        _set(new, "ExtendedOffsetTableLengths", "OV", lengths)
    else:
        data = encapsulate(frames)
    element = DataElement(_PIXEL_DATA, "OB", data, is_undefined_length=True)
    new[_PIXEL_DATA] = element
    new.file_meta.TransferSyntaxUID = target
    if target in LOSSY_TRANSFER_SYNTAXES:
        _mark_lossy(new, target, stack.nbytes, sum(len(f) for f in frames))
    return new


def dataset_to_bytes(ds: Dataset) -> bytes:
    """A DICOM Part 10 file (preamble, file meta, dataset in its file meta transfer syntax)."""
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
