"""Moved to :mod:`escnc.rpc.dispatch` (the protocol-neutral request layer).

Kept so code written against the old place still runs while it is changed;
tests/test_layers.py fails for any module below the transports that imports it.
"""

from escnc.rpc.dispatch import (  # noqa: F401
    HandlerResult,
    Registration,
    RpcContext,
    RpcGuard,
    RpcHandler,
    RpcRegistry,
    SessionHandle,
    TargetResolver,
)
