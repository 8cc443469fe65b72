"""Media types of PS3.18 (section 8.7) and HTTP content negotiation (RFC 9110 12.5.1).

One parser for Content-Type and Accept headers, used by the server to choose what to answer and
by the client to read what it was sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom import uid

# Raised by the parsers and negotiation here, so importable from here too (explicit re-export).
from ..errors import MediaTypeError as MediaTypeError
from ..errors import NotAcceptable as NotAcceptable

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
ZIP = "application/zip"

# PS3.18 Table 8.7.3-5: the single-frame / multi-frame media type of each compressed transfer syntax.
TRANSFER_SYNTAX_MEDIA_TYPES: dict[str, str] = {
    uid.JPEGBaseline8Bit: "image/jpeg",
    uid.JPEGExtended12Bit: "image/jpeg",
    uid.JPEGLossless: "image/jpeg",
    uid.JPEGLosslessSV1: "image/jpeg",
    uid.JPEGLSLossless: "image/jls",
    uid.JPEGLSNearLossless: "image/jls",
    uid.JPEG2000Lossless: "image/jp2",
    uid.JPEG2000: "image/jp2",
    uid.JPEG2000MCLossless: "image/jpx",
    uid.JPEG2000MC: "image/jpx",
    uid.RLELossless: "image/dicom-rle",
    uid.MPEG2MPML: "video/mpeg",
    uid.MPEG2MPHL: "video/mpeg",
    uid.MPEG4HP41: "video/mp4",
    uid.MPEG4HP41BD: "video/mp4",
    uid.HTJ2KLossless: "image/jphc",
    uid.HTJ2KLosslessRPCL: "image/jphc",
    uid.HTJ2K: "image/jphc",
}

# The default transfer syntax of each bulk media type (PS3.18 Table 8.7.3-5, first row of each type).
DEFAULT_TRANSFER_SYNTAX: dict[str, str] = {
    "image/jpeg": uid.JPEGLosslessSV1,
    "image/jls": uid.JPEGLSLossless,
    "image/jp2": uid.JPEG2000Lossless,
    "image/jpx": uid.JPEG2000MCLossless,
    "image/dicom-rle": uid.RLELossless,
    "application/octet-stream": uid.ExplicitVRLittleEndian,
}


@dataclass(frozen=True)
class MediaType:
    """A media type or media range with its parameters (names lower-cased, values unquoted)."""

    type: str
    params: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    quality: float = 1.0

    @property
    def main(self) -> str:
        return self.type.split("/", 1)[0]

    @property
    def sub(self) -> str:
        return self.type.split("/", 1)[1]

    def matches(self, concrete: str) -> bool:
        """Whether this range (``*/*``, ``image/*``, ``image/png``) admits the concrete type."""
        if self.type == "*/*":
            return True
        main, sub = concrete.lower().split("/", 1)
        return self.main == main and (self.sub == "*" or self.sub == sub)

    def __str__(self) -> str:
        params = "".join(f'; {k}="{v}"' if _needs_quotes(v) else f"; {k}={v}" for k, v in self.params.items())
        return self.type + params


def _needs_quotes(value: str) -> bool:
    return any(c in value for c in ' ;,"=()<>@:\\/[]?{}\t') or value == ""


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double-quoted strings."""
    parts, buf, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise MediaTypeError(f"unterminated quoted string in {text!r}")
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out, escaped = [], False
        for ch in inner:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return value


def parse_media_type(text: str) -> MediaType:
    """Parse one media type with parameters, e.g. a Content-Type header value."""
    pieces = _split_top(text, ";")
    mtype = pieces[0].strip().lower()
    if mtype == "*":  # some clients send a bare "*" for "*/*"
        mtype = "*/*"
    if mtype.count("/") != 1 or not all(mtype.split("/")):
        raise MediaTypeError(f"malformed media type {text.strip()!r}")
    params: dict[str, str] = {}
    quality = 1.0
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        if "=" not in piece:
            raise MediaTypeError(f"malformed media type parameter {piece.strip()!r} in {text.strip()!r}")
        name, value = piece.split("=", 1)
        name = name.strip().lower()
        value = _unquote(value)
        if name == "q":
            try:
                quality = float(value)
            except ValueError:
                raise MediaTypeError(f"malformed quality value q={value!r}") from None
            if not 0.0 <= quality <= 1.0:
                raise MediaTypeError(f"quality value q={value} outside 0..1")
            continue
        params[name] = value
    return MediaType(mtype, params, quality)


class AcceptList(list):
    """The acceptable media ranges of an Accept header, best first.

    ``refused`` holds the ranges given ``q=0``: RFC 9110 12.5.1 makes them "not acceptable", which
    overrides a wider range (``application/json;q=0, */*`` refuses JSON).
    """

    refused: list[MediaType]

    def __init__(self, ranges: Iterable[MediaType] = (), refused: Iterable[MediaType] = ()):
        super().__init__(ranges)
        self.refused = list(refused)


def _specificity(m: MediaType) -> int:
    return (m.main != "*") + (m.sub != "*") + bool(m.params)


def parse_accept(header: str | None) -> AcceptList:
    """Media ranges of an Accept header, best first (by q, then specificity, then order).

    An absent or empty header accepts anything. Ranges with ``q=0`` are left out of the list and
    kept in its ``refused`` attribute.
    """
    if header is None or not header.strip():
        return AcceptList([MediaType("*/*")])
    ranges = [parse_media_type(part) for part in _split_top(header, ",") if part.strip()]
    ordered = sorted(enumerate(ranges), key=lambda im: (-im[1].quality, -_specificity(im[1]), im[0]))
    return AcceptList((m for _, m in ordered if m.quality > 0), (m for m in ranges if m.quality == 0))


def negotiate(accept: list[MediaType], offers: list[str]) -> tuple[str, MediaType]:
    """Pick the first offer (concrete type) that the client's best acceptable range admits.

    ``multipart/related`` ranges are matched by their ``type`` parameter, so an offer is written as
    ``multipart/related; type=application/dicom`` and compared on both parts.
    Returns (offer, the accepting range), or raises NotAcceptable.
    """
    refused = getattr(accept, "refused", [])
    for rng in accept:
        for offer in offers:
            if _admits(rng, offer) and not _is_refused(refused, rng, offer):
                return offer, rng
    wanted = ", ".join([str(r) for r in accept] + [f"{r};q=0" for r in refused])
    raise NotAcceptable(f"none of the requested media types ({wanted}) can be produced here; available: {', '.join(offers)}")


def _is_refused(refused: list[MediaType], rng: MediaType, offer: str) -> bool:
    """Whether a q=0 range at least as specific as ``rng`` excludes ``offer``."""
    return any(_admits(r, offer) and _specificity(r) >= _specificity(rng) for r in refused)


def _admits(rng: MediaType, offer: str) -> bool:
    offer_mt = parse_media_type(offer)
    if not rng.matches(offer_mt.type):
        return False
    if offer_mt.type == MULTIPART_RELATED and rng.type == MULTIPART_RELATED:
        wanted = rng.params.get("type")
        return wanted is None or wanted.lower() == offer_mt.params.get("type", "").lower()
    return True


def multipart_content_type(part_type: str, boundary: str, **params: str) -> str:
    """The Content-Type header of a multipart/related answer whose parts are ``part_type``."""
    extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'
