"""``escnc``: run the server and manage its NETCONF users.

    escnc serve [--state-dir DIR] [--listen HOST:PORT] [--vim NAME=URI ...]
                [--config FILE] [--log-level LEVEL] [--log-file PATH] [--log-format text|json]
                [--database postgresql://...]
    escnc user add NAME [--password-stdin] [--key PUBLIC_KEY_FILE] [--state-dir DIR]
    escnc user list [--state-dir DIR]
    escnc user remove NAME [--state-dir DIR]
    escnc status [--host H] [--port P] [--user U] [--password W | --key FILE]

Settings come from the embedded defaults, then the TOML ``--config`` file (keys are
the field names of :class:`escnc.settings.Settings`, ``[vims]`` a table of
NAME = "URI"), then the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import signal
import sys
import threading
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from escnc import __version__
from escnc.settings import TABLE_SETTINGS, Settings

PROG = "escnc"
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as ``escnc: error: ...``, exit status 1."""


# --- settings -------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` (port 830) or ``:PORT``/``PORT`` (127.0.0.1)."""
    value = value.strip()
    host, port = "", ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise argparse.ArgumentTypeError(f"bad IPv6 address in {value!r} (missing ']')")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"expected [HOST]:PORT, got {value!r}")
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    elif value.count(":") > 1:  # bare IPv6 address
        host = value
    elif value.isdigit():
        port = value
    else:
        host = value
    try:
        number = int(port) if port else 830
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port {port!r} in {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} out of range 0..65535")
    return host or "127.0.0.1", number


def parse_database(value: str) -> str:
    """``--database``: a PostgreSQL URL (libpq syntax); SQLite needs no option."""
    if not value.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            "expected a postgresql://[USER@]HOST[:PORT]/DBNAME URL (SQLite is the default)"
        )
    return value


def parse_vim(value: str) -> tuple[str, str]:
    name, sep, uri = value.partition("=")
    if not sep or not name.strip() or not uri.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME=URI (e.g. default=qemu:///system), got {value!r}"
        )
    return name.strip(), uri.strip()


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Convert a TOML value to the type of the Settings field ``name``."""
    origin = typing.get_origin(hint)
    if hint is Path:
        if not isinstance(value, str):
            raise CliError(f"config: {name} must be a path string")
        return Path(value).expanduser()
    if origin is dict:
        args = typing.get_args(hint)
        if args and args[1] is not str:  # capacity tables: overcommit, zones, limits
            if not isinstance(value, dict):
                raise CliError(f"config: {name} must be a table")
            return {str(k): _coerce(f"{name}.{k}", args[1], v) for k, v in value.items()}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise CliError(f"config: {name} must be a table of NAME = \"URI\" strings")
        return {str(k): v for k, v in value.items()}
    if origin is list and typing.get_args(hint) and typing.get_args(hint)[0] is not Path:
        if not isinstance(value, list):
            raise CliError(f"config: {name} must be a list")
        return [_coerce(name, typing.get_args(hint)[0], v) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise CliError(f"config: {name} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CliError(f"config: {name} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CliError(f"config: {name} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise CliError(f"config: {name} must be a string")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(hint):
            try:
                return _coerce(name, arg, value)
            except CliError:
                continue
        raise CliError(f"config: bad value for {name}")
    return value


def load_config(path: Path, settings: Settings) -> Settings:
    """Apply a TOML file onto ``settings`` (unknown keys are an error)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config file {path} is not valid TOML: {exc}") from exc
    hints = typing.get_type_hints(Settings)
    fields = {f.name for f in dataclasses.fields(Settings)}
    # "listen = 'HOST:PORT'" is accepted as a shorthand, like the command line
    if "listen" in data:
        listen = data.pop("listen")
        if not isinstance(listen, str):
            raise CliError("config: listen must be a string HOST:PORT")
        try:
            settings.listen_host, settings.listen_port = parse_listen(listen)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"config: listen: {exc}") from exc
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise CliError(f"config file {path}: unknown setting {key!r} (known: {known})")
        if key in TABLE_SETTINGS:  # [metrics.NAME], [actions."TRUE name"]
            try:
                setattr(settings, key, TABLE_SETTINGS[key](value))
            except ValueError as exc:
                raise CliError(f"config file {path}: {exc}") from exc
            continue
        setattr(settings, key, _coerce(key, hints[key], value))
    return settings


def build_settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.config is not None:
        load_config(Path(args.config), settings)
    if args.state_dir is not None:
        settings.state_dir = Path(args.state_dir)
    if args.listen is not None:
        settings.listen_host, settings.listen_port = args.listen
    if args.vim:
        settings.vims = dict(args.vim)
    if getattr(args, "database", None) is not None:
        settings.database = args.database
    if settings.database:
        try:
            parse_database(settings.database)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"database: {exc}") from exc
    if args.log_level is not None:
        settings.log_level = args.log_level
    if getattr(args, "log_file", None) is not None:
        settings.log_file = args.log_file
    if getattr(args, "log_format", None) is not None:
        settings.log_format = args.log_format
    return settings


# --- commands -------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from escnc.app import Server
    from escnc.cli import logging_setup

    settings = build_settings(args)
    try:
        logging_setup.configure(settings)
    except (OSError, ValueError) as exc:
        raise CliError(f"logging: {exc}") from exc
    for noisy in ("paramiko", "ncclient"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    log = logging.getLogger("escnc")
    # handlers first: a SIGTERM right after the "serving" line must stop cleanly
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = Server(settings)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        # (StorageUnavailable, SchemaTooNew: --database cannot be used, escnc.storage)
        if type(exc).__name__ in ("ListenError", "StateDirBusy", "StorageUnavailable",
                                  "SchemaTooNew") or isinstance(exc, (OSError, ValueError)):
            raise CliError(str(exc)) from exc
        raise
    users = server.services.users if server.services is not None else None
    if users is not None and hasattr(users, "has_users") and not users.has_users():
        log.warning(
            "no NETCONF users yet: nobody can log in. Create one with "
            "`escnc user add NAME --state-dir %s`",
            settings.state_dir,
        )
    vims = ", ".join(f"{k}={v}" for k, v in settings.vims.items())
    print(
        f"escnc: serving NETCONF on {_fmt_addr(settings.listen_host, server.port)} "
        f"(state {settings.state_dir}, vims {vims})",
        flush=True,
    )
    for scheme, port in server.http_ports.items():
        where = settings.http_listen if scheme == "http" else settings.https_listen
        host = where.rpartition(":")[0].strip("[]")
        print(f"escnc: serving {scheme.upper()} on {_fmt_addr(host, port)}", flush=True)

    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


def _fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    return Settings().state_dir


def _user_store(args: argparse.Namespace) -> Any:
    from escnc.rpc.users import UserStore

    # a cluster keeps its users in the database: every node sees them
    return UserStore(_state_dir(args) / "users.sqlite3", database=getattr(args, "database", None))


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        data = sys.stdin.readline()
        password = data.rstrip("\r\n")
        if not password:
            raise CliError("--password-stdin: no password on standard input")
        return password
    if args.key:
        return None  # key-only user
    env = os.environ.get("ESCNC_PASSWORD")
    if env:
        return env
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {args.name}: ")
        second = getpass.getpass("Again: ")
        if first != second:
            raise CliError("the passwords differ")
        if not first:
            raise CliError("empty password")
        return first
    raise CliError(
        "no password given: use --password-stdin (e.g. `printf %s \"$PW\" | escnc user add "
        f"{args.name} --password-stdin`), set ESCNC_PASSWORD, or give --key"
    )


def cmd_user_add(args: argparse.Namespace) -> int:
    from escnc.rpc.users import UserError

    password = _read_password(args)
    keys: list[str] = []
    for key_file in args.key or []:
        try:
            text = Path(key_file).read_text()
        except OSError as exc:
            raise CliError(f"cannot read key file {key_file}: {exc.strerror or exc}") from exc
        keys += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    store = _user_store(args)
    try:
        store.add_user(args.name, password=password, public_keys=keys)
    except UserError as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()
    what = " and ".join(
        x for x in ("a password" if password else "", f"{len(keys)} key(s)" if keys else "") if x
    )
    where = store.storage.describe() if getattr(args, "database", None) else _state_dir(args)
    print(f"user {args.name} saved with {what} in {where}")
    return 0


def _existing_user_db(args: argparse.Namespace) -> bool:
    """Reading commands must not create the state directory (or a user database)."""
    return bool(getattr(args, "database", None)) or (_state_dir(args) / "users.sqlite3").exists()


def cmd_user_list(args: argparse.Namespace) -> int:
    if not _existing_user_db(args):
        print(f"{PROG}: no users: {_state_dir(args)} has no user database", file=sys.stderr)
        return 0
    store = _user_store(args)
    try:
        users = store.list_users()
    finally:
        store.close()
    for user in users:
        auth = ["password"] if user.has_password else []
        auth += [f"key {k.split()[0]}" for k in user.public_keys]
        print(f"{user.name}\t{', '.join(auth) or 'no credentials'}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    from escnc.rpc.users import UserError

    if not _existing_user_db(args):
        raise CliError(f"no user {args.name!r}: {_state_dir(args)} has no user database")
    store = _user_store(args)
    try:
        store.remove_user(args.name)
    except UserError as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()
    print(f"user {args.name} removed")
    return 0


# --- parser ---------------------------------------------------------------------------


def _add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (default: $ESCNC_STATE_DIR or ./escnc-state)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="escnc: VNF/VM lifecycle manager with a NETCONF/YANG northbound and a "
        "libvirt southbound, in the style of Cisco ESC.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the NETCONF server",
        description="Run the NETCONF/SSH server until SIGINT or SIGTERM. With no options it "
        "uses the libvirt test driver (test:///default), ./escnc-state and 127.0.0.1:830.",
    )
    _add_state_dir(serve)
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=parse_listen,
        help="address to listen on (default 127.0.0.1:830; [::1]:830 for IPv6; port 0 = any)",
    )
    serve.add_argument(
        "--vim",
        metavar="NAME=URI",
        type=parse_vim,
        action="append",
        help="a libvirt host (repeatable; the first is the default), e.g. "
        "default=qemu:///system or edge1=qemu+ssh://root@edge1/system",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML file with Settings fields")
    serve.add_argument(
        "--database",
        metavar="URL",
        type=parse_database,
        help="PostgreSQL shared by the escnc nodes of a cluster, e.g. "
        "postgresql://escnc@db.example/escnc (password: ~/.pgpass or $PGPASSWORD, not "
        "the command line). The nodes elect one leader, which runs the engine and takes "
        "writes; the others serve reads. So far the database holds the event log and the "
        "lease; the rest stays in --state-dir (docs/ha.md)",
    )
    serve.add_argument(
        "--log-level",
        metavar="LEVEL",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
        help="DEBUG, INFO (default), WARNING or ERROR",
    )
    serve.add_argument(
        "--log-file",
        metavar="PATH",
        help="also log to PATH, rotated at log_max_bytes (10 MiB) keeping log_backups (5)",
    )
    serve.add_argument(
        "--log-format", choices=["text", "json"],
        help="text (default; ESC-style [tenant=.. deployment=.. vm=..] tags) or json (lines)",
    )
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser(
        "status",
        help="connect to a running escnc and print its state",
        description="Log in over NETCONF and print the version, status, uptime, libvirt "
        "hosts and NETCONF sessions. Exit 0 when ACTIVE, 1 otherwise, 5 when it cannot "
        "connect or log in. Connection options default to $ESCNC_HOST, $ESCNC_PORT, "
        "$ESCNC_USER and $ESCNC_PASSWORD.",
    )
    from escnc.cli import status as status_cmd

    status_cmd.add_arguments(status)
    status.set_defaults(func=status_cmd.run)

    user = sub.add_parser("user", help="manage NETCONF users", description="Manage NETCONF users.")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = usub.add_parser(
        "add",
        help="create a user or replace its credentials",
        description="Create a user or replace its password and keys. The password is read "
        "from stdin with --password-stdin, else from $ESCNC_PASSWORD, else asked on the "
        "terminal; with --key only, the user logs in by public key alone. Access control: "
        "the recovery user (setting nacm_recovery_user, default admin) bypasses NACM "
        "(RFC 8341); every other user is subject to the /nacm rules, and with none "
        "configured may read and call RPCs but change nothing (docs/access-control.md).",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument(
        "--key",
        metavar="PUBLIC_KEY_FILE",
        action="append",
        help="authorized public key file (OpenSSH format, repeatable)",
    )
    lst = usub.add_parser("list", help="list users", description="List users and how they log in.")
    rm = usub.add_parser("remove", help="remove a user", description="Remove a user.")
    rm.add_argument("name", metavar="NAME")
    for p, func in ((add, cmd_user_add), (lst, cmd_user_list), (rm, cmd_user_remove)):
        _add_state_dir(p)
        p.add_argument("--database", metavar="URL", type=parse_database,
                       help="the cluster's PostgreSQL database (as for serve): its users")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
