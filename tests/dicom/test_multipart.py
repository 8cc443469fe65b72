"""The streaming multipart/related parser and writer (RFC 2046 5.1, RFC 2387).

Every well-formed body is fed at every chunk size from 1 byte to the whole body: the parser must
give the same parts however the network splits them.
"""

from __future__ import annotations

import os

import pytest

from dicomweb_nb.dicom.multipart import (
    MultipartError,
    MultipartParser,
    MultipartWriter,
    PartBegin,
    PartData,
    PartEnd,
    encode_multipart,
    iter_parts,
    new_boundary,
)

# Content that looks like framing but is not: a CRLF pair, a blank line, a dash line, a boundary
# prefix without a line break before it, and binary noise.
TRICKY = b"\r\n\r\n--\r\n-- x\r\n\x00\xff\r\r\n\n\r" + bytes(range(256))


def parse_all(body: bytes, boundary: str | bytes, chunk: int) -> list[tuple[dict[str, str], bytes]]:
    """Parse ``body`` fed ``chunk`` bytes at a time, checking the event stream is well formed."""
    parser = MultipartParser(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    current: list[bytes] | None = None
    headers: dict[str, str] = {}
    for start in range(0, len(body), chunk):
        for event in parser.feed(body[start:start + chunk]):
            if isinstance(event, PartBegin):
                assert current is None, "PartBegin inside a part"
                headers, current = event.headers, []
            elif isinstance(event, PartData):
                assert current is not None, "PartData outside a part"
                assert event.data, "empty PartData event"
                current.append(event.data)
            else:
                assert isinstance(event, PartEnd)
                assert current is not None, "PartEnd outside a part"
                parts.append((headers, b"".join(current)))
                current = None
    parser.finish()
    assert parser.complete
    assert parser.parts_seen == len(parts)
    return parts


def every_chunk_size(body: bytes, boundary: str | bytes, expected: list[tuple[dict[str, str], bytes]]) -> None:
    for chunk in range(1, len(body) + 1):
        assert parse_all(body, boundary, chunk) == expected, f"chunk size {chunk}"


def crlf_body(boundary: str, parts: list[tuple[str, bytes]], *, preamble: bytes = b"", epilogue: bytes = b"",
              padding: bytes = b"") -> bytes:
    b = boundary.encode("latin-1")
    out = bytearray(preamble + (b"\r\n" if preamble else b""))
    for ctype, content in parts:
        out += b"--" + b + padding + b"\r\n" + f"Content-Type: {ctype}\r\n\r\n".encode() + content + b"\r\n"
    out += b"--" + b + b"--" + padding + (b"\r\n" + epilogue if epilogue else b"")
    return bytes(out)


# RFC 2046 bchars: DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-" / "." / "/" / ":" / "=" / "?" / " "
# (a space only inside, never last), 1 to 70 characters.
ODD_BOUNDARIES = [
    "b",
    "x" * 70,
    "'()+_,-./:=?",
    "gc0p4Jq0M2Yt08jU534c0p",
    "a b",
    "==?==",
    "--",
    "-_-",
    "simple boundary",
    "0123456789",
]


@pytest.mark.parametrize("boundary", ODD_BOUNDARIES)
def test_every_legal_boundary_at_every_chunk_size(boundary):
    parts = [("application/dicom", TRICKY), ("application/dicom", b"second"), ("application/dicom", b"")]
    body = crlf_body(boundary, parts)
    expected = [({"content-type": c}, data) for c, data in parts]
    every_chunk_size(body, boundary, expected)
    every_chunk_size(body, boundary.encode("latin-1"), expected)


def test_preamble_and_epilogue_are_ignored_at_every_chunk_size():
    boundary = "XyZ"
    # The preamble holds the boundary text without a line break before it: not a delimiter.
    preamble = b"This is a multi-part message in MIME format. --XyZ is not a delimiter here --XyZ--"
    epilogue = b"\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\nignored after the close delimiter\r\n--XyZ--\r\n"
    body = crlf_body(boundary, [("application/dicom", b"one"), ("application/dicom", TRICKY)],
                     preamble=preamble, epilogue=epilogue)
    every_chunk_size(body, boundary, [({"content-type": "application/dicom"}, b"one"),
                                      ({"content-type": "application/dicom"}, TRICKY)])


def test_transport_padding_after_boundaries():
    body = crlf_body("pad", [("application/dicom", b"abc"), ("application/dicom", b"def")], padding=b" \t  ")
    every_chunk_size(body, "pad", [({"content-type": "application/dicom"}, b"abc"),
                                   ({"content-type": "application/dicom"}, b"def")])


def test_lf_only_bodies_are_tolerated():
    # Generated on Unix: bare LF everywhere; the content itself holds CRLF CRLF, which must not
    # be taken for the end of the LF-only header block.
    content = b"DICM\r\n\r\nbinary\r\rend"
    body = (b"--lf\nContent-Type: application/dicom\nContent-Location: a.dcm\n\n" + content
            + b"\n--lf\n\nno headers\n--lf--\n")
    every_chunk_size(body, "lf", [
        ({"content-type": "application/dicom", "content-location": "a.dcm"}, content),
        ({}, b"no headers"),
    ])


def test_mixed_line_endings():
    body = b"--m\r\nContent-Type: application/dicom\n\nA\r\n--m\nContent-Type: application/dicom\r\n\r\nB\n--m--"
    every_chunk_size(body, "m", [({"content-type": "application/dicom"}, b"A"),
                                 ({"content-type": "application/dicom"}, b"B")])


def test_part_headers_are_case_insensitive_folded_and_keep_parameters():
    body = (b"--h\r\nCONTENT-TYPE:application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
            b"X-Folded: first\r\n  second\r\ncontent-location:   http://x/y  \r\n\r\nZ\r\n--h--\r\n")
    [(headers, content)] = parse_all(body, "h", 7)
    assert headers == {
        "content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
        "x-folded": "first second",
        "content-location": "http://x/y",
    }
    assert content == b"Z"
    assert PartBegin(headers).content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"


def test_part_without_headers_has_no_content_type():
    [(headers, content)] = parse_all(b"--e\r\n\r\nbare\r\n--e--", "e", 3)
    assert headers == {} and content == b"bare"
    assert PartBegin(headers).content_type is None


def test_malformed_part_header_is_an_error():
    with pytest.raises(MultipartError, match="malformed multipart part header 'no colon here'$"):
        parse_all(b"--h\r\nno colon here\r\n\r\nZ\r\n--h--", "h", 100)


def test_endless_part_headers_are_an_error():
    parser = MultipartParser("h")
    parser.feed(b"--h\r\n")
    with pytest.raises(MultipartError, match="too long"):
        for _ in range(100):
            parser.feed(b"X-Long: " + b"a" * 1000 + b"\r\n")


def test_garbage_after_a_boundary_is_an_error():
    with pytest.raises(MultipartError, match="after a multipart boundary"):
        parse_all(b"--b\r\n\r\n1\r\n--bogus\r\n\r\n2\r\n--b--", "b", 5)


@pytest.mark.parametrize("cut", [1, 5, 20, 40, -8, -3, -1])
def test_truncated_bodies_are_reported_at_finish(cut):
    body = crlf_body("t", [("application/dicom", b"0123456789" * 3)])
    truncated = body[:cut]
    for chunk in (1, 7, len(truncated)):
        parser = MultipartParser("t")
        for start in range(0, len(truncated), chunk):
            parser.feed(truncated[start:start + chunk])
        assert not parser.complete
        with pytest.raises(MultipartError, match="truncated|no multipart boundary"):
            parser.finish()


def test_body_without_its_boundary():
    body = crlf_body("right", [("application/dicom", b"x")])
    parser = MultipartParser("wrong")
    assert parser.feed(body) == []
    with pytest.raises(MultipartError, match="no multipart boundary found"):
        parser.finish()


def test_garbled_boundary_inside_content_is_data():
    # "--b" not at a line start, and "\r\n-b" (one dash), are content, not delimiters.
    content = b"x--b\r\n-b\r\n--\r\nb"
    body = crlf_body("b", [("application/dicom", content)])
    every_chunk_size(body, "b", [({"content-type": "application/dicom"}, content)])


def test_no_parts_at_all():
    assert parse_all(b"--b--\r\n", "b", 1) == []
    assert parse_all(b"preamble\r\n--b--", "b", 2) == []


def test_feeding_after_the_close_delimiter_is_ignored():
    parser = MultipartParser("b")
    events = parser.feed(b"--b\r\n\r\nx\r\n--b--")
    assert [type(e) for e in events] == [PartBegin, PartData, PartEnd]
    assert parser.feed(b"\r\n--b\r\n\r\nmore\r\n--b--") == []
    parser.finish()


@pytest.mark.parametrize("boundary", ["", "x" * 201])
def test_boundary_length_is_checked(boundary):
    with pytest.raises(MultipartError, match="1 to 200"):
        MultipartParser(boundary)


def test_parser_memory_stays_bounded_on_a_large_part():
    boundary = new_boundary()
    parser = MultipartParser(boundary)
    parser.feed(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
    total = 0
    block = os.urandom(64 * 1024)
    for _ in range(64):  # 4 MiB through the parser
        for event in parser.feed(block):
            assert isinstance(event, PartData)
            total += len(event.data)
        assert parser.pending <= len(boundary) + 3
    events = parser.feed(f"\r\n--{boundary}--\r\n".encode())
    total += sum(len(e.data) for e in events if isinstance(e, PartData))
    assert total == 64 * len(block)
    assert isinstance(events[-1], PartEnd)
    parser.finish()


def test_iter_parts_streams_one_part_at_a_time():
    body, boundary = encode_multipart([("application/dicom", b"A" * 1000), (None, b""), ("text/plain", TRICKY)])
    chunks = (body[i:i + 13] for i in range(0, len(body), 13))
    assert list(iter_parts(chunks, boundary)) == [
        ({"content-type": "application/dicom"}, b"A" * 1000),
        ({}, b""),
        ({"content-type": "text/plain"}, TRICKY),
    ]


def test_iter_parts_reports_truncation():
    body, boundary = encode_multipart([("application/dicom", b"A" * 100)])
    with pytest.raises(MultipartError, match="truncated"):
        list(iter_parts([body[:-10]], boundary))


def test_writer_round_trips_through_the_parser_with_part_headers():
    writer = MultipartWriter("fixed'boundary")
    body = (writer.part_head("application/dicom", {"Content-Location": "http://h/1"}) + b"one"
            + writer.part_head("application/dicom+xml") + b"<x/>" + writer.close())
    assert body.startswith(b"--fixed'boundary\r\nContent-Type: application/dicom\r\nContent-Location: http://h/1\r\n\r\none\r\n")
    assert body.endswith(b"\r\n--fixed'boundary--\r\n")
    every_chunk_size(body, "fixed'boundary", [
        ({"content-type": "application/dicom", "content-location": "http://h/1"}, b"one"),
        ({"content-type": "application/dicom+xml"}, b"<x/>"),
    ])


def test_writer_with_no_parts_writes_a_valid_empty_body():
    writer = MultipartWriter()
    assert writer.close() == f"--{writer.boundary}--\r\n".encode()
    assert parse_all(writer.close(), writer.boundary, 1) == []


def test_new_boundaries_are_unique_and_legal():
    seen = {new_boundary() for _ in range(100)}
    assert len(seen) == 100
    for b in seen:
        assert 1 <= len(b) <= 70 and all(c.isalnum() or c in "-" for c in b)
