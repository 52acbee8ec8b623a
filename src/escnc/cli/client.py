"""``escnc-cli``: an esc_nc_cli-style NETCONF client for escnc (built on ncclient).

    escnc-cli [--host H] [--port P] [--user U] [--password W | --key FILE] [--json]
              VERB ...

Connection options also come from ESCNC_HOST, ESCNC_PORT, ESCNC_USER and
ESCNC_PASSWORD. Replies are printed as pretty XML (``--json`` for JSON). With
``--wait`` the deployment and action verbs follow the escEvent notifications until the
operation's terminal event and show progress per VM on stderr.

Exit status (escnc.cli.common): 0 success, 1 rpc-error, 2 usage, 3 a FAILURE notification,
4 timed out waiting, 5 cannot connect or log in.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from lxml import etree

from escnc import __version__
from escnc.cli.common import (
    _PARSER,
    DEFAULT_WAIT_TIMEOUT,
    ESC_NS,
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_RPC_ERROR,
    NC_NS,
    CliError,
    RpcFailed,
    esc,
    local,
    parse_xml_file,
    path_to_subtree,
)
from escnc.cli.connection import Conn
from escnc.cli.follow import Waiter, follow, subscribe
from escnc.cli.render import render_notification, render_reply

# --- verbs ----------------------------------------------------------------------------


def _reply_el(reply: Any) -> etree._Element:
    raw = reply.xml.encode() if isinstance(reply.xml, str) else reply.xml
    return etree.fromstring(raw, _PARSER)


def _note_denied(el: etree._Element) -> None:
    """One clear line on stderr per access-denied error (NACM, RFC 8341)."""
    for err in el.iter(f"{{{NC_NS}}}rpc-error"):
        if (err.findtext(f"{{{NC_NS}}}error-tag") or "").strip() != "access-denied":
            continue
        msg = (err.findtext(f"{{{NC_NS}}}error-message") or "").strip()
        path = (err.findtext(f"{{{NC_NS}}}error-path") or "").strip()
        print(f"escnc-cli: access denied: {msg}" + (f" (path {path})" if path else ""),
              file=sys.stderr)


def _print_reply(reply: Any, args: argparse.Namespace, rpc: etree._Element | None = None) -> int:
    el = _reply_el(reply)
    if not reply.ok:
        _note_denied(el)
    print(render_reply(el, args.json, etree.QName(rpc) if rpc is not None else None))
    if not reply.ok:
        return EXIT_RPC_ERROR
    return EXIT_OK


def _deployments_in(config: etree._Element) -> list[tuple[str, str]]:
    """(tenant, deployment) for every deployment in an edit-config payload."""
    out = []
    for dep in config.iter(f"{{{ESC_NS}}}deployment"):
        name = dep.findtext(f"{{{ESC_NS}}}name")
        deps_el = dep.getparent()
        tenant_el = deps_el.getparent() if deps_el is not None else None
        tenant = tenant_el.findtext(f"{{{ESC_NS}}}name") if tenant_el is not None else None
        if name:
            out.append((tenant or "", name))
    return out


def _dep_waiter(deps: list[tuple[str, str]]) -> Waiter:
    """Follows every deployment in ``deps`` until its first SERVICE_* event."""
    pending = set(deps)
    waiter = Waiter(set(), lambda info: False)

    def match(info: dict[str, str]) -> bool:
        key = (info.get("tenant", ""), info.get("depname", ""))
        vm = info.get("generated_vmname") or info.get("vmname") or ""
        if vm and vm in waiter.then:
            return True
        hit = key in pending or ("", key[1]) in pending
        if hit and info.get("type", "").startswith("SERVICE_") and info.get("status") != "FAILURE":
            pending.discard(key)
            pending.discard(("", key[1]))
        if hit and not pending:
            waiter.terminal = {info.get("type", "")}
        return hit

    waiter.match = match
    return waiter


def run_rpc(
    m: Any, args: argparse.Namespace, send: Callable[[], Any], waiter: Waiter | None,
    rpc: etree._Element | None = None,
) -> int:
    if args.wait and waiter is not None:
        subscribe(m)
    reply = send()
    code = _print_reply(reply, args, rpc)
    if code != EXIT_OK or not args.wait:
        return code
    if waiter is None:
        print("escnc-cli: nothing to wait for", file=sys.stderr)
        return code
    return follow(m, waiter, args.wait_timeout)


def verb_edit_config(m: Any, args: argparse.Namespace) -> int:
    payload = parse_xml_file(args.file)
    if local(payload.tag) == "config":
        config = payload
    else:
        config = etree.Element(f"{{{NC_NS}}}config", nsmap={"nc": NC_NS})
        config.append(payload)
    deps = _deployments_in(config)
    waiter = _dep_waiter(deps) if deps else None
    if waiter is not None and args.wait and args.datastore == "running":
        # a flavor change ends with VM_VERIFY_RESIZE per VM, after SERVICE_UPDATED
        waiter.then = {vm: "VM_VERIFY_RESIZE" for vm in _vms_to_resize(m, config)}
    return run_rpc(
        m, args, lambda: m.edit_config(config=config, target=args.datastore), waiter
    )


def _groups_with_flavor(config: etree._Element) -> dict[tuple[str, str, str], str]:
    """(tenant, deployment, vm_group) -> flavor, for groups that name a flavor."""
    out = {}
    for group in config.iter(f"{{{ESC_NS}}}vm_group"):
        flavor = group.findtext(f"{{{ESC_NS}}}flavor")
        dep = group.getparent()
        if not flavor or dep is None or local(dep.tag) != "deployment":
            continue
        holder = dep.getparent()
        tenant_el = holder.getparent() if holder is not None else None
        tenant = tenant_el.findtext(f"{{{ESC_NS}}}name") if tenant_el is not None else ""
        out[(tenant or "", dep.findtext(f"{{{ESC_NS}}}name") or "",
             group.findtext(f"{{{ESC_NS}}}name") or "")] = flavor.strip()
    return out


def _vms_to_resize(m: Any, config: etree._Element) -> list[str]:
    """The running VMs of the payload's groups whose flavor the payload changes."""
    groups = _groups_with_flavor(config)
    if not groups:
        return []
    reply = m.get(filter=("subtree", f'<esc_datamodel xmlns="{ESC_NS}"><opdata><tenants/>'
                                     "</opdata></esc_datamodel>"))
    if not reply.ok:
        return []
    vms = []
    data = _reply_el(reply)
    for tenant in data.iter(f"{{{ESC_NS}}}tenant"):
        tname = tenant.findtext(f"{{{ESC_NS}}}name") or ""
        for dep in tenant.iter(f"{{{ESC_NS}}}deployment"):
            dname = dep.findtext(f"{{{ESC_NS}}}name") or ""
            for group in dep.iter(f"{{{ESC_NS}}}vm_group"):
                key = (tname, dname, group.findtext(f"{{{ESC_NS}}}name") or "")
                want = groups.get(key) or groups.get(("", key[1], key[2]))
                if want is None:
                    continue
                for vm in group.iter(f"{{{ESC_NS}}}vm_instance"):
                    flavor = (vm.findtext(f"{{{ESC_NS}}}flavor") or "").strip()
                    if flavor and flavor != want:
                        vms.append(vm.findtext(f"{{{ESC_NS}}}name") or "")
    return [v for v in vms if v]


def _filter_for(path: str | None) -> Any:
    if not path:
        return None
    subtree = path_to_subtree(path)
    if subtree is not None:
        return ("subtree", etree.tostring(subtree, encoding="unicode"))
    return ("xpath", ({"esc": ESC_NS}, path))


def verb_get_config(m: Any, args: argparse.Namespace) -> int:
    return _print_reply(m.get_config(source=args.datastore, filter=_filter_for(args.xpath)), args)


def verb_get(m: Any, args: argparse.Namespace) -> int:
    return _print_reply(m.get(filter=_filter_for(args.xpath)), args)


def verb_delete_dep(m: Any, args: argparse.Namespace) -> int:
    config = etree.Element(f"{{{NC_NS}}}config", nsmap={"nc": NC_NS})
    root = esc("esc_datamodel")
    config.append(root)
    tenant = esc("tenant", parent=esc("tenants", parent=root))
    esc("name", args.tenant, tenant)
    dep = esc("deployment", parent=esc("deployments", parent=tenant))
    dep.set(f"{{{NC_NS}}}operation", "delete")
    esc("name", args.deployment, dep)
    waiter = _dep_waiter([(args.tenant, args.deployment)])
    waiter.terminal = {"SERVICE_UNDEPLOYED"}
    waiter.stop_on_failure = False
    return run_rpc(m, args, lambda: m.edit_config(config=config, target=args.datastore), waiter)


VM_ACTION_TERMINAL = {
    "STOP": "VM_STOPPED",
    "START": "VM_ALIVE",
    "REBOOT": "VM_ALIVE",
    "DISABLE_MONITOR": "VM_MONITOR_UNSET",
    "ENABLE_MONITOR": "VM_MONITOR_SET",
    "CONFIRM_RESIZE": "VM_ALIVE",
    "REVERT_RESIZE": "VM_ALIVE",
}
SERVICE_ACTION_TERMINAL = {
    "STOP": "SERVICE_STOPPED",
    "START": "SERVICE_STARTED",
    "REBOOT": "SERVICE_REBOOTED",
}


def _vm_waiter(vm: str, terminal: str) -> Waiter:
    return Waiter({terminal}, lambda info: vm in (info.get("generated_vmname"), info.get("vmname")))


def verb_vm_action(m: Any, args: argparse.Namespace) -> int:
    action = args.action.upper()
    rpc = esc("vmAction")
    esc("actionType", action, rpc)
    esc("vmName", args.vm_name, rpc)
    if args.force:
        esc("force", "true", rpc)
    terminal = VM_ACTION_TERMINAL.get(action)
    waiter = _vm_waiter(args.vm_name, terminal) if terminal else None
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_service_action(m: Any, args: argparse.Namespace) -> int:
    action = args.action.upper()
    rpc = esc("serviceAction")
    esc("actionType", action, rpc)
    esc("tenantName", args.tenant, rpc)
    esc("depName", args.deployment, rpc)
    terminal = SERVICE_ACTION_TERMINAL.get(action)
    waiter = None
    if terminal:
        waiter = Waiter(
            {terminal},
            lambda info: info.get("depname") == args.deployment
            and info.get("tenant", args.tenant) in (args.tenant, ""),
        )
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_migrate(m: Any, args: argparse.Namespace) -> int:
    rpc = esc("vmMigrate")
    esc("vmName", args.vm_name, rpc)
    esc("migrationType", args.migration_type, rpc)
    host = None
    block = None
    for extra in args.extra:
        if extra.lower() in ("true", "false") and block is None and host is None:
            block = extra.lower()
        elif host is None:
            host = extra
        else:
            raise CliError(f"unexpected argument {extra!r} (expected [BLOCK_MIGRATION] [HOST])")
    if block is not None:
        if args.migration_type != "live":
            raise CliError("block-migration applies to live migration only")
        esc("blockMigration", block, rpc)
    if host:
        esc("host", host, rpc)
    terminal = "VM_MIGRATE_COMPLETE" if args.migration_type == "live" else "VM_VERIFY_RESIZE"
    return run_rpc(m, args, lambda: m.dispatch(rpc), _vm_waiter(args.vm_name, terminal), rpc)


def verb_backup(m: Any, args: argparse.Namespace) -> int:
    kind = (args.action_type or "SNAPSHOT").upper()
    if kind not in ("SNAPSHOT", "EXPORT"):
        raise CliError(f"action-type must be SNAPSHOT or EXPORT, not {args.action_type!r}")
    if args.xmlfile:
        # the file holds a vmBackupAction (or its children); the command line wins
        doc = parse_xml_file(args.xmlfile)
        rpc = doc if local(doc.tag) == "vmBackupAction" else esc("vmBackupAction")
        if rpc is not doc:
            rpc.extend(list(doc) if local(doc.tag) in ("input", "rpc") else [doc])
        for name in ("vmName", "backupName", "actionType"):
            for old in rpc.findall(f"{{{ESC_NS}}}{name}"):
                rpc.remove(old)
        rpc.insert(0, esc("actionType", kind))
        rpc.insert(0, esc("backupName", args.backup_name))
        rpc.insert(0, esc("vmName", args.vm_name))
    else:
        rpc = esc("vmBackupAction")
        esc("vmName", args.vm_name, rpc)
        esc("backupName", args.backup_name, rpc)
        esc("actionType", kind, rpc)
    waiter = _vm_waiter(args.vm_name, "VM_BACKUP_COMPLETE")
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_snapshot(m: Any, args: argparse.Namespace) -> int:
    if args.action.lower() != "delete":
        raise CliError(f"unknown snapshot action {args.action!r} (only: delete)")
    rpc = esc("snapshotAction")
    esc("actionType", "DELETE", rpc)
    esc("snapshot", args.snapshot, rpc)
    waiter = Waiter({"VM_SNAPSHOT_DELETED"}, lambda info: True)
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_recovery(m: Any, args: argparse.Namespace) -> int:
    rpc = esc("recoveryVmAction")
    esc("actionType", args.action.upper(), rpc)
    esc("vmName", args.vm_name, rpc)
    waiter = _vm_waiter(args.vm_name, "VM_RECOVERY_COMPLETE")
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_revert_snapshot(m: Any, args: argparse.Namespace) -> int:
    rpc = esc("vmRevertSnapshot")
    esc("vmName", args.vm_name, rpc)
    esc("snapshot", args.snapshot, rpc)
    waiter = _vm_waiter(args.vm_name, "VM_ALIVE")
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_volume_from_snapshot(m: Any, args: argparse.Namespace) -> int:
    rpc = esc("createVolumeFromSnapshot")
    esc("snapshot", args.snapshot, rpc)
    esc("name", args.name, rpc)
    if args.volume_type:
        esc("volume_type", args.volume_type, rpc)
    if args.multiattach:
        esc("multiattach", "true", rpc)
    if args.not_bootable:
        esc("bootable", "false", rpc)
    waiter = Waiter({"VM_VOLUME_CREATED_EVENT"}, lambda info: True)
    return run_rpc(m, args, lambda: m.dispatch(rpc), waiter, rpc)


def verb_rpc(m: Any, args: argparse.Namespace) -> int:
    """Any RPC from a file: the RPC element itself (e.g. the seeds' queryComputeCapacity,
    createComputeReservation), or an <rpc> holding it."""
    doc = parse_xml_file(args.file)
    if local(doc.tag) == "rpc":
        inner = [c for c in doc if isinstance(c.tag, str)]
        if len(inner) != 1:
            raise CliError(f"{args.file}: <rpc> must hold exactly one operation")
        doc = inner[0]
    return _print_reply(m.dispatch(doc), args, doc)


def verb_notify(m: Any, args: argparse.Namespace) -> int:
    subscribe(m, args.stream, args.start_time)
    print(f"escnc-cli: subscribed to stream {args.stream}", file=sys.stderr, flush=True)
    seen = 0
    deadline = time.monotonic() + args.notify_for if args.notify_for else None
    while args.count is None or seen < args.count:
        wait = 1.0
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                break
        notif = m.take_notification(block=True, timeout=wait)
        if notif is None:
            if not m.connected:
                raise CliError("the server closed the session", EXIT_CONNECT)
            continue
        root = etree.fromstring(notif.notification_xml.encode(), _PARSER)
        print(render_notification(root, args.json), flush=True)
        seen += 1
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise CliError(f"{name}={value!r} is not a port number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escnc-cli",
        description="esc_nc_cli-style NETCONF client for escnc. Connection options default "
        "to $ESCNC_HOST, $ESCNC_PORT, $ESCNC_USER and $ESCNC_PASSWORD.",
        epilog="Exit status: 0 ok, 1 rpc-error, 2 usage, 3 FAILURE event, 4 wait timed out, "
        "5 cannot connect or log in.",
    )
    parser.add_argument("--version", action="version", version=f"escnc-cli {__version__}")
    parser.add_argument("--host", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="server port (default 830)")
    parser.add_argument("--user", help="user name (default $USER)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--password", help="password (prefer $ESCNC_PASSWORD: argv is visible)")
    auth.add_argument("--key", metavar="FILE", help="private key file for public key login")
    parser.add_argument("--json", action="store_true", help="print replies as JSON")
    parser.add_argument(
        "--datastore", default="running", choices=["running", "candidate"],
        help="datastore for edit-config/get-config/delete-dep (default running)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for a reply (default 60)"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def add(name: str, func: Callable[[Any, argparse.Namespace], int], help_: str,
            wait: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func, wait=False, wait_timeout=None)
        if wait:
            p.add_argument(
                "--wait", action="store_true",
                help="follow escEvent notifications until the terminal event",
            )
            p.add_argument(
                "--wait-timeout", type=float, default=None, metavar="SECONDS",
                help="with --wait: give up waiting after SECONDS (default 900)",
            )
        return p

    p = add("edit-config", verb_edit_config, "send an edit-config with the XML in FILE", True)
    p.add_argument("file", metavar="FILE")
    p = add("get-config", verb_get_config, "get the configuration (optionally under XPATH)")
    p.add_argument("xpath", metavar="XPATH", nargs="?")
    p = add("get", verb_get, "get configuration and operational data (optionally under XPATH)")
    p.add_argument("xpath", metavar="XPATH", nargs="?")
    p = add("delete-dep", verb_delete_dep, "undeploy (delete) a deployment", True)
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("deployment", metavar="DEPLOYMENT")
    p = add(
        "vm-action", verb_vm_action,
        "vmAction: STOP|START|REBOOT|ENABLE_MONITOR|DISABLE_MONITOR|CONFIRM_RESIZE|"
        "REVERT_RESIZE on one VM (its generated name)", True,
    )
    p.add_argument("action", metavar="ACTION")
    p.add_argument("vm_name", metavar="VM_NAME")
    p.add_argument("--force", action="store_true", help="force the action (STOP: power off)")
    p = add(
        "service-action", verb_service_action,
        "serviceAction: START|STOP|REBOOT|ENABLE_MONITOR|DISABLE_MONITOR on a deployment", True,
    )
    p.add_argument("action", metavar="ACTION")
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("deployment", metavar="DEPLOYMENT")
    p = add(
        "migrate-vm-action", verb_migrate,
        "vmMigrate: migrate-vm-action VM_NAME live|cold [BLOCK_MIGRATION] [HOST]", True,
    )
    p.add_argument("vm_name", metavar="VM_NAME")
    p.add_argument("migration_type", metavar="live|cold", choices=["live", "cold"])
    p.add_argument("extra", metavar="[BLOCK_MIGRATION] [HOST]", nargs="*")
    p = add(
        "vm-backup-action", verb_backup,
        "vmBackupAction: vm-backup-action VM_NAME BACKUP_NAME [SNAPSHOT|EXPORT] [XMLFILE]", True,
    )
    p.add_argument("vm_name", metavar="VM_NAME")
    p.add_argument("backup_name", metavar="BACKUP_NAME")
    p.add_argument("action_type", metavar="SNAPSHOT|EXPORT", nargs="?")
    p.add_argument("xmlfile", metavar="XMLFILE", nargs="?")
    p = add("snapshot-action", verb_snapshot, "snapshotAction: snapshot-action delete ID_OR_NAME",
            True)
    p.add_argument("action", metavar="delete")
    p.add_argument("snapshot", metavar="ID_OR_NAME")
    p = add("recovery-vm-action", verb_recovery,
            "recoveryVmAction: recovery-vm-action DO VM_NAME (a MANUAL-recovery VM)", True)
    p.add_argument("action", metavar="DO")
    p.add_argument("vm_name", metavar="VM_NAME")
    p = add("vm-revert-snapshot", verb_revert_snapshot,
            "vmRevertSnapshot: restore VM_NAME in place from SNAPSHOT (id or name)", True)
    p.add_argument("vm_name", metavar="VM_NAME")
    p.add_argument("snapshot", metavar="SNAPSHOT")
    p = add("create-volume-from-snapshot", verb_volume_from_snapshot,
            "createVolumeFromSnapshot: a new volume NAME from SNAPSHOT", True)
    p.add_argument("snapshot", metavar="SNAPSHOT")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--volume-type", metavar="TYPE")
    p.add_argument("--multiattach", action="store_true", help="attachable to several VMs")
    p.add_argument("--not-bootable", action="store_true", help="bootable false")
    p = add("rpc", verb_rpc, "send any RPC in FILE (e.g. queryComputeCapacity, "
            "createComputeReservation: the seeds' payloads) and print the reply")
    p.add_argument("file", metavar="FILE")
    p = add("notify", verb_notify, "subscribe and print notifications as they come")
    p.add_argument("--stream", default="escEvent", help="stream name (default escEvent)")
    p.add_argument("--start-time", metavar="T", help="replay from T (RFC 3339 date-time)")
    p.add_argument("--count", type=int, metavar="N", help="exit after N notifications")
    p.add_argument("--for", type=float, metavar="SECONDS", dest="notify_for",
                   help="exit after SECONDS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait_timeout is not None and not args.wait:
        parser.error("--wait-timeout needs --wait")
    if args.wait_timeout is None:
        args.wait_timeout = DEFAULT_WAIT_TIMEOUT
    # ncclient logs the server closing the socket after <close-session> (or the end
    # of a subscription) as "Socket exception: Connection reset by peer": routine here
    logging.getLogger("ncclient").setLevel(logging.CRITICAL)
    try:
        password = args.password if args.password is not None else os.environ.get("ESCNC_PASSWORD")
        user = args.user or os.environ.get("ESCNC_USER") or getpass.getuser()
        if password is None and args.key is None and sys.stdin.isatty():
            password = getpass.getpass(f"{user}'s password: ")
        conn = Conn(
            host=args.host or os.environ.get("ESCNC_HOST") or "127.0.0.1",
            port=args.port or _env_int("ESCNC_PORT", 830),
            user=user,
            password=password,
            key=args.key,
            timeout=args.timeout,
        )
        m = conn.connect()
        try:
            return int(args.func(m, args))
        except RpcFailed as exc:
            _note_denied(_reply_el(exc.reply))
            print(render_reply(_reply_el(exc.reply), args.json))
            return EXIT_RPC_ERROR
        finally:
            try:
                m.close_session()
            except Exception:
                pass
    except CliError as exc:
        print(f"escnc-cli: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
