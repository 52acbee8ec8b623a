"""Day-2 flows end to end over NETCONF on libvirt test-driver hosts: notification order,
opdata, refusals, and what libvirt itself shows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from conftest import connect
from conftest import test_host_uri as host_uri
from esc_events import Events, etype, types
from escnc.ns import ESC

pytestmark = pytest.mark.timeout(120)

NS = {"e": ESC}
NC_BASE = "urn:ietf:params:xml:ns:netconf:base:1.0"


def config_xml(
    flavor: str = "small", instances: int = 1, image_src: str = "", extra_group: str = ""
) -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<esc_datamodel xmlns="{ESC}">
  <images><image><name>img</name><src>{image_src}</src></image></images>
  <flavors>
    <flavor><name>small</name><vcpus>1</vcpus><memory_mb>512</memory_mb></flavor>
    <flavor><name>large</name><vcpus>2</vcpus><memory_mb>1024</memory_mb></flavor>
  </flavors>
  <tenants><tenant><name>t1</name><deployments><deployment><name>d1</name>
    <vm_group><name>g1</name><image>img</image><flavor>{flavor}</flavor>
      <bootup_time>30</bootup_time><recovery_wait_time>0</recovery_wait_time>
      <scaling><min_active>{instances}</min_active><max_active>{instances}</max_active>
        <elastic>true</elastic></scaling>{extra_group}
    </vm_group>
  </deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""


def rpc(rpc_name: str, **leaves: str) -> str:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in leaves.items())
    return f'<{rpc_name} xmlns="{ESC}">{body}</{rpc_name}>'


def status(ev: etree._Element) -> str:
    return ev.findtext("e:status", namespaces=NS) or ""


@pytest.fixture
def hosts_dir(tmp_path: Path) -> Path:
    return tmp_path / "hosts2"


@pytest.fixture
def srv(server_factory, hosts_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return server_factory(
        vims={"hostA": host_uri(hosts_dir, "hostA"), "hostB": host_uri(hosts_dir, "hostB")},
        snapshot_poll_secs=0.01,
        volume_poll_secs=0.01,
        reconcile_interval=1.0,  # the periodic reconcile on, as in production
    )


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"\0" * 4096)
    return str(path)


@pytest.fixture
def nc(srv) -> Iterator:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        m._escnc_server = srv
        yield m


@pytest.fixture
def ev(srv) -> Iterator[Events]:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        yield Events(m)


def edit(nc, config: str) -> None:  # type: ignore[no-untyped-def]
    """edit-config on running; until the datastore operations are registered, the same
    merge through the datastore's system edit (what edit-config calls)."""
    srv = nc._escnc_server
    if (NC_BASE, "edit-config") in srv.services.registry:
        nc.edit_config(target="running", config=config)
    else:
        srv.services.datastore.system_edit(etree.fromstring(config))


def deploy(nc, ev: Events, image: str, instances: int = 1, extra: str = "") -> list[str]:  # type: ignore[no-untyped-def]
    edit(nc, config_xml("small", instances, image, extra))
    got = ev.until("SERVICE_ALIVE")
    assert status(got[-1]) == "SUCCESS", etree.tostring(got[-1])
    return vm_names(nc)


def opdata(nc) -> etree._Element:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata/></esc_datamodel>'
    return etree.fromstring(nc.get(filter=("subtree", flt)).data_xml.encode())


def vm_names(nc) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(e.text for e in opdata(nc).iterfind(".//e:vm_instance/e:name", NS))


def vm_field(nc, name: str, leaf: str) -> str:  # type: ignore[no-untyped-def]
    for vm in opdata(nc).iterfind(".//e:vm_instance", NS):
        if vm.findtext("e:name", namespaces=NS) == name:
            return vm.findtext(f"e:{leaf}", namespaces=NS) or ""
    raise AssertionError(f"{name} not in opdata")


def conn(srv, host: str) -> libvirt.virConnect:  # type: ignore[no-untyped-def]
    return srv.services.vims.get(host).connection()


def where(srv, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        h for h in ("hostA", "hostB") if name in [d.name() for d in conn(srv, h).listAllDomains()]
    ]


def size(srv, host: str, name: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    info = conn(srv, host).lookupByName(name).info()
    return int(info[3]), int(info[2]) // 1024


def set_flavor(nc, image: str, flavor: str, instances: int = 1) -> None:  # type: ignore[no-untyped-def]
    edit(nc, config_xml(flavor, instances, image))


def config_flavor(nc) -> str:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><tenants/></esc_datamodel>'
    data = etree.fromstring(
        nc.get_config(source="running", filter=("subtree", flt)).data_xml.encode()
    )
    return data.findtext(".//e:vm_group/e:flavor", namespaces=NS) or ""


def refused(nc, request: str) -> RPCError:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as info:
        nc.dispatch(etree.fromstring(request))
    return info.value


# ---- resize -------------------------------------------------------------------------


def test_resize_confirm(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    set_flavor(nc, image, "large")
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got)[-2:] == ["SERVICE_UPDATED", "VM_VERIFY_RESIZE"]
    assert status(got[-1]) == "SUCCESS"
    assert vm_field(nc, vm, "state") == "VM_VERIFY_RESIZE_STATE"
    assert size(srv, host, vm) == (2, 1024)
    nc.dispatch(etree.fromstring(rpc("vmAction", actionType="CONFIRM_RESIZE", vmName=vm)))
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_CONFIRM_RESIZE_INIT", "VM_CONFIRM_RESIZE_COMPLETE", "VM_ALIVE"]
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, vm, "flavor") == "large"
    assert size(srv, host, vm) == (2, 1024)
    err = refused(nc, rpc("vmAction", actionType="CONFIRM_RESIZE", vmName=vm))
    assert "VM_VERIFY_RESIZE_STATE" in str(err)


def test_resize_revert_restores_libvirt_and_config(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    set_flavor(nc, image, "large")
    ev.until("VM_VERIFY_RESIZE")
    err = refused(nc, rpc("vmBackupAction", vmName=vm, backupName="b"))
    assert "VM_VERIFY_RESIZE_STATE" in str(err)
    nc.dispatch(etree.fromstring(rpc("vmAction", actionType="REVERT_RESIZE", vmName=vm)))
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_REVERT_RESIZE_INIT", "VM_REVERT_RESIZE_COMPLETE", "VM_ALIVE"]
    assert size(srv, host, vm) == (1, 512)
    dom = conn(srv, host).lookupByName(vm)
    assert "<vcpu placement='static'>1</vcpu>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert vm_field(nc, vm, "flavor") == "small"
    assert config_flavor(nc) == "small"


def test_resize_multi_vm_group_one_at_a_time(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    vms = deploy(nc, ev, image, instances=2)
    set_flavor(nc, image, "large", instances=2)
    first = ev.until("VM_VERIFY_RESIZE")[-1]
    first_vm = first.findtext("e:vm_source/e:vmname", namespaces=NS)
    other = next(v for v in vms if v != first_vm)
    assert vm_field(nc, other, "state") == "VM_ALIVE_STATE"
    assert vm_field(nc, other, "flavor") == "small"
    # a periodic reconcile meanwhile must not take the pending rollout for drift
    srv.services.engine.reconcile()
    assert srv.services.engine.wait_idle(10)
    nc.dispatch(etree.fromstring(rpc("vmAction", actionType="CONFIRM_RESIZE", vmName=first_vm)))
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got)[:3] == ["VM_CONFIRM_RESIZE_INIT", "VM_CONFIRM_RESIZE_COMPLETE", "VM_ALIVE"]
    assert got[-1].findtext("e:vm_source/e:vmname", namespaces=NS) == other
    nc.dispatch(etree.fromstring(rpc("vmAction", actionType="CONFIRM_RESIZE", vmName=other)))
    ev.until("VM_CONFIRM_RESIZE_COMPLETE")
    for name in vms:
        assert size(srv, where(srv, name)[0], name) == (2, 1024)


# ---- migration ----------------------------------------------------------------------


def test_live_migration_picks_free_host(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    source = where(srv, vm)[0]
    target = "hostB" if source == "hostA" else "hostA"
    snap_before = conn(srv, source).lookupByName(vm).UUIDString()
    nc.dispatch(etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="pre")))
    ev.until("VM_BACKUP_COMPLETE")
    nc.dispatch(etree.fromstring(rpc("vmMigrate", vmName=vm, migrationType="live")))
    got = ev.until("VM_MIGRATE_COMPLETE")
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_MIGRATE_COMPLETE"]
    assert all(status(e) == "SUCCESS" for e in got)
    migrated = got[1]
    assert migrated.findtext("e:vm_source/e:vim_id", namespaces=NS) == source
    assert migrated.findtext("e:vm_target/e:vim_id", namespaces=NS) == target
    assert where(srv, vm) == [target]
    dom = conn(srv, target).lookupByName(vm)
    assert dom.isActive() and dom.UUIDString() == snap_before
    assert vm_field(nc, vm, "host") == target
    # the snapshot went along: libvirt on the target has it, opdata names the target
    (snap,) = snapshots(nc)
    assert snap.findtext("e:vim_id", namespaces=NS) == target
    assert dom.snapshotListNames() == [snap.findtext("e:id", namespaces=NS)]


def test_cold_migration_revert_moves_back(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    source = where(srv, vm)[0]
    target = "hostB" if source == "hostA" else "hostA"
    nc.dispatch(etree.fromstring(rpc("vmMigrate", vmName=vm, migrationType="cold", host=target)))
    got = ev.until("VM_VERIFY_RESIZE")
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATED", "VM_VERIFY_RESIZE"]
    assert where(srv, vm) == [target]
    assert vm_field(nc, vm, "state") == "VM_VERIFY_RESIZE_STATE"
    nc.dispatch(etree.fromstring(rpc("vmAction", actionType="REVERT_RESIZE", vmName=vm)))
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_REVERT_RESIZE_INIT", "VM_REVERT_RESIZE_COMPLETE", "VM_ALIVE"]
    assert where(srv, vm) == [source]
    assert conn(srv, source).lookupByName(vm).isActive()
    assert vm_field(nc, vm, "host") == source


def test_migration_refusals(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    source = where(srv, vm)[0]
    assert "not found" in str(refused(nc, rpc("vmMigrate", vmName="nope", migrationType="live")))
    assert "already runs" in str(
        refused(nc, rpc("vmMigrate", vmName=vm, migrationType="live", host=source))
    )
    assert "not configured" in str(
        refused(nc, rpc("vmMigrate", vmName=vm, migrationType="live", host="hostZ"))
    )
    refused(nc, rpc("vmMigrate", vmName=vm, migrationType="sideways"))  # YANG enum


def test_failed_migration_leaves_vm_running_and_no_copy(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    source = where(srv, vm)[0]
    target = "hostB" if source == "hostA" else "hostA"
    # fill the target: a domain escnc does not own takes nearly all its memory
    conn(srv, target).defineXML(
        "<domain type='test'><name>hog</name><memory unit='MiB'>3000</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    ).create()
    nc.dispatch(etree.fromstring(rpc("vmMigrate", vmName=vm, migrationType="live", host=target)))
    got = ev.until("VM_MIGRATE_COMPLETE")
    assert types(got) == ["VM_MIGRATE_INIT", "VM_MIGRATE_COMPLETE"]
    assert status(got[-1]) == "FAILURE"
    assert got[-1].findtext("e:status_code", namespaces=NS) == "500"
    assert "free memory" in (got[-1].findtext("e:status_message", namespaces=NS) or "")
    assert where(srv, vm) == [source]
    assert conn(srv, source).lookupByName(vm).isActive()
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    # and with no host given there is nowhere to go
    assert "no host" in str(refused(nc, rpc("vmMigrate", vmName=vm, migrationType="live")))


# ---- snapshots, volumes, restore ------------------------------------------------------


def snapshots(nc) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    return list(opdata(nc).iterfind(".//e:snapshots/e:snapshot", NS))


def test_backup_list_delete(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    nc.dispatch(
        etree.fromstring(
            rpc("vmBackupAction", vmName=vm, backupName="nightly", actionType="SNAPSHOT")
        )
    )
    got = ev.until("VM_BACKUP_COMPLETE")
    assert types(got) == ["VM_BACKUP_INIT", "VM_BACKUP_CREATED", "VM_BACKUP_COMPLETE"]
    assert got[1].findtext("e:status_code", namespaces=NS) == "202"
    (snap,) = snapshots(nc)
    snap_id = snap.findtext("e:id", namespaces=NS)
    assert snap.findtext("e:name", namespaces=NS) == "nightly"
    assert snap.findtext("e:status", namespaces=NS) == "active"
    assert snap.findtext("e:created_from_generated_vm_name", namespaces=NS) == vm
    assert snap.findtext("e:tenant", namespaces=NS) == "t1"
    assert snap.findtext("e:creation_end_date", namespaces=NS)
    assert conn(srv, host).lookupByName(vm).snapshotListNames() == [snap_id]
    # filter by VM with an ordinary subtree filter
    flt = (
        f'<esc_datamodel xmlns="{ESC}"><opdata><snapshots><snapshot>'
        f"<created_from_generated_vm_name>{vm}</created_from_generated_vm_name>"
        "</snapshot></snapshots></opdata></esc_datamodel>"
    )
    data = etree.fromstring(nc.get(filter=("subtree", flt)).data_xml.encode())
    assert len(data.findall(".//e:snapshot", NS)) == 1
    # a second snapshot with the same name makes the name ambiguous
    nc.dispatch(etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="nightly")))
    ev.until("VM_BACKUP_COMPLETE")
    assert "not unique" in str(
        refused(nc, rpc("snapshotAction", actionType="DELETE", snapshot="nightly"))
    )
    err = refused(nc, rpc("snapshotAction", actionType="DELETE", snapshot="nope"))
    assert "Snapshot image [nope] not found." in str(err)
    assert err.app_tag == "404"
    nc.dispatch(etree.fromstring(rpc("snapshotAction", actionType="DELETE", snapshot=snap_id)))
    got = ev.until("VM_SNAPSHOT_DELETED")
    assert types(got) == ["VM_SNAPSHOT_DELETING", "VM_SNAPSHOT_DELETED"]
    assert f"Snapshot image [{snap_id}] has been deleted." in (
        got[-1].findtext("e:status_message", namespaces=NS) or ""
    )
    assert snap_id not in conn(srv, host).lookupByName(vm).snapshotListNames()
    assert len(snapshots(nc)) == 1
    # now the name is unique again: delete by name
    nc.dispatch(etree.fromstring(rpc("snapshotAction", actionType="DELETE", snapshot="nightly")))
    ev.until("VM_SNAPSHOT_DELETED")
    assert snapshots(nc) == []
    err = refused(nc, rpc("vmBackupAction", vmName=vm, backupName="x" * 256))
    assert "backupName" in str(err) and "length" in str(err)


def test_export_and_volume_from_snapshot(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    nc.dispatch(
        etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="exp", actionType="EXPORT"))
    )
    got = ev.until("VM_BACKUP_COMPLETE")
    assert status(got[-1]) == "SUCCESS", got[-1].findtext("e:status_message", namespaces=NS)
    pool = conn(srv, host).storagePoolLookupByName("escnc")
    assert any(v.startswith("image-exp-") for v in pool.listVolumes())
    nc.dispatch(etree.fromstring(rpc("createVolumeFromSnapshot", snapshot="exp", name="boot-vol")))
    got = ev.until("VM_VOLUME_CREATED_EVENT")
    assert types(got) == ["VM_VOLUME_ACCEPTED_EVENT", "VM_VOLUME_CREATED_EVENT"]
    assert status(got[-1]) == "SUCCESS"
    (vol,) = opdata(nc).iterfind(".//e:volumes/e:volume", NS)
    assert vol.findtext("e:name", namespaces=NS) == "boot-vol"
    assert vol.findtext("e:bootable", namespaces=NS) == "true"
    assert vol.findtext("e:status", namespaces=NS) == "available"
    vol_id = vol.findtext("e:id", namespaces=NS)
    assert f"volume-{vol_id}.qcow2" in pool.listVolumes()
    assert "not found" in str(
        refused(nc, rpc("createVolumeFromSnapshot", snapshot="zzz", name="v"))
    )


def test_export_registers_image_for_restore(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    nc.dispatch(
        etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="bk1", actionType="EXPORT"))
    )
    got = ev.until("VM_BACKUP_COMPLETE")
    assert types(got) == ["VM_BACKUP_INIT", "VM_BACKUP_CREATED", "VM_BACKUP_COMPLETE"]
    msg = got[-1].findtext("e:status_message", namespaces=NS) or ""
    assert status(got[-1]) == "SUCCESS", msg
    assert "Registered as image [bk1]" in msg
    # CREATE_IMAGE SUCCESS came before VM_BACKUP_COMPLETE
    created = [
        e
        for e in ev.resources
        if etype(e) == "CREATE_IMAGE" and "bk1" in etree.tostring(e).decode()
    ]
    assert created and status(created[-1]) == "SUCCESS"
    # the configuration holds the image, its src the exported volume
    flt = f'<esc_datamodel xmlns="{ESC}"><images/></esc_datamodel>'
    cfg = etree.fromstring(
        nc.get_config(source="running", filter=("subtree", flt)).data_xml.encode()
    )
    imgs = {i.findtext("e:name", namespaces=NS): i for i in cfg.iterfind(".//e:images/e:image", NS)}
    src = imgs["bk1"].findtext("e:src", namespaces=NS) or ""
    vol = conn(srv, host).storageVolLookupByPath(src)
    assert vol.name().startswith("image-bk1-")
    assert vol.storagePoolLookupByVolume().name() == "escnc"
    assert imgs["bk1"].findtext("e:disk_format", namespaces=NS) == "qcow2"
    assert imgs["bk1"].findtext("e:persistent", namespaces=NS) == "false"
    (state,) = [
        i.findtext("e:state", namespaces=NS)
        for i in opdata(nc).iterfind(".//e:images/e:image", NS)
        if i.findtext("e:name", namespaces=NS) == "bk1"
    ]
    assert state == "active"
    # a clashing name is refused before VM_BACKUP_INIT, with no snapshot left
    n_snaps = len(snapshots(nc))
    for clash in ("bk1", "img"):
        err = refused(nc, rpc("vmBackupAction", vmName=vm, backupName=clash, actionType="EXPORT"))
        assert "already exists" in str(err)
    assert "not a valid image name" in str(
        refused(nc, rpc("vmBackupAction", vmName=vm, backupName="a/b", actionType="EXPORT"))
    )
    assert len(snapshots(nc)) == n_snaps
    # restore flow: a service update of the same group to the exported image
    edit(nc, config_xml("small", 2, image).replace("<image>img</image>", "<image>bk1</image>"))
    got = ev.until("SERVICE_UPDATED")
    assert status(got[-1]) == "SUCCESS", etree.tostring(got[-1])
    assert "VM_BACKUP_INIT" not in types(got)
    (new_vm,) = [v for v in vm_names(nc) if v != vm]
    assert vm_field(nc, new_vm, "image") == "bk1"
    (new_host,) = where(srv, new_vm)
    dom = conn(srv, new_host).lookupByName(new_vm)
    root = etree.fromstring(dom.XMLDesc(0)).find("devices/disk/source").get("file")
    backing = conn(srv, new_host).storageVolLookupByPath(root).XMLDesc(0)
    if new_host == host:
        assert f"<path>{src}</path>" in backing
    else:  # another host: a copy of the exported volume backs it
        assert "image-bk1." in backing


def test_revert_to_snapshot_in_place(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    nc.dispatch(etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="running")))
    ev.until("VM_BACKUP_COMPLETE")
    nc.dispatch(etree.fromstring(rpc("vmAction", actionType="STOP", vmName=vm)))
    ev.until("VM_STOPPED")
    assert not conn(srv, host).lookupByName(vm).isActive()
    nc.dispatch(etree.fromstring(rpc("vmRevertSnapshot", vmName=vm, snapshot="running")))
    got = ev.until("VM_ALIVE")
    assert types(got) == ["VM_SNAPSHOT_REVERT_INIT", "VM_SNAPSHOT_REVERTED", "VM_ALIVE"]
    assert conn(srv, host).lookupByName(vm).isActive()
    assert vm_field(nc, vm, "state") == "VM_ALIVE_STATE"
    assert "not found" in str(refused(nc, rpc("vmRevertSnapshot", vmName=vm, snapshot="zz")))


def test_snapshot_timeout_is_failure_and_leaves_nothing(srv, nc, ev, image, monkeypatch):  # type: ignore[no-untyped-def]
    from escnc.vim import snapshots as vim_snapshots

    (vm,) = deploy(nc, ev, image)
    host = where(srv, vm)[0]
    srv.settings.snapshot_timeout_mins = 0.3 / 60  # 0.3 s
    real = vim_snapshots.create_snapshot

    def slow(*args, **kw):  # type: ignore[no-untyped-def]
        time.sleep(0.8)
        return real(*args, **kw)

    monkeypatch.setattr(vim_snapshots, "create_snapshot", slow)
    nc.dispatch(etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="slow")))
    got = ev.until("VM_BACKUP_COMPLETE")
    assert types(got) == ["VM_BACKUP_INIT", "VM_BACKUP_COMPLETE"]
    assert status(got[-1]) == "FAILURE"
    assert "timed out" in (got[-1].findtext("e:status_message", namespaces=NS) or "")
    (snap,) = snapshots(nc)
    assert snap.findtext("e:status", namespaces=NS) == "error"
    deadline = time.monotonic() + 5
    while conn(srv, host).lookupByName(vm).snapshotListNames() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert conn(srv, host).lookupByName(vm).snapshotListNames() == []


def test_migration_keeps_strict_anti_affinity_within_a_group(srv, nc, ev, image):  # type: ignore[no-untyped-def]
    """Two VMs of one group in a strict anti-affinity placement group: deploy puts them
    on hostA and hostB, and neither may then move onto the other's host."""
    group = (
        "<placement_group><name>apart</name><type>anti_affinity</type>"
        "<enforcement>strict</enforcement><vm_group>g1</vm_group></placement_group>"
    )
    config = config_xml("small", 2, image)
    edit(nc, config.replace("<deployment><name>d1</name>", f"<deployment><name>d1</name>{group}"))
    got = ev.until("SERVICE_ALIVE")
    assert status(got[-1]) == "SUCCESS", etree.tostring(got[-1])
    first, second = vm_names(nc)
    assert {where(srv, first)[0], where(srv, second)[0]} == {"hostA", "hostB"}
    other = where(srv, second)[0]
    error = refused(nc, rpc("vmMigrate", vmName=first, migrationType="live", host=other))
    assert "not allowed by the placement rules" in str(error)
    anywhere = rpc("vmMigrate", vmName=first, migrationType="live")
    assert "no host can take" in str(refused(nc, anywhere))
    assert where(srv, first)[0] != where(srv, second)[0]
