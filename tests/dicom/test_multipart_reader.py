"""The multipart pull reader (``MultipartReader``): the push parser's parts from a ``readinto``
stream, and parts of a known size read straight into the caller's buffer.

Every body of the push parser's tests is read here too, with the stream giving from 1 byte to the
whole body per read (a socket gives what has arrived), and must give the push parser's parts.
"""

from __future__ import annotations

import pytest

from dicomweb_nb.dicom.multipart import MultipartError, MultipartReader, encode_multipart

from .test_multipart import ODD_BOUNDARIES, TRICKY, crlf_body, parse_all


class TrickleStream:
    """``readinto`` giving at most ``step`` bytes a call, as a socket gives what has arrived."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step, self.position, self.reads = data, step, 0, 0

    def readinto(self, buffer: memoryview) -> int:
        count = min(len(buffer), self.step, len(self.data) - self.position)
        buffer[:count] = self.data[self.position:self.position + count]
        self.position += count
        self.reads += 1
        return count


def pull_all(body: bytes, boundary: str, step: int, room_size=None) -> list[tuple[dict[str, str], bytes, bool]]:
    """Every part as (headers, content, read into its room); ``room_size(index, headers)`` sizes the rooms."""
    reader = MultipartReader(TrickleStream(body, step), boundary)
    parts = []
    while (headers := reader.next_part()) is not None:
        size = room_size(len(parts), headers) if room_size else None
        room = memoryview(bytearray(size)) if size is not None else None
        if room is not None and reader.read_into(room):
            parts.append((headers, bytes(room), True))
        else:
            parts.append((headers, reader.read(), False))
    assert reader.next_part() is None  # stays at the end
    assert reader.parts_seen == len(parts)
    return parts


STEPS = (1, 2, 3, 7, 64, 100_000)

BODIES = [
    *[(boundary, crlf_body(boundary, [("application/dicom", TRICKY), ("application/dicom", b"second"),
                                      ("application/dicom", b"")])) for boundary in ODD_BOUNDARIES],
    ("XyZ", crlf_body("XyZ", [("application/dicom", b"one"), ("application/dicom", TRICKY)],
                      preamble=b"preamble --XyZ is not a delimiter here --XyZ--",
                      epilogue=b"\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\nignored\r\n--XyZ--\r\n")),
    ("pad", crlf_body("pad", [("application/dicom", b"abc"), ("application/dicom", b"def")], padding=b" \t  ")),
    ("lf", b"--lf\nContent-Type: application/dicom\nContent-Location: a.dcm\n\nDICM\r\n\r\nbinary\r\rend"
           b"\n--lf\n\nno headers\n--lf--\n"),
    ("m", b"--m\r\nContent-Type: application/dicom\n\nA\r\n--m\nContent-Type: application/dicom\r\n\r\nB\n--m--"),
    ("b", b"x--b\r\n-b\r\n--\r\nb".join([b"--b\r\nContent-Type: a/b\r\n\r\n", b"\r\n--b--"])),
    ("b", b"--b--\r\n"),
    ("b", b"preamble\r\n--b--"),
]


@pytest.mark.parametrize(("boundary", "body"), BODIES)
def test_pull_reader_gives_the_push_parsers_parts(boundary, body):
    expected = parse_all(body, boundary, len(body))
    for step in STEPS:
        assert [(h, c) for h, c, _ in pull_all(body, boundary, step)] == expected, f"step {step}"


@pytest.mark.parametrize(("boundary", "body"), BODIES)
def test_rooms_of_the_exact_size_are_filled_and_others_left(boundary, body):
    expected = parse_all(body, boundary, len(body))
    for step in STEPS:
        exact = pull_all(body, boundary, step, lambda i, _h: len(expected[i][1]))
        assert exact == [(h, c, True) for h, c in expected], f"step {step}"
        for delta in (-2, -1, 1, 5):  # a room too small or too big: the part is read whole, the rest as before
            sized = pull_all(body, boundary, step, lambda i, _h, d=delta: max(0, len(expected[i][1]) + d))
            assert [(h, c) for h, c, _ in sized] == expected, f"step {step}, room {delta:+d}"
            assert not any(filled for _h, c, filled in sized if len(c) + delta >= 0 and delta), f"step {step}"


def test_a_content_ending_in_cr_before_a_bare_lf_delimiter_is_one_byte_shorter():
    # "\r\n--b" after "xy": the CR belongs to the delimiter, the content is "xy", not "xy\r".
    body = b"--b\nContent-Type: a/b\n\nxy\r\n--b\n\nz\n--b--"
    assert pull_all(body, "b", 4, lambda i, _h: [3, 1][i]) == [({"content-type": "a/b"}, b"xy", False), ({}, b"z", True)]
    assert pull_all(body, "b", 4, lambda i, _h: [2, 1][i]) == [({"content-type": "a/b"}, b"xy", True), ({}, b"z", True)]


def test_a_large_part_goes_straight_into_its_room():
    content = bytes(range(256)) * 4096  # 1 MiB
    body, boundary = encode_multipart([("application/octet-stream", content), (None, b"tail")])
    stream = TrickleStream(body, 1 << 30)
    reader = MultipartReader(stream, boundary)
    assert reader.next_part() == {"content-type": "application/octet-stream"}
    room = bytearray(len(content))
    assert reader.read_into(memoryview(room))
    assert room == content
    assert reader.next_part() == {}
    assert reader.read() == b"tail"
    assert reader.next_part() is None
    assert stream.reads <= 6  # headers, the content in one read, the delimiter and the rest


@pytest.mark.parametrize("cut", [1, 5, 20, 40, -8, -3, -1])
def test_truncated_bodies_are_an_error(cut):
    body = crlf_body("t", [("application/dicom", b"0123456789" * 3)])
    for step in (1, 7, len(body)):
        for room in (None, 30):
            with pytest.raises(MultipartError, match="truncated|no multipart boundary"):
                pull_all(body[:cut], "t", step, (lambda i, _h, r=room: r))


def test_body_without_its_boundary_and_malformed_framing():
    with pytest.raises(MultipartError, match="no multipart boundary found"):
        pull_all(crlf_body("right", [("application/dicom", b"x")]), "wrong", 3)
    with pytest.raises(MultipartError, match="after a multipart boundary"):
        pull_all(b"--b\r\n\r\n1\r\n--bogus\r\n\r\n2\r\n--b--", "b", 5)
    with pytest.raises(MultipartError, match="malformed multipart part header"):
        pull_all(b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "b", 5)
    with pytest.raises(MultipartError, match="too long or never end"):
        pull_all(b"--b\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\nx\r\n--b--", "b", 4096)
    with pytest.raises(MultipartError, match="1 to 200"):
        MultipartReader(TrickleStream(b"", 1), "")


def test_reading_out_of_turn_is_an_error():
    reader = MultipartReader(TrickleStream(b"--b\r\n\r\nx\r\n--b--", 3), "b")
    with pytest.raises(MultipartError, match="not read yet"):
        reader.read()
    reader.next_part()
    assert reader.read() == b"x"
    with pytest.raises(MultipartError, match="not read yet"):
        reader.read_into(memoryview(bytearray(1)))


class KeepingStream(TrickleStream):
    """A stream that keeps the last view it was given (as a wrapper holding it in a traceback or a
    cycle the collector has not freed yet would): the reader's buffer stays exported."""

    def readinto(self, buffer: memoryview) -> int:
        self.kept = buffer
        return super().readinto(buffer)


def test_the_buffer_grows_while_a_stream_still_holds_a_view_of_it():
    """Seen once in the suite: ``BufferError: Existing exports of data: object cannot be re-sized``
    when the reader grew its buffer in place while a view of it was still alive."""
    big = bytes(range(256)) * (3 << 12)  # 3 MiB: more than the reader's first buffer, read whole by ``read``
    body, _ = encode_multipart([("application/octet-stream", big)], "grow")
    reader = MultipartReader(KeepingStream(body, 1 << 16), "grow")
    assert reader.next_part() is not None
    assert reader.read() == big
    assert reader.next_part() is None
