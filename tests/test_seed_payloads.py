"""Seed conformance: the payloads, RPCs, esc_nc_cli usages, notifications and
behaviour statements of ../shared/seeds/ (ESC VNF operations, resize, migration,
backup/snapshot; NFVIS and OpenNebula life cycle) sent AS WRITTEN to a real escnc.

The seed texts are copied here verbatim (tests must not read ../shared at run time).
Where a document has its own typo, the literal is kept and the one-character fix is
applied next to it, with a comment.  What a seed cannot carry literally (the generated
VM name of *their* deployment) is substituted with ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from conftest import connect
from conftest import test_host_uri as host_uri
from esc_events import Events, etype, types
from escnc.cli import client as esc_nc_cli
from escnc.ns import ESC

pytestmark = pytest.mark.timeout(180)

NS = {"e": ESC}
NC_BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"

# ---- seed 001: "sample_deployment_update.xml" (VM resize), verbatim -------------------

SEED_DEPLOYMENT_UPDATE = """<?xml version="1.0" encoding="UTF-8"?>
<esc_datamodel xmlns="http://www.cisco.com/esc/esc">
    <tenants>
        <tenant>
            <name>admin</name>
            <deployments>
                <deployment>
                    <name>Cirros-VNF</name>
                    <vm_group>
                        <name>SolTest-Cirros-VM-Group</name>
                        <bootup_time>60</bootup_time>
                        <recovery_wait_time>0</recovery_wait_time>
                        <image>SolTest-Cirros-Image</image>
                        <flavor>SolTest-Cirros-Flavor-v2</flavor>
                        <interfaces>
                            <interface>
                                <nicid>0</nicid>
                                <network>SolTest-Network</network>
                            </interface>
                        </interfaces>
                        <scaling>
                            <min_active>1</min_active>
                            <max_active>1</max_active>
                            <elastic>true</elastic>
                        </scaling>
                        <kpi_data>
                            <kpi>
                                <event_name>VM_ALIVE</event_name>
                                <metric_value>1</metric_value>
                                <metric_cond>GT</metric_cond>
                                <metric_type>UINT32</metric_type>
                                <metric_collector>
                                    <type>ICMPPing</type>
                                    <nicid>0</nicid>
                                    <poll_frequency>3</poll_frequency>
                                    <polling_unit>seconds</polling_unit>
                                    <continuous_alarm>false</continuous_alarm>
                                </metric_collector>
                            </kpi>
                        </kpi_data>
                        <rules>
                            <admin_rules>
                                <rule>
                                    <event_name>VM_ALIVE</event_name>
                                    <action>"ALWAYS log"</action>
                                    <action>"TRUE servicebooted.sh"</action>
                                    <action>"FALSE recover autohealing"</action>
                                </rule>
                            </admin_rules>
                        </rules>
                      <config_data/>
                    </vm_group>
                </deployment>
            </deployments>
        </tenant>
    </tenants>
</esc_datamodel>
"""
# The seed shows only the update; the original deployment is the same document with the
# flavor before the change ("modify the existing flavor name to a new flavor name").
SEED_DEPLOYMENT = SEED_DEPLOYMENT_UPDATE.replace(
    "SolTest-Cirros-Flavor-v2", "SolTest-Cirros-Flavor"
)

# ---- seed 001: vmMigrate RPC payloads, verbatim ---------------------------------------

# live: the seed writes xmlns=http://www.cisco.com/esc/esc without quotes (its typo)
SEED_VM_MIGRATE_LIVE_AS_PRINTED = """<vmMigrate xmlns=http://www.cisco.com/esc/esc>
   <vmName>test-dep_g1_0_6be93ee9-f7fb-473e-a3f6-eca281802008</vmName>
   <migrationType>live</migrationType>
   <host>Host-24</host>
</vmMigrate>"""
SEED_VM_MIGRATE_LIVE = SEED_VM_MIGRATE_LIVE_AS_PRINTED.replace(
    "xmlns=http://www.cisco.com/esc/esc>", 'xmlns="http://www.cisco.com/esc/esc">'
)
SEED_VM_MIGRATE_COLD = """<vmMigrate xmlns="http://www.cisco.com/esc/esc">
 <vmName>test-dep_g1_0_6be93ee9-f7fb-473e-a3f6-eca281802008</vmName>
 <migrationType>cold</migrationType>
 <host>Host-24</host>
</vmMigrate>"""
SEED_VM_NAME = "test-dep_g1_0_6be93ee9-f7fb-473e-a3f6-eca281802008"

# ---- seed 001/004: escEvent examples, verbatim ----------------------------------------

SEED_VM_BACKUP_CREATED = """<?xml version="1.0" encoding="UTF-8"?>
<notification xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0">
    <eventTime>2021-09-14T12:18:39.836+00:00</eventTime>
    <escEvent xmlns="http://www.cisco.com/esc/esc">
        <status>SUCCESS</status>
        <status_code>202</status_code>
        <status_message>Snapshot is now active.</status_message>
        <depname>snapshot-deployment-name</depname>
        <tenant>snapshot-tenant</tenant>
        <tenant_id>7d61b5de73874f88a458d486759a9b83</tenant_id>
        <depid>ae0bea05-9630-4d17-a9e7-926f1f625dc7</depid>
        <vm_group>snapshot-group</vm_group>
        <vm_source>
            <vmid>1773914c-20cd-4f50-b337-1e46be2cf295</vmid>
            <vmname>new-deployment-n_new-gr_0_af0148e2-e74c-4be7-b8c1-49bd53def6ba</vmname>
            <generated_vmname>new-deployment-n_new-gr_0_af0148e2-e74c-4be7-b8c1-49bd53def6ba</generated_vmname>
            <vim_id>default_openstack_vim</vim_id>
            <vim_project>snapshot-tenant</vim_project>
            <vim_project_id>7d61b5de73874f88a458d486759a9b83</vim_project_id>
            <hostid>95503baadeccce2d33e5d924322390aee9d30c6ed24043284bf46984</hostid>
            <hostname>pf-ucs-27</hostname>
        </vm_source>
        <event>
            <type>VM_BACKUP_CREATED</type>
        </event>
    </escEvent>
</notification>
"""

# the seed's VM_SNAPSHOT_DELETED opens <gen_vm_name> and closes </generated_vmname>
SEED_VM_SNAPSHOT_DELETED_AS_PRINTED = """<?xml version="1.0" encoding="UTF-8"?>
<notification xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0">
    <eventTime>2021-09-14T12:18:39.836+00:00</eventTime>
    <escEvent xmlns="http://www.cisco.com/esc/esc">
    <status>SUCCESS</status>
    <status_code>200</status_code>
    <status_message>Snapshot image [2ffadd36-3b41-4c13-a9d6-a48c07764d1a] has been deleted.</status_message>
    <depname>snapshot-deployment-name</depname>
    <tenant>snapshot-tenant</tenant>
    <tenant_id>7d61b5de73874f88a458d486759a9b83</tenant_id>
    <depid>ae0bea05-9630-4d17-a9e7-926f1f625dc7</depid>
    <vm_group>snapshot-group</vm_group>
    <vm_source>
        <vmid>1773914c-20cd-4f50-b337-1e46be2cf295</vmid>
        <vmname>new-deployment-n_new-gr_0_af0148e2-e74c-4be7-b8c1-49bd53def6ba</vmname>
        <gen_vm_name>new-deployment-n_new-gr_0_af0148e2-e74c-4be7-b8c1-49bd53def6ba</generated_vmname>
        <vim_id>default_openstack_vim</vim_id>
        <vim_project>snapshot-tenant</vim_project>
        <vim_project_id>7d61b5de73874f88a458d486759a9b83</vim_project_id>
        <hostid>95503baadeccce2d33e5d924322390aee9d30c6ed24043284bf46984</hostid>
        <hostname>pf-ucs-27</hostname>
    </vm_source>
    <event>
        <type>VM_SNAPSHOT_DELETED</type>
    </event>
    </escEvent>
</notification>
"""  # noqa: E501
SEED_VM_SNAPSHOT_DELETED = SEED_VM_SNAPSHOT_DELETED_AS_PRINTED.replace(
    "<gen_vm_name>", "<generated_vmname>"
)

# ---- what the seed deployment needs registered in escnc first -------------------------


def registry_config(image_src: str) -> str:
    """Image, flavors and network the seed deployment references (OpenStack had them)."""
    return f"""<config xmlns="{NC_BASE}">
<esc_datamodel xmlns="{ESC}">
  <images><image><name>SolTest-Cirros-Image</name><src>{image_src}</src>
    <disk_format>qcow2</disk_format><container_format>bare</container_format></image></images>
  <flavors>
    <flavor><name>SolTest-Cirros-Flavor</name><vcpus>1</vcpus><memory_mb>512</memory_mb>
      <root_disk_mb>1024</root_disk_mb></flavor>
    <flavor><name>SolTest-Cirros-Flavor-v2</name><vcpus>2</vcpus><memory_mb>1024</memory_mb>
      <root_disk_mb>1024</root_disk_mb></flavor>
  </flavors>
  <networks><network><name>SolTest-Network</name><shared>false</shared>
    <admin_state>true</admin_state>
    <subnet><name>SolTest-Subnet</name><ipversion>ipv4</ipversion><dhcp>true</dhcp>
      <address>10.77.0.0</address><netmask>255.255.255.0</netmask>
      <gateway>10.77.0.1</gateway></subnet></network></networks>
</esc_datamodel></config>"""


def as_config(document: str) -> str:
    """An edit-config <config> around a seed document (without its XML declaration),
    as esc_nc_cli edit-config sends a file."""
    body = document.split("?>", 1)[1] if document.startswith("<?xml") else document
    return f'<config xmlns="{NC_BASE}">{body}</config>'


# ---- helpers ------------------------------------------------------------------------


def explain(events: list[etree._Element]) -> list[tuple[str, str, str]]:
    return [(etype(e), leaf(e, "status"), leaf(e, "status_message")) for e in events]


def leaf(ev: etree._Element, path: str) -> str:
    return ev.findtext("/".join(f"e:{p}" for p in path.split("/")), namespaces=NS) or ""


def opdata(nc) -> etree._Element:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata/></esc_datamodel>'
    return etree.fromstring(nc.get(filter=("subtree", flt)).data_xml.encode())


def vm_names(nc) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(e.text or "" for e in opdata(nc).iterfind(".//e:vm_instance/e:name", NS))


def vm_field(nc, name: str, field: str) -> str:  # type: ignore[no-untyped-def]
    for vm in opdata(nc).iterfind(".//e:vm_instance", NS):
        if vm.findtext("e:name", namespaces=NS) == name:
            return vm.findtext(f"e:{field}", namespaces=NS) or ""
    raise AssertionError(f"{name} not in opdata")


def dep_state(nc) -> str:  # type: ignore[no-untyped-def]
    return opdata(nc).findtext(".//e:deployments/e:deployment/e:state", namespaces=NS) or ""


def dispatch(nc, xml: str):  # type: ignore[no-untyped-def]
    return nc.dispatch(etree.fromstring(xml))


def refused(nc, xml: str) -> RPCError:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as info:
        dispatch(nc, xml)
    return info.value


def rpc(name: str, **leaves: str) -> str:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in leaves.items())
    return f'<{name} xmlns="{ESC}">{body}</{name}>'


def canonical(el: etree._Element) -> bytes:
    """Whitespace-insensitive canonical form (C14N 2.0 with whitespace stripped)."""
    copy = etree.fromstring(etree.tostring(el))
    for e in copy.iter():
        if e.text is not None and not e.text.strip():
            e.text = None
        if e.tail is not None and not e.tail.strip():
            e.tail = None
    return etree.tostring(copy, method="c14n2")


def structure(el: etree._Element) -> list[object]:
    """Element names in document order, nested (text ignored)."""
    out: list[object] = []
    for child in el:
        name = etree.QName(child).localname
        out.append((name, structure(child)) if len(child) else name)
    return out


def cli(srv, *args: str) -> int:  # type: ignore[no-untyped-def]
    """esc_nc_cli, in process, against ``srv``."""
    return esc_nc_cli.main(
        [
            "--host",
            "127.0.0.1",
            "--port",
            str(srv.port),
            "--user",
            "admin",
            "--password",
            "admin-pw",
            *args,
        ]
    )


# ---- fixtures -----------------------------------------------------------------------


@pytest.fixture
def srv(server_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    # the seed's migration target host names, as escnc VIM hosts
    hosts = tmp_path / "seedhosts"
    return server_factory(
        vims={"Host-22": host_uri(hosts, "Host-22"), "Host-24": host_uri(hosts, "Host-24")},
        snapshot_poll_secs=0.01,
        volume_poll_secs=0.01,
    )


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "cirros.qcow2"
    path.write_bytes(b"QFI\xfb" + b"\0" * 4092)
    return str(path)


@pytest.fixture
def nc(srv) -> Iterator:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        yield m


@pytest.fixture
def ev(srv) -> Iterator[Events]:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        yield Events(m)


def deploy_seed(nc, ev: Events, image: str) -> str:  # type: ignore[no-untyped-def]
    """Register image/flavors/network, send the seed deployment; the generated VM name."""
    nc.edit_config(target="running", config=registry_config(image))
    nc.edit_config(target="running", config=as_config(SEED_DEPLOYMENT))
    got = ev.until("SERVICE_ALIVE")
    assert types(got) == ["VM_DEPLOYED", "VM_ALIVE", "SERVICE_ALIVE"], types(got)
    assert all(leaf(e, "status") == "SUCCESS" for e in got), explain(got)
    (vm,) = vm_names(nc)
    assert vm.startswith("Cirros-VNF_SolTest-Cirros-VM-Group_0_")
    return vm


def seed_tree(nc) -> etree._Element:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><tenants/></esc_datamodel>'
    data = etree.fromstring(
        nc.get_config(source="running", filter=("subtree", flt)).data_xml.encode()
    )
    root = data.find("e:esc_datamodel", NS)
    assert root is not None
    return root


# ---- the deployment and update payloads ----------------------------------------------


def test_seed_deployment_and_update_read_back(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    expected = etree.fromstring(SEED_DEPLOYMENT.encode())
    assert canonical(seed_tree(nc)) == canonical(expected)
    # the quoted rule actions are kept exactly, quotes included
    actions = [a.text for a in seed_tree(nc).iterfind(".//e:rule/e:action", NS)]
    assert actions == ['"ALWAYS log"', '"TRUE servicebooted.sh"', '"FALSE recover autohealing"']
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "flavor") == "SolTest-Cirros-Flavor"
    assert vm_field(nc, vm, "image") == "SolTest-Cirros-Image"
    # the update, as `esc_nc_cli edit-config sample_deployment_update.xml`
    path = Path(image).parent / "sample_deployment_update.xml"
    path.write_text(SEED_DEPLOYMENT_UPDATE)
    assert cli(srv, "edit-config", str(path)) == 0
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got) == ["SERVICE_UPDATED", "VM_VERIFY_RESIZE"]
    assert canonical(seed_tree(nc)) == canonical(etree.fromstring(SEED_DEPLOYMENT_UPDATE.encode()))


# ---- resize: flavor change -> SERVICE_UPDATED, VM_VERIFY_RESIZE, confirm / revert -----


def test_seed_resize_confirm(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    nc.edit_config(target="running", config=as_config(SEED_DEPLOYMENT_UPDATE))
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got) == ["SERVICE_UPDATED", "VM_VERIFY_RESIZE"]
    updated, verify = got
    # the seed's log of both notifications
    assert leaf(updated, "status") == "SUCCESS" and leaf(updated, "status_code") == "200"
    assert leaf(updated, "status_message") == "Service group update completed successfully"
    assert leaf(updated, "tenant") == "admin" and leaf(updated, "depname") == "Cirros-VNF"
    assert leaf(updated, "depid")
    assert leaf(verify, "status") == "SUCCESS" and leaf(verify, "status_code") == "200"
    assert leaf(verify, "status_message") == "VM Resize request processed"
    assert leaf(verify, "vm_group") == "SolTest-Cirros-VM-Group"
    for field in (
        "vmid",
        "vmname",
        "generated_vmname",
        "vim_id",
        "vim_project",
        "vim_project_id",
        "hostid",
        "hostname",
    ):
        assert leaf(verify, f"vm_source/{field}"), field
    assert leaf(verify, "vm_source/generated_vmname") == vm
    assert leaf(verify, "vm_source/vim_project") == "admin"
    assert vm_field(nc, vm, "state") == "VM_VERIFY_RESIZE_STATE"
    # snapshot only in VM_ALIVE / VM_STOPPED
    err = refused(nc, rpc("vmBackupAction", vmName=vm, backupName="during-resize"))
    assert "VM_VERIFY_RESIZE_STATE" in str(err)
    # `esc_nc_cli vm-action CONFIRM_RESIZE <generated VM name>`
    assert cli(srv, "vm-action", "CONFIRM_RESIZE", vm) == 0
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_CONFIRM_RESIZE_INIT", "VM_CONFIRM_RESIZE_COMPLETE", "VM_ALIVE"]
    assert all(leaf(e, "status") == "SUCCESS" for e in got)
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "flavor") == "SolTest-Cirros-Flavor-v2"
    assert vm_field(nc, vm, "monitoring") == "true"
    stats = opdata(nc).find(".//e:vm_instance/e:stats", NS)
    assert stats is not None and stats.findtext("e:vcpus", namespaces=NS) == "2"


def test_seed_resize_revert(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    nc.edit_config(target="running", config=as_config(SEED_DEPLOYMENT_UPDATE))
    assert types(ev.until("VM_VERIFY_RESIZE")) == ["SERVICE_UPDATED", "VM_VERIFY_RESIZE"]
    dispatch(nc, rpc("vmAction", actionType="REVERT_RESIZE", vmName=vm))
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_REVERT_RESIZE_INIT", "VM_REVERT_RESIZE_COMPLETE", "VM_ALIVE"]
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "flavor") == "SolTest-Cirros-Flavor"
    stats = opdata(nc).find(".//e:vm_instance/e:stats", NS)
    assert stats is not None and stats.findtext("e:vcpus", namespaces=NS) == "1"
    # CONFIRM/REVERT outside VERIFY_RESIZE is refused
    assert "VM_VERIFY_RESIZE_STATE" in str(
        refused(nc, rpc("vmAction", actionType="CONFIRM_RESIZE", vmName=vm))
    )


# ---- vmMigrate payloads ----------------------------------------------------------------


def test_seed_payload_typo_is_not_xml() -> None:
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(SEED_VM_MIGRATE_LIVE_AS_PRINTED)
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(SEED_VM_SNAPSHOT_DELETED_AS_PRINTED.encode())


def _other(host: str) -> str:
    return "Host-22" if host == "Host-24" else "Host-24"


def live_migration(ev: Events) -> tuple[list[etree._Element], list[etree._Element]]:
    """The events of one live migration up to VM_MIGRATE_COMPLETE, and whatever
    escnc sends after it (the seed lists nothing more)."""
    got = ev.until("VM_MIGRATE_COMPLETE")
    return got, ev.quiet(1.0)


def _place_on(nc, ev, srv, vm: str, host: str) -> None:  # type: ignore[no-untyped-def]
    """Make sure ``vm`` runs on ``host`` (so the seed's target Host-24 is a move)."""
    if vm_field(nc, vm, "host") == host:
        return
    dispatch(nc, rpc("vmMigrate", vmName=vm, migrationType="live", host=host))
    got, _after = live_migration(ev)
    assert leaf(got[-1], "status") == "SUCCESS"


def test_seed_vm_migrate_live(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    _place_on(nc, ev, srv, vm, "Host-22")
    reply = dispatch(nc, SEED_VM_MIGRATE_LIVE.replace(SEED_VM_NAME, vm))
    assert reply.ok
    got, _after = live_migration(ev)
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_MIGRATE_COMPLETE"], explain(got)
    assert all(leaf(e, "status") == "SUCCESS" for e in got)
    migrated = got[1]
    assert leaf(migrated, "vm_source/vim_id") == "Host-22"
    assert leaf(migrated, "vm_target/vim_id") == "Host-24"
    assert vm_field(nc, vm, "host") == "Host-24"
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "monitoring") == "true"
    # `esc_nc_cli migrate-vm-action <vm> live true Host-22` (block migration and host)
    assert cli(srv, "migrate-vm-action", vm, "live", "true", "Host-22") == 0
    got, _after = live_migration(ev)
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_MIGRATE_COMPLETE"], explain(got)
    assert vm_field(nc, vm, "host") == "Host-22"
    # `esc_nc_cli migrate-vm-action <vm> live` (no host: escnc picks one)
    assert cli(srv, "migrate-vm-action", vm, "live") == 0
    got, _after = live_migration(ev)
    assert leaf(got[-1], "status") == "SUCCESS"
    assert vm_field(nc, vm, "host") == "Host-24"


def test_seed_vm_migrate_live_sends_nothing_after_complete(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    dispatch(nc, rpc("vmMigrate", vmName=vm, migrationType="live"))
    got, after = live_migration(ev)
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_MIGRATE_COMPLETE"]
    assert types(after) == []


def test_seed_vm_migrate_cold_confirm(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    _place_on(nc, ev, srv, vm, "Host-22")
    assert dispatch(nc, SEED_VM_MIGRATE_COLD.replace(SEED_VM_NAME, vm)).ok
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_VERIFY_RESIZE"]
    assert vm_field(nc, vm, "state") == "VM_VERIFY_RESIZE_STATE"
    # `esc_nc_cli vm-action CONFIRM_RESIZE <vm>` confirms the migration
    assert cli(srv, "vm-action", "CONFIRM_RESIZE", vm) == 0
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_CONFIRM_RESIZE_INIT", "VM_CONFIRM_RESIZE_COMPLETE", "VM_ALIVE"]
    assert vm_field(nc, vm, "host") == "Host-24"
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"


def test_seed_vm_migrate_cold_revert_via_cli(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    source = vm_field(nc, vm, "host")
    # `esc_nc_cli migrate-vm-action <vm> cold Host-22` (host given)
    assert cli(srv, "migrate-vm-action", vm, "cold", _other(source)) == 0
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_VERIFY_RESIZE"]
    assert cli(srv, "vm-action", "REVERT_RESIZE", vm) == 0
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_REVERT_RESIZE_INIT", "VM_REVERT_RESIZE_COMPLETE", "VM_ALIVE"]
    assert vm_field(nc, vm, "host") == source


# ---- backup / snapshot: esc_nc_cli usages and the escEvent examples ------------------


def assert_like_seed(got: etree._Element, seed_doc: str) -> None:
    """Same element names in the same order as the seed's escEvent; vm_source may end
    with escnc's extra ``interfaces`` (DESIGN.md lists it), nothing else may differ."""
    seed = etree.fromstring(seed_doc.encode()).find("e:escEvent", NS)
    assert seed is not None
    want = structure(seed)
    have = [
        ("vm_source", [n for n in entry[1] if not (isinstance(n, tuple) and n[0] == "interfaces")])
        if isinstance(entry, tuple) and entry[0] == "vm_source"
        else entry
        for entry in structure(got)
    ]
    assert have == want, f"\nseed:   {want}\nescnc:  {have}"
    for el in got.iter():
        if len(el) == 0:
            assert (el.text or "").strip(), f"empty {etree.QName(el).localname}"


def test_seed_backup_and_snapshot_delete(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    # `esc_nc_cli vm-backup-action <vm> my-snapshot-name SNAPSHOT`
    assert cli(srv, "vm-backup-action", vm, "my-snapshot-name", "SNAPSHOT") == 0
    got = ev.until("VM_BACKUP_COMPLETE")
    assert types(got) == ["VM_BACKUP_INIT", "VM_BACKUP_CREATED", "VM_BACKUP_COMPLETE"]
    created = got[1]
    assert_like_seed(created, SEED_VM_BACKUP_CREATED)
    assert leaf(created, "status") == "SUCCESS"
    assert leaf(created, "status_code") == "202"
    assert leaf(created, "depname") == "Cirros-VNF"
    assert leaf(created, "tenant") == "admin"
    assert leaf(created, "vm_group") == "SolTest-Cirros-VM-Group"
    assert leaf(created, "vm_source/vmname") == vm
    assert leaf(created, "vm_source/generated_vmname") == vm
    assert leaf(created, "vm_source/vim_project") == "admin"
    assert leaf(created, "vm_source/vim_project_id") == leaf(created, "tenant_id")
    assert leaf(created, "vm_source/vim_id") == vm_field(nc, vm, "host")
    assert leaf(created, "depid") == opdata(nc).findtext(
        ".//e:deployment/e:deployment_id", namespaces=NS
    )
    assert leaf(created, "vm_source/vmid") == vm_field(nc, vm, "vm_id")
    # the snapshot is listed in opdata as the seed's list shows it
    (snap,) = opdata(nc).iterfind(".//e:snapshots/e:snapshot", NS)
    assert snap.findtext("e:name", namespaces=NS) == "my-snapshot-name"
    assert snap.findtext("e:created_from_generated_vm_name", namespaces=NS) == vm
    assert snap.findtext("e:tenant", namespaces=NS) == "admin"
    snap_id = snap.findtext("e:id", namespaces=NS)
    # `esc_nc_cli snapshot-action delete my-snapshot-name-1` -> not found
    err = refused(nc, rpc("snapshotAction", actionType="DELETE", snapshot="my-snapshot-name-1"))
    assert "Snapshot image [my-snapshot-name-1] not found." in str(err)
    assert cli(srv, "snapshot-action", "delete", "my-snapshot-name-1") == 1
    # `esc_nc_cli snapshot-action delete my-snapshot-name` -> deleted
    assert cli(srv, "snapshot-action", "delete", "my-snapshot-name") == 0
    got = ev.until("VM_SNAPSHOT_DELETED")
    assert types(got) == ["VM_SNAPSHOT_DELETING", "VM_SNAPSHOT_DELETED"]
    deleted = got[-1]
    assert_like_seed(deleted, SEED_VM_SNAPSHOT_DELETED)
    assert leaf(deleted, "status_code") == "200"
    assert leaf(deleted, "status_message") == f"Snapshot image [{snap_id}] has been deleted."
    assert list(opdata(nc).iterfind(".//e:snapshots/e:snapshot", NS)) == []


def test_seed_backup_name_length_and_states(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    # names up to 255 characters are accepted, 256 refused
    err = refused(nc, rpc("vmBackupAction", vmName=vm, backupName="x" * 256))
    assert "backupName" in str(err)
    assert dispatch(nc, rpc("vmBackupAction", vmName=vm, backupName="y" * 255)).ok
    assert leaf(ev.until("VM_BACKUP_COMPLETE")[-1], "status") == "SUCCESS"
    # the generated VM name must be valid
    assert "not found" in str(
        refused(nc, rpc("vmBackupAction", vmName="no-such-vm", backupName="b"))
    ).lower() or "does not exist" in str(
        refused(nc, rpc("vmBackupAction", vmName="no-such-vm", backupName="b"))
    )
    # action-type must be SNAPSHOT or EXPORT
    refused(nc, rpc("vmBackupAction", vmName=vm, backupName="b", actionType="COPY"))
    # VM_STOPPED: allowed
    dispatch(nc, rpc("vmAction", actionType="STOP", vmName=vm))
    assert types(ev.until("VM_STOPPED"))[-1] == "VM_STOPPED"
    assert vm_field(nc, vm, "state") == "VM_STOPPED_STATE"
    assert cli(srv, "vm-backup-action", vm, "while-stopped") == 0  # action-type defaults
    got = ev.until("VM_BACKUP_COMPLETE")
    assert leaf(got[-1], "status") == "SUCCESS", explain(got)
    # VM_MONITOR_DISABLED is neither VM_ALIVE nor VM_STOPPED: refused
    dispatch(nc, rpc("vmAction", actionType="START", vmName=vm))
    ev.until("VM_ALIVE")
    dispatch(nc, rpc("vmAction", actionType="DISABLE_MONITOR", vmName=vm))
    ev.until("VM_MONITOR_UNSET")
    assert vm_field(nc, vm, "state") == "VM_MONITOR_DISABLED_STATE"
    err = refused(nc, rpc("vmBackupAction", vmName=vm, backupName="unmonitored"))
    assert "VM_MONITOR_DISABLED_STATE" in str(err)


# ---- VM and VNF (service) operations and the refusals the seeds state -----------------


def test_seed_vm_operations(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    # vm_operation stop with force
    assert cli(srv, "vm-action", "STOP", vm, "--force") == 0
    got = ev.until("VM_STOPPED")
    assert types(got) == ["VM_STOPPED"] and leaf(got[0], "status") == "SUCCESS"
    assert vm_field(nc, vm, "state") == "VM_STOPPED_STATE"
    assert vm_field(nc, vm, "monitoring") == "false"
    assert cli(srv, "vm-action", "START", vm) == 0
    assert types(ev.until("VM_ALIVE")) == ["VM_STARTED", "VM_ALIVE"]
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "monitoring") == "true"
    assert cli(srv, "vm-action", "REBOOT", vm) == 0
    assert types(ev.until("VM_ALIVE")) == ["VM_REBOOTED", "VM_ALIVE"]
    # monitoring of a running, monitored VM cannot be started again
    err = refused(nc, rpc("vmAction", actionType="ENABLE_MONITOR", vmName=vm))
    assert "monitored" in str(err)
    assert cli(srv, "vm-action", "DISABLE_MONITOR", vm) == 0
    assert types(ev.until("VM_MONITOR_UNSET")) == ["VM_MONITOR_UNSET"]
    assert cli(srv, "vm-action", "ENABLE_MONITOR", vm) == 0
    assert types(ev.until("VM_MONITOR_SET")) == ["VM_MONITOR_SET"]
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"


def _scale_to(n: int) -> str:
    return as_config(
        SEED_DEPLOYMENT.replace(
            "<min_active>1</min_active>", f"<min_active>{n}</min_active>"
        ).replace("<max_active>1</max_active>", f"<max_active>{n}</max_active>")
    )


def test_seed_service_stop_refusals_start_reboot(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vm = deploy_seed(nc, ev, image)
    # can't start monitoring of a VNF that is already running
    err = refused(
        nc,
        rpc("serviceAction", actionType="ENABLE_MONITOR", tenantName="admin", depName="Cirros-VNF"),
    )
    assert "already running and monitored" in str(err), str(err)
    assert cli(srv, "service-action", "DISABLE_MONITOR", "admin", "Cirros-VNF") == 0
    assert types(ev.until("VM_MONITOR_UNSET")) == ["VM_MONITOR_UNSET"]
    assert vm_field(nc, vm, "monitoring") == "false"
    assert "already disabled" in str(
        refused(
            nc,
            rpc(
                "serviceAction",
                actionType="DISABLE_MONITOR",
                tenantName="admin",
                depName="Cirros-VNF",
            ),
        )
    )
    assert cli(srv, "service-action", "ENABLE_MONITOR", "admin", "Cirros-VNF") == 0
    assert types(ev.until("VM_MONITOR_SET")) == ["VM_MONITOR_SET"]
    assert vm_field(nc, vm, "monitoring") == "true"
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    # Stop VNF: monitoring disabled, VMs shut off, service_stopped_state
    assert cli(srv, "service-action", "STOP", "admin", "Cirros-VNF") == 0
    got = ev.until("SERVICE_STOPPED")
    assert types(got) == ["VM_STOPPED", "SERVICE_STOPPED"], explain(got)
    assert dep_state(nc) == "SERVICE_STOPPED_STATE"
    assert vm_field(nc, vm, "state") == "VM_STOPPED_STATE"
    assert vm_field(nc, vm, "monitoring") == "false"
    # ... you can't perform any recovery, scale out, scale in
    err = refused(nc, rpc("recoveryVmAction", actionType="DO", vmName=vm))
    assert "stopped" in str(err)
    with pytest.raises(RPCError) as info:
        nc.edit_config(target="running", config=_scale_to(2))
    assert "stopped" in str(info.value), str(info.value)
    assert "Cirros-VNF" in str(info.value)
    assert len(vm_names(nc)) == 1
    assert "stopped" in str(
        refused(
            nc,
            rpc(
                "serviceAction",
                actionType="ENABLE_MONITOR",
                tenantName="admin",
                depName="Cirros-VNF",
            ),
        )
    )
    # Start VNF: all VMs start, monitoring on, VM_ALIVE_STATE, service active
    assert cli(srv, "service-action", "START", "admin", "Cirros-VNF") == 0
    got = ev.until("SERVICE_STARTED")
    assert types(got) == ["VM_STARTED", "VM_ALIVE", "SERVICE_STARTED"], explain(got)
    assert dep_state(nc) == "SERVICE_ACTIVE_STATE"
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "monitoring") == "true"
    # Reboot VNF
    assert cli(srv, "service-action", "REBOOT", "admin", "Cirros-VNF") == 0
    got = ev.until("SERVICE_REBOOTED")
    assert types(got) == ["VM_REBOOTED", "VM_ALIVE", "SERVICE_REBOOTED"], explain(got)
    assert dep_state(nc) == "SERVICE_ACTIVE_STATE"
    # scale out works again once the service runs: min_active > active adds a VM
    nc.edit_config(target="running", config=_scale_to(2))
    got = ev.until("SERVICE_UPDATED")
    assert types(got) == [
        "VM_SCALE_OUT_INIT",
        "VM_SCALE_OUT_DEPLOYED",
        "VM_ALIVE",
        "VM_SCALE_OUT_COMPLETE",
        "SERVICE_UPDATED",
    ], explain(got)
    assert len(vm_names(nc)) == 2


def test_seed_stopped_service_can_be_undeployed(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    deploy_seed(nc, ev, image)
    dispatch(nc, rpc("serviceAction", actionType="STOP", tenantName="admin", depName="Cirros-VNF"))
    ev.until("SERVICE_STOPPED")
    nc.edit_config(
        target="running",
        config=f"""<config xmlns="{NC_BASE}" xmlns:nc="{NC_BASE}">
<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>admin</name><deployments>
<deployment nc:operation="delete"><name>Cirros-VNF</name></deployment>
</deployments></tenant></tenants></esc_datamodel></config>""",
    )
    got = ev.until("SERVICE_UNDEPLOYED")
    assert types(got) == ["VM_UNDEPLOYED", "SERVICE_UNDEPLOYED"], explain(got)
    assert vm_names(nc) == []


# ---- composite VNFs: min/max and the static IP pool (seed 001/004, last section) ------


def test_seed_scaling_rules(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    deploy_seed(nc, ev, image)
    # "If the value is greater than the max value, the update is rejected."
    bad = SEED_DEPLOYMENT.replace("<min_active>1</min_active>", "<min_active>2</min_active>")
    with pytest.raises(RPCError) as info:
        nc.edit_config(target="running", config=as_config(bad))
    assert "min_active" in str(info.value)
    assert len(vm_names(nc)) == 1
    # static IP deployment: more VMs need more addresses in the pool
    pool = (
        "<static_ip_address_pool><network>SolTest-Network</network>"
        "<gateway>10.77.0.1</gateway><netmask>255.255.255.0</netmask>"
        "{ips}</static_ip_address_pool></scaling>"
    )
    one = pool.format(ips="<ip_address>10.77.0.10</ip_address>")
    two = pool.format(ips="<ip_address>10.77.0.10</ip_address><ip_address>10.77.0.11</ip_address>")
    scaled = SEED_DEPLOYMENT.replace("<min_active>1</min_active>", "<min_active>2</min_active>")
    scaled = scaled.replace("<max_active>1</max_active>", "<max_active>2</max_active>")
    with pytest.raises(RPCError) as info:
        nc.edit_config(target="running", config=as_config(scaled.replace("</scaling>", one)))
    assert "add IP addresses to the pool" in str(info.value), str(info.value)
    assert len(vm_names(nc)) == 1
    nc.edit_config(target="running", config=as_config(scaled.replace("</scaling>", two)))
    got = ev.until("SERVICE_UPDATED")
    assert leaf(got[-1], "status") == "SUCCESS", explain(got)
    assert len(vm_names(nc)) == 2
    ips = sorted(e.text or "" for e in opdata(nc).iterfind(".//e:vm_instance//e:ip_address", NS))
    assert ips[0] in ("10.77.0.10", "10.77.0.11"), ips


# ---- NFVIS / OpenNebula life cycle, ETSI capacity ------------------------------------


def test_seed_nfvis_stats_and_capacity(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    before = {
        h.findtext("e:name", namespaces=NS): int(h.findtext("e:vcpus_used", namespaces=NS) or 0)
        for h in opdata(nc).iterfind(".//e:hosts/e:host", NS)
    }
    assert set(before) == {"Host-22", "Host-24"}
    vm = deploy_seed(nc, ev, image)
    op = opdata(nc)
    host = vm_field(nc, vm, "host")
    h = next(
        x
        for x in op.iterfind(".//e:hosts/e:host", NS)
        if x.findtext("e:name", namespaces=NS) == host
    )
    for name in (
        "vcpus_total",
        "memory_total_mb",
        "vcpus_used",
        "memory_used_mb",
        "hostid",
        "hostname",
    ):
        assert h.findtext(f"e:{name}", namespaces=NS), name
    assert int(h.findtext("e:vcpus_used", namespaces=NS) or 0) == before[host] + 1
    stats = op.find(".//e:vm_instance/e:stats", NS)
    assert stats is not None
    assert stats.findtext("e:vcpus", namespaces=NS) == "1"
    assert int(stats.findtext("e:memory_kb", namespaces=NS) or 0) == 512 * 1024
    assert stats.findtext("e:cpu_time_ns", namespaces=NS) is not None
    (img,) = op.iterfind(".//e:images/e:image", NS)
    assert img.findtext("e:state", namespaces=NS) == "active"


def test_seed_vnic_added_by_update(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    """NFVIS: 'The vNICs on a VM can also be added or updated.'"""
    vm = deploy_seed(nc, ev, image)
    update = SEED_DEPLOYMENT.replace(
        "</interface>\n",
        "</interface>\n<interface><nicid>1</nicid><network>SolTest-Network</network></interface>\n",
        1,
    )
    nc.edit_config(target="running", config=as_config(update))
    got = ev.until("SERVICE_UPDATED")
    assert types(got) == ["VM_UPDATED", "SERVICE_UPDATED"], explain(got)
    nics = [
        e.text for e in opdata(nc).iterfind(".//e:vm_instance/e:interfaces/e:interface/e:nicid", NS)
    ]
    assert nics == ["0", "1"], nics
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"


def _disk_sources(srv, vm: str, host: str) -> list[str]:  # type: ignore[no-untyped-def]
    dom = srv.services.vims.get(host).connection().lookupByName(vm)
    xml = etree.fromstring(dom.XMLDesc(0).encode())
    return [s.get("file") or "" for s in xml.iterfind("devices/disk/source")]


def test_seed_opennebula_image_persistence(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    """OpenNebula: a non-persistent image is cloned for each new VM; a persistent one
    is used by one and only one VM."""
    nc.edit_config(target="running", config=registry_config(image))
    two = SEED_DEPLOYMENT.replace("<min_active>1</min_active>", "<min_active>2</min_active>")
    two = two.replace("<max_active>1</max_active>", "<max_active>2</max_active>")
    nc.edit_config(target="running", config=as_config(two))
    got = ev.until("SERVICE_ALIVE")
    assert leaf(got[-1], "status") == "SUCCESS", explain(got)
    roots = set()
    for vm in vm_names(nc):
        roots.add(_disk_sources(srv, vm, vm_field(nc, vm, "host"))[0])
    assert len(roots) == 2, roots  # one clone per VM
    assert all(Path(r).name.endswith("-root.qcow2") for r in roots), roots
    persistent = registry_config(image).replace(
        "<container_format>bare</container_format>",
        "<container_format>bare</container_format><persistent>true</persistent>",
    )
    with pytest.raises(RPCError) as info:
        nc.edit_config(target="running", config=persistent)
    assert "persistent" in str(info.value), str(info.value)


def test_seed_opennebula_persistent_image_one_vm(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    persistent = registry_config(image).replace(
        "<container_format>bare</container_format>",
        "<container_format>bare</container_format><persistent>true</persistent>",
    )
    nc.edit_config(target="running", config=persistent)
    nc.edit_config(target="running", config=as_config(SEED_DEPLOYMENT))
    got = ev.until("SERVICE_ALIVE")
    assert leaf(got[-1], "status") == "SUCCESS", explain(got)
    (vm,) = vm_names(nc)
    root = _disk_sources(srv, vm, vm_field(nc, vm, "host"))[0]
    assert not Path(root).name.endswith("-root.qcow2"), root  # the image itself
    # a second VM on the same persistent image is refused
    with pytest.raises(RPCError) as info:
        nc.edit_config(
            target="running",
            config=as_config(
                SEED_DEPLOYMENT.replace(
                    "<min_active>1</min_active>", "<min_active>2</min_active>"
                ).replace("<max_active>1</max_active>", "<max_active>2</max_active>")
            ),
        )
    assert "persistent" in str(info.value), str(info.value)
