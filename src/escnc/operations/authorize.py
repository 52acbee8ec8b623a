"""RFC 8341 access control at the one place every request passes.

Installs the guard of the RPC registry (``RpcRegistry.invoke``), the datastore's
write authorizer and the ``/nacm`` state counters; the decisions themselves are
:class:`escnc.nacm.Nacm`'s (protocol-neutral, shared with any other northbound).

For each request of a user NACM applies to:

1. exec access to the operation (3.4.4) -> ``access-denied`` (type protocol);
2. for RPCs that act on data (registered with ``RpcRegistry.register_target``, e.g.
   vmAction -> the VM's deployment): update access to those nodes (type application);
3. the handler runs; every write it makes is checked node by node by the datastore's
   write authorizer (create/update/delete, 3.4.5) -> ``access-denied`` with the
   error-path of the first denied node, nothing changed;
4. reads (3.4.5): unreadable nodes are pruned from every ``<data>`` in the reply;
   a filter that matches on content runs after the pruning (so it cannot test what
   the user may not read), and copy-config copies only what the user can read.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from escnc.datastore.edit import DEPLOYMENT, NAME, TENANT
from escnc.errors import RpcError
from escnc.nacm import AccessDenied, Nacm, Principal
from escnc.nacm.config import BadRule
from escnc.ns import ESC, NC, qn
from escnc.operations import datastore_read

if TYPE_CHECKING:
    from escnc.datastore.store import UnitChanges
    from escnc.rpc.dispatch import HandlerResult, RpcContext, RpcRegistry
    from escnc.services import CommitEvent, Services

log = logging.getLogger(__name__)

_DATA = qn(NC, "data")
_FILTER = qn(NC, "filter")
_READS = frozenset({qn(NC, "get"), qn(NC, "get-config")})
_COPY = qn(NC, "copy-config")
_ROOT = f"{{{ESC}}}esc_datamodel"
_TENANTS = f"{{{ESC}}}tenants"
_DEPLOYMENTS = f"{{{ESC}}}deployments"


def principal(ctx: RpcContext) -> Principal:
    return Principal(ctx.session.username, ctx.session.session_id)


def access_denied(exc: AccessDenied) -> RpcError:
    return RpcError(
        "access-denied",
        exc.message,
        type="protocol" if exc.kind == "operation" else "application",
        path=exc.path,
        path_nsmap=exc.nsmap,
    )


def deployment_chain(tenant: str, deployment: str | None = None) -> list[etree._Element]:
    """Elements from esc_datamodel down to tenant T (and its deployment D)."""
    chain = [etree.Element(_ROOT), etree.Element(_TENANTS)]
    ten = etree.Element(TENANT)
    etree.SubElement(ten, NAME).text = tenant
    chain.append(ten)
    if deployment is not None:
        chain.append(etree.Element(_DEPLOYMENTS))
        dep = etree.Element(DEPLOYMENT)
        etree.SubElement(dep, NAME).text = deployment
        chain.append(dep)
    return chain


def _unit_anchor(key: tuple[str, ...]) -> list[etree._Element]:
    if key[0] == "r":
        return []
    if key[0] == "e":  # an entry of a root list (images, flavors, ...)
        return [etree.Element(_ROOT), etree.Element(f"{{{ESC}}}{key[1]}")]
    if key[0] == "t":
        return [etree.Element(_ROOT), etree.Element(_TENANTS)]
    return [*deployment_chain(key[1]), etree.Element(_DEPLOYMENTS)]


_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, huge_tree=True)


class WriteAuthorizer:
    """The datastore's hook: every unit a session's write changes, node by node."""

    def __init__(self, nacm: Nacm) -> None:
        self.nacm = nacm
        # recently parsed units (the new root of one edit is the old root of the next);
        # the trees are only read
        self._parsed: dict[bytes, etree._Element] = {}

    def _parse(self, raw: bytes) -> etree._Element:
        el = self._parsed.get(raw)
        if el is None:
            el = etree.fromstring(raw, _PARSER)
            if len(raw) > 4096:  # only big units are worth keeping
                if len(self._parsed) >= 4:
                    self._parsed.clear()
                self._parsed[raw] = el
        return el

    def applies(self, session_id: int, username: str) -> bool:
        return self.nacm.view(Principal(username, session_id)) is not None

    def check(self, session_id: int, username: str, operation: str, changes: UnitChanges
              ) -> None:
        pairs = []
        for key, (old, new) in changes.items():
            pairs.append((
                _unit_anchor(key),
                None if old is None else self._parse(old),
                None if new is None else self._parse(new),
            ))
        # the datastore root first, then tenants, then deployments: the outermost
        # denied node is the one reported
        pairs.sort(key=lambda p: len(p[0]))
        try:
            self.nacm.check_writes(Principal(username, session_id), pairs, operation)
        except AccessDenied as exc:
            raise access_denied(exc) from None


def _content_match(filt: etree._Element) -> bool:
    """Does the filter select on values (subtree content match, attribute match,
    any XPath)? Then it must run on the pruned data."""
    if filt.get("type", "subtree") != "subtree":
        return True
    for el in filt.iter():
        if el is filt or not isinstance(el.tag, str):
            continue
        if (el.text or "").strip() or len(el.attrib):
            return True
    return False


def _prune_result(nacm: Nacm, who: Principal, result: HandlerResult) -> None:
    if result is None:
        return
    items = [result] if isinstance(result, etree._Element) else list(result)
    for el in items:
        if el.tag == _DATA:
            nacm.prune(who, el)


class Guard:
    def __init__(self, nacm: Nacm, services: Services) -> None:
        self.nacm = nacm
        self.services = services

    def __call__(
        self,
        ctx: RpcContext,
        request: etree._Element,
        proceed: Callable[[etree._Element], HandlerResult],
    ) -> HandlerResult:
        nacm = self.nacm
        who = principal(ctx)
        if nacm.view(who) is None:
            return proceed(request)
        q = etree.QName(request)
        try:
            nacm.check_exec(who, q.namespace or "", q.localname)
            targets = self.services.registry.targets(ctx, request)
            for chain in targets:
                nacm.check_node(who, chain, "update", q.localname)
        except AccessDenied as exc:
            raise access_denied(exc) from None
        if request.tag in _READS:
            filt = request.find(_FILTER)
            if filt is not None and _content_match(filt):
                bare = copy.copy(request)
                bare_filter = bare.find(_FILTER)
                assert bare_filter is not None
                bare.remove(bare_filter)
                data = proceed(bare)
                assert isinstance(data, etree._Element)
                nacm.prune(who, data)
                return datastore_read.filter_data(ctx, filt, data)
        elif request.tag == _COPY:
            request = self._readable_source(ctx, who, request)
        result = proceed(request)
        _prune_result(nacm, who, result)
        return result

    def _readable_source(
        self, ctx: RpcContext, who: Principal, request: etree._Element
    ) -> etree._Element:
        """copy-config from a datastore copies only what the user can read: the
        source becomes an inline <config> of the pruned datastore."""
        source = request.find(qn(NC, "source"))
        if source is None:
            return request
        names = [etree.QName(el).localname for el in source if isinstance(el.tag, str)]
        if len(names) != 1 or names[0] not in ("running", "candidate", "startup"):
            return request
        with ctx.services.datastore.reading(names[0]) as tree:
            data = copy.deepcopy(tree)
        self.nacm.prune(who, data)
        rewritten = copy.deepcopy(request)
        src = rewritten.find(qn(NC, "source"))
        assert src is not None
        for el in list(src):
            src.remove(el)
        config = etree.SubElement(src, qn(NC, "config"))
        for el in list(data):
            config.append(el)
        return rewritten


def _validator(nacm: Nacm) -> Callable[[etree._Element], None]:
    def validate(tree: etree._Element) -> None:
        try:
            nacm.validate(tree)
        except BadRule as exc:
            raise RpcError(
                "invalid-value",
                f"NACM rule {exc.rule!r} of rule-list {exc.rule_list!r}: {exc}",
                path=f"/nacm:nacm/nacm:rule-list[nacm:name='{exc.rule_list}']"
                f"/nacm:rule[nacm:name='{exc.rule}']/nacm:path",
                path_nsmap={"nacm": "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"},
            ) from exc

    return validate


def register(registry: RpcRegistry, services: Services) -> None:
    if services.schema is None or services.datastore is None:
        return
    nacm = Nacm(services.schema, getattr(services.settings, "nacm_recovery_user", "admin"))
    services.nacm = nacm
    store = services.datastore
    with store.reading("running") as tree:
        nacm.load(tree)

    def on_commit(event: CommitEvent) -> None:
        nacm.load(event.new)

    store.add_commit_listener(on_commit)
    store.add_validator(_validator(nacm))
    set_auth = getattr(store, "set_write_authorizer", None)
    if set_auth is not None:
        set_auth(WriteAuthorizer(nacm))
    registry.set_guard(Guard(nacm, services))
    services.state_providers.append(lambda: [nacm.state()])
