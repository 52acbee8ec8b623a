"""The <hello> exchange (RFC 6241 section 8.1)."""

from __future__ import annotations

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import BASE_10, BASE_11, NC, qn
from escnc.xmlutil import parse_untrusted


class BadHello(Exception):
    """The client's hello is unacceptable; the session must end."""


def build_server_hello(capabilities: list[str], session_id: int) -> bytes:
    hello = etree.Element(qn(NC, "hello"), nsmap={None: NC})  # type: ignore[dict-item]
    caps = etree.SubElement(hello, qn(NC, "capabilities"))
    for cap in capabilities:
        etree.SubElement(caps, qn(NC, "capability")).text = cap
    etree.SubElement(hello, qn(NC, "session-id")).text = str(session_id)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + etree.tostring(hello, encoding="utf-8")


def parse_client_hello(data: bytes) -> frozenset[str]:
    """Return the client's capabilities, or raise :class:`BadHello`."""
    try:
        data.decode("utf-8")
        root = parse_untrusted(data.lstrip(b" \t\r\n"))
    except (UnicodeDecodeError, RpcError) as exc:
        raise BadHello(f"malformed hello: {exc}") from exc
    if root.tag != qn(NC, "hello"):
        raise BadHello(f"expected <hello>, got <{etree.QName(root).localname}>")
    if root.find(qn(NC, "session-id")) is not None:
        raise BadHello("client hello contains a session-id")
    caps_el = root.find(qn(NC, "capabilities"))
    if caps_el is None:
        raise BadHello("client hello without capabilities")
    caps = frozenset(
        (c.text or "").strip() for c in caps_el.iterfind(qn(NC, "capability")) if c.text
    )
    if BASE_10 not in caps and BASE_11 not in caps:
        raise BadHello("client hello without a base capability")
    return caps
