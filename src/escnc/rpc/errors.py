"""Protocol errors, rendered for HTTP: RFC 8040 section 7's error-tag -> status table.

Domain errors are turned into :class:`RpcError` by operations/ (the one place); a
NETCONF session sends them as ``<rpc-error>``, the HTTP northbound uses the status
below and renders the same fields (RESTCONF ``ietf-restconf:errors`` or ESC's body).
"""

from __future__ import annotations

from escnc.errors import RpcError

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
    return status


def error_dict(err: RpcError) -> dict[str, object]:
    """One error as RFC 8040 ``error`` JSON members."""
    out: dict[str, object] = {"error-type": err.type, "error-tag": err.tag}
    if err.app_tag:
        out["error-app-tag"] = err.app_tag
    if err.path:
        out["error-path"] = err.path
    if err.message:
        out["error-message"] = err.message
    if err.info:
        out["error-info"] = dict(err.info)
    return out
