"""RFC 6242 framing: end-of-message and chunked, byte by byte and in bulk."""

from __future__ import annotations

import pytest

from escnc.netconf.framing import (
    EOM,
    FrameReader,
    Framing,
    FramingError,
    MessageTooBig,
    encode,
)


def drain(reader: FrameReader) -> list[bytes]:
    out = []
    while (msg := reader.next_message()) is not None:
        out.append(msg)
    return out


def test_eom_messages_split_anywhere() -> None:
    stream = b"<a/>" + EOM + b"<b>]]></b>" + EOM + b"<c/>" + EOM
    for step in (1, 2, 3, 7, len(stream)):
        reader = FrameReader(1024)
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            reader.feed(stream[i : i + step])
            got.extend(drain(reader))
        assert got == [b"<a/>", b"<b>]]></b>", b"<c/>"]


def test_chunked_multi_chunk_message_split_anywhere() -> None:
    part = b' message-id="1"/>'
    stream = b"\n#4\n<rpc\n#%d\n%s\n##\n" % (len(part), part) + b"\n#3\n<x>\n#1\n \n##\n"
    for step in (1, 2, 5, len(stream)):
        reader = FrameReader(1024, Framing.CHUNKED)
        got: list[bytes] = []
        for i in range(0, len(stream), step):
            reader.feed(stream[i : i + step])
            got.extend(drain(reader))
        assert got == [b'<rpc message-id="1"/>', b"<x> "]


def test_switch_framing_keeps_buffered_bytes() -> None:
    # hello and first rpc in one segment
    reader = FrameReader(1024)
    reader.feed(b"<hello/>" + EOM + b"\n#5\n<rpc/\n#1\n>\n##\n")
    assert reader.next_message() == b"<hello/>"
    reader.set_framing(Framing.CHUNKED)
    assert reader.next_message() == b"<rpc/>"


def test_encode_round_trip() -> None:
    for framing in Framing:
        reader = FrameReader(1024, framing)
        reader.feed(encode(b"<x/>", framing) + encode(b"<y/>", framing))
        assert drain(reader) == [b"<x/>", b"<y/>"]


@pytest.mark.parametrize(
    "data",
    [
        b"\n#0\n\n##\n",  # chunk size 0
        b"\n#01\na\n##\n",  # leading zero
        b"\n#4294967296\n",  # above 2^32-1
        b"\n#99999999999\n",  # 11 digits
        b"\n#-1\nx\n##\n",
        b"\n#+1\nx\n##\n",
        b"\n# 1\nx\n##\n",
        b"\n#1 \nx\n##\n",
        b"\n#a\n",
        b"#1\nx\n##\n",  # missing leading LF
        b"\r\n#1\nx\n##\n",
        b"\n##\n",  # end of chunks with no chunk
        b"\n#1\nx\n#\n",  # bad end marker
        b"\n#1\nx\n##x",
        b"<rpc/>]]>]]>",  # EOM framing after switching to chunked
        b"\n#1\nxjunk",  # no header after a chunk
    ],
)
def test_invalid_chunk_headers(data: bytes) -> None:
    reader = FrameReader(1 << 20, Framing.CHUNKED)
    reader.feed(data)
    with pytest.raises(FramingError):
        drain(reader)


@pytest.mark.parametrize("data", [b"\n#0", b"\n#x", b"\n#00"])
def test_invalid_partial_header_detected_early(data: bytes) -> None:
    reader = FrameReader(1 << 20, Framing.CHUNKED)
    reader.feed(data)
    with pytest.raises(FramingError):
        drain(reader)


def test_max_chunk_size_accepted_as_header() -> None:
    reader = FrameReader(1 << 40, Framing.CHUNKED)
    reader.feed(b"\n#4294967295\nabc")
    assert reader.next_message() is None  # waits for the body; the header is fine


def test_truncated_chunk_waits() -> None:
    reader = FrameReader(1024, Framing.CHUNKED)
    reader.feed(b"\n#10\n12345")
    assert reader.next_message() is None
    assert reader.in_message


def test_oversize_chunked_message() -> None:
    reader = FrameReader(10, Framing.CHUNKED)
    reader.feed(b"\n#6\n123456\n#6\n")
    with pytest.raises(MessageTooBig):
        drain(reader)


def test_oversize_single_chunk_rejected_before_body_arrives() -> None:
    reader = FrameReader(10, Framing.CHUNKED)
    reader.feed(b"\n#11\n")
    with pytest.raises(MessageTooBig):
        drain(reader)


def test_oversize_eom_message() -> None:
    reader = FrameReader(10)
    reader.feed(b"x" * 17)
    with pytest.raises(MessageTooBig):
        drain(reader)
    reader = FrameReader(10)
    reader.feed(b"x" * 11 + EOM)
    with pytest.raises(MessageTooBig):
        drain(reader)


def test_eom_message_at_limit_accepted() -> None:
    reader = FrameReader(10)
    reader.feed(b"x" * 10 + EOM)
    assert drain(reader) == [b"x" * 10]


def test_chunked_message_at_limit_accepted() -> None:
    reader = FrameReader(10, Framing.CHUNKED)
    reader.feed(b"\n#4\nabcd\n#6\nefghij\n##\n")
    assert drain(reader) == [b"abcdefghij"]
