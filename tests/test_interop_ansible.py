"""Ansible's NETCONF modules against a real escnc on loopback.

``ansible`` from PyPI bundles ansible.netcommon: ``netconf_get`` (subtree and the
unprefixed XPath ConfD accepts), ``netconf_config`` with its documented
``<config xmlns:xc="urn:ietf:params:xml:ns:netconf:base:1.0">`` form, and
``netconf_rpc`` (get-schema), through the netcommon ``netconf`` connection plugin
(ncclient underneath) with the ``default`` netconf plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from conftest import PASSWORD, USER, connect
from escnc.app import Server

ROOT = Path(__file__).resolve().parent.parent
E = "http://www.cisco.com/esc/esc"

PLAYBOOK = f"""
- hosts: escnc
  gather_facts: false
  tasks:
    - name: state with a subtree filter
      ansible.netcommon.netconf_get:
        filter: <esc_datamodel xmlns="{E}"><opdata><system_status/></opdata></esc_datamodel>
        display: xml
      register: subtree
    - name: state with ESC's unprefixed XPath
      ansible.netcommon.netconf_get:
        filter: /esc_datamodel/opdata/system_status
        display: xml
      register: xpath
    - name: configuration in netconf_config's documented form
      ansible.netcommon.netconf_config:
        target: running
        content: |
          <config xmlns:xc="urn:ietf:params:xml:ns:netconf:base:1.0">
            <esc_datamodel xmlns="{E}"><flavors><flavor><name>ansible-flavor</name>
              <vcpus>1</vcpus><memory_mb>128</memory_mb><root_disk_mb>128</root_disk_mb>
            </flavor></flavors></esc_datamodel>
          </config>
      register: config
    - name: an RPC
      ansible.netcommon.netconf_rpc:
        rpc: get-schema
        xmlns: urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring
        content: "<identifier>escnc</identifier>"
        display: xml
      register: rpc
    - name: results for the test
      ansible.builtin.copy:
        dest: "{{{{ out }}}}"
        content: "{{{{ {{'subtree': subtree.stdout | string, 'xpath': xpath.stdout | string,
                        'config_changed': config.changed, 'rpc': rpc.stdout | string}}
                     | to_json }}}}"
      delegate_to: localhost
"""


def ansible_playbook() -> str:
    exe = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    if not Path(exe).exists():
        pytest.fail("ansible-playbook not installed (pip install '.[test]' installs ansible)")
    return exe


def test_ansible_netconf_get_config_rpc(server: Server, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[escnc]\n"
        f"escnc ansible_host=127.0.0.1 ansible_port={server.port} ansible_user={USER} "
        f"ansible_password={PASSWORD} ansible_connection=ansible.netcommon.netconf "
        "ansible_network_os=ansible.netcommon.default "
        "ansible_netconf_host_key_checking=false ansible_python_interpreter="
        f"{sys.executable}\n"
    )
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "results.json"
    env = dict(os.environ)
    env.update(
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_PERSISTENT_CONTROL_PATH_DIR=str(tmp_path / "pc"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_NOCOLOR="1",
        PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""),
    )
    r = subprocess.run(
        [ansible_playbook(), "-i", str(inventory), str(playbook), "-e", f"out={out}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    results = json.loads(out.read_text())
    for key in ("subtree", "xpath"):
        assert "<status>ACTIVE</status>" in results[key], results[key]
    assert results["config_changed"] is True
    assert "module escnc" in results["rpc"]
    with connect(server) as m:
        data = etree.fromstring(str(m.get_config("running")).encode())
    assert data.xpath("//e:flavor/e:name/text()", namespaces={"e": E}) == ["ansible-flavor"]
