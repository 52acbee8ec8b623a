"""Server settings: command line, optional config file, environment."""

from __future__ import annotations

import os
from collections.abc import Callable
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
    # active/standby (docs/ha.md; only with a database): this node's name in the
    # cluster, unique per process ("" = host:pid:random); the NETCONF address clients
    # are sent to when this node leads ("" = listen host:port); the lease timings in
    # seconds (0 < lease_retry < renew_deadline < lease_duration): the leader renews
    # every lease_retry and stops acting renew_deadline after its last good renewal;
    # a standby takes over after lease_duration without a renewal
    node_name: str = ""
    advertise_address: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    lease_retry: float = 2.0

    # datastore
    rollback_history: int = 20
    # True: a commit is fsynced before <ok/> (survives power loss). False, an explicit
    # opt-out for speed: written to the OS before <ok/> (survives kill -9 of escnc, not
    # a crash of the machine)
    durable_commits: bool = True
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
    # hosts connect in the background: a job needing a host still connecting waits up
    # to vim_connect_timeout; at start escnc waits at most vim_start_wait for them all
    vim_connect_timeout: float = 10.0
    vim_start_wait: float = 0.5
    # capacity (engine/capacity/, docs/capacity.md): overcommit ratio per resource
    # ("vcpus", "memory", "storage"; absent = 1, no overcommit); zones as named sets of
    # VIM hosts; the public address range(s) (CIDR or "first-last"; none: the static
    # pools); per-host totals of volumes and snapshots
    overcommit: dict[str, float] = field(default_factory=dict)
    capacity_zones: dict[str, list[str]] = field(default_factory=dict)
    public_ip_ranges: list[str] = field(default_factory=list)
    capacity_limits: dict[str, int] = field(default_factory=dict)

    # KPIs, rules and elastic scaling (engine/kpi/, engine/rules.py, engine/scaling.py):
    # operator-defined script collectors ([metrics.NAME]) and rule action mappings
    # ([actions."TRUE name"]); never from a client
    metrics: dict[str, MetricScript] = field(default_factory=dict)
    actions: dict[str, ActionMapping] = field(default_factory=dict)
    scale_cooldown: float = 30.0  # seconds after a scaling operation before the next
    metric_output_max_bytes: int = 4096  # stdout a script collector may print
    kpi_workers: int = 8  # collector samples and script actions running at once

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

    # HTTP northbound (escnc/http, docs/http.md): off unless a listen address is set
    http_listen: str = ""  # "127.0.0.1:8080"
    https_listen: str = ""  # "0.0.0.0:8443"
    https_cert: str = ""  # PEM paths; none: a self-signed pair in the state dir
    https_key: str = ""
    http_max_body: int = 4 * 1024 * 1024  # request body bytes
    http_request_timeout: float = 60.0  # seconds a request may run before 503
    # ESC REST callbacks (escnc/events/callbacks.py)
    callback_max_attempts: int = 8
    callback_retry_base: float = 1.0  # seconds before the 2nd attempt, doubling
    callback_retry_max: float = 300.0
    callback_timeout: float = 10.0  # one POST
    # a request whose terminal event never comes gets a 504 outcome after this; 0 = never
    callback_transaction_timeout: float = 86_400.0

    @property
    def db_path(self) -> Path:
        return self.state_dir / "escnc.sqlite3"


# -- table settings ([metrics.NAME], [actions."TRUE name"]) ------------------------------

ACTION_TYPES = ("log", "vm_alive", "recover", "scale_out", "scale_in", "script")
MAX_SCRIPT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class MetricScript:
    """A script collector: ``script`` (absolute argv) prints one number on stdout."""

    script: tuple[str, ...]
    timeout: float = 5.0


@dataclass(frozen=True)
class ActionMapping:
    """What a rule action string does (``type``); ``script`` for type script."""

    type: str
    script: tuple[str, ...] = ()
    timeout: float = 30.0


def _argv(where: str, value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(a, str) and a and "\0" not in a for a in value)
    ):
        raise ValueError(f"{where}: script must be a non-empty list of strings (argv)")
    if not os.path.isabs(value[0]):
        raise ValueError(f"{where}: script[0] must be an absolute path, got {value[0]!r}")
    return tuple(value)


def _timeout(where: str, value: object, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: timeout must be a number of seconds")
    if not 0 < float(value) <= MAX_SCRIPT_TIMEOUT:
        raise ValueError(f"{where}: timeout must be in (0, {MAX_SCRIPT_TIMEOUT:.0f}] seconds")
    return float(value)


def _table(where: str, value: object, keys: set[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table")
    unknown = set(value) - keys
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return value


def parse_metrics(raw: object) -> dict[str, MetricScript]:
    """``[metrics.NAME] script = [...], timeout = N`` tables; ValueError says what is wrong."""
    tables = _table("metrics", raw, set(raw) if isinstance(raw, dict) else set())
    out: dict[str, MetricScript] = {}
    for name, body in tables.items():
        where = f"metrics.{name}"
        if not 1 <= len(name) <= 64 or not name.isprintable() or " " in name:
            raise ValueError(f"{where}: a metric name is 1..64 printable characters, no spaces")
        t = _table(where, body, {"script", "timeout"})
        argv = _argv(where, t.get("script"))
        out[name] = MetricScript(argv, _timeout(where, t.get("timeout"), 5.0))
    return out


def normalize_action(text: str) -> str:
    """An action string as ESC payloads write it: surrounding quotes and extra
    whitespace do not matter (``"TRUE servicescaleup.sh"`` = TRUE servicescaleup.sh)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return " ".join(text.split())


def parse_actions(raw: object) -> dict[str, ActionMapping]:
    """``[actions."TRUE name"] type = ..., script = [...], timeout = N`` tables."""
    tables = _table("actions", raw, set(raw) if isinstance(raw, dict) else set())
    out: dict[str, ActionMapping] = {}
    for key, body in tables.items():
        where = f"actions.{key!r}"
        name = normalize_action(key)
        if name.split(" ", 1)[0] not in ("TRUE", "FALSE", "ALWAYS") or " " not in name:
            raise ValueError(f"{where}: an action is 'TRUE|FALSE|ALWAYS name'")
        t = _table(where, body, {"type", "script", "timeout"})
        kind = t.get("type")
        if kind not in ACTION_TYPES:
            raise ValueError(f"{where}: type must be one of {', '.join(ACTION_TYPES)}")
        assert isinstance(kind, str)
        script: tuple[str, ...] = ()
        if kind == "script":
            script = _argv(where, t.get("script"))
        elif "script" in t:
            raise ValueError(f"{where}: script is only for type script")
        out[name] = ActionMapping(kind, script, _timeout(where, t.get("timeout"), 30.0))
    return out


# settings given as TOML tables of tables, parsed here (cli/server.py load_config)
TABLE_SETTINGS: dict[str, Callable[[object], object]] = {
    "metrics": parse_metrics,
    "actions": parse_actions,
}
