"""What every route of the HTTP northbound is handed: the services and a runner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from lxml import etree

from escnc.errors import RpcError
from escnc.rpc.request import Executed, RequestSession, SessionIds, execute

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from escnc.events.callbacks import CallbackTracker
    from escnc.http.auth import BasicAuth
    from escnc.services import Services


class Timeout(Exception):
    """The operation did not end within http_request_timeout (it may still finish)."""


@dataclass
class HttpContext:
    services: Services
    auth: BasicAuth
    callbacks: CallbackTracker | None = None
    session_ids: SessionIds = field(default_factory=SessionIds)
    # prometheus_client CollectorRegistry of this server (escnc.http.health)
    metrics: Any = None

    async def run(self, username: str, op: etree._Element) -> Executed:
        """Run ``op`` as ``username`` through the request layer, off the event loop."""
        return await self.run_many(username, [op])

    async def run_many(self, username: str, ops: list[etree._Element]) -> Executed:
        """Run ``ops`` in order in one request session; stops at the first error."""

        def work() -> Executed:
            session = RequestSession(self.services, self.session_ids.next(), username)
            try:
                done = Executed("")
                for op in ops:
                    done = execute(self.services, session, op)
                    if done.errors:
                        break
                return done
            finally:
                session.end()

        timeout = self.services.settings.http_request_timeout or None
        try:
            # abandon_on_cancel: the answer does not wait for a stuck operation (it
            # finishes on its worker thread; its session ends there)
            return await asyncio.wait_for(
                anyio.to_thread.run_sync(work, abandon_on_cancel=True), timeout
            )
        except TimeoutError:
            raise Timeout() from None

    def call(self, username: str, op: etree._Element) -> Executed:
        """The synchronous form (for code already on a worker thread)."""
        session = RequestSession(self.services, self.session_ids.next(), username)
        try:
            return execute(self.services, session, op)
        finally:
            session.end()


# A route factory: given the context, the routes it adds (mounted after the built-in
# ones). escnc.http.server mounts every module of escnc.http with a ``routes(ctx)``
# function, and any factory passed to HttpServer(extra_routes=...).
RouteFactory = Callable[[HttpContext], "list[BaseRoute]"]


def first_error(done: Executed) -> RpcError | None:
    return done.errors[0] if done.errors else None
