"""RFC 6242 message framing: base:1.0 end-of-message and base:1.1 chunked.

:class:`FrameReader` is fed raw bytes from the transport and hands out complete
messages one at a time, so the caller can switch the framing mode between two
messages (the hello is always end-of-message framed; a client may send its first
``<rpc>`` in the same TCP segment as its hello). Any violation raises
:class:`FramingError`; the caller ends that session.
"""

from __future__ import annotations

import enum

EOM = b"]]>]]>"
MAX_CHUNK_SIZE = 4294967295
# "\n#" + at most 10 digits + "\n"
_MAX_HEADER = 2 + 10 + 1


class Framing(enum.Enum):
    EOM = "1.0"
    CHUNKED = "1.1"


class FramingError(Exception):
    """The peer broke the framing rules; the session cannot continue."""


class MessageTooBig(FramingError):
    """A message exceeded the configured maximum size."""


def encode(message: bytes, framing: Framing) -> bytes:
    if framing is Framing.EOM:
        return message + EOM
    if not message:
        raise ValueError("cannot send an empty chunked message")
    # One chunk per message: a chunk may be up to 4 GiB, far above our limits.
    return b"\n#%d\n%s\n##\n" % (len(message), message)


class FrameReader:
    def __init__(self, max_message_size: int, framing: Framing = Framing.EOM) -> None:
        self.max_message_size = max_message_size
        self.framing = framing
        self._buf = bytearray()
        # EOM: where to resume searching for the delimiter
        self._scan_from = 0
        # chunked: chunks of the message being assembled
        self._chunks: list[bytes] = []
        self._chunked_size = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def set_framing(self, framing: Framing) -> None:
        self.framing = framing
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """True when part of a message has been received (used for 'dropped' vs 'closed')."""
        return bool(self._buf.strip()) or bool(self._chunks)

    def next_message(self) -> bytes | None:
        """Return the next complete message, or None when more bytes are needed."""
        if self.framing is Framing.EOM:
            return self._next_eom()
        return self._next_chunked()

    def _next_eom(self) -> bytes | None:
        idx = self._buf.find(EOM, self._scan_from)
        if idx < 0:
            if len(self._buf) > self.max_message_size + len(EOM):
                raise MessageTooBig(f"message larger than {self.max_message_size} bytes")
            self._scan_from = max(0, len(self._buf) - len(EOM) + 1)
            return None
        if idx > self.max_message_size:
            raise MessageTooBig(f"message larger than {self.max_message_size} bytes")
        msg = bytes(self._buf[:idx])
        del self._buf[: idx + len(EOM)]
        self._scan_from = 0
        return msg

    def _next_chunked(self) -> bytes | None:
        buf = self._buf
        pos = 0
        try:
            while True:
                # chunk header: \n#<size>\n   or end of chunks: \n##\n
                avail = len(buf) - pos
                if avail < 4:
                    # Reject what can never become a valid header without waiting.
                    if buf[pos : pos + 2] != b"\n#"[:avail]:
                        raise FramingError("invalid chunk header: expected '\\n#'")
                    if avail == 3 and buf[pos + 2] != 0x23:
                        _check_digits(buf[pos + 2 :])
                    return None
                if buf[pos] != 0x0A or buf[pos + 1] != 0x23:  # "\n#"
                    raise FramingError("invalid chunk header: expected '\\n#'")
                if buf[pos + 2] == 0x23:  # "#": end-of-chunks
                    if buf[pos + 3] != 0x0A:
                        raise FramingError("invalid end-of-chunks marker")
                    if not self._chunks:
                        raise FramingError("end-of-chunks without any chunk")
                    pos += 4
                    msg = b"".join(self._chunks)
                    self._chunks = []
                    self._chunked_size = 0
                    return msg
                nl = buf.find(b"\n", pos + 2, pos + _MAX_HEADER)
                if nl < 0:
                    if len(buf) - pos >= _MAX_HEADER:
                        raise FramingError("invalid chunk header: size too long")
                    _check_digits(buf[pos + 2 :])
                    return None
                digits = bytes(buf[pos + 2 : nl])
                size = _chunk_size(digits)
                if self._chunked_size + size > self.max_message_size:
                    raise MessageTooBig(f"message larger than {self.max_message_size} bytes")
                start = nl + 1
                if len(buf) - start < size:
                    return None
                self._chunks.append(bytes(buf[start : start + size]))
                self._chunked_size += size
                pos = start + size
        finally:
            if pos:
                del buf[:pos]


def _check_digits(partial: bytearray | bytes) -> None:
    """Reject an incomplete header early when what is there can never be valid."""
    if partial and not partial.isdigit():
        raise FramingError("invalid chunk size")
    if partial[:1] == b"0":
        raise FramingError("invalid chunk size: leading zero or zero")


def _chunk_size(digits: bytes) -> int:
    # chunk-size = 1*DIGIT1 0*DIGIT (RFC 6242 section 4.2), at most 4294967295
    if not digits or not digits.isdigit() or digits[:1] == b"0":
        raise FramingError(f"invalid chunk size {digits[:16]!r}")
    size = int(digits)
    if size > MAX_CHUNK_SIZE:
        raise FramingError(f"chunk size {size} above {MAX_CHUNK_SIZE}")
    return size
