"""Engine test harness: the real engine, libvirt test driver and EventBus, with a
minimal in-test datastore that feeds CommitEvents (no NETCONF server needed)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from conftest import TEST_OVERCOMMIT, is_resource_event
from escnc.engine.clock import Clock
from escnc.engine.engine import Engine
from escnc.events.bus import EventBus
from escnc.ns import ESC
from escnc.rpc.dispatch import RpcRegistry
from escnc.services import CommitEvent, Services
from escnc.settings import Settings
from escnc.vim.hosts import HostRegistry

E = f"{{{ESC}}}"


class FeedDatastore:
    def __init__(self) -> None:
        self.running = etree.Element("data")
        self.validators: list[Callable[[etree._Element], None]] = []
        self.listeners: list[Callable[[CommitEvent], None]] = []

    def running_xml(self) -> etree._Element:
        return self.running

    def add_validator(self, v: Callable[[etree._Element], None], whole_lists: object = ()) -> None:
        self.validators.append(v)

    def add_commit_listener(self, cb: Callable[[CommitEvent], None]) -> None:
        self.listeners.append(cb)

    def commit(self, config_xml: str) -> None:
        new = etree.Element("data")
        new.append(etree.fromstring(config_xml))
        for v in self.validators:
            v(new)
        old, self.running = self.running, new
        for cb in self.listeners:
            cb(CommitEvent(old, new, (), 0, "test"))


class Events:
    """Collects escEvents: (type, status, generated vm name, message)."""

    def __init__(self, bus: EventBus) -> None:
        self.items: list[tuple[str, str, str, str]] = []
        self._cond = threading.Condition()
        bus.add_listener(self._on, stream="escEvent")

    def _on(self, stored: object) -> None:
        el = etree.fromstring(stored.body)  # type: ignore[attr-defined]
        if is_resource_event(el):
            return
        item = (
            el.findtext(f"{E}event/{E}type") or "",
            el.findtext(f"{E}status") or "",
            el.findtext(f"{E}vm_source/{E}generated_vmname") or "",
            el.findtext(f"{E}status_message") or "",
        )
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def types(self) -> list[str]:
        with self._cond:
            return [i[0] for i in self.items]

    def wait_for(
        self, type_: str, count: int = 1, timeout: float = 20.0
    ) -> list[tuple[str, str, str, str]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for i in self.items if i[0] == type_) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {count} {type_}; got {self.items}")
                self._cond.wait(left)
            return list(self.items)

    def clear(self) -> None:
        with self._cond:
            self.items.clear()


class Harness:
    def __init__(
        self,
        tmp: Path,
        state: str = "state",
        host_files: tuple[str, ...] = ("host",),
        clock: Clock | None = None,
        reconcile_interval: float = 1.0,
        database: str = "",
    ) -> None:
        """``database``: settings.database (engine state and events in PostgreSQL)."""
        hosts_dir = tmp / "hosts"
        hosts_dir.mkdir(parents=True, exist_ok=True)
        vims = {}
        for name in host_files:
            f = hosts_dir / f"{name}.xml"
            if not f.exists():
                f.write_text("<node></node>\n")
            vims[name] = f"test://{f}"
        # the periodic reconcile runs as in production (1 s here, or on ``clock``)
        self.settings = Settings(
            state_dir=tmp / state,
            vims=vims,
            reconcile_interval=reconcile_interval,
            overcommit=dict(TEST_OVERCOMMIT),  # the test node is small (conftest)
            database=database,
        )
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings.image_import_dirs = [tmp]  # config()'s image files live in tmp
        self.services = Services(settings=self.settings, registry=RpcRegistry())
        self.ds = FeedDatastore()
        self.services.datastore = self.ds
        self.services.events = EventBus(self.settings)
        self.events = Events(self.services.events)
        self.services.vims = HostRegistry(self.settings)
        self.engine = Engine(self.services, clock=clock)
        self.services.engine = self.engine

    def start(self) -> Harness:
        self.engine.start()
        return self

    def stop(self) -> None:
        self.engine.stop()
        self.services.events.close()
        self.services.vims.close()

    def conn(self, host: str = "host"):  # type: ignore[no-untyped-def]
        return self.services.vims.get(host).connection()


def config(
    tmp: Path,
    deployments: str,
    *,
    image_src: str | None = None,
    extra: str = "",
) -> str:
    if image_src is None:
        img = tmp / "img.qcow2"
        if not img.exists():
            img.write_bytes(b"QFI\xfb" + b"\0" * 1020)
        image_src = str(img)
    return f"""
<esc_datamodel xmlns="{ESC}">
  <images><image><name>img</name><src>{image_src}</src><disk_format>qcow2</disk_format></image></images>
  <flavors><flavor><name>small</name><vcpus>2</vcpus><memory_mb>256</memory_mb><root_disk_mb>1024</root_disk_mb></flavor>
           <flavor><name>big</name><vcpus>4</vcpus><memory_mb>512</memory_mb></flavor></flavors>
  <networks><network><name>net1</name><subnet><name>s1</name><address>10.9.0.0</address>
    <netmask>255.255.0.0</netmask><gateway>10.9.0.1</gateway></subnet></network></networks>
  {extra}
  <tenants><tenant><name>t1</name><deployments>{deployments}</deployments></tenant></tenants>
</esc_datamodel>"""


def _pool(n: int) -> str:
    first = ipaddress.IPv4Address("10.9.0.10")
    return "".join(f"<ip_address>{first + i}</ip_address>" for i in range(n))


def deployment(
    name: str = "dep1",
    group: str = "g1",
    min_active: int = 1,
    max_active: int | None = None,
    flavor: str = "small",
    bootup_time: int = 30,
    extra_group: str = "",
) -> str:
    return f"""
<deployment><name>{name}</name>
  <vm_group><name>{group}</name><image>img</image><flavor>{flavor}</flavor>
    <bootup_time>{bootup_time}</bootup_time><recovery_wait_time>0</recovery_wait_time>
    <interfaces><interface><nicid>0</nicid><network>net1</network></interface></interfaces>
    <scaling><min_active>{min_active}</min_active>
      <max_active>{max_active or min_active}</max_active>
      <elastic>true</elastic>
      <static_ip_address_pool><network>net1</network><gateway>10.9.0.1</gateway>
        <netmask>255.255.0.0</netmask>{_pool(max(max_active or min_active, 1))}
      </static_ip_address_pool></scaling>
    <kpi_data><kpi><event_name>VM_ALIVE</event_name><metric_value>1</metric_value><metric_cond>GT</metric_cond>
      <metric_type>UINT32</metric_type><metric_collector><type>ICMPPing</type><nicid>0</nicid>
      <poll_frequency>3</poll_frequency><polling_unit>seconds</polling_unit>
      <continuous_alarm>false</continuous_alarm></metric_collector></kpi></kpi_data>
    <config_data><configuration><dst>--user-data</dst><data>#cloud-config
hostname: $VM_NAME ip $NICID_0_IP_ADDRESS</data></configuration></config_data>
    {extra_group}
  </vm_group>
</deployment>"""


# -- NETCONF helpers (ncclient) for the engine's end-to-end tests ------------------------


def nc_edit(m, xml: str) -> None:  # type: ignore[no-untyped-def]
    m.edit_config(
        target="running",
        config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">{xml}</config>',
    )


def nc_events(m, want: str, count: int = 1, timeout: float = 20) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    """escEvents received until ``count`` of type ``want`` arrived (AssertionError if not)."""
    seen: list[etree._Element] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=0.2)
        if n is None:
            continue
        ev = etree.fromstring(n.notification_xml.encode()).find(f".//{E}escEvent")
        if ev is None:
            continue
        seen.append(ev)
        if sum(1 for e in seen if ev_type(e) == want) >= count:
            return seen
    raise AssertionError(f"no {count} {want}: {[ev_type(e) for e in seen]}")


def nc_quiet(m, seconds: float) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    """Every escEvent received during ``seconds``."""
    seen = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        n = m.take_notification(block=True, timeout=min(left, 0.2))
        if n is not None:
            ev = etree.fromstring(n.notification_xml.encode()).find(f".//{E}escEvent")
            if ev is not None:
                seen.append(ev)
    return seen


def ev_type(ev: etree._Element) -> str:
    return ev.findtext(f"{E}event/{E}type") or ""


def ev_types(events: list[etree._Element]) -> list[str]:
    return [ev_type(e) for e in events]


def ev_vm(ev: etree._Element) -> str:
    return ev.findtext(f"{E}vm_source/{E}generated_vmname") or ""


def nc_rpc(m, name: str, **leaves: str):  # type: ignore[no-untyped-def]
    body = "".join(f"<{k}>{v}</{k}>" for k, v in leaves.items())
    return m.dispatch(etree.fromstring(f'<{name} xmlns="{ESC}">{body}</{name}>'))


def nc_opdata(m) -> etree._Element:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata/></esc_datamodel>'
    return etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())


def op_vms(op: etree._Element) -> dict[str, dict[str, str]]:
    """generated name -> {state, monitoring, image, index, ip, status_message}."""
    result = {}
    for v in op.iter(f"{E}vm_instance"):
        result[v.findtext(f"{E}name") or ""] = {
            "state": v.findtext(f"{E}state") or "",
            "monitoring": v.findtext(f"{E}monitoring") or "",
            "image": v.findtext(f"{E}image") or "",
            "index": v.findtext(f"{E}index") or "",
            "ip": v.findtext(f"{E}interfaces/{E}interface/{E}ip_address") or "",
        }
    return result


def monitored_deployment(
    recovery_type: str = "AUTO",
    action: str = "REBOOT_THEN_REDEPLOY",
    max_retries: int = 2,
    occurrences_false: int = 1,
    image: str = "img",
    **kw: object,
) -> str:
    """``deployment()`` polled every second, with a recovery_policy."""
    xml = deployment(**kw)  # type: ignore[arg-type]
    policy = (
        f"<recovery_policy><recovery_type>{recovery_type}</recovery_type>"
        f"<action_on_recovery>{action}</action_on_recovery>"
        f"<max_retries>{max_retries}</max_retries></recovery_policy>"
    )
    return (
        xml.replace("<poll_frequency>3</poll_frequency>", "<poll_frequency>1</poll_frequency>")
        .replace(
            "<metric_type>UINT32</metric_type>",
            "<metric_type>UINT32</metric_type>"
            f"<metric_occurrences_false>{occurrences_false}</metric_occurrences_false>",
        )
        .replace("<interfaces>", policy + "<interfaces>", 1)
        .replace("<image>img</image>", f"<image>{image}</image>")
    )


def with_second_image(config_xml: str, tmp: Path) -> str:
    """``config()`` plus an image ``img2``."""
    img = tmp / "img2.qcow2"
    if not img.exists():
        img.write_bytes(b"QFI\xfb" + b"\1" * 1020)
    return config_xml.replace(
        "</image></images>",
        f"</image><image><name>img2</name><src>{img}</src><disk_format>qcow2</disk_format>"
        "</image></images>",
    )
