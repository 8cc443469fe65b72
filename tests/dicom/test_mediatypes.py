"""Media types and content negotiation (PS3.18 8.7, RFC 9110 12.5.1)."""

from __future__ import annotations

import pytest

from dicomweb_nb.dicom.mediatypes import (
    DICOM_JSON,
    DICOM_XML,
    JSON,
    MediaType,
    MediaTypeError,
    NotAcceptable,
    multipart_content_type,
    negotiate,
    parse_accept,
    parse_media_type,
)

XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'
QIDO_OFFERS = [DICOM_JSON, JSON, XML_MULTIPART]


def types(header):
    return [(m.type, m.params, m.quality) for m in parse_accept(header)]


def test_parse_media_type_lowercases_type_and_parameter_names_and_unquotes_values():
    m = parse_media_type('Multipart/Related; Type="application/dicom"; BOUNDARY="a\\"b;c,d"; start=<x@y>')
    assert m.type == "multipart/related"
    assert m.params == {"type": "application/dicom", "boundary": 'a"b;c,d', "start": "<x@y>"}
    assert (m.main, m.sub) == ("multipart", "related")
    assert m.quality == 1.0


@pytest.mark.parametrize("boundary", ["simple", "'+_-.", "gc0p4Jq0M2Yt08jU534c0p"])
def test_unquoted_boundary(boundary):
    m = parse_media_type(f"multipart/related; type=application/dicom; boundary={boundary}")
    assert m.params["boundary"] == boundary
    assert m.params["type"] == "application/dicom"


@pytest.mark.parametrize("boundary", ["'()+_,-./:=?", "a b", "x=y", "=?a?="])
def test_quoted_boundary_with_tspecials(boundary):
    m = parse_media_type(f'multipart/related; boundary="{boundary}"; type="application/dicom"')
    assert m.params["boundary"] == boundary


def test_str_quotes_only_what_needs_quoting():
    assert str(parse_media_type('multipart/related; type="application/dicom"; boundary=abc')) == \
        'multipart/related; type="application/dicom"; boundary=abc'
    assert str(MediaType("text/plain", {"charset": "utf-8"})) == "text/plain; charset=utf-8"


@pytest.mark.parametrize("text, message", [
    ("foo", "malformed media type 'foo'"),
    ("a/", "malformed media type"),
    ("/b", "malformed media type"),
    ("a/b/c", "malformed media type"),
    ("a/b; x", "malformed media type parameter 'x'"),
    ('a/b; x="open', "unterminated quoted string"),
    ("a/b; q=x", "malformed quality value q='x'"),
    ("a/b; q=2", "outside 0..1"),
    ("a/b; q=-0.5", "outside 0..1"),
])
def test_malformed_media_types(text, message):
    with pytest.raises(MediaTypeError, match=message.replace("(", r"\(")):
        parse_media_type(text)


def test_accept_absent_or_empty_accepts_anything():
    assert types(None) == [("*/*", {}, 1.0)]
    assert types("") == [("*/*", {}, 1.0)]
    assert types("  ") == [("*/*", {}, 1.0)]


def test_bare_star_is_read_as_any():
    assert types("*") == [("*/*", {}, 1.0)]


def test_accept_is_ordered_by_quality_then_specificity_then_order():
    header = ("*/*;q=0.1, application/*;q=0.5, text/plain;q=0.5, application/json, "
              'multipart/related; type="application/dicom+xml";q=0.8, application/dicom+json')
    assert [m.type for m in parse_accept(header)] == [
        "application/json", "application/dicom+json", "multipart/related", "text/plain", "application/*", "*/*",
    ]
    ordered = parse_accept("image/*, image/png, image/png;level=1")
    assert [(m.type, m.params) for m in ordered] == [("image/png", {"level": "1"}), ("image/png", {}), ("image/*", {})]


def test_q_zero_ranges_are_refused_not_listed():
    accept = parse_accept("application/dicom+json;q=0, */*")
    assert [m.type for m in accept] == ["*/*"]
    assert [m.type for m in accept.refused] == ["application/dicom+json"]


def test_negotiate_takes_the_first_offer_the_best_range_admits():
    assert negotiate(parse_accept(None), QIDO_OFFERS)[0] == DICOM_JSON
    assert negotiate(parse_accept("application/json"), QIDO_OFFERS)[0] == JSON
    assert negotiate(parse_accept("text/html, application/*;q=0.5"), QIDO_OFFERS) == (
        DICOM_JSON,
        MediaType("application/*", {}, 0.5),
    )
    assert negotiate(parse_accept("application/json;q=0.4, application/dicom+json;q=0.9"), QIDO_OFFERS)[0] == DICOM_JSON
    assert negotiate(parse_accept("text/html;q=1, */*;q=0.1"), QIDO_OFFERS)[0] == DICOM_JSON


def test_negotiate_honours_q_zero_over_a_wider_range():
    assert negotiate(parse_accept("application/dicom+json;q=0, */*"), QIDO_OFFERS)[0] == JSON
    assert negotiate(parse_accept("application/dicom+json;q=0, application/json;q=0, */*"), QIDO_OFFERS)[0] == XML_MULTIPART
    # A refused wide range does not veto a more specific acceptable one.
    assert negotiate(parse_accept("*/*;q=0, application/json"), QIDO_OFFERS)[0] == JSON
    with pytest.raises(NotAcceptable, match="application/dicom\\+json;q=0"):
        negotiate(parse_accept("application/dicom+json;q=0"), [DICOM_JSON])


def test_negotiate_matches_multipart_by_its_type_parameter():
    assert negotiate(parse_accept('multipart/related; type="application/dicom+xml"'), QIDO_OFFERS)[0] == XML_MULTIPART
    assert negotiate(parse_accept("multipart/related; type=Application/Dicom+XML"), QIDO_OFFERS)[0] == XML_MULTIPART
    # multipart/related without a type admits any multipart offer.
    assert negotiate(parse_accept("multipart/related"), QIDO_OFFERS)[0] == XML_MULTIPART
    assert negotiate(parse_accept("multipart/*"), QIDO_OFFERS)[0] == XML_MULTIPART
    with pytest.raises(NotAcceptable):
        negotiate(parse_accept('multipart/related; type="application/dicom"'), QIDO_OFFERS)


def test_not_acceptable_names_what_was_asked_and_what_is_available():
    with pytest.raises(NotAcceptable) as info:
        negotiate(parse_accept("image/png, text/html;q=0.5"), [DICOM_JSON, DICOM_XML])
    message = str(info.value)
    assert "image/png" in message and "text/html" in message
    assert "application/dicom+json, application/dicom+xml" in message


def test_media_range_matching():
    assert MediaType("*/*").matches("image/png")
    assert MediaType("image/*").matches("Image/PNG")
    assert not MediaType("image/*").matches("application/dicom")
    assert MediaType("application/dicom").matches("application/dicom")
    assert not MediaType("application/dicom").matches("application/dicom+json")


def test_multipart_content_type():
    header = multipart_content_type("application/dicom", "b0und", transfer_syntax="1.2.840.10008.1.2.1")
    assert header == 'multipart/related; type="application/dicom"; boundary=b0und; transfer-syntax=1.2.840.10008.1.2.1'
    parsed = parse_media_type(header)
    assert parsed.params == {"type": "application/dicom", "boundary": "b0und", "transfer-syntax": "1.2.840.10008.1.2.1"}
