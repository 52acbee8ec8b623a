"""elementpath is loaded only as far as yangson needs it, and stays whole for others."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")


def run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": SRC}, check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_schema_patterns_work_without_the_xpath_engine() -> None:
    got = run(
        """
        import sys
        from escnc.datastore.schema import Schema
        Schema.load()
        from yangson.xpathast import translate_pattern
        import re
        # a YANG pattern (XSD regex) still translates and matches
        assert re.fullmatch(translate_pattern(r"[a-z]\\p{Nd}+"), "a12")
        print(any(m.startswith("elementpath.xpath") for m in sys.modules))
        """
    )
    assert got == "False"


def test_a_later_user_of_elementpath_gets_the_whole_package() -> None:
    got = run(
        """
        import escnc.datastore.schema
        import elementpath
        from lxml import etree
        root = etree.fromstring("<a><b>1</b><b>2</b></a>")
        print(elementpath.select(root, "count(//b)"), elementpath.__version__ != "")
        """
    )
    assert got == "2 True"


def test_paramiko_does_not_load_invoke_until_it_is_used() -> None:
    got = run(
        """
        import sys
        import escnc.netconf.server
        import paramiko
        loaded = "invoke.context" in sys.modules
        import invoke
        print(loaded, invoke.Context.__name__, "invoke.context" in sys.modules)
        """
    )
    assert got == "False Context True"
