"""Engine test harness: the real engine, libvirt test driver and EventBus, with a
minimal in-test datastore that feeds CommitEvents (no NETCONF server needed)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from escnc.engine.engine import Engine
from escnc.events.bus import EventBus
from escnc.netconf.dispatch import RpcRegistry
from escnc.ns import ESC
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

    def add_validator(self, v: Callable[[etree._Element], None]) -> None:
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
        self, tmp: Path, state: str = "state", host_files: tuple[str, ...] = ("host",)
    ) -> None:
        hosts_dir = tmp / "hosts"
        hosts_dir.mkdir(parents=True, exist_ok=True)
        vims = {}
        for name in host_files:
            f = hosts_dir / f"{name}.xml"
            if not f.exists():
                f.write_text("<node></node>\n")
            vims[name] = f"test://{f}"
        self.settings = Settings(state_dir=tmp / state, vims=vims, reconcile_interval=0)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.services = Services(settings=self.settings, registry=RpcRegistry())
        self.ds = FeedDatastore()
        self.services.datastore = self.ds
        self.services.events = EventBus(self.settings)
        self.events = Events(self.services.events)
        self.services.vims = HostRegistry(self.settings)
        self.engine = Engine(self.services)
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
