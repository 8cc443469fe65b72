"""The query parameters of the retrieve services: which each one honours, which it refuses, and what
happens to the others. One table, so the answer to "is this parameter used?" is never "silently not".

* Honoured: the parameters PS3.18 defines for the service and this server implements (below).
* Refused with a 4xx naming the parameter: those PS3.18 defines but whose meaning this server cannot
  deliver, where ignoring them would send something else than asked for: ``anonymize`` (WADO-URI) for
  an object whose pixels may show burned-in text (409; otherwise it is de-identified by the PS3.15
  Basic Profile, ``dicom.deidentify``), ``presentationUID`` /
  ``presentationSeriesUID`` (the image would not be the presentation state's), ``iccprofile`` other
  than ``no`` (406, ``pixels.renderparams.check_iccprofile``), a ``charset`` the answer is not in (406).
* Anything else is ignored, as PS3.18 8.3 requires ("The origin server shall ignore any unsupported
  Query Parameters ... and may return a response containing appropriate warning"), and named in a
  ``Warning: 299`` header of the answer, so a typo (``windw=``) does not go unnoticed.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import Any

from ..pixels.renderparams import RENDERED_PARAMETERS
from .base import ApiError

# Authentication (ours and Jupyter's) and content negotiation (PS3.18 8.3.3.1) are everywhere.
_EVERYWHERE = frozenset({"token", "_xsrf", "accept"})
RETRIEVE = _EVERYWHERE
METADATA = _EVERYWHERE | {"charset"}
FRAMES = _EVERYWHERE
BULKDATA = _EVERYWHERE
RENDERED = _EVERYWHERE | RENDERED_PARAMETERS
# Thumbnails take the viewport (PS3.18 8.3.5.1.3); window and quality are honoured there as in rendered.
THUMBNAIL = _EVERYWHERE | (RENDERED_PARAMETERS - {"annotation"})
WADO_URI = frozenset({
    "requestType", "studyUID", "seriesUID", "objectUID", "contentType", "charset", "anonymize", "annotation",
    "rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber", "imageQuality",
    "presentationUID", "presentationSeriesUID", "transferSyntax", "token", "_xsrf",
})


def warn_unknown(handler: Any, known: frozenset[str]) -> None:
    """Name every query parameter outside ``known`` in a Warning header: ignored, as PS3.18 8.3 says."""
    for name in sorted(set(handler.request.query_arguments) - known):
        shown = name if name.isprintable() and len(name) <= 64 else repr(name[:64])
        handler.add_header(
            "Warning", f'299 dicomweb-nb "unknown query parameter {shown.replace(chr(34), chr(39))} ignored (PS3.18 8.3)"'
        )


def refuse_presentation_state() -> None:
    raise ApiError(400, "presentationUID / presentationSeriesUID: this server does not apply presentation states, "
                        "and will not send an image without the presentation asked for; leave them out for the "
                        "image as the instance's own attributes display it")


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        return None


def check_charset(values: Iterable[str], offered: Iterable[str], what: str) -> None:
    """A ``charset`` query parameter (PS3.18 8.3.3.2) against the character sets of the answer.

    ``values`` are the parameter's values (comma-separated lists, ``;q=`` weights ignored, ``*`` for
    any); ``offered`` the Python codec names the answer's text is in. Unknown names are ignored, as
    PS3.18 8.8.4 says of Accept-Charset; when none acceptable remains the answer is a 406 saying which
    character set the answer is in, since this server does not convert between character sets.
    """
    wanted = [v.split(";")[0].strip() for value in values for v in value.split(",") if v.strip()]
    if not wanted or "*" in wanted:
        return
    accepted = {c for c in map(_codec, wanted) if c}
    if not accepted:
        return
    needed = {c for c in map(_codec, offered) if c}
    # ASCII text is the same bytes in every ASCII-compatible character set.
    ascii_compatible = {c for c in accepted if c not in ("utf-16", "utf-32", "utf-16-le", "utf-16-be", "cp037")}
    if needed <= accepted or (needed <= {"ascii"} and ascii_compatible):
        return
    raise ApiError(406, f"charset={','.join(wanted)}: {what} is in {', '.join(sorted(needed))}, and this server "
                        "does not convert character sets; ask for that charset, or leave charset out")


def instance_charsets(specific_character_set: list[Any]) -> list[str]:
    """The Python codecs of an instance's Specific Character Set values (ASCII when absent)."""
    from pydicom.charset import python_encoding

    # No value (or an empty first one) is the default repertoire, ISO-IR 6: ASCII (PS3.3 C.12.1.1.2).
    terms = [str(v or "").strip() for v in specific_character_set] or [""]
    return ["ascii" if term in ("", "ISO_IR 6", "ISO 2022 IR 6") else python_encoding.get(term, term) for term in terms]
