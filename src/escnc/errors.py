"""RFC 6241 Appendix A rpc-errors as a small exception hierarchy.

Every layer raises :class:`RpcError` (or :class:`RpcErrors` for several at once);
the protocol layer turns them into ``<rpc-error>`` elements. Nothing else should
build rpc-error XML by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from lxml import etree

from escnc.ns import NC, qn

# lxml-stubs type nsmap keys as str, but None (the default namespace) is what lxml wants
_NC_NSMAP: Any = {None: NC}

ErrorType = Literal["transport", "rpc", "protocol", "application"]


class EscncError(Exception):
    """Base class of every escnc exception."""


class RpcError(EscncError):
    """One rpc-error.

    ``info`` holds error-info children: a mapping of NETCONF base element names
    (``session-id``, ``bad-element``, ``bad-attribute``, ``bad-namespace``,
    ``ok-element``, ``err-element``, ``noop-element``) to text, and/or ready-made
    elements in ``info_elements`` for anything else.
    """

    def __init__(
        self,
        tag: str,
        message: str,
        *,
        type: ErrorType = "application",  # the RFC 6241 name
        severity: Literal["error", "warning"] = "error",
        app_tag: str | None = None,
        path: str | None = None,
        path_nsmap: Mapping[str, str] | None = None,
        info: Mapping[str, str] | None = None,
        info_elements: Iterable[etree._Element] = (),
    ) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message
        self.type = type
        self.severity = severity
        self.app_tag = app_tag
        self.path = path
        self.path_nsmap = dict(path_nsmap or {})
        self.info = dict(info or {})
        self.info_elements = list(info_elements)

    def to_xml(self) -> etree._Element:
        err = etree.Element(qn(NC, "rpc-error"), nsmap=_NC_NSMAP)
        etree.SubElement(err, qn(NC, "error-type")).text = self.type
        etree.SubElement(err, qn(NC, "error-tag")).text = self.tag
        etree.SubElement(err, qn(NC, "error-severity")).text = self.severity
        if self.app_tag:
            etree.SubElement(err, qn(NC, "error-app-tag")).text = self.app_tag
        if self.path:
            path_el = etree.SubElement(
                err, qn(NC, "error-path"), nsmap={k: v for k, v in self.path_nsmap.items() if k}
            )
            path_el.text = self.path
        if self.message:
            msg = etree.SubElement(err, qn(NC, "error-message"))
            msg.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            msg.text = self.message
        if self.info or self.info_elements:
            info = etree.SubElement(err, qn(NC, "error-info"))
            for name, text in self.info.items():
                etree.SubElement(info, qn(NC, name)).text = text
            for el in self.info_elements:
                info.append(el)
        return err

    def __repr__(self) -> str:
        return f"RpcError({self.type}/{self.tag}: {self.message!r}, path={self.path!r})"


class RpcErrors(EscncError):
    """Several rpc-errors reported together (continue-on-error, validation)."""

    def __init__(self, errors: Iterable[RpcError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(e.message for e in self.errors))


# Shorthands for the tags used most often.


def invalid_value(message: str, path: str | None = None, **kw: object) -> RpcError:
    return RpcError("invalid-value", message, path=path, **kw)  # type: ignore[arg-type]


def operation_failed(message: str, **kw: object) -> RpcError:
    return RpcError("operation-failed", message, **kw)  # type: ignore[arg-type]


def data_missing(message: str, path: str | None = None, **kw: object) -> RpcError:
    return RpcError("data-missing", message, path=path, **kw)  # type: ignore[arg-type]
