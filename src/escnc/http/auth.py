"""HTTP Basic authentication against the SSH user store, with the same failure penalty."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from escnc.rpc.auth import AuthPenalty

if TYPE_CHECKING:
    from escnc.rpc.users import UserStore
    from escnc.settings import Settings

log = logging.getLogger(__name__)

_MAX_CREDENTIALS = 4096


class Unauthorized(Exception):
    pass


class BasicAuth:
    def __init__(self, users: UserStore, settings: Settings,
                 penalty: AuthPenalty | None = None) -> None:
        self.users = users
        self.penalty = penalty or AuthPenalty(
            settings.auth_failure_delay, settings.auth_failure_delay_max
        )

    async def username(self, request: Request) -> str:
        """The authenticated user, or :class:`Unauthorized` (after the penalty delay)."""
        header = request.headers.get("authorization", "")
        host = request.client.host if request.client else "?"
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value or len(value) > _MAX_CREDENTIALS:
            raise Unauthorized("HTTP Basic authentication required")
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, sep, password = "", "", ""
        ok = bool(sep and name) and await run_in_threadpool(
            self.users.check_password, name, password
        )
        if ok:
            return name
        delay = self.penalty.delay(host)
        self.penalty.failed(host)
        log.info("HTTP: failed login for %r from %s", name, host)
        await asyncio.sleep(delay)
        raise Unauthorized("bad user name or password")
