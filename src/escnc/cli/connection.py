"""escnc-cli's NETCONF connection (ncclient), with errors that say what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from escnc.cli.common import EXIT_CONNECT, CliError


@dataclass
class Conn:
    host: str
    port: int
    user: str
    password: str | None
    key: str | None
    timeout: float

    def connect(self) -> Any:
        from ncclient import manager
        from ncclient.operations import RaiseMode
        from ncclient.transport import session as nc_session

        # ncclient polls its send queue every TICK (0.1 s by default): far too slow
        nc_session.TICK = 0.0005
        try:
            m = manager.connect(
                host=self.host,
                port=self.port,
                username=self.user,
                password=self.password,
                key_filename=self.key,
                hostkey_verify=False,
                allow_agent=self.password is None and self.key is None,
                look_for_keys=self.password is None and self.key is None,
                timeout=self.timeout,
            )
        except Exception as exc:
            hint = ""
            if self.password is None and self.key is None:
                hint = (" (no password given: set ESCNC_PASSWORD, or pass --password "
                        "or --key FILE)")
            raise CliError(
                f"cannot connect to {self.host} port {self.port} as {self.user}: "
                f"{type(exc).__name__}: {exc}{hint}",
                EXIT_CONNECT,
            ) from exc
        m.raise_mode = RaiseMode.NONE
        m.timeout = self.timeout
        return m
