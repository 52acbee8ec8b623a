"""``escnc status``: ask a running escnc over NETCONF how it is doing.

Logs in like any client (``--host/--port/--user``, password from ``--password`` or
``$ESCNC_PASSWORD``, or ``--key``) and reads ``esc_datamodel/opdata/system_status``,
``opdata/cluster`` (the role: leader, standby or a single node), ``opdata/hosts`` and
``netconf-state/sessions`` with one ``get``. Exit status 0 when
the server reports ACTIVE, 1 otherwise, 5 when it cannot connect or log in.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from lxml import etree

from escnc.cli.client import EXIT_CONNECT, CliError, Conn

ESC = "http://www.cisco.com/esc/esc"
MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
_FILTER = (
    f'<filter xmlns="{NC}" type="subtree">'
    f'<esc_datamodel xmlns="{ESC}"><opdata><system_status/><cluster/><hosts/></opdata>'
    '</esc_datamodel>'
    f'<netconf-state xmlns="{MON}"><sessions/></netconf-state></filter>'
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="server address (default $ESCNC_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="server port (default $ESCNC_PORT or 830)")
    p.add_argument("--user", help="NETCONF user (default $ESCNC_USER or $USER)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--password", help="password (prefer $ESCNC_PASSWORD)")
    auth.add_argument("--key", metavar="FILE", help="private key for public key login")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


def _uptime(seconds: int) -> str:
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def render(data: etree._Element) -> tuple[str, bool]:
    """The report and whether the server is ACTIVE."""
    e, m = f"{{{ESC}}}", f"{{{MON}}}"
    st = data.find(f"{e}esc_datamodel/{e}opdata/{e}system_status")
    lines = []
    status = st.findtext(f"{e}status") if st is not None else None
    if st is not None:
        uptime = int(st.findtext(f"{e}uptime_seconds") or 0)
        lines.append(f"escnc {st.findtext(f'{e}version')}: {status} "
                     f"({st.findtext(f'{e}status_message')}), up {_uptime(uptime)}")
    else:
        lines.append("escnc: no system_status (is this escnc?)")
    cluster = data.find(f"{e}esc_datamodel/{e}opdata/{e}cluster")
    if cluster is not None:  # active/standby (docs/ha.md)
        age = cluster.findtext(f"{e}lease_age_ms")
        lines.append(
            f"role: {cluster.findtext(f'{e}role')} (node {cluster.findtext(f'{e}node')}, "
            f"engine {cluster.findtext(f'{e}engine')}); leader "
            f"{cluster.findtext(f'{e}leader') or 'unknown'}, token "
            f"{cluster.findtext(f'{e}token') or '-'}, lease age "
            f"{'-' if age is None else f'{int(age) / 1000:.1f} s'}"
        )
        for mem in cluster.findall(f"{e}member"):
            lines.append(f"  member {mem.findtext(f'{e}node')}  {mem.findtext(f'{e}role')}  "
                         f"{mem.findtext(f'{e}address')}  seen {mem.findtext(f'{e}last_seen')}")
    else:
        lines.append("role: single node (leader)")
    hosts = data.findall(f"{e}esc_datamodel/{e}opdata/{e}hosts/{e}host")
    lines.append(f"hosts: {len(hosts)}")
    for h in hosts:
        connected = h.findtext(f"{e}connected") == "true"
        lines.append(
            f"  {h.findtext(f'{e}name')}  {'connected' if connected else 'DISCONNECTED'}  "
            f"{h.findtext(f'{e}uri')}  vcpus {h.findtext(f'{e}vcpus_used') or '?'}/"
            f"{h.findtext(f'{e}vcpus_total') or '?'}  memory "
            f"{h.findtext(f'{e}memory_used_mb') or '?'}/"
            f"{h.findtext(f'{e}memory_total_mb') or '?'} MiB"
        )
    sessions = data.findall(f"{m}netconf-state/{m}sessions/{m}session")
    lines.append(f"sessions: {len(sessions)}")
    for s in sessions:
        lines.append(
            f"  {s.findtext(f'{m}session-id')}  {s.findtext(f'{m}username')} from "
            f"{s.findtext(f'{m}source-host')} since {s.findtext(f'{m}login-time')}"
        )
    return "\n".join(lines), status == "ACTIVE"


def run(args: argparse.Namespace) -> int:
    password = args.password if args.password is not None else os.environ.get("ESCNC_PASSWORD")
    conn = Conn(
        host=args.host or os.environ.get("ESCNC_HOST") or "127.0.0.1",
        port=args.port or int(os.environ.get("ESCNC_PORT") or 830),
        user=args.user or os.environ.get("ESCNC_USER") or getpass.getuser(),
        password=password,
        key=args.key,
        timeout=args.timeout,
    )
    try:
        m = conn.connect()
    except CliError as exc:
        print(f"escnc: error: {exc}", file=sys.stderr)
        return EXIT_CONNECT
    try:
        reply = m.get(filter=etree.fromstring(_FILTER))
        root = etree.fromstring(str(reply).encode())
        data = root.find(f"{{{NC}}}data")
        if data is None:
            print(f"escnc: error: the server answered {str(reply)[:500]}", file=sys.stderr)
            return 1
        text, active = render(data)
        print(text)
        return 0 if active else 1
    finally:
        try:
            m.close_session()
        except Exception:
            pass
