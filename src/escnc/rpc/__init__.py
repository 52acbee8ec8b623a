"""The protocol-neutral request layer, shared by every northbound.

``netconf/`` and ``http/`` both turn what a client sent into an operation element and
call :func:`escnc.rpc.request.execute`; the registry (:mod:`escnc.rpc.dispatch`) runs
the access-control guard, YANG input validation and the handler in one place, so a
request means the same thing whichever transport carried it. Layer order:
netconf/, http/ -> rpc/ -> operations/ -> datastore/, engine/ -> vim/, events/.
"""
