"""What every escnc-cli module shares: namespaces, exit codes, errors, XML helpers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lxml import etree

ESC_NS = "http://www.cisco.com/esc/esc"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"

EXIT_OK, EXIT_RPC_ERROR, EXIT_USAGE, EXIT_FAILURE, EXIT_TIMEOUT, EXIT_CONNECT = 0, 1, 2, 3, 4, 5
DEFAULT_WAIT_TIMEOUT = 900.0

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class RpcFailed(Exception):
    def __init__(self, reply: Any) -> None:
        super().__init__("rpc-error")
        self.reply = reply


# --- XML helpers ----------------------------------------------------------------------


def local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def parse_xml_file(path: str) -> etree._Element:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise CliError(f"{path} is not well-formed XML: {exc}") from exc


def esc(tag: str, text: str | None = None, parent: etree._Element | None = None) -> etree._Element:
    qname = f"{{{ESC_NS}}}{tag}"
    el = (
        etree.SubElement(parent, qname)
        if parent is not None
        else etree.Element(qname, nsmap={None: ESC_NS})  # type: ignore[dict-item]
    )
    if text is not None:
        el.text = text
    return el


_STEP = re.compile(r"^(?:(?P<prefix>[\w.-]+):)?(?P<name>[A-Za-z_][\w.-]*)(?P<preds>(\[[^\]]*\])*)$")
_PRED = re.compile(r"\[\s*(?:[\w.-]+:)?([A-Za-z_][\w.-]*)\s*=\s*(?:'([^']*)'|\"([^\"]*)\")\s*\]")


def path_to_subtree(path: str) -> etree._Element | None:
    """A simple path (``/esc_datamodel/tenants/tenant[name='a']/...``) as a subtree
    filter in the escnc namespace, or None when it is not that simple."""
    steps = [s for s in path.strip().strip("/").split("/")]
    if not steps or any(not s for s in steps):
        return None
    root: etree._Element | None = None
    parent: etree._Element | None = None
    for step in steps:
        m = _STEP.match(step)
        if m is None or (m.group("prefix") not in (None, "esc", "escnc")):
            return None
        preds = m.group("preds") or ""
        matches = list(_PRED.finditer(preds))
        if "".join(x.group(0) for x in matches).replace(" ", "") != preds.replace(" ", ""):
            return None
        el = esc(m.group("name"), parent=parent)
        for pm in matches:
            esc(pm.group(1), pm.group(2) if pm.group(2) is not None else pm.group(3), el)
        if root is None:
            root = el
        parent = el
    return root
