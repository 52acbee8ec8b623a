"""Protocol errors, rendered for HTTP: RFC 8040 section 7's error-tag -> status table.

Domain errors are turned into :class:`RpcError` by operations/ (the one place); a
NETCONF session sends them as ``<rpc-error>``, the HTTP northbound uses the status
below and renders the same fields (RESTCONF ``ietf-restconf:errors`` or ESC's body).
"""

from __future__ import annotations

from lxml import etree

from escnc.errors import RpcError

NOT_LEADER = "not-leader"  # error-app-tag of a write refused by a standby (rpc/standby.py)

_STATUS = {
    "in-use": 409,
    "invalid-value": 400,
    "too-big": 413,
    "missing-attribute": 400,
    "bad-attribute": 400,
    "unknown-attribute": 400,
    "bad-element": 400,
    "unknown-element": 400,
    "unknown-namespace": 400,
    "access-denied": 403,
    "lock-denied": 409,
    "resource-denied": 409,
    "rollback-failed": 500,
    "data-exists": 409,
    "data-missing": 404,
    "operation-not-supported": 405,
    "operation-failed": 500,
    "partial-operation": 500,
    "malformed-message": 400,
}


def http_status(errors: list[RpcError]) -> int:
    """The status of a failed request: that of its first error."""
    if not errors:
        return 500
    status = _STATUS.get(errors[0].tag, 500)
    if errors[0].tag == "operation-failed" and errors[0].app_tag in ("not-found",):
        return 404
    if errors[0].app_tag == NOT_LEADER:  # a standby: try again (at the leader)
        return 503
    return status


def error_headers(errors: list[RpcError], retry_after: int = 2) -> dict[str, str]:
    """Response headers a failed request needs: Retry-After on a standby's 503 (the
    leader is named in the body; during a failover none may be known yet)."""
    if errors and errors[0].app_tag == NOT_LEADER:
        return {"Retry-After": str(retry_after)}
    return {}


def error_dict(err: RpcError) -> dict[str, object]:
    """One error as RFC 8040 ``error`` JSON members."""
    out: dict[str, object] = {"error-type": err.type, "error-tag": err.tag}
    if err.app_tag:
        out["error-app-tag"] = err.app_tag
    if err.path:
        out["error-path"] = err.path
    if err.message:
        out["error-message"] = err.message
    info: dict[str, object] = dict(err.info)
    for el in err.info_elements:  # e.g. a standby's <leader>: by local name
        if isinstance(el.tag, str) and len(el) == 0 and el.text:
            info[etree.QName(el).localname] = el.text
    if info:
        out["error-info"] = info
    return out
