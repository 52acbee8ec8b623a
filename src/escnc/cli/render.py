"""How escnc-cli prints what the server sends: pretty XML, or with ``--json`` RFC 7951
JSON in the shapes RFC 8040 gives replies, errors and notifications."""

from __future__ import annotations

import functools
import json

from lxml import etree

from escnc.datastore.json_encoding import Rfc7951
from escnc.datastore.schema import Schema


def pretty(el: etree._Element) -> str:
    return etree.tostring(el, pretty_print=True, encoding="unicode").rstrip("\n")


@functools.cache
def _encoder() -> Rfc7951:
    # built once per process and only with --json: loading the modules takes ~0.5 s
    return Rfc7951(Schema.load())


def render_reply(reply: etree._Element, as_json: bool, rpc: etree.QName | None = None) -> str:
    """An <rpc-reply>; ``rpc`` names the operation so its output can be typed."""
    if not as_json:
        return pretty(reply)
    return json.dumps(_encoder().reply(reply, rpc), indent=2)


def render_notification(notification: etree._Element, as_json: bool) -> str:
    if not as_json:
        return pretty(notification)
    return json.dumps(_encoder().notification(notification), indent=2)
