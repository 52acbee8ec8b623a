"""The /nacm configuration (RFC 8341 section 3.5) compiled from a running tree."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from lxml import etree

from escnc.nacm.paths import BadPath, Step, parse_path

log = logging.getLogger(__name__)

NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
NACM_TAG = f"{{{NACM_NS}}}nacm"
ACCESS_OPS = ("create", "read", "update", "delete", "exec")


def _q(name: str) -> str:
    return f"{{{NACM_NS}}}{name}"


@dataclass(frozen=True)
class Rule:
    """One rule; ``kind`` is the rule-type choice ("" when absent)."""

    name: str
    module: str  # "*" or a module name
    kind: str  # "" | "rpc" | "notification" | "data"
    target: str  # rpc-name / notification-name ("*" allowed); "" for data
    path: tuple[Step, ...] | None  # data-node rules; () is "/"
    ops: frozenset[str]  # access operations ("*" expanded)
    permit: bool
    rule_list: str = ""


@dataclass(frozen=True)
class RuleList:
    name: str
    groups: frozenset[str]  # "*" matches every group
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class NacmConfig:
    enable: bool = True
    read_default: bool = True  # permit
    write_default: bool = False  # deny
    exec_default: bool = True  # permit
    # group name -> user names
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rule_lists: tuple[RuleList, ...] = ()

    def groups_of(self, user: str) -> frozenset[str]:
        return frozenset(g for g, users in self.groups.items() if user in users)


class BadRule(ValueError):
    def __init__(self, message: str, rule_list: str, rule: str) -> None:
        super().__init__(message)
        self.rule_list = rule_list
        self.rule = rule


def _text(el: etree._Element, name: str) -> str | None:
    v = el.findtext(_q(name))
    return None if v is None else v.strip()


def compile_config(nacm: etree._Element | None, modules: Mapping[str, str]) -> NacmConfig:
    """``modules``: module names and prefixes -> namespace (for rule paths).

    Raises :class:`BadRule` for a path NACM cannot use."""
    if nacm is None:
        return NacmConfig()
    groups: dict[str, set[str]] = {}
    for g in nacm.iterfind(f"{_q('groups')}/{_q('group')}"):
        name = _text(g, "name") or ""
        groups.setdefault(name, set()).update(
            (u.text or "").strip() for u in g.iterfind(_q("user-name"))
        )
    lists: list[RuleList] = []
    for rl in nacm.iterfind(_q("rule-list")):
        rl_name = _text(rl, "name") or ""
        rules = [_rule(r, rl_name, modules) for r in rl.iterfind(_q("rule"))]
        lists.append(
            RuleList(
                rl_name,
                frozenset((g.text or "").strip() for g in rl.iterfind(_q("group"))),
                tuple(rules),
            )
        )
    return NacmConfig(
        enable=_text(nacm, "enable-nacm") != "false",
        read_default=_text(nacm, "read-default") != "deny",
        write_default=_text(nacm, "write-default") == "permit",
        exec_default=_text(nacm, "exec-default") != "deny",
        groups={k: frozenset(v) for k, v in groups.items()},
        rule_lists=tuple(lists),
    )


def _rule(r: etree._Element, rl_name: str, modules: Mapping[str, str]) -> Rule:
    name = _text(r, "name") or ""
    ops_text = _text(r, "access-operations") or "*"
    ops = frozenset(ACCESS_OPS) if ops_text == "*" else frozenset(ops_text.split())
    kind, target, path = "", "", None
    rpc = _text(r, "rpc-name")
    notif = _text(r, "notification-name")
    path_el = r.find(_q("path"))
    if rpc is not None:
        kind, target = "rpc", rpc
    elif notif is not None:
        kind, target = "notification", notif
    elif path_el is not None:
        kind = "data"
        try:
            path = parse_path(path_el.text or "", path_el.nsmap, modules)
        except BadPath as exc:
            raise BadRule(str(exc), rl_name, name) from exc
    return Rule(
        name=name,
        module=_text(r, "module-name") or "*",
        kind=kind,
        target=target,
        path=path,
        ops=ops,
        permit=_text(r, "action") == "permit",
        rule_list=rl_name,
    )


def rules_for(config: NacmConfig, groups: frozenset[str]) -> list[Rule]:
    """Every rule of the rule-lists that apply to ``groups``, in order."""
    out: list[Rule] = []
    for rl in config.rule_lists:
        if "*" in rl.groups or rl.groups & groups:
            out.extend(rl.rules)
    return out
