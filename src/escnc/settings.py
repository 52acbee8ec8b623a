"""Server settings: command line, optional config file, environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VIM = ("default", "test:///default")


@dataclass
class Settings:
    state_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("ESCNC_STATE_DIR", "escnc-state"))
    )
    listen_host: str = "127.0.0.1"
    listen_port: int = 830
    # name -> libvirt URI; the first one is the default host
    vims: dict[str, str] = field(default_factory=lambda: {DEFAULT_VIM[0]: DEFAULT_VIM[1]})
    log_level: str = "INFO"

    # NETCONF limits and hygiene
    max_message_size: int = 64 * 1024 * 1024
    max_sessions: int = 64  # authenticated sessions
    max_sessions_per_user: int = 16  # 0 = no per-user limit (the recovery user has none)
    reserved_sessions: int = 4  # the last session slots, kept for the recovery user
    # connections that have not authenticated yet (like sshd's MaxStartups, here
    # 64:30:256): from max_startups_begin on a new one is dropped with probability
    # max_startups_rate %, rising to 100 % at max_startups; they do not count against
    # max_sessions. The defaults let a burst of 32 reconnecting orchestrators from one
    # address in at once while one address alone cannot fill the table.
    max_startups: int = 256
    max_startups_begin: int = 64
    max_startups_rate: int = 30
    max_startups_per_source: int = 32  # unauthenticated connections per address; 0 = none
    idle_timeout: float = 3600.0  # seconds without any message from the client; 0 = none
    max_auth_attempts: int = 3
    # a failed password attempt is answered after this long, doubled for each failure
    # from the same address in the last 10 minutes, up to auth_failure_delay_max
    auth_failure_delay: float = 0.3
    auth_failure_delay_max: float = 10.0
    auth_timeout: float = 30.0
    hello_timeout: float = 30.0

    # storage (escnc.storage, docs/ha.md): "" = SQLite files in state_dir (the default);
    # a postgresql:// URL = one PostgreSQL database that several escnc nodes share.
    # So far only the event log follows it (issue 18).
    database: str = ""

    # datastore
    rollback_history: int = 20
    confirmed_commit_default_timeout: int = 600

    # events
    event_retention_days: float = 7.0
    event_retention_count: int = 1_000_000
    # bytes of stored notifications; beyond it the oldest go first (0 = no byte budget)
    event_retention_bytes: int = 256 * 1024 * 1024
    subscriber_max_lag: int = 100_000  # events a subscriber may fall behind before it is closed
    # seconds a subscriber closed for lagging has to read its queued output and the
    # subscription-terminated notice before the connection is dropped
    subscriber_terminate_grace: float = 30.0

    # engine
    reconcile_interval: float = 30.0
    default_bootup_time: int = 600
    snapshot_poll_secs: float = 15.0
    snapshot_timeout_mins: float = 20.0
    volume_poll_secs: float = 15.0
    volume_timeout_mins: float = 20.0
    capacity_poll_secs: float = 5.0  # how often capacity thresholds are checked

    # sources a client names: VIM URIs, image src, day-0 file (docs/security.md)
    allow_test_vims: bool = False  # vim_connector test:/// URIs (the test suite only)
    image_import_dirs: list[Path] | None = None  # local image files; None: <state_dir>/import
    day0_dirs: list[Path] | None = None  # local day-0 files; None: <state_dir>/day0
    url_allow_loopback: bool = False  # URLs to loopback, link-local, 169.254.169.254
    image_max_bytes: int = 64 * 1024**3  # per image file, enforced while downloading
    day0_max_bytes: int = 1024**2  # per day-0 file, enforced while reading

    # clients and daemon (datastore/filters.py, cli/logging_setup.py): an XPath filter
    # stops with operation-failed / filter-limit-exceeded beyond these (0 = no limit);
    # log_file: also log there, rotated at log_max_bytes, log_backups files kept
    filter_max_seconds: float = 5.0
    filter_max_nodes: int = 1_000_000
    log_file: str = ""
    log_format: str = "text"  # text | json (JSON lines)
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5

    # access control (escnc/nacm, docs/access-control.md): this user's sessions are
    # RFC 8341 recovery sessions and bypass NACM; "" = no recovery user
    nacm_recovery_user: str = "admin"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "escnc.sqlite3"
