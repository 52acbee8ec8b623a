"""What the RESTCONF modules share: media types, path segments, failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from escnc.errors import RpcError
from escnc.ns import NC

RESTCONF_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf"
MONITORING_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf-monitoring"
JSON = "application/yang-data+json"
XML = "application/yang-data+xml"


_OP = f"{{{NC}}}operation"


@dataclass
class Seg:
    node: Any  # escnc.datastore.schema.SNode
    module: str
    keys: list[str]


class _Fail(Exception):
    def __init__(self, errors: list[RpcError], status: int | None = None) -> None:
        super().__init__(errors[0].message if errors else "")
        self.errors = errors
        self.status = status


def _bad(message: str, tag: str = "invalid-value", status: int | None = None) -> _Fail:
    return _Fail([RpcError(tag, message, type="protocol")], status)


