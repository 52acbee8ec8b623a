"""Rewrite a client's XPath 1.0 filter before lxml evaluates it.

Two jobs, both done on the token stream of the expression (XPath 1.0 section 3.7
lexical rules, so names inside literals and function names are left alone):

* **Names** (with a :class:`~escnc.datastore.xpath_names.NameIndex`): an unprefixed
  element name means that name in whichever served module defines it (one
  namespace: ``p:name``; several: ``*[self::a:name or self::b:name]``); a prefix
  the request does not declare is looked up as a module name, then as a module
  prefix; a name no module defines, or a namespace no module has, is an error.
* **Context**: a relative location path outside predicates starts at the root of
  the data tree (RFC 6241 8.9.1), so ``esc_datamodel/opdata`` works although lxml
  evaluates with the top element as context node.
* **Cost** (with a :class:`FilterBudget`): every location step gets a predicate
  calling the extension function ``budget()`` first, so libxml2 calls back into
  Python for each node a step visits. The callback counts nodes and watches a
  deadline and raises when either is exhausted; lxml aborts the evaluation there
  and re-raises the exception (measured: an ``//*[count(//*) > 0]`` stops within
  one callback of the limit). Steps on the long axes (descendant, following,
  preceding, ancestor and ``//``) are rewritten ``axis::node()[budget()][self::T]``
  so that *every* node they walk is counted, not only the ones that match;
  child and attribute steps count the nodes they select. Between two callbacks
  libxml2 does at most one non-step computation (a string-value, a node-set
  comparison), so the deadline is overshot by at most that much.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from escnc.datastore.xpath_names import NameIndex
from escnc.errors import RpcError

BUDGET_NS = "urn:escnc:xpath-budget"
BUDGET_PREFIX = "escnc-budget"
_TICK = f"{BUDGET_PREFIX}:budget()"

_NCNAME = r"[A-Za-z_\u00C0-\uFFFF][\w.\-\u00B7\u00C0-\uFFFF]*"
_TOKEN = re.compile(
    rf"""(?P<ws>\s+)
    |(?P<literal>"[^"]*"|'[^']*')
    |(?P<number>\d+(?:\.\d*)?|\.\d+)
    |(?P<punct>\.\.|::|//|!=|<=|>=|[()\[\].@,/|+\-=<>*])
    |(?P<var>\$(?:{_NCNAME}:)?{_NCNAME})
    |(?P<name>{_NCNAME}(?::(?:{_NCNAME}|\*))?)
    """,
    re.X,
)
_NODE_TYPES = frozenset({"comment", "text", "processing-instruction", "node"})
_OPERATOR_NAMES = frozenset({"and", "or", "mod", "div"})
_LONG_AXES = frozenset(
    {
        "descendant", "descendant-or-self", "following", "following-sibling",
        "preceding", "preceding-sibling", "ancestor", "ancestor-or-self",
    }
)
# axes whose principal node type is element (names are element names)
_ELEMENT_AXES = frozenset(_LONG_AXES | {"child", "self", "parent"})
# a token after which '*' is a name test and an NCName is not an operator
_BEFORE_OPERAND = frozenset({"@", "::", "(", "[", ",", "/", "//", "|", "+", "-", "=", "!=",
                             "<", "<=", ">", ">="})


def _invalid(xpath: str, why: str) -> RpcError:
    return RpcError(
        "invalid-value",
        f"XPath {xpath!r}: {why}",
        info={"bad-attribute": "select", "bad-element": "filter"},
    )


@dataclass
class _Tok:
    kind: str  # literal number punct var name op func axis nodetype nametest
    text: str


def tokenize(xpath: str) -> list[_Tok]:
    """XPath 1.0 tokens with the section 3.7 disambiguation applied."""
    raw: list[_Tok] = []
    pos = 0
    while pos < len(xpath):
        m = _TOKEN.match(xpath, pos)
        if m is None:
            raise _invalid(xpath, f"unexpected character {xpath[pos]!r} at offset {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            raw.append(_Tok(kind, m.group()))
    out: list[_Tok] = []
    for i, tok in enumerate(raw):
        prev = out[-1] if out else None
        operand_expected = prev is None or prev.text in _BEFORE_OPERAND or prev.kind == "op"
        nxt = raw[i + 1].text if i + 1 < len(raw) else ""
        if tok.text == "*" and tok.kind == "punct":
            tok = _Tok("nametest" if operand_expected else "op", "*")
        elif tok.kind == "name":
            if not operand_expected and tok.text in _OPERATOR_NAMES:
                tok = _Tok("op", tok.text)
            elif nxt == "(":
                tok = _Tok("nodetype" if tok.text in _NODE_TYPES else "func", tok.text)
            elif nxt == "::":
                tok = _Tok("axis", tok.text)
            else:
                tok = _Tok("nametest", tok.text)
        elif tok.kind == "punct" and tok.text in ("/", "//", "|", "+", "-", "=", "!=",
                                                   "<", "<=", ">", ">="):
            tok = _Tok("op", tok.text)
        out.append(tok)
    return out


@dataclass
class Rewritten:
    xpath: str
    namespaces: dict[str, str]  # prefix -> namespace for lxml


class _Names:
    """Resolves name tests against the request's prefixes and the module index."""

    def __init__(self, xpath: str, nsmap: Mapping[str, str], index: NameIndex | None) -> None:
        self.xpath = xpath
        self.ns = dict(nsmap)
        self.index = index
        self.generated: dict[str, str] = {}  # namespace -> generated prefix

    def prefix_for(self, namespace: str) -> str:
        for p, uri in self.ns.items():
            if uri == namespace:
                return p
        made = self.generated.get(namespace)
        if made is None:
            made = f"escnc-ns{len(self.generated)}"
            self.generated[namespace] = made
            self.ns[made] = namespace
        return made

    def namespace(self, prefix: str) -> str:
        if prefix in self.ns:
            uri = self.ns[prefix]
            if self.index is not None and uri not in self.index.namespaces:
                raise _invalid(self.xpath, f"no module has the namespace {uri!r} "
                                           f"(prefix {prefix!r})")
            return uri
        found = self.index.namespace_of(prefix) if self.index is not None else None
        if found is None:
            raise _invalid(
                self.xpath,
                f"undefined namespace prefix {prefix!r} (not declared in the request, "
                "and no module has that name or prefix)",
            )
        self.ns[prefix] = found
        return found

    def test(self, text: str, element: bool) -> list[str] | None:
        """The qualified name tests ``text`` stands for (None: keep as written)."""
        if text == "*":
            return None
        prefix, _, local = text.rpartition(":")
        if prefix:
            uri = self.namespace(prefix)
            if (
                element and local != "*" and self.index is not None
                and not self.index.defines(uri, local)
            ):
                raise _invalid(self.xpath, f"no module defines {local!r} in namespace {uri!r}")
            return None
        if not element or self.index is None:
            return None
        uris = sorted(self.index.element_namespaces(local))
        if not uris:
            raise _invalid(self.xpath, f"no module served by escnc defines an element {local!r}")
        return [f"{self.prefix_for(u)}:{local}" for u in uris]


def _node_test_end(toks: list[_Tok], i: int) -> int:
    """Index after the node test starting at ``toks[i]``."""
    if toks[i].kind == "nodetype":
        j = i + 1  # '('
        while j < len(toks) and toks[j].text != ")":
            j += 1
        return j + 1
    return i + 1


def _starts_relative_path(toks: list[_Tok], i: int) -> bool:
    tok = toks[i]
    if not (tok.kind in ("nametest", "nodetype", "axis") or tok.text in ("@", ".", "..")):
        return False
    prev = toks[i - 1] if i else None
    if prev is None or prev.text in ("(", ","):
        return True
    return prev.kind == "op" and prev.text not in ("/", "//")


def rewrite(
    xpath: str, nsmap: Mapping[str, str], index: NameIndex | None, budget: bool
) -> Rewritten:
    """``xpath`` with names resolved (when ``index``) and budget calls (when ``budget``)."""
    toks = tokenize(xpath)
    names = _Names(xpath, nsmap, index)
    out: list[str] = []
    depth = 0  # inside [...]: the context is a predicate's node, not the root
    i = 0
    while i < len(toks):
        tok = toks[i]
        depth += (tok.text == "[") - (tok.text == "]")
        if depth == 0 and _starts_relative_path(toks, i):
            out.append("/")  # RFC 6241 8.9.1: the context node is the data tree's root
        if tok.kind == "op" and tok.text == "//":
            out.append(f"/descendant-or-self::node()[{_TICK}]/" if budget else "//")
            i += 1
            continue
        if tok.kind not in ("nametest", "nodetype", "axis") and tok.text != "@":
            out.append(tok.text)
            i += 1
            continue
        axis = "child"
        if tok.kind == "axis":
            axis = tok.text
            i += 2  # AxisName '::'
        elif tok.text == "@":
            axis = "attribute"
            i += 1
        if i >= len(toks) or toks[i].kind not in ("nametest", "nodetype"):
            # leave malformed input to lxml's parser, which reports it
            out.append(f"{axis}::" if axis != "attribute" else "@")
            continue
        end = _node_test_end(toks, i)
        test = "".join(t.text for t in toks[i:end])
        i = end
        is_name = toks[end - 1].kind == "nametest"
        qualified = names.test(test, axis in _ELEMENT_AXES) if is_name else None
        if qualified is None:
            self_test = test
        elif len(qualified) == 1:
            self_test = test = qualified[0]
        else:
            self_test = " or ".join(f"self::{q}" for q in qualified)
        union = qualified is not None and len(qualified) > 1
        prefix = "@" if axis == "attribute" else f"{axis}::"
        if budget and axis in _LONG_AXES:
            guard = f"[{self_test}]" if union else ("" if test == "node()" else f"[self::{test}]")
            out.append(f"{prefix}node()[{_TICK}]{guard}")
        elif union:
            out.append(f"{prefix}*[{self_test}]" + (f"[{_TICK}]" if budget else ""))
        else:
            tick = f"[{_TICK}]" if budget and axis in ("child", "attribute") else ""
            out.append(f"{prefix}{test}{tick}")
    namespaces = dict(names.ns)
    if budget:
        namespaces[BUDGET_PREFIX] = BUDGET_NS
    return Rewritten(" ".join(out), namespaces)


class FilterBudget:
    """Node visits and wall time one request's XPath evaluations may use.

    ``max_nodes`` / ``max_seconds`` of 0 disable that limit. The deadline starts at
    construction (one budget per request, shared by every tree it filters).
    """

    def __init__(
        self, max_nodes: int, max_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_nodes = max_nodes
        self.max_seconds = max_seconds
        self.clock = clock
        self.deadline = clock() + max_seconds if max_seconds > 0 else None
        self.visited = 0

    @property
    def active(self) -> bool:
        return self.max_nodes > 0 or self.deadline is not None

    def tick(self, _context: object = None) -> bool:
        self.visited += 1
        if self.max_nodes and self.visited > self.max_nodes:
            raise self.exceeded(f"visited more than filter_max_nodes={self.max_nodes} nodes")
        if self.deadline is not None and self.clock() > self.deadline:
            raise self.exceeded(f"ran longer than filter_max_seconds={self.max_seconds:g} s")
        return True

    def check_time(self) -> None:
        if self.deadline is not None and self.clock() > self.deadline:
            raise self.exceeded(f"ran longer than filter_max_seconds={self.max_seconds:g} s")

    @staticmethod
    def exceeded(why: str) -> RpcError:
        return RpcError(
            "operation-failed",
            f"filter evaluation stopped: it {why}",
            app_tag="filter-limit-exceeded",
        )
